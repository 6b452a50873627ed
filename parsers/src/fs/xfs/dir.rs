//! Directories: the short form inline in the inode, and the data blocks
//! that hold the entries of every other form (block, leaf, node, btree).
//!
//! Only data blocks are read: the hash index (leaf and node blocks) and
//! free-space index live at fixed higher offsets and only speed up lookup,
//! which we do with our own hash map.

use super::{be16, be32, be64};
use crate::{Error, Result};

/// Entries' logical offsets stop here; leaf blocks start at this byte
/// offset (32 GiB) in the directory's data fork.
pub const LEAF_OFFSET: u64 = 32 << 30;

/// One raw entry.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// The `XFS_DIR3_FT_*` code, 0 without the ftype feature.
    pub ftype: u8,
}

/// Parses a short-form directory (the whole data fork of a local-format
/// directory inode).
pub fn parse_short(b: &[u8], ftype: bool, out: &mut Vec<RawEntry>) -> Result<()> {
    let bad = |what: &str| Error::corrupt("xfs", 0, format!("short-form directory: {what}"));
    let count = usize::from(b.first().copied().unwrap_or(0));
    let i8count = b.get(1).copied().unwrap_or(0);
    // Inode numbers are 8 bytes if any needs more than 32 bits.
    let ilen = if i8count != 0 { 8 } else { 4 };
    let mut p = 2 + ilen;
    if p > b.len() {
        return Err(bad("truncated header"));
    }
    for _ in 0..count {
        let namelen = usize::from(b.get(p).copied().unwrap_or(0));
        let name_at = p + 3;
        let after_name = name_at + namelen;
        let ino_at = after_name + usize::from(ftype);
        let end = ino_at + ilen;
        if namelen == 0 || end > b.len() {
            return Err(bad("entry past the end"));
        }
        let ino = if ilen == 8 {
            be64(b, ino_at)
        } else {
            u64::from(be32(b, ino_at))
        };
        out.push(RawEntry {
            name: b.get(name_at..after_name).unwrap_or(&[]).to_vec(),
            ino,
            ftype: if ftype {
                b.get(after_name).copied().unwrap_or(0)
            } else {
                0
            },
        });
        p = end;
    }
    Ok(())
}

/// Parses one directory data block (`b` is one directory block). Blocks
/// that are not data blocks are skipped; `offset` is for errors.
pub fn parse_data_block(
    b: &[u8],
    v5: bool,
    ftype: bool,
    offset: u64,
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let bad = |what: &str| Error::corrupt("xfs", offset, format!("directory block: {what}"));
    let magic = b.get(..4).unwrap_or(&[]);
    let (block_magic, data_magic, hdr): (&[u8], &[u8], usize) = if v5 {
        (b"XDB3", b"XDD3", 64)
    } else {
        (b"XD2B", b"XD2D", 16)
    };
    let end = if magic == block_magic {
        // A single-block directory: hash entries and a tail (count, stale)
        // follow the data entries at the end of the block.
        let count = be32(b, b.len().saturating_sub(8)) as usize;
        b.len()
            .checked_sub(8)
            .and_then(|e| e.checked_sub(count.checked_mul(8)?))
            .filter(|&e| e >= hdr)
            .ok_or_else(|| bad("bad block tail"))?
    } else if magic == data_magic {
        b.len()
    } else {
        return Err(bad("bad magic"));
    };
    let mut p = hdr;
    while p < end {
        if be16(b, p) == 0xffff {
            // Free space: its length, a multiple of 8.
            let len = usize::from(be16(b, p + 2));
            if len < 8 || len % 8 != 0 || p + len > end {
                return Err(bad("bad free entry"));
            }
            p += len;
            continue;
        }
        let ino = be64(b, p);
        let namelen = usize::from(b.get(p + 8).copied().unwrap_or(0));
        // inumber, namelen, name, [ftype], tag; padded to 8 bytes.
        let len = (8 + 1 + namelen + usize::from(ftype) + 2).next_multiple_of(8);
        if namelen == 0 || p + len > end {
            return Err(bad("entry past the end"));
        }
        let name = b.get(p + 9..p + 9 + namelen).unwrap_or(&[]);
        if name != b"." && name != b".." {
            out.push(RawEntry {
                name: name.to_vec(),
                ino,
                ftype: if ftype {
                    b.get(p + 9 + namelen).copied().unwrap_or(0)
                } else {
                    0
                },
            });
        }
        p += len;
    }
    Ok(())
}
