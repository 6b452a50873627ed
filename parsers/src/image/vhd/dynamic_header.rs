//! The VHD dynamic disk header ("cxsparse"): where the BAT is, the block
//! size, and for a differencing disk the parent's name and locators.

use super::footer::{be32, be64, checksum};
use crate::{Error, Result};

/// Size of the dynamic header on disk.
pub const HEADER_SIZE: usize = 1024;
/// The dynamic header cookie.
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// Largest block size accepted: far above what any tool writes (2 MiB by
/// default), and it bounds the sector bitmap we skip.
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;

/// One parent locator entry: where a platform-specific parent path is stored.
#[derive(Debug, Clone)]
pub struct ParentLocator {
    /// `W2ku`, `W2ru` (UTF-16LE paths), `Wi2k`, `Wi2r` (legacy), `MacX`.
    pub platform_code: [u8; 4],
    /// Bytes of path data.
    pub data_length: u32,
    /// Image offset of the path data.
    pub data_offset: u64,
}

/// The dynamic header fields restorefs uses.
#[derive(Debug, Clone)]
pub struct DynamicHeader {
    /// Image offset of the block allocation table.
    pub table_offset: u64,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes of data per block (a power of two in practice; a multiple of
    /// 512 is all the reader needs).
    pub block_size: u32,
    /// The parent's unique id (its footer's), for differencing disks.
    pub parent_unique_id: [u8; 16],
    /// The parent's file name, for differencing disks.
    pub parent_name: String,
    /// Non-empty parent locators, for differencing disks.
    pub parent_locators: Vec<ParentLocator>,
}

impl DynamicHeader {
    /// Parses and checks a dynamic header read from image offset `at`.
    pub fn parse(bytes: &[u8], at: u64) -> Result<DynamicHeader> {
        if bytes.len() < HEADER_SIZE || bytes.get(..8) != Some(COOKIE.as_slice()) {
            return Err(Error::corrupt(
                "vhd",
                at,
                "no dynamic header cookie \"cxsparse\"",
            ));
        }
        let bytes = &bytes[..HEADER_SIZE];
        let stored = be32(bytes, 36);
        let computed = checksum(bytes, 36);
        if stored != computed {
            return Err(Error::corrupt(
                "vhd",
                at + 36,
                format!("dynamic header checksum {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        let version = be32(bytes, 24);
        if version >> 16 != 1 {
            return Err(Error::unsupported(
                "vhd",
                format!("dynamic header at offset {at}: version {version:#x}"),
            ));
        }
        let block_size = be32(bytes, 32);
        if block_size == 0 || block_size % 512 != 0 || block_size > MAX_BLOCK_SIZE {
            return Err(Error::corrupt(
                "vhd",
                at + 32,
                format!("block size {block_size} is not a multiple of 512 up to 256 MiB"),
            ));
        }
        let name: Vec<u16> = bytes[64..576]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let parent_locators = bytes[576..768]
            .chunks_exact(24)
            .filter_map(|e| {
                let mut platform_code = [0u8; 4];
                platform_code.copy_from_slice(&e[..4]);
                let loc = ParentLocator {
                    platform_code,
                    data_length: be32(e, 8),
                    data_offset: be64(e, 16),
                };
                (be32(e, 0) != 0 && loc.data_length != 0).then_some(loc)
            })
            .collect();
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&bytes[40..56]);
        Ok(DynamicHeader {
            parent_unique_id,
            table_offset: be64(bytes, 16),
            max_table_entries: be32(bytes, 28),
            block_size,
            parent_name: String::from_utf16_lossy(&name),
            parent_locators,
        })
    }

    /// Bytes of the sector bitmap in front of each block's data: one bit per
    /// 512-byte sector, padded to a whole sector.
    pub fn bitmap_size(&self) -> u64 {
        let sectors = u64::from(self.block_size) / 512;
        sectors.div_ceil(8).div_ceil(512) * 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(block_size: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        h[..8].copy_from_slice(COOKIE);
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[16..24].copy_from_slice(&1536u64.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&10u32.to_be_bytes());
        h[32..36].copy_from_slice(&block_size.to_be_bytes());
        for (i, c) in "base.vhd".encode_utf16().enumerate() {
            h[64 + 2 * i..66 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        let c = checksum(&h, 36);
        h[36..40].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn parses_fields_and_bitmap_size() -> crate::Result<()> {
        let h = DynamicHeader::parse(&sample(2 << 20), 512)?;
        assert_eq!(h.table_offset, 1536);
        assert_eq!(h.max_table_entries, 10);
        assert_eq!(h.parent_name, "base.vhd");
        assert_eq!(h.bitmap_size(), 512);
        let h = DynamicHeader::parse(&sample(32 << 20), 512)?;
        // 65536 sectors -> 8192 bitmap bytes.
        assert_eq!(h.bitmap_size(), 8192);
        let h = DynamicHeader::parse(&sample(512 << 10), 512)?;
        assert_eq!(h.bitmap_size(), 512);
        Ok(())
    }

    #[test]
    fn rejects_bad_checksum_and_block_size() {
        let mut h = sample(2 << 20);
        h[300] ^= 1;
        assert!(DynamicHeader::parse(&h, 0).is_err());
        assert!(DynamicHeader::parse(&sample(1000), 0).is_err());
        assert!(DynamicHeader::parse(&sample(0), 0).is_err());
    }
}
