//! `DIR_ITEM`, `DIR_INDEX` and `XATTR_ITEM` share one format
//! (`btrfs_dir_item`: location key, transid u64, data_len u16, name_len
//! u16, type u8, then name and data). A `DIR_ITEM` or `XATTR_ITEM` may
//! hold several entries whose names hash alike.

use super::key::{Key, KEY_LEN};
use crate::bytes::le16;
use crate::fs::FileType;
use crate::{Error, Result};

const HDR: usize = KEY_LEN + 8 + 2 + 2 + 1;
/// The kernel's name limit; longer is corrupt.
const MAX_NAME: usize = 255;

/// One entry.
#[derive(Debug, Clone)]
pub struct DirItem<'a> {
    /// An `INODE_ITEM` key, or a `ROOT_ITEM` key for a subvolume.
    pub location: Key,
    pub kind: u8,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

impl DirItem<'_> {
    /// The type byte as a file type (`BTRFS_FT_*`).
    pub fn file_type(&self) -> Option<FileType> {
        Some(match self.kind {
            1 => FileType::File,
            2 => FileType::Dir,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }
}

/// Every entry in item data `b` of key `key` (named in errors); xattr
/// items may carry values up to the item's size, directory entries none.
pub fn parse<'a>(b: &'a [u8], key: &Key) -> Result<Vec<DirItem<'a>>> {
    let corrupt = |what: &str| {
        Error::corrupt(
            "btrfs",
            key.objectid,
            format!(
                "inode {} item type {} offset {}: {what}",
                key.objectid, key.kind, key.offset
            ),
        )
    };
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        if rest.len() < HDR {
            return Err(corrupt("short entry"));
        }
        let data_len = usize::from(le16(rest, KEY_LEN + 8));
        let name_len = usize::from(le16(rest, KEY_LEN + 10));
        if name_len == 0 || name_len > MAX_NAME {
            return Err(corrupt(&format!("name of {name_len} bytes")));
        }
        let end = HDR + name_len + data_len;
        if end > rest.len() {
            return Err(corrupt("entry past the item"));
        }
        out.push(DirItem {
            location: Key::parse(rest),
            kind: rest[KEY_LEN + 12],
            name: &rest[HDR..HDR + name_len],
            data: &rest[HDR + name_len..end],
        });
        rest = &rest[end..];
    }
    Ok(out)
}
