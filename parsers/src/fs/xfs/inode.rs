//! Inodes: the core (type, owner, times, size, fork layout) and the raw
//! data and attribute forks that follow it.

use super::{be16, be32, be64};
use crate::fs::{FileType, Timespec};
use crate::{Error, Result};

const MAGIC: u16 = 0x494e; // "IN"
/// Core size of v1/v2 inodes; v3 (v5 filesystems) cores are 176 bytes.
const CORE_V2: usize = 100;
const CORE_V3: usize = 176;

/// `di_flags` bits.
pub mod flags {
    /// Data lives on the realtime device, which an image of the data
    /// device does not have.
    pub const REALTIME: u16 = 0x1;
}
/// `di_flags2` bits.
mod flags2 {
    pub const BIGTIME: u64 = 1 << 3;
    pub const NREXT64: u64 = 1 << 4;
}

/// How a fork stores its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A device number (special files).
    Dev,
    /// Inline in the fork.
    Local,
    /// An array of extent records in the fork.
    Extents,
    /// The root of a B+tree of extent records.
    Btree,
}

impl Format {
    fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            0 => Format::Dev,
            1 => Format::Local,
            2 => Format::Extents,
            3 => Format::Btree,
            _ => return None,
        })
    }
}

/// A parsed inode with copies of its forks.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Blocks allocated, metadata included.
    pub nblocks: u64,
    pub flags: u16,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Option<Timespec>,
    pub format: Format,
    pub nextents: u64,
    pub aformat: Option<Format>,
    pub anextents: u64,
    /// The data fork bytes.
    pub data: Vec<u8>,
    /// The attribute fork bytes; empty if the inode has none.
    pub attr: Vec<u8>,
}

impl Inode {
    /// Parses the on-disk inode `b` (the superblock's inode size) that
    /// should be number `ino`; `offset` is for errors.
    pub fn parse(ino: u64, b: &[u8], v5: bool, offset: u64) -> Result<Self> {
        let bad = |what: &str| Error::corrupt("xfs", offset, format!("inode {ino}: {what}"));
        if be16(b, 0) != MAGIC {
            return Err(bad("bad magic"));
        }
        let version = b.get(4).copied().unwrap_or(0);
        let core = match version {
            1 | 2 if !v5 => CORE_V2,
            3 if v5 => CORE_V3,
            _ => return Err(bad("bad inode version")),
        };
        if b.len() <= core {
            return Err(bad("inode truncated"));
        }
        // A v3 inode records its own number: a mismatch means we were sent
        // somewhere that is not this inode (a stale or corrupt number).
        if version == 3 && be64(b, 152) != ino {
            return Err(bad("inode number does not match its location"));
        }
        let format = Format::from_raw(b.get(5).copied().unwrap_or(0xff))
            .ok_or_else(|| bad("bad data fork format"))?;
        let flags2 = if version == 3 { be64(b, 120) } else { 0 };
        let bigtime = flags2 & flags2::BIGTIME != 0;
        let time = |off: usize| decode_time(be64(b, off), bigtime);
        let (nextents, anextents) = if flags2 & flags2::NREXT64 != 0 {
            (be64(b, 24), u64::from(be32(b, 76)))
        } else {
            (u64::from(be32(b, 76)), u64::from(be16(b, 80)))
        };
        let forkoff = usize::from(b.get(82).copied().unwrap_or(0)) * 8;
        let lit = b.len() - core;
        if forkoff >= lit {
            return Err(bad("attribute fork offset past the inode"));
        }
        let (data, attr, aformat) = if forkoff == 0 {
            (b.get(core..).unwrap_or(&[]), &[][..], None)
        } else {
            let aformat = Format::from_raw(b.get(83).copied().unwrap_or(0xff))
                .ok_or_else(|| bad("bad attribute fork format"))?;
            (
                b.get(core..core + forkoff).unwrap_or(&[]),
                b.get(core + forkoff..).unwrap_or(&[]),
                Some(aformat),
            )
        };
        let size = be64(b, 56);
        if size > i64::MAX as u64 {
            return Err(bad("negative size"));
        }
        Ok(Inode {
            ino,
            mode: be16(b, 2),
            uid: be32(b, 8),
            gid: be32(b, 12),
            nlink: if version == 1 {
                u32::from(be16(b, 6))
            } else {
                be32(b, 16)
            },
            size,
            nblocks: be64(b, 64),
            flags: be16(b, 90),
            atime: time(32),
            mtime: time(40),
            ctime: time(48),
            crtime: (version == 3).then(|| time(144)),
            format,
            nextents,
            aformat,
            anextents,
            data: data.to_vec(),
            attr: attr.to_vec(),
        })
    }

    /// The node type from the mode, if valid.
    pub fn kind(&self) -> Option<FileType> {
        Some(match self.mode & 0o170000 {
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

    /// The device number of a device node, as `makedev(major, minor)`.
    pub fn rdev(&self) -> u64 {
        // XFS stores a 32-bit number: 14 bits of major, 18 of minor.
        let raw = be32(&self.data, 0);
        let major = u64::from(raw >> 18);
        let minor = u64::from(raw & 0x3ffff);
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }
}

/// Decodes an on-disk timestamp: either seconds and nanoseconds (32 bits
/// each) or, with bigtime, nanoseconds since 1901-12-13 (the old minimum),
/// so that all old timestamps stay representable.
pub fn decode_time(raw: u64, bigtime: bool) -> Timespec {
    if bigtime {
        const BIAS: i64 = 1 << 31;
        Timespec {
            secs: (raw / 1_000_000_000) as i64 - BIAS,
            nanos: (raw % 1_000_000_000) as u32,
        }
    } else {
        Timespec {
            secs: i64::from((raw >> 32) as u32 as i32),
            nanos: (raw as u32).min(999_999_999),
        }
    }
}
