//! `INODE_ITEM` (`btrfs_inode_item`, 160 bytes): generation, transid,
//! size, nbytes, block_group, nlink, uid, gid, mode, rdev, flags,
//! sequence, reserved, then atime, ctime, mtime, otime (`btrfs_timespec`:
//! i64 seconds, u32 nanoseconds).

use crate::bytes::{le32, le64};
use crate::fs::{FileType, Timespec};
use crate::{Error, Result};

pub const INODE_ITEM_LEN: usize = 160;

#[derive(Debug, Clone)]
pub struct InodeItem {
    pub size: u64,
    pub nbytes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The kernel's `dev_t` (major << 20 | minor).
    pub rdev: u64,
    pub atime: Timespec,
    pub ctime: Timespec,
    pub mtime: Timespec,
    pub otime: Timespec,
}

fn time(b: &[u8], off: usize) -> Timespec {
    Timespec {
        secs: le64(b, off) as i64,
        nanos: le32(b, off + 8).min(999_999_999),
    }
}

impl InodeItem {
    /// Parses the item of inode `ino` (named in errors).
    pub fn parse(b: &[u8], ino: u64) -> Result<InodeItem> {
        if b.len() < INODE_ITEM_LEN {
            return Err(Error::corrupt(
                "btrfs",
                ino,
                format!("inode {ino}: item of {} bytes", b.len()),
            ));
        }
        Ok(InodeItem {
            size: le64(b, 16),
            nbytes: le64(b, 24),
            nlink: le32(b, 40),
            uid: le32(b, 44),
            gid: le32(b, 48),
            mode: le32(b, 52),
            rdev: le64(b, 56),
            atime: time(b, 112),
            ctime: time(b, 124),
            mtime: time(b, 136),
            otime: time(b, 148),
        })
    }

    /// The type from the mode's `S_IFMT` bits; `None` if none is valid.
    pub fn kind(&self) -> Option<FileType> {
        type_from_mode(self.mode)
    }

    /// `makedev(major, minor)` as userspace sees it.
    pub fn rdev(&self) -> u64 {
        let major = ((self.rdev >> 20) & 0xfff) as u32;
        let minor = (self.rdev & 0xf_ffff) as u32;
        libc::makedev(major, minor)
    }
}

pub fn type_from_mode(mode: u32) -> Option<FileType> {
    Some(match mode & 0o170000 {
        0o100000 => FileType::File,
        0o040000 => FileType::Dir,
        0o120000 => FileType::Symlink,
        0o010000 => FileType::Fifo,
        0o140000 => FileType::Socket,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        _ => return None,
    })
}
