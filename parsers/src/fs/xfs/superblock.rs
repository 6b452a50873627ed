//! The primary superblock (sector 0 of AG 0): geometry and features.

use super::{be16, be32, be64};
use crate::{Error, Result};

/// Bytes of the superblock we parse (it fills a sector; the rest is zero).
pub const SB_LEN: usize = 512;
const MAGIC: &[u8; 4] = b"XFSB";

/// v4 feature bits in `sb_versionnum`.
mod version {
    pub const NUM_MASK: u16 = 0x000f;
    pub const LOGV2: u16 = 0x0400;
    pub const MOREBITS: u16 = 0x8000;
}
/// v4 feature bits in `sb_features2`.
mod features2 {
    pub const FTYPE: u32 = 0x200;
}
/// v5 incompatible feature bits; anything not listed here is refused.
pub mod incompat {
    pub const FTYPE: u32 = 1 << 0;
    pub const SPINODES: u32 = 1 << 1;
    pub const META_UUID: u32 = 1 << 2;
    pub const BIGTIME: u32 = 1 << 3;
    pub const NEEDSREPAIR: u32 = 1 << 4;
    pub const NREXT64: u32 = 1 << 5;
    pub const EXCHRANGE: u32 = 1 << 6;
    pub const PARENT: u32 = 1 << 7;
    /// Everything this reader understands (needsrepair is known but refused).
    pub const KNOWN: u32 =
        FTYPE | SPINODES | META_UUID | BIGTIME | NEEDSREPAIR | NREXT64 | EXCHRANGE | PARENT;
}

/// A parsed superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub block_size: u32,
    pub dblocks: u64,
    pub uuid: [u8; 16],
    /// First block of an internal log (fs block number); 0 if external.
    pub log_start: u64,
    pub log_blocks: u32,
    pub root_ino: u64,
    pub ag_blocks: u32,
    pub ag_count: u32,
    /// 4 or 5.
    pub version: u16,
    pub inode_size: u16,
    pub label: [u8; 12],
    pub blocklog: u8,
    pub inodelog: u8,
    pub inopblog: u8,
    pub agblklog: u8,
    pub dirblklog: u8,
    /// Inode chunk alignment in blocks (`sb_inoalignmt`).
    pub inoalignmt: u32,
    /// `sb_spino_align` with sparse inodes, else 0.
    pub spino_align: u32,
    /// The UUID metadata is stamped with: `sb_meta_uuid` when the
    /// META_UUID feature is set, else `uuid`.
    pub meta_uuid: [u8; 16],
    /// Log version 2 records (always on v5).
    pub log_v2: bool,
    /// The log stripe unit in bytes (`sb_logsunit`), which sizes records.
    pub log_sunit: u32,
    pub inprogress: bool,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub has_ftype: bool,
    pub incompat: u32,
    /// The stored CRC matched (v5 only; always true on v4).
    pub crc_ok: bool,
}

