//! The key every btrfs item and node pointer is sorted by
//! (`btrfs_disk_key`: objectid u64, type u8, offset u64, little-endian,
//! 17 bytes), and the item types this reader knows.

use crate::bytes::le64;

/// Bytes of an on-disk key.
pub const KEY_LEN: usize = 17;

/// `INODE_ITEM`: (inode, 1, 0).
pub const INODE_ITEM: u8 = 1;
/// `INODE_REF`: (inode, 12, parent directory).
pub const INODE_REF: u8 = 12;
/// `INODE_EXTREF`: (inode, 13, hash of parent and name).
pub const INODE_EXTREF: u8 = 13;
/// `XATTR_ITEM`: (inode, 24, name hash).
pub const XATTR_ITEM: u8 = 24;
/// `DIR_ITEM`: (directory, 84, name hash).
pub const DIR_ITEM: u8 = 84;
/// `DIR_INDEX`: (directory, 96, sequence).
pub const DIR_INDEX: u8 = 96;
/// `EXTENT_DATA`: (inode, 108, file offset).
pub const EXTENT_DATA: u8 = 108;
/// `ROOT_ITEM`: (tree id, 132, 0 or creation transid).
pub const ROOT_ITEM: u8 = 132;
/// `ROOT_BACKREF`: (child tree, 144, parent tree).
pub const ROOT_BACKREF: u8 = 144;
/// `ROOT_REF`: (parent tree, 156, child tree).
pub const ROOT_REF: u8 = 156;
/// `DEV_ITEM`: (1, 216, devid) in the chunk tree.
pub const DEV_ITEM: u8 = 216;
/// `CHUNK_ITEM`: (256, 228, logical address) in the chunk tree.
pub const CHUNK_ITEM: u8 = 228;

/// A key, ordered as btrfs orders them: objectid, then type, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    pub objectid: u64,
    pub kind: u8,
    pub offset: u64,
}

impl Key {
    pub const fn new(objectid: u64, kind: u8, offset: u64) -> Key {
        Key {
            objectid,
            kind,
            offset,
        }
    }

    /// The key at the start of `b` (callers check `b` holds [`KEY_LEN`]
    /// bytes; a short slice reads as zeros).
    pub fn parse(b: &[u8]) -> Key {
        Key {
            objectid: le64(b, 0),
            kind: b.get(8).copied().unwrap_or(0),
            offset: le64(b, 9),
        }
    }

    /// The first key of `(objectid, kind, *)`.
    pub const fn first(objectid: u64, kind: u8) -> Key {
        Key::new(objectid, kind, 0)
    }

    /// The last key of `(objectid, kind, *)`.
    pub const fn last(objectid: u64, kind: u8) -> Key {
        Key::new(objectid, kind, u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let mut b = [0u8; KEY_LEN];
        b[..8].copy_from_slice(&256u64.to_le_bytes());
        b[8] = DIR_INDEX;
        b[9..].copy_from_slice(&7u64.to_le_bytes());
        let k = Key::parse(&b);
        assert_eq!(k, Key::new(256, DIR_INDEX, 7));
        assert!(Key::new(256, DIR_ITEM, u64::MAX) < k);
        assert!(k < Key::new(257, INODE_ITEM, 0));
        assert_eq!(Key::parse(&b[..3]).kind, 0);
    }
}
