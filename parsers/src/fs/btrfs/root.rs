//! The root tree's items about trees: `ROOT_ITEM` (`btrfs_root_item`: an
//! inode item, generation, root_dirid, bytenr, byte_limit, bytes_used,
//! last_snapshot, flags, refs, drop_progress, drop_level, level, then the
//! v2 fields: generation_v2, uuid, parent_uuid, received_uuid, c/o/s/r
//! transids and times) and `ROOT_REF` / `ROOT_BACKREF` (dirid, sequence,
//! name_len, name: where a subvolume is linked in its parent).

use super::inode::INODE_ITEM_LEN;
use crate::bytes::{le16, le64};
use crate::{Error, Result};

/// Length of the item before the v2 fields (older kernels wrote only this).
const ROOT_ITEM_V1_LEN: usize = INODE_ITEM_LEN + 79;
/// `BTRFS_ROOT_SUBVOL_RDONLY`.
const ROOT_SUBVOL_RDONLY: u64 = 1;

/// Tree ids with a meaning of their own.
pub const FS_TREE: u64 = 5;
/// The root tree's directory holding the `default` entry.
pub const ROOT_TREE_DIR: u64 = 6;
/// Subvolume ids run from here (`BTRFS_FIRST_FREE_OBJECTID`); also the
/// inode number of every subvolume's root directory.
pub const FIRST_FREE: u64 = 256;
/// Above this, ids are the reserved negative ones (log trees, relocation).
pub const LAST_FREE: u64 = u64::MAX - 256;

#[derive(Debug, Clone)]
pub struct RootItem {
    pub generation: u64,
    pub root_dirid: u64,
    pub bytenr: u64,
    pub level: u8,
    pub read_only: bool,
    pub uuid: Option<[u8; 16]>,
}

impl RootItem {
    /// Parses the root item of tree `id` (named in errors).
    pub fn parse(b: &[u8], id: u64) -> Result<RootItem> {
        if b.len() < ROOT_ITEM_V1_LEN {
            return Err(Error::corrupt(
                "btrfs",
                id,
                format!("root item of tree {id}: {} bytes", b.len()),
            ));
        }
        let o = INODE_ITEM_LEN;
        let v2 = b.len() >= o + 167;
        let uuid = v2.then(|| {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[o + 87..o + 103]);
            u
        });
        Ok(RootItem {
            generation: le64(b, o),
            root_dirid: le64(b, o + 8),
            bytenr: le64(b, o + 16),
            read_only: le64(b, o + 48) & ROOT_SUBVOL_RDONLY != 0,
            level: b[o + 78],
            uuid,
        })
    }
}

/// A `ROOT_REF`/`ROOT_BACKREF`: the subvolume is entry `name` of
/// directory `dirid` of its parent tree.
#[derive(Debug, Clone)]
pub struct RootRef {
    pub dirid: u64,
    pub name: Vec<u8>,
}

impl RootRef {
    pub fn parse(b: &[u8], id: u64) -> Result<RootRef> {
        let n = usize::from(le16(b, 16));
        let name = b.get(18..18 + n).ok_or_else(|| {
            Error::corrupt(
                "btrfs",
                id,
                format!("root ref of tree {id}: name past the item"),
            )
        })?;
        Ok(RootRef {
            dirid: le64(b, 0),
            name: name.to_vec(),
        })
    }
}
