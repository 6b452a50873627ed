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
    Btrfs,
}

impl FsKind {
    /// `ntfs`, `ext`, `xfs`, `fat`, `exfat`: the name in `info` and `--json`
    /// (the filesystem's own [`super::FsInfo::kind`] says `ext4`, `fat32`).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ntfs => "ntfs",
            FsKind::Ext => "ext",
            FsKind::Xfs => "xfs",
            FsKind::Fat => "fat",
            FsKind::Exfat => "exfat",
            FsKind::Btrfs => "btrfs",
        }
    }
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
    let mut btrfs = [0u8; 0x48];
    if src.read_exact_at(64 << 10, &mut btrfs).is_ok() && super::btrfs::has_magic(&btrfs) {
        return Some(FsKind::Btrfs);
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
        FsKind::Btrfs => Arc::new(super::btrfs::BtrfsFs::open(src)?),
    })
}
