//! The exFAT boot region: main boot sector and its checksum sector.

use crate::fs::fat::{le16, le32, le64};
use crate::{Error, Result};

/// Sectors 0-10 are summed; sector 11 repeats the sum.
pub const REGION_SECTORS: u64 = 12;

/// Geometry from the main boot sector, in bytes.
#[derive(Debug, Clone)]
pub struct Boot {
    pub cluster_size: u32,
    /// The FAT in use.
    pub fat_offset: u64,
    pub fat_bytes: u64,
    pub heap_offset: u64,
    pub cluster_count: u32,
    pub root_cluster: u32,
    pub serial: u32,
    pub volume_bytes: u64,
    /// Set when the volume was not cleanly unmounted.
    pub dirty: bool,
}

/// Bytes per sector claimed by a boot sector (to size the region read).
pub fn sector_size(b: &[u8]) -> Option<u32> {
    let shift = u32::from(*b.get(108)?);
    (9..=12).contains(&shift).then(|| 1 << shift)
}

/// The boot checksum of `region` (sectors 0-10), skipping the volume
/// flags and percent-in-use bytes that change without a rewrite.
pub fn checksum(region: &[u8], sector: usize) -> u32 {
    region
        .iter()
        .take(sector * 11)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 106 | 107 | 112))
        .fold(0u32, |s, (_, &b)| {
            s.rotate_right(1).wrapping_add(u32::from(b))
        })
}

impl Boot {
    /// Parses and checks a 12-sector boot region at byte `at`.
    pub fn parse(region: &[u8], at: u64) -> Result<Self> {
        let bad = |what: &str| Error::corrupt("exfat", at, format!("boot sector: {what}"));
        if region.get(3..11) != Some(b"EXFAT   ".as_slice()) {
            return Err(bad("no EXFAT signature"));
        }
        let bps = sector_size(region).ok_or_else(|| bad("bad bytes per sector"))?;
        let sector = bps as usize;
        if region.len() < sector * REGION_SECTORS as usize {
            return Err(bad("truncated"));
        }
        if le16(region, 510) != 0xAA55 {
            return Err(bad("no boot signature"));
        }
        // The old BPB area must be zero, or FAT code could mistake it.
        if region.get(11..64).is_none_or(|z| z.iter().any(|&b| b != 0)) {
            return Err(bad("BPB area not zero"));
        }
        let sum = checksum(region, sector);
        let stored = region.get(sector * 11..sector * 12).unwrap_or(&[]);
        if stored.is_empty() || stored.chunks_exact(4).any(|c| le32(c, 0) != sum) {
            return Err(bad("boot checksum mismatch"));
        }
        let spc_shift = u32::from(region.get(109).copied().unwrap_or(0xFF));
        let bps_shift = bps.trailing_zeros();
        if spc_shift + bps_shift > 25 {
            return Err(bad("clusters larger than 32 MiB"));
        }
        let fats = u64::from(region.get(110).copied().unwrap_or(0));
        if !(1..=2).contains(&fats) {
            return Err(bad("bad FAT count"));
        }
        let bps64 = u64::from(bps);
        let flags = le16(region, 106);
        let fat_sectors = u64::from(le32(region, 84));
        let active = if flags & 1 != 0 && fats == 2 { 1 } else { 0 };
        let fat_offset = (u64::from(le32(region, 80)) + active * fat_sectors) * bps64;
        let heap_offset = u64::from(le32(region, 88)) * bps64;
        let cluster_count = le32(region, 92);
        let fat_bytes = fat_sectors * bps64;
        if fat_offset < 24 * bps64 || fat_sectors == 0 {
            return Err(bad("FAT inside the boot region"));
        }
        if u64::from(cluster_count) + 2 > fat_bytes / 4 || cluster_count > 0xFFFF_FFF5 {
            return Err(bad("more clusters than the FAT holds"));
        }
        if heap_offset < fat_offset + fat_bytes {
            return Err(bad("cluster heap overlaps the FAT"));
        }
        let root_cluster = le32(region, 96);
        if root_cluster < 2 || u64::from(root_cluster) >= u64::from(cluster_count) + 2 {
            return Err(bad("root cluster out of range"));
        }
        Ok(Boot {
            cluster_size: 1 << (bps_shift + spc_shift),
            fat_offset,
            fat_bytes,
            heap_offset,
            cluster_count,
            root_cluster,
            serial: le32(region, 100),
            volume_bytes: le64(region, 72).saturating_mul(bps64),
            dirty: flags & 2 != 0,
        })
    }

    /// Byte offset of cluster `c` (2-based); callers check the range.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.heap_offset + u64::from(c.saturating_sub(2)) * u64::from(self.cluster_size)
    }

    /// Whether clusters `first..first + n` all exist.
    pub fn valid_run(&self, first: u32, n: u64) -> bool {
        first >= 2 && u64::from(first) + n <= u64::from(self.cluster_count) + 2
    }
}
