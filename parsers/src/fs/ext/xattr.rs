//! Extended attributes: the in-inode area and the external xattr block.

use super::{le16, le32};
use crate::fs::acl;
use crate::{Error, Result};

const MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;
const ENTRY_HEADER: usize = 16;

/// One attribute as stored: the full Linux name and the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Name prefix of a name index, as Linux shows it.
fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        0 => b"",
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

/// Parses the in-inode xattr area (the bytes after `i_extra_isize`); an
/// area without the magic holds none.
pub fn parse_inode_area(area: &[u8], offset: u64) -> Result<Vec<Xattr>> {
    if area.len() < 4 || le32(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    // Value offsets count from the first entry, just after the magic.
    let body = area.get(4..).unwrap_or(&[]);
    parse_entries(body, 0, body, offset + 4)
}

/// Parses an external xattr block.
pub fn parse_block(b: &[u8], offset: u64) -> Result<Vec<Xattr>> {
    if b.len() < BLOCK_HEADER || le32(b, 0) != MAGIC {
        return Err(Error::corrupt("ext", offset, "bad xattr block magic"));
    }
    if le32(b, 8) != 1 {
        return Err(Error::corrupt(
            "ext",
            offset,
            "xattr block spans several blocks",
        ));
    }
    // Value offsets count from the block start.
    parse_entries(b, BLOCK_HEADER, b, offset)
}

fn parse_entries(b: &[u8], start: usize, values: &[u8], offset: u64) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let mut pos = start;
    loop {
        let at = offset + pos as u64;
        let Some(head) = b.get(pos..pos + ENTRY_HEADER) else {
            // Ran off the end without the terminating zero word: tolerate
            // only if the remaining bytes are too short to hold one.
            if b.get(pos..pos + 4).is_none_or(|w| w == [0; 4]) {
                break;
            }
            return Err(Error::corrupt("ext", at, "xattr entry truncated"));
        };
        if le32(head, 0) == 0 {
            break;
        }
        let name_len = usize::from(head.first().copied().unwrap_or(0));
        let index = head.get(1).copied().unwrap_or(0);
        let value_offs = usize::from(le16(head, 2));
        let value_inum = le32(head, 4);
        let value_size = le32(head, 8) as usize;
        let name = b
            .get(pos + ENTRY_HEADER..pos + ENTRY_HEADER + name_len)
            .ok_or_else(|| Error::corrupt("ext", at, "xattr name truncated"))?;
        let value = if value_inum != 0 {
            return Err(Error::unsupported(
                "ext",
                "xattr values stored in inodes (ea_inode)",
            ));
        } else {
            values
                .get(value_offs..value_offs.saturating_add(value_size))
                .ok_or_else(|| Error::corrupt("ext", at, "xattr value out of bounds"))?
        };
        let pre =
            prefix(index).ok_or_else(|| Error::corrupt("ext", at, "unknown xattr name index"))?;
        let mut full = pre.to_vec();
        full.extend_from_slice(name);
        let value = if index == 2 || index == 3 {
            acl_to_linux(value).ok_or_else(|| Error::corrupt("ext", at, "bad POSIX ACL"))?
        } else {
            value.to_vec()
        };
        out.push(Xattr { name: full, value });
        pos += (ENTRY_HEADER + name_len + 3) & !3;
    }
    Ok(out)
}

/// Converts ext4's compact POSIX ACL (version 1, short entries without an
/// id) to the `posix_acl_xattr` form Linux returns from getxattr.
fn acl_to_linux(v: &[u8]) -> Option<Vec<u8>> {
    if le32(v, 0) != 1 || v.len() < 4 {
        return None;
    }
    let mut entries = Vec::new();
    let mut pos = 4;
    while pos < v.len() {
        let tag = le16(v.get(pos..)?, 0);
        let perm = le16(v.get(pos..)?, 2);
        let id = if acl::has_id(tag) {
            let id = le32(v.get(pos..pos + 8)?, 4);
            pos += 8;
            id
        } else {
            v.get(pos..pos + 4)?;
            pos += 4;
            u32::MAX
        };
        entries.push((tag, perm, id));
    }
    Some(acl::to_xattr(entries))
}
