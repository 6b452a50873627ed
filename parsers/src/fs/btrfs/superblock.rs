//! The superblock (`btrfs_super_block`, 4096 bytes at 64 KiB, mirrors at
//! 64 MiB and 256 GiB): where the chunk and root trees are, block sizes,
//! the checksum algorithm and the bootstrap chunks (`sys_chunk_array`).

use super::csum::CsumType;
use crate::bytes::{le16, le32, le64};
use crate::{Error, Result};

/// Bytes of a superblock.
pub const SB_LEN: usize = 4096;
/// Where the primary copy and the mirrors sit.
pub const SB_OFFSETS: [u64; 3] = [64 << 10, 64 << 20, 256 << 30];
/// `_BHRfS_M` at byte 0x40.
pub const MAGIC: &[u8; 8] = b"_BHRfS_M";
const MAGIC_OFF: usize = 0x40;
/// Bytes of the bootstrap chunk array at its most.
const SYS_CHUNK_ARRAY_MAX: usize = 2048;
const SYS_CHUNK_ARRAY_OFF: usize = 0x32b;
/// Largest tree block btrfs allows.
const MAX_NODESIZE: u32 = 64 << 10;

/// Incompatible features this reader knows how to read.
const INCOMPAT_MIXED_BACKREF: u64 = 1 << 0;
const INCOMPAT_DEFAULT_SUBVOL: u64 = 1 << 1;
const INCOMPAT_MIXED_GROUPS: u64 = 1 << 2;
const INCOMPAT_COMPRESS_LZO: u64 = 1 << 3;
const INCOMPAT_COMPRESS_ZSTD: u64 = 1 << 4;
const INCOMPAT_BIG_METADATA: u64 = 1 << 5;
const INCOMPAT_EXTENDED_IREF: u64 = 1 << 6;
const INCOMPAT_RAID56: u64 = 1 << 7;
const INCOMPAT_SKINNY_METADATA: u64 = 1 << 8;
const INCOMPAT_NO_HOLES: u64 = 1 << 9;
/// The tree blocks carry `metadata_uuid`, not `fsid`.
pub const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
const INCOMPAT_RAID1C34: u64 = 1 << 11;
const INCOMPAT_ZONED: u64 = 1 << 12;
const INCOMPAT_EXTENT_TREE_V2: u64 = 1 << 13;
const INCOMPAT_RAID_STRIPE_TREE: u64 = 1 << 14;
const INCOMPAT_SIMPLE_QUOTA: u64 = 1 << 16;
const KNOWN_INCOMPAT: u64 = INCOMPAT_MIXED_BACKREF
    | INCOMPAT_DEFAULT_SUBVOL
    | INCOMPAT_MIXED_GROUPS
    | INCOMPAT_COMPRESS_LZO
    | INCOMPAT_COMPRESS_ZSTD
    | INCOMPAT_BIG_METADATA
    | INCOMPAT_EXTENDED_IREF
    | INCOMPAT_RAID56
    | INCOMPAT_SKINNY_METADATA
    | INCOMPAT_NO_HOLES
    | INCOMPAT_METADATA_UUID
    | INCOMPAT_RAID1C34
    | INCOMPAT_ZONED
    | INCOMPAT_SIMPLE_QUOTA;

/// `dev_item`: the device this superblock was read from.
#[derive(Debug, Clone)]
pub struct DevItem {
    pub devid: u64,
}

/// The fields of a superblock this reader uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Where on the device this copy was read.
    pub at: u64,
    pub fsid: [u8; 16],
    /// What tree blocks carry as their fsid.
    pub metadata_uuid: [u8; 16],
    pub generation: u64,
    pub root: u64,
    pub chunk_root: u64,
    pub log_root: u64,
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub num_devices: u64,
    pub sectorsize: u32,
    pub nodesize: u32,
    pub incompat: u64,
    pub csum_type: CsumType,
    pub root_level: u8,
    pub chunk_root_level: u8,
    pub dev: DevItem,
    pub label: String,
    pub sys_chunk_array: Vec<u8>,
    /// `None` when the algorithm is not computed here.
    pub csum_ok: Option<bool>,
}

impl Superblock {
    /// Parses the copy read at device offset `at`; checks the magic,
    /// the sizes and the features (the checksum result is kept in
    /// `csum_ok` for the caller to decide).
    pub fn parse(b: &[u8], at: u64) -> Result<Superblock> {
        let corrupt = |what: &str| Error::corrupt("btrfs", at, format!("superblock: {what}"));
        if b.len() < SB_LEN {
            return Err(corrupt("short"));
        }
        if b.get(MAGIC_OFF..MAGIC_OFF + 8) != Some(&MAGIC[..]) {
            return Err(corrupt("no btrfs magic"));
        }
        if le64(b, 0x30) != at {
            return Err(corrupt("bytenr does not match its position"));
        }
        let raw_csum = le16(b, 0xc4);
        let csum_type = CsumType::from_raw(raw_csum)
            .ok_or_else(|| corrupt(&format!("unknown checksum type {raw_csum}")))?;
        let csum_ok = csum_type.verify(&b[..SB_LEN]);
        let sectorsize = le32(b, 0x90);
        let nodesize = le32(b, 0x94);
        if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
            return Err(corrupt(&format!("sector size {sectorsize}")));
        }
        if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > MAX_NODESIZE {
            return Err(corrupt(&format!("node size {nodesize}")));
        }
        let sys_len = le32(b, 0xa0) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(corrupt(&format!("sys_chunk_array_size {sys_len}")));
        }
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[0x20..0x30]);
        let incompat = le64(b, 0xbc);
        let mut metadata_uuid = fsid;
        if incompat & INCOMPAT_METADATA_UUID != 0 {
            metadata_uuid.copy_from_slice(&b[0x23b..0x24b]);
        }
        let label = &b[0x12b..0x12b + 256];
        let label_len = label.iter().position(|&c| c == 0).unwrap_or(label.len());
        Ok(Superblock {
            at,
            fsid,
            metadata_uuid,
            generation: le64(b, 0x48),
            root: le64(b, 0x50),
            chunk_root: le64(b, 0x58),
            log_root: le64(b, 0x60),
            total_bytes: le64(b, 0x70),
            bytes_used: le64(b, 0x78),
            num_devices: le64(b, 0x88),
            sectorsize,
            nodesize,
            incompat,
            csum_type,
            root_level: b[0xc6],
            chunk_root_level: b[0xc7],
            dev: DevItem {
                devid: le64(b, 0xc9),
            },
            label: String::from_utf8_lossy(&label[..label_len]).into_owned(),
            sys_chunk_array: b[SYS_CHUNK_ARRAY_OFF..SYS_CHUNK_ARRAY_OFF + sys_len].to_vec(),
            csum_ok,
        })
    }

    /// Refuses incompatible features this reader does not know or read.
    pub fn check_features(&self) -> Result<()> {
        let unknown = self.incompat & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(Error::unsupported(
                "btrfs",
                format!("incompatible features {unknown:#x}"),
            ));
        }
        if self.incompat & (INCOMPAT_EXTENT_TREE_V2 | INCOMPAT_RAID_STRIPE_TREE) != 0 {
            return Err(Error::unsupported(
                "btrfs",
                "extent tree v2 / raid stripe tree",
            ));
        }
        Ok(())
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*u).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage() {
        let b = vec![0u8; SB_LEN];
        assert!(Superblock::parse(&b, 65536).is_err());
        assert!(Superblock::parse(&b[..100], 65536).is_err());
    }
}
