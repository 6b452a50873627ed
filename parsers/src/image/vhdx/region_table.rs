//! [MS-VHDX] 2.2.3: the region table (two copies, at 192 KiB and 256 KiB)
//! locating the BAT and metadata regions.

use super::{crc_ok, guid, le32, le64, show_guid, Guid};
use crate::{Error, Result};

/// Image offsets of the two region table copies.
pub const TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes covered by a region table's checksum.
pub const TABLE_SIZE: usize = 64 << 10;
/// Most entries a table may hold.
const MAX_ENTRIES: u32 = 2047;

/// The BAT region.
pub const BAT_REGION: Guid = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// The metadata region.
pub const METADATA_REGION: Guid = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// A region's place in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub length: u32,
}

/// The two regions a disk needs.
#[derive(Debug, Clone, Copy)]
pub struct RegionTable {
    pub bat: Region,
    pub metadata: Region,
}

impl RegionTable {
    /// Parses and checks the table copy read from image offset `at`.
    pub fn parse(bytes: &[u8], at: u64) -> Result<RegionTable> {
        if bytes.len() < TABLE_SIZE || bytes.get(..4) != Some(b"regi".as_slice()) {
            return Err(Error::corrupt(
                "vhdx",
                at,
                "no region table signature \"regi\"",
            ));
        }
        if !crc_ok(&bytes[..TABLE_SIZE], 4) {
            return Err(Error::corrupt(
                "vhdx",
                at + 4,
                "region table checksum mismatch",
            ));
        }
        let count = le32(bytes, 8);
        if count > MAX_ENTRIES {
            return Err(Error::corrupt(
                "vhdx",
                at + 8,
                format!("{count} region entries"),
            ));
        }
        let (mut bat, mut metadata) = (None, None);
        for (i, e) in bytes[16..]
            .chunks_exact(32)
            .take(count as usize)
            .enumerate()
        {
            let e_at = at + 16 + 32 * i as u64;
            let mut id = [0u8; 16];
            id.copy_from_slice(&e[..16]);
            let region = Region {
                offset: le64(e, 16),
                length: le32(e, 24),
            };
            let required = le32(e, 28) & 1 != 0;
            let slot = match id {
                BAT_REGION => &mut bat,
                METADATA_REGION => &mut metadata,
                _ if required => {
                    return Err(Error::unsupported(
                        "vhdx",
                        format!(
                            "required region {} (entry at offset {e_at})",
                            show_guid(&id)
                        ),
                    ))
                }
                _ => continue,
            };
            // Regions are 1 MiB aligned and never overlap the headers.
            if region.offset % (1 << 20) != 0 || region.offset == 0 || region.length == 0 {
                return Err(Error::corrupt(
                    "vhdx",
                    e_at,
                    format!("region at {} of {} bytes", region.offset, region.length),
                ));
            }
            if slot.replace(region).is_some() {
                return Err(Error::corrupt("vhdx", e_at, "region listed twice"));
            }
        }
        match (bat, metadata) {
            (Some(bat), Some(metadata)) => Ok(RegionTable { bat, metadata }),
            _ => Err(Error::corrupt(
                "vhdx",
                at,
                "region table lacks the BAT or metadata region",
            )),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(extra: Option<(Guid, u32)>) -> Vec<u8> {
        let mut t = vec![0u8; TABLE_SIZE];
        t[..4].copy_from_slice(b"regi");
        let mut entries = vec![
            (BAT_REGION, 3u64 << 20, 1u32 << 20, 1u32),
            (METADATA_REGION, 2 << 20, 1 << 20, 1),
        ];
        if let Some((g, req)) = extra {
            entries.push((g, 4 << 20, 1 << 20, req));
        }
        t[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (g, off, len, req)) in entries.iter().enumerate() {
            let e = &mut t[16 + 32 * i..48 + 32 * i];
            e[..16].copy_from_slice(g);
            e[16..24].copy_from_slice(&off.to_le_bytes());
            e[24..28].copy_from_slice(&len.to_le_bytes());
            e[28..32].copy_from_slice(&req.to_le_bytes());
        }
        let c = crc32c::crc32c(&t);
        t[4..8].copy_from_slice(&c.to_le_bytes());
        t
    }

    #[test]
    fn finds_regions_and_refuses_unknown_required() -> crate::Result<()> {
        let r = RegionTable::parse(&sample(None), 0)?;
        assert_eq!(
            r.bat,
            Region {
                offset: 3 << 20,
                length: 1 << 20
            }
        );
        assert_eq!(r.metadata.offset, 2 << 20);
        assert!(RegionTable::parse(&sample(Some(([7; 16], 0))), 0).is_ok());
        let e = RegionTable::parse(&sample(Some(([7; 16], 1))), 0).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let mut bad = sample(None);
        bad[1000] = 1;
        assert!(RegionTable::parse(&bad, 0).is_err());
        Ok(())
    }
}
