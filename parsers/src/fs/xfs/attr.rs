//! Extended attributes: the short form in the attribute fork, and leaf and
//! node (dabtree) blocks when they outgrow it.

use super::{be16, be32};
use crate::{Error, Result};

/// Entry flags, shared by the short form and leaf entries.
mod flag {
    pub const LOCAL: u8 = 0x01;
    pub const ROOT: u8 = 0x02;
    pub const SECURE: u8 = 0x04;
    /// Parent pointers (a directory-tree index, not a user attribute).
    pub const PARENT: u8 = 0x08;
    /// Half-written by an interrupted set: not visible to listxattr.
    pub const INCOMPLETE: u8 = 0x80;
}

const LEAF_MAGIC_V4: u16 = 0xfbee;
const LEAF_MAGIC_V5: u16 = 0x3bee;
const NODE_MAGIC_V4: u16 = 0xfebe;
const NODE_MAGIC_V5: u16 = 0x3ebe;

/// A value, inline or in remote blocks of the attribute fork.
#[derive(Debug, Clone)]
pub enum Value {
    Local(Vec<u8>),
    /// First attribute-fork block and length in bytes.
    Remote {
        block: u32,
        len: u32,
    },
}

/// One attribute with its full Linux name (`user.foo`).
#[derive(Debug, Clone)]
pub struct Attr {
    pub name: Vec<u8>,
    pub value: Value,
}

/// The full name, or `None` for entries Linux does not list.
fn full_name(flags: u8, name: &[u8]) -> Option<Vec<u8>> {
    if flags & (flag::INCOMPLETE | flag::PARENT) != 0 {
        return None;
    }
    let prefix: &[u8] = if flags & flag::ROOT != 0 {
        b"trusted."
    } else if flags & flag::SECURE != 0 {
        b"security."
    } else {
        b"user."
    };
    let mut v = prefix.to_vec();
    v.extend_from_slice(name);
    Some(v)
}

/// Parses a short-form attribute fork.
pub fn parse_short(b: &[u8]) -> Result<Vec<Attr>> {
    let bad = |what: &str| Error::corrupt("xfs", 0, format!("short-form xattrs: {what}"));
    let totsize = usize::from(be16(b, 0));
    if totsize < 4 || totsize > b.len() {
        return Err(bad("bad size"));
    }
    let b = b.get(..totsize).unwrap_or(&[]);
    let count = usize::from(b.get(2).copied().unwrap_or(0));
    let mut out = Vec::with_capacity(count);
    let mut p = 4;
    for _ in 0..count {
        let namelen = usize::from(b.get(p).copied().unwrap_or(0));
        let valuelen = usize::from(b.get(p + 1).copied().unwrap_or(0));
        let flags = b.get(p + 2).copied().unwrap_or(0);
        let name_at = p + 3;
        let end = name_at + namelen + valuelen;
        if end > b.len() {
            return Err(bad("entry past the end"));
        }
        let name = b.get(name_at..name_at + namelen).unwrap_or(&[]);
        if let Some(name) = full_name(flags, name) {
            out.push(Attr {
                name,
                value: Value::Local(b.get(name_at + namelen..end).unwrap_or(&[]).to_vec()),
            });
        }
        p = end;
    }
    Ok(out)
}

/// What an attribute-fork block is.
pub enum Block {
    /// Interior node: the first child's block number.
    Node { first_child: u32 },
    /// Leaf: its attributes and the next leaf (0 at the end).
    Leaf { attrs: Vec<Attr>, next: u32 },
}

/// Parses a dabtree block of the attribute fork; `offset` for errors.
pub fn parse_block(b: &[u8], v5: bool, offset: u64) -> Result<Block> {
    let bad = |what: &str| Error::corrupt("xfs", offset, format!("xattr block: {what}"));
    let magic = be16(b, 8);
    let (leaf, node) = if v5 {
        (LEAF_MAGIC_V5, NODE_MAGIC_V5)
    } else {
        (LEAF_MAGIC_V4, NODE_MAGIC_V4)
    };
    // v5 blocks add CRC, block number, LSN, UUID and owner to the header.
    let info = if v5 { 56 } else { 12 };
    if magic == node {
        let count = be16(b, info);
        if count == 0 || be16(b, info + 2) == 0 {
            return Err(bad("empty node or leaf level"));
        }
        let entries = info + if v5 { 8 } else { 4 };
        return Ok(Block::Node {
            // Each entry is (hash, before); the first one's child is the
            // leftmost subtree.
            first_child: be32(b, entries + 4),
        });
    }
    if magic != leaf {
        return Err(bad("bad magic"));
    }
    let count = usize::from(be16(b, info));
    // count, usedbytes, firstused, holes, pad, 3 freemap pairs (+ pad v5).
    let entries = info + if v5 { 24 } else { 20 };
    if entries + count.saturating_mul(8) > b.len() {
        return Err(bad("too many entries"));
    }
    let mut attrs = Vec::with_capacity(count);
    for i in 0..count {
        let e = entries + i * 8;
        let nameidx = usize::from(be16(b, e + 4));
        let flags = b.get(e + 6).copied().unwrap_or(0);
        if flags & flag::LOCAL != 0 {
            // valuelen(2) namelen(1) name value
            let valuelen = usize::from(be16(b, nameidx));
            let namelen = usize::from(b.get(nameidx + 2).copied().unwrap_or(0));
            let name_at = nameidx + 3;
            let end = name_at + namelen + valuelen;
            if end > b.len() {
                return Err(bad("local value past the end"));
            }
            if let Some(name) = full_name(flags, b.get(name_at..name_at + namelen).unwrap_or(&[])) {
                attrs.push(Attr {
                    name,
                    value: Value::Local(b.get(name_at + namelen..end).unwrap_or(&[]).to_vec()),
                });
            }
        } else {
            // valueblk(4) valuelen(4) namelen(1) name
            let namelen = usize::from(b.get(nameidx + 8).copied().unwrap_or(0));
            let name_at = nameidx + 9;
            if name_at + namelen > b.len() {
                return Err(bad("remote name past the end"));
            }
            if let Some(name) = full_name(flags, b.get(name_at..name_at + namelen).unwrap_or(&[])) {
                attrs.push(Attr {
                    name,
                    value: Value::Remote {
                        block: be32(b, nameidx),
                        len: be32(b, nameidx + 4),
                    },
                });
            }
        }
    }
    Ok(Block::Leaf {
        attrs,
        next: be32(b, 0),
    })
}
