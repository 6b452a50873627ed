use std::sync::Arc;

use super::FileSystem;
use crate::{Result, Source};

/// A filesystem recognised by its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ntfs,
    /// ext2, ext3 or ext4 (the adapter tells which from the features).
    Ext,
    Xfs,
}

/// Recognises a filesystem by content (never by partition type); `None` if
/// no reader here knows it.
pub fn probe(src: &Source) -> Option<FsKind> {
    let mut boot = [0u8; 512];
    if src.read_exact_at(0, &mut boot).is_ok() && &boot[3..11] == b"NTFS    " {
        return Some(FsKind::Ntfs);
    }
    let mut magic = [0u8; 2];
    if src.read_exact_at(1024 + 56, &mut magic).is_ok() && magic == [0x53, 0xEF] {
        return Some(FsKind::Ext);
    }
    let mut xfs = [0u8; 4];
    if src.read_exact_at(0, &mut xfs).is_ok() && &xfs == b"XFSB" {
        return Some(FsKind::Xfs);
    }
    None
}

/// Opens the filesystem `probe` recognised.
pub fn open(kind: FsKind, src: Source) -> Result<Arc<dyn FileSystem>> {
    Ok(match kind {
        FsKind::Ntfs => Arc::new(super::ntfs::NtfsFs::open(src)?),
        FsKind::Ext => Arc::new(super::ext::ExtFs::open(src)?),
        FsKind::Xfs => Arc::new(super::xfs::XfsFs::open(src)?),
    })
}