impl Superblock {
    /// Parses and sanity-checks the superblock in `b` (a sector or more).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::corrupt("xfs", 0, format!("superblock: {what}"));
        if b.len() < SB_LEN || b.get(..4) != Some(MAGIC.as_slice()) {
            return Err(bad("no XFSB magic"));
        }
        let versionnum = be16(b, 100);
        let version = versionnum & version::NUM_MASK;
        if version != 4 && version != 5 {
            return Err(Error::unsupported(
                "xfs",
                format!("superblock version {version}"),
            ));
        }
        let block_size = be32(b, 4);
        let sect_size = be16(b, 102);
        let inode_size = be16(b, 104);
        let inopblock = be16(b, 106);
        let blocklog = b.get(120).copied().unwrap_or(0);
        let inodelog = b.get(122).copied().unwrap_or(0);
        let inopblog = b.get(123).copied().unwrap_or(0);
        let agblklog = b.get(124).copied().unwrap_or(0);
        let dirblklog = b.get(192).copied().unwrap_or(0);
        // Every derived shift must agree with its size, or inode numbers
        // and block addresses would decode to the wrong place.
        if !(512..=65536).contains(&block_size)
            || !block_size.is_power_of_two()
            || 1u32 << blocklog.min(31) != block_size
        {
            return Err(bad("bad block size"));
        }
        if !(256..=2048).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || 1u16 << inodelog.min(15) != inode_size
            || u32::from(inode_size) > block_size
            || u32::from(inopblock) != block_size / u32::from(inode_size)
            || 1u16 << inopblog.min(15) != inopblock
        {
            return Err(bad("bad inode size"));
        }
        if !(512..=32768).contains(&sect_size) || !sect_size.is_power_of_two() {
            return Err(bad("bad sector size"));
        }
        let ag_blocks = be32(b, 84);
        let ag_count = be32(b, 88);
        let dblocks = be64(b, 8);
        if ag_blocks < 16
            || ag_count == 0
            || agblklog > 31
            || u64::from(ag_blocks) > 1u64 << agblklog
            || u64::from(ag_blocks) <= 1u64 << agblklog.saturating_sub(1)
        {
            return Err(bad("bad allocation group geometry"));
        }
        let ag_span = u64::from(ag_count) * u64::from(ag_blocks);
        if dblocks == 0 || dblocks > ag_span || dblocks + u64::from(ag_blocks) <= ag_span {
            return Err(bad("block count does not match the AGs"));
        }
        if u32::from(dirblklog) + u32::from(blocklog) > 16 {
            return Err(bad("bad directory block size"));
        }
        let incompat = if version == 5 { be32(b, 216) } else { 0 };
        let has_ftype = if version == 5 {
            incompat & incompat::FTYPE != 0
        } else {
            versionnum & version::MOREBITS != 0 && be32(b, 200) & features2::FTYPE != 0
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(b.get(32..48).unwrap_or(&[0; 16]));
        let mut label = [0u8; 12];
        label.copy_from_slice(b.get(108..120).unwrap_or(&[0; 12]));
        let crc_ok = version != 5 || {
            let mut s = b.get(..usize::from(sect_size)).unwrap_or(b).to_vec();
            if let Some(c) = s.get_mut(224..228) {
                c.fill(0);
            }
            crc32c::crc32c(&s)
                == u32::from_le_bytes(
                    b.get(224..228)
                        .and_then(|c| c.try_into().ok())
                        .unwrap_or([0; 4]),
                )
        };
        Ok(Superblock {
            block_size,
            dblocks,
            uuid,
            log_start: be64(b, 48),
            log_blocks: be32(b, 96),
            root_ino: be64(b, 56),
            ag_blocks,
            ag_count,
            version,
            inode_size,
            label,
            blocklog,
            inodelog,
            inopblog,
            agblklog,
            dirblklog,
            inoalignmt: be32(b, 180),
            spino_align: if incompat & incompat::SPINODES != 0 {
                be32(b, 228)
            } else {
                0
            },
            meta_uuid: if incompat & incompat::META_UUID != 0 {
                let mut m = [0u8; 16];
                m.copy_from_slice(b.get(248..264).unwrap_or(&[0; 16]));
                m
            } else {
                uuid
            },
            log_v2: version == 5 || versionnum & version::LOGV2 != 0,
            log_sunit: be32(b, 196),
            inprogress: b.get(126).copied().unwrap_or(0) != 0,
            icount: be64(b, 128),
            ifree: be64(b, 136),
            fdblocks: be64(b, 144),
            has_ftype,
            incompat,
            crc_ok,
        })
    }

    /// Refuses what we cannot read correctly: repairs pending and unknown
    /// incompatible features (read-only compatible ones are fine to read).
    pub fn check_features(&self) -> Result<()> {
        if self.incompat & incompat::NEEDSREPAIR != 0 {
            return Err(Error::unsupported(
                "xfs",
                "filesystem is marked needsrepair (run xfs_repair on a copy first)",
            ));
        }
        let unknown = self.incompat & !incompat::KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(
                "xfs",
                format!("unknown incompatible features {unknown:#x}"),
            ));
        }
        Ok(())
    }

    /// Whether v5 (CRC-enabled, self-describing metadata headers).
    pub fn is_v5(&self) -> bool {
        self.version == 5
    }

    /// Directory block size in bytes.
    pub fn dir_block_size(&self) -> u32 {
        self.block_size << self.dirblklog
    }

    /// The label, if set.
    pub fn label(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(12);
        let s = String::from_utf8_lossy(self.label.get(..end).unwrap_or(&[]));
        (!s.is_empty()).then(|| s.into_owned())
    }

    /// The UUID in its usual text form.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }

    /// Linear block index (AG-major, from the start of the device) of the
    /// fs block number `fsb`, whose high bits are the AG; `None` if it
    /// points outside the filesystem.
    pub fn linear_block(&self, fsb: u64) -> Option<u64> {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return None;
        }
        let lin = agno * u64::from(self.ag_blocks) + agbno;
        (lin < self.dblocks).then_some(lin)
    }

    /// Byte offset of inode `ino`, decoded from its number (AG, block in
    /// AG, slot in block); `None` if the number cannot be valid.
    pub fn inode_offset(&self, ino: u64) -> Option<u64> {
        let shift = u32::from(self.agblklog) + u32::from(self.inopblog);
        if shift >= 64 {
            return None;
        }
        let slot = ino & ((1u64 << self.inopblog) - 1);
        let block = self.linear_block(ino >> self.inopblog)?;
        block
            .checked_mul(u64::from(self.block_size))?
            .checked_add(slot * u64::from(self.inode_size))
    }
}
