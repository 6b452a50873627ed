//! [MS-VHDX] 2.6: the metadata region: a table of items (file parameters,
//! virtual disk size, sector sizes, page 83 data, parent locator).

use super::region_table::Region;
use super::{guid, le16, le32, le64, show_guid, Guid};
use crate::{Error, ReadAt, Result};

/// Bytes of the metadata table at the start of the region.
const TABLE_SIZE: usize = 64 << 10;
const MAX_ENTRIES: u16 = 2047;
/// Largest item read: the known ones are a few bytes, a parent locator a
/// few KiB; the specification caps items at 1 MiB.
const MAX_ITEM: u32 = 1 << 20;
/// Largest virtual disk the specification allows: 64 TiB.
const MAX_DISK: u64 = 64 << 40;

const FILE_PARAMETERS: Guid = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const PAGE_83_DATA: Guid = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
const PARENT_LOCATOR: Guid = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

/// The metadata items restorefs uses.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Bytes per payload block: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// The disk's SCSI page 83 identifier.
    pub page_83: Option<Guid>,
    /// Parent locator (key, value) pairs, for a differencing disk.
    pub parent_locator: Vec<(String, String)>,
}

fn item_err(at: u64, what: impl Into<String>) -> Error {
    Error::corrupt("vhdx", at, what)
}

impl Metadata {
    /// Reads the metadata region through `source` (the log-replayed file).
    pub fn read(source: &dyn ReadAt, region: Region) -> Result<Metadata> {
        let at = region.offset;
        if (region.length as usize) < TABLE_SIZE {
            return Err(item_err(at, "metadata region smaller than its table"));
        }
        let mut table = vec![0u8; TABLE_SIZE];
        source
            .read_exact_at(at, &mut table)
            .map_err(|e| Error::io("vhdx", at, e))?;
        if table.get(..8) != Some(b"metadata".as_slice()) {
            return Err(item_err(at, "no metadata table signature"));
        }
        let count = le16(&table, 10);
        if count > MAX_ENTRIES {
            return Err(item_err(at + 10, format!("{count} metadata entries")));
        }
        let mut items: Vec<(Guid, u64, Vec<u8>)> = Vec::new();
        for (i, e) in table[32..]
            .chunks_exact(32)
            .take(usize::from(count))
            .enumerate()
        {
            let e_at = at + 32 + 32 * i as u64;
            let mut id = [0u8; 16];
            id.copy_from_slice(&e[..16]);
            let (offset, length, flags) = (le32(e, 16), le32(e, 20), le32(e, 24));
            let known = [
                FILE_PARAMETERS,
                VIRTUAL_DISK_SIZE,
                PAGE_83_DATA,
                LOGICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR_SIZE,
                PARENT_LOCATOR,
            ]
            .contains(&id);
            if !known {
                // Bit 2: IsRequired. An optional unknown item can be skipped.
                if flags & 4 != 0 {
                    return Err(Error::unsupported(
                        "vhdx",
                        format!(
                            "required metadata item {} (entry at offset {e_at})",
                            show_guid(&id)
                        ),
                    ));
                }
                continue;
            }
            if length > MAX_ITEM
                || (length != 0 && (offset as usize) < TABLE_SIZE)
                || u64::from(offset) + u64::from(length) > u64::from(region.length)
            {
                return Err(item_err(
                    e_at,
                    format!("item at {offset} of {length} bytes"),
                ));
            }
            let mut data = vec![0u8; length as usize];
            let item_at = at + u64::from(offset);
            source
                .read_exact_at(item_at, &mut data)
                .map_err(|e| Error::io("vhdx", item_at, e))?;
            items.push((id, item_at, data));
        }
        let find = |id: Guid, min: usize| -> Result<Option<(u64, &[u8])>> {
            match items.iter().find(|(g, _, _)| *g == id) {
                Some((_, a, d)) if d.len() < min => Err(item_err(
                    *a,
                    format!("{}-byte item {}", d.len(), show_guid(&id)),
                )),
                Some((_, a, d)) => Ok(Some((*a, d))),
                None => Ok(None),
            }
        };
        let need = |id: Guid, min: usize, name: &str| -> Result<(u64, &[u8])> {
            find(id, min)?.ok_or_else(|| item_err(at, format!("no {name} metadata item")))
        };
        let (fp_at, fp) = need(FILE_PARAMETERS, 8, "file parameters")?;
        let block_size = le32(fp, 0);
        let flags = le32(fp, 4);
        if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
            return Err(item_err(fp_at, format!("block size {block_size}")));
        }
        let (ls_at, ls) = need(LOGICAL_SECTOR_SIZE, 4, "logical sector size")?;
        let logical_sector_size = le32(ls, 0);
        if logical_sector_size != 512 && logical_sector_size != 4096 {
            return Err(item_err(
                ls_at,
                format!("logical sector size {logical_sector_size}"),
            ));
        }
        let (ps_at, ps) = need(PHYSICAL_SECTOR_SIZE, 4, "physical sector size")?;
        let physical_sector_size = le32(ps, 0);
        if physical_sector_size != 512 && physical_sector_size != 4096 {
            return Err(item_err(
                ps_at,
                format!("physical sector size {physical_sector_size}"),
            ));
        }
        let (vs_at, vs) = need(VIRTUAL_DISK_SIZE, 8, "virtual disk size")?;
        let virtual_size = le64(vs, 0);
        if virtual_size == 0
            || virtual_size > MAX_DISK
            || virtual_size % u64::from(logical_sector_size) != 0
        {
            return Err(item_err(vs_at, format!("virtual disk size {virtual_size}")));
        }
        let page_83 = find(PAGE_83_DATA, 16)?.map(|(_, d)| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&d[..16]);
            g
        });
        let parent_locator = match find(PARENT_LOCATOR, 20)? {
            Some((_, d)) => parse_locator(d),
            None => Vec::new(),
        };
        Ok(Metadata {
            block_size,
            leave_blocks_allocated: flags & 1 != 0,
            has_parent: flags & 2 != 0,
            virtual_size,
            logical_sector_size,
            physical_sector_size,
            page_83,
            parent_locator,
        })
    }
}

/// The key/value pairs of a parent locator item (UTF-16LE strings at
/// offsets from the item's start); entries out of bounds are skipped.
fn parse_locator(d: &[u8]) -> Vec<(String, String)> {
    let count = usize::from(le16(d, 18));
    let text = |off: u32, len: u16| -> Option<String> {
        let s = d.get(off as usize..off as usize + usize::from(len))?;
        let units: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    d.get(20..)
        .unwrap_or_default()
        .chunks_exact(12)
        .take(count)
        .filter_map(|e| {
            let key = text(le32(e, 0), le16(e, 8))?;
            let value = text(le32(e, 4), le16(e, 10))?;
            Some((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parent_locator_pairs() {
        let key: Vec<u8> = "relative_path"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let val: Vec<u8> = "..\\base.vhdx"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut d = vec![0u8; 32];
        d[18..20].copy_from_slice(&1u16.to_le_bytes());
        d[20..24].copy_from_slice(&32u32.to_le_bytes());
        d[24..28].copy_from_slice(&(32 + key.len() as u32).to_le_bytes());
        d[28..30].copy_from_slice(&(key.len() as u16).to_le_bytes());
        d[30..32].copy_from_slice(&(val.len() as u16).to_le_bytes());
        d.extend_from_slice(&key);
        d.extend_from_slice(&val);
        assert_eq!(
            parse_locator(&d),
            vec![("relative_path".to_string(), "..\\base.vhdx".to_string())]
        );
        d.truncate(40);
        assert!(parse_locator(&d).is_empty());
    }
}
