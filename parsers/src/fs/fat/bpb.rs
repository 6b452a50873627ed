//! The boot sector's BIOS parameter block: the geometry of a FAT volume.

use super::{le16, le32};
use crate::{Error, Result};

/// Which FAT: the width of a table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// The name `info` and logs show.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// Where everything is, in bytes from the start of the volume.
#[derive(Debug, Clone)]
pub struct Bpb {
    pub fat_type: FatType,
    pub bytes_per_sector: u32,
    pub cluster_size: u32,
    /// The FAT that is read (the first, or the active one of a FAT32 that
    /// does not mirror).
    pub fat_offset: u64,
    /// Bytes of one FAT.
    pub fat_bytes: u64,
    /// FAT12/16 fixed root directory.
    pub root_offset: u64,
    pub root_entries: u32,
    /// FAT32 root directory's first cluster.
    pub root_cluster: u32,
    /// Cluster 2 starts here.
    pub data_offset: u64,
    /// Data clusters: valid cluster numbers are 2..cluster_count + 2.
    pub cluster_count: u32,
    pub total_bytes: u64,
    pub serial: Option<u32>,
    /// The boot sector copy of the label (the root entry wins).
    pub label: Option<[u8; 11]>,
    /// FAT32 FSInfo sector (0 if none).
    pub fsinfo_sector: u16,
}

/// Whether `b` (the first 512 bytes) holds a plausible BPB; the type
/// strings ("FAT16   ") are only hints, so they are not required.
pub fn looks_like_fat(b: &[u8]) -> bool {
    Bpb::parse(b).is_ok()
}

impl Bpb {
    /// Parses and checks the first sector of the volume.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::corrupt("fat", 0, format!("boot sector: {what}"));
        if b.len() < 512 {
            return Err(bad("truncated"));
        }
        if !matches!(b.first(), Some(0xEB | 0xE9)) {
            return Err(bad("no jump instruction"));
        }
        let bps = u32::from(le16(b, 11));
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad("bad bytes per sector"));
        }
        let spc = u32::from(b.get(13).copied().unwrap_or(0));
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad("bad sectors per cluster"));
        }
        let reserved = u64::from(le16(b, 14));
        if reserved == 0 {
            return Err(bad("no reserved sectors"));
        }
        let fats = u64::from(b.get(16).copied().unwrap_or(0));
        if !(1..=2).contains(&fats) {
            return Err(bad("bad FAT count"));
        }
        let root_entries = u32::from(le16(b, 17));
        let total16 = u64::from(le16(b, 19));
        let fatsz16 = u64::from(le16(b, 22));
        let total = if total16 != 0 {
            total16
        } else {
            u64::from(le32(b, 32))
        };
        // As Linux decides: a zero 16-bit FAT size means FAT32, whatever
        // the cluster count.
        let fat32 = fatsz16 == 0;
        let fat_sectors = if fat32 {
            u64::from(le32(b, 36))
        } else {
            fatsz16
        };
        if fat_sectors == 0 {
            return Err(bad("zero FAT size"));
        }
        if fat32 && root_entries != 0 {
            return Err(bad("FAT32 with a fixed root directory"));
        }
        if !fat32 && root_entries == 0 {
            return Err(bad("no root directory entries"));
        }
        let bps64 = u64::from(bps);
        let root_sectors = (u64::from(root_entries) * 32).div_ceil(bps64);
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        if data_sector >= total {
            return Err(bad("no data area"));
        }
        let mut clusters = (total - data_sector) / u64::from(spc);
        let fat_type = if fat32 {
            FatType::Fat32
        } else if clusters < 4085 {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        let fat_bytes = fat_sectors * bps64;
        // A FAT too small for the clusters limits them, as Linux does.
        let fat_entries = match fat_type {
            FatType::Fat12 => fat_bytes * 2 / 3,
            FatType::Fat16 => fat_bytes / 2,
            FatType::Fat32 => fat_bytes / 4,
        };
        let max = match fat_type {
            FatType::Fat12 => 4084,
            FatType::Fat16 => 65524,
            FatType::Fat32 => 0x0FFF_FFF5,
        };
        clusters = clusters.min(fat_entries.saturating_sub(2)).min(max);
        if clusters == 0 {
            return Err(bad("no clusters"));
        }
        let mut active = 0u64;
        let (ext, serial_at) = if fat32 { (66usize, 67usize) } else { (38, 39) };
        if fat32 {
            let flags = le16(b, 40);
            // Bit 7: mirroring off, bits 0-3 name the one FAT in use.
            if flags & 0x80 != 0 {
                active = u64::from(flags & 0x0F);
                if active >= fats {
                    return Err(bad("active FAT out of range"));
                }
            }
        }
        let has_ext = matches!(b.get(ext), Some(0x28 | 0x29));
        let label = (has_ext && b.get(ext) == Some(&0x29))
            .then(|| b.get(serial_at + 4..serial_at + 15))
            .flatten()
            .and_then(|s| <[u8; 11]>::try_from(s).ok());
        Ok(Bpb {
            fat_type,
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            fat_offset: (reserved + active * fat_sectors) * bps64,
            fat_bytes,
            root_offset: (reserved + fats * fat_sectors) * bps64,
            root_entries,
            root_cluster: if fat32 { le32(b, 44) & 0x0FFF_FFFF } else { 0 },
            data_offset: data_sector * bps64,
            cluster_count: clusters as u32,
            total_bytes: total * bps64,
            serial: has_ext.then(|| le32(b, serial_at)),
            label,
            fsinfo_sector: if fat32 { le16(b, 48) } else { 0 },
        })
    }

    /// Byte offset of cluster `c` (2-based); callers check the range.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * u64::from(self.cluster_size)
    }
}
