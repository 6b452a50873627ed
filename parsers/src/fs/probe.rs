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
    /// FAT12, FAT16 or FAT32.
    Fat,
    Exfat,
}

/// Recognises a filesystem by content (never by partition type); `None` if
/// no reader here knows it.
pub fn probe(src: &Source) -> Option<FsKind> {
    let mut boot = [0u8; 512];
    let have_boot = src.read_exact_at(0, &mut boot).is_ok();
    if have_boot && &boot[3..11] == b"NTFS    " {
        return Some(FsKind::Ntfs);
    }
    if have_boot && &boot[3..11] == b"EXFAT   " {
        return Some(FsKind::Exfat);
    }
    let mut magic = [0u8; 2];
    if src.read_exact_at(1024 + 56, &mut magic).is_ok() && magic == [0x53, 0xEF] {
        return Some(FsKind::Ext);
    }
    let mut xfs = [0u8; 4];
    if src.read_exact_at(0, &mut xfs).is_ok() && &xfs == b"XFSB" {
        return Some(FsKind::Xfs);
    }
    // FAT has no magic, only a plausible BPB, so it comes last; mke2fs and
    // mkfs.exfat zero the boot sector, and mkfs.fat the ext superblock, so
    // a reformatted volume is not taken for its old filesystem.
    if have_boot && super::fat::looks_like_fat(&boot) {
        return Some(FsKind::Fat);
    }
    None
}

/// Opens the filesystem `probe` recognised.
pub fn open(kind: FsKind, src: Source) -> Result<Arc<dyn FileSystem>> {
    Ok(match kind {
        FsKind::Ntfs => Arc::new(super::ntfs::NtfsFs::open(src)?),
        FsKind::Ext => Arc::new(super::ext::ExtFs::open(src)?),
        FsKind::Xfs => Arc::new(super::xfs::XfsFs::open(src)?),
        FsKind::Fat => Arc::new(super::fat::FatFs::open(src)?),
        FsKind::Exfat => Arc::new(super::exfat::ExfatFs::open(src)?),
    })
}
