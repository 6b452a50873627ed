//! Inodes: type, ownership, times, size and the 60-byte `i_block` area.

use super::{le16, le32};
use crate::fs::{FileType, Timespec};
use crate::{Error, Result};

pub mod flags {
    pub const ENCRYPT: u32 = 0x800;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
}

/// Size of the `i_block` area (extent root, block map, inline data, fast
/// symlink target or device number).
pub const I_BLOCK_LEN: usize = 60;
/// Size of the original (ext2) inode; anything after it is "extra".
const GOOD_OLD_INODE_SIZE: usize = 128;

/// A parsed inode.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links_count: u16,
    /// `i_blocks` as stored (unit depends on HUGE_FILE, see `allocated`).
    pub blocks: u64,
    pub flags: u32,
    pub i_block: [u8; I_BLOCK_LEN],
    pub file_acl: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Option<Timespec>,
    /// Bytes after the 128-byte base that hold in-inode xattrs, if any.
    pub xattr_area: Vec<u8>,
}

impl Inode {
    /// Parses an on-disk inode of `b.len()` bytes (the superblock's inode
    /// size); `huge_file` is the filesystem feature, `offset` for errors.
    pub fn parse(ino: u64, b: &[u8], huge_file: bool, offset: u64) -> Result<Self> {
        if b.len() < GOOD_OLD_INODE_SIZE {
            return Err(Error::corrupt("ext", offset, "inode truncated"));
        }
        let mut extra = 0usize;
        if b.len() > GOOD_OLD_INODE_SIZE {
            extra = usize::from(le16(b, 0x80));
            if GOOD_OLD_INODE_SIZE + extra > b.len() || extra & 3 != 0 {
                return Err(Error::corrupt("ext", offset, "bad i_extra_isize"));
            }
        }
        let extra_end = GOOD_OLD_INODE_SIZE + extra;
        // An extra field exists only if i_extra_isize covers it whole.
        let has = |off: usize| off + 4 <= extra_end;
        let time = |base: usize, extra_off: usize| {
            let secs = i64::from(le32(b, base) as i32);
            if has(extra_off) {
                decode_extra_time(secs, le32(b, extra_off))
            } else {
                Timespec { secs, nanos: 0 }
            }
        };
        let blocks_lo = u64::from(le32(b, 0x1C));
        let blocks = if huge_file {
            blocks_lo | (u64::from(le16(b, 0x74)) << 32)
        } else {
            blocks_lo
        };
        let mut i_block = [0u8; I_BLOCK_LEN];
        if let Some(s) = b.get(0x28..0x28 + I_BLOCK_LEN) {
            i_block.copy_from_slice(s);
        }
        Ok(Inode {
            ino,
            mode: le16(b, 0x0),
            uid: u32::from(le16(b, 0x2)) | (u32::from(le16(b, 0x78)) << 16),
            gid: u32::from(le16(b, 0x18)) | (u32::from(le16(b, 0x7A)) << 16),
            size: u64::from(le32(b, 0x4)) | (u64::from(le32(b, 0x6C)) << 32),
            links_count: le16(b, 0x1A),
            blocks,
            flags: le32(b, 0x20),
            i_block,
            file_acl: u64::from(le32(b, 0x68)) | (u64::from(le16(b, 0x76)) << 32),
            atime: time(0x8, 0x8C),
            mtime: time(0x10, 0x88),
            ctime: time(0xC, 0x84),
            crtime: has(0x94).then(|| time(0x90, 0x94)),
            xattr_area: b.get(extra_end..).unwrap_or(&[]).to_vec(),
        })
    }

    /// The node type from the mode's `S_IFMT` bits.
    pub fn kind(&self) -> Option<FileType> {
        mode_kind(self.mode)
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Bytes occupied on disk: `i_blocks` counts 512-byte sectors, or
    /// filesystem blocks for HUGE_FILE inodes on huge_file volumes.
    pub fn allocated(&self, huge_file: bool, block_size: u32) -> u64 {
        if huge_file && self.has_flag(flags::HUGE_FILE) {
            self.blocks.saturating_mul(u64::from(block_size))
        } else {
            self.blocks.saturating_mul(512)
        }
    }

    /// The device number of a device node, as libc's `makedev` builds it.
    pub fn rdev(&self) -> u64 {
        let w0 = le32(&self.i_block, 0);
        let (major, minor) = if w0 != 0 {
            // Old 8:8 encoding in the first word.
            ((w0 >> 8) & 0xff, w0 & 0xff)
        } else {
            // New encoding in the second word: 12-bit major, 20-bit minor.
            let w1 = le32(&self.i_block, 4);
            ((w1 & 0xfff00) >> 8, (w1 & 0xff) | ((w1 >> 12) & 0xfff00))
        };
        makedev(major, minor)
    }
}

/// glibc's `makedev`.
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Type of a mode's `S_IFMT` bits; `None` for a free or garbage inode.
pub fn mode_kind(mode: u16) -> Option<FileType> {
    Some(match mode & 0xF000 {
        0x8000 => FileType::File,
        0x4000 => FileType::Dir,
        0xA000 => FileType::Symlink,
        0x1000 => FileType::Fifo,
        0xC000 => FileType::Socket,
        0x2000 => FileType::CharDevice,
        0x6000 => FileType::BlockDevice,
        _ => return None,
    })
}

/// Applies an `*_extra` word: 2 epoch bits extend the signed 32-bit
/// seconds past 2038, the other 30 bits are nanoseconds.
fn decode_extra_time(secs: i64, extra: u32) -> Timespec {
    let epoch = i64::from(extra & 3);
    let nanos = extra >> 2;
    Timespec {
        secs: secs + (epoch << 32),
        nanos: if nanos < 1_000_000_000 { nanos } else { 0 },
    }
}
