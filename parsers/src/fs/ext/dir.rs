//! Directory entries (`ext4_dir_entry_2`), read linearly: this covers htree
//! directories too, whose index nodes look like empty entries.

use super::{le16, le32};
use crate::{Error, Result};

const ENTRY_HEADER: usize = 8;

/// One raw directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub inode: u32,
    pub name: Vec<u8>,
    /// The dirent file type byte (0 if unknown or no filetype feature).
    pub file_type: u8,
}

/// Appends the entries of one directory block (or inline-data area) to
/// `out`, skipping unused (inode 0) entries and `.`/`..`. `filetype` is the
/// superblock feature: without it the type byte is the name length's high
/// byte. `offset` is the block's byte position, for errors.
pub fn parse_block(b: &[u8], filetype: bool, offset: u64, out: &mut Vec<RawEntry>) -> Result<()> {
    let mut pos = 0usize;
    while pos + ENTRY_HEADER <= b.len() {
        let inode = le32(b, pos);
        let mut rec_len = usize::from(le16(b, pos + 4));
        // 64 KiB blocks store a whole-block record length as 0 or 65535.
        if b.len() >= 65536 && (rec_len == 0 || rec_len == 65535) {
            rec_len = 65536;
        }
        let (name_len, file_type) = if filetype {
            (
                usize::from(b.get(pos + 6).copied().unwrap_or(0)),
                b.get(pos + 7).copied().unwrap_or(0),
            )
        } else {
            (usize::from(le16(b, pos + 6)), 0)
        };
        let at = offset + pos as u64;
        if rec_len < ENTRY_HEADER || rec_len & 3 != 0 || pos + rec_len > b.len() {
            return Err(Error::corrupt("ext", at, "bad directory record length"));
        }
        if inode != 0 {
            if ENTRY_HEADER + name_len > rec_len {
                return Err(Error::corrupt(
                    "ext",
                    at,
                    "directory name longer than its record",
                ));
            }
            let name = b
                .get(pos + ENTRY_HEADER..pos + ENTRY_HEADER + name_len)
                .ok_or_else(|| Error::corrupt("ext", at, "directory name truncated"))?;
            if !name.is_empty() && name != b"." && name != b".." {
                out.push(RawEntry {
                    inode,
                    name: name.to_vec(),
                    file_type,
                });
            }
        }
        pos += rec_len;
    }
    Ok(())
}
