//! VHDX (Hyper-V) disks, laid out as [MS-VHDX]: file type identifier,
//! [`header`]s, [`region_table`], [`log`], [`bat`] and [`metadata`].
//!
//! Fixed and dynamic disks are read; a log left by a crash is replayed in
//! memory first. Differencing disks (.vhdx, .avhdx checkpoints) are chain
//! layers (see [`crate::image::chain`]): the parent is found through the
//! parent locator (`relative_path`, `absolute_win32_path`, `volume_path`)
//! and must carry the data write GUID the child records as
//! `parent_linkage` (or `parent_linkage2`).

// `% n == 0` rather than `is_multiple_of`: the workspace supports Rust 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod bat;
mod differencing;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region_table;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use bat::Bat;
use header::{Header, HEADER_OFFSETS, HEADER_SIZE};
use metadata::Metadata;
use region_table::{RegionTable, TABLE_OFFSETS, TABLE_SIZE};

use super::chain::{Ident, Layer, Opened, ParentLink};
use super::vhd::blocks::BlockDisk;
use super::{Image, ImageFacts};
pub(crate) use crate::bytes::{le16, le32, le64};
use crate::cache::ChunkCache;
use crate::{Error, ReadAt, Result, Source};
use differencing::Differencing;

/// A GUID as stored: the first three fields little-endian.
pub type Guid = [u8; 16];

/// The on-disk bytes of GUID `d1-d2-d3-d4`.
pub(crate) const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// A GUID in its usual text form.
pub(crate) fn show_guid(g: &Guid) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8..]
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 2 {
                format!("-{b:02X}")
            } else {
                format!("{b:02X}")
            })
            .collect::<String>()
    )
}

/// Whether the CRC-32C of `bytes`, with the 4-byte checksum at `field`
/// taken as zero, equals the checksum stored there.
pub(crate) fn crc_ok(bytes: &[u8], field: usize) -> bool {
    let Some(stored) = bytes.get(field..field + 4) else {
        return false;
    };
    let crc = crc32c::crc32c(&bytes[..field]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &bytes[field + 4..]);
    crc.to_le_bytes() == stored
}

/// Whether `file` starts with the VHDX file type identifier.
pub fn probe(file: &dyn ReadAt) -> bool {
    let mut sig = [0u8; 8];
    file.read_exact_at(0, &mut sig).is_ok() && &sig == b"vhdxfile"
}

fn read_vec(file: &dyn ReadAt, at: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(at, &mut buf)
        .map_err(|e| Error::io("vhdx", at, e))?;
    Ok(buf)
}

/// Opens a VHDX recognised by [`probe`].
pub(crate) fn open(_path: &Path, file: Source) -> Result<Opened> {
    let file_bytes = file.size();
    let [h1, h2] = HEADER_OFFSETS
        .map(|at| read_vec(&*file, at, HEADER_SIZE).and_then(|b| Header::parse(&b, at)));
    let header = Header::current(h1, h2)?;
    let mut notes = Vec::new();
    // Every later structure is read through the replayed log, if any.
    let source: Source = if header.log_guid != [0; 16] {
        let r = log::replay(file.clone(), &header)?;
        notes.push(format!(
            "replayed {} log entries (sequence {}..={}) in memory: {} ranges differ from the file",
            r.entries,
            r.sequences.0,
            r.sequences.1,
            r.overlay.patches().len()
        ));
        Arc::new(r.overlay)
    } else {
        file
    };
    let [t1, t2] = TABLE_OFFSETS
        .map(|at| read_vec(&*source, at, TABLE_SIZE).and_then(|b| RegionTable::parse(&b, at)));
    let regions = match (t1, t2) {
        (Ok(t), Ok(_)) => t,
        (Ok(t), Err(e)) | (Err(e), Ok(t)) => {
            notes.push(format!(
                "one region table copy is damaged ({e}); using the other"
            ));
            t
        }
        (Err(e), Err(_)) => return Err(e),
    };
    let meta = Metadata::read(&*source, regions.metadata)?;
    let block_size = u64::from(meta.block_size);
    let ratio = bat::chunk_ratio(meta.logical_sector_size, meta.block_size);
    let blocks = meta.virtual_size.div_ceil(block_size);
    let bat = Bat::new(source.clone(), regions.bat, ratio, blocks)?;
    let bat = if meta.has_parent {
        bat.differencing()
    } else {
        bat
    };
    let allocated = bat.present_blocks()? * block_size;
    let subformat = if meta.has_parent {
        "differencing"
    } else if meta.leave_blocks_allocated {
        "fixed"
    } else {
        "dynamic"
    };
    let facts = ImageFacts {
        subformat: Some(subformat.to_string()),
        allocated_bytes: Some(allocated),
        block_size: Some(block_size),
        cache_budget: Some(ChunkCache::global().stats().budget as u64),
        numbers: vec![
            ("logical_sector_size", u64::from(meta.logical_sector_size)),
            ("physical_sector_size", u64::from(meta.physical_sector_size)),
        ],
        labels: meta
            .page_83
            .map(|g| ("disk_id", show_guid(&g)))
            .into_iter()
            .collect(),
    };
    let blocks = BlockDisk {
        file: source,
        map: bat,
        size: meta.virtual_size,
        block_size,
    };
    let (disk, delta): (Source, _) = if meta.has_parent {
        let layer = Arc::new(Differencing {
            disk: blocks,
            logical_sector: u64::from(meta.logical_sector_size),
            owner: ChunkCache::owner(),
        });
        let link = parent_link(&meta)?;
        (layer.clone(), Some((layer as Arc<dyn Layer>, link)))
    } else {
        (Arc::new(blocks), None)
    };
    let image = Image {
        disk,
        format: "vhdx",
        file_bytes,
        facts,
        notes,
        chain: Vec::new(),
        parent: None,
        ident: None,
    };
    Ok(Opened {
        image,
        delta,
        ident: Some(Ident::new(
            "data write GUID",
            &show_guid(&header.data_write_guid),
        )),
    })
}

/// How a differencing disk names its parent, from its parent locator.
fn parent_link(meta: &Metadata) -> Result<ParentLink> {
    let get = |k: &str| {
        meta.parent_locator
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let linkage = get("parent_linkage").ok_or_else(|| {
        Error::corrupt(
            "vhdx",
            0,
            "differencing disk without a parent_linkage in its parent locator",
        )
    })?;
    let names: Vec<String> = ["relative_path", "absolute_win32_path", "volume_path"]
        .iter()
        .filter_map(|k| get(k))
        .collect();
    let written = meta
        .parent_locator
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ParentLink {
        written,
        names,
        expect: Some(Ident::new("data write GUID", &linkage)),
        also: get("parent_linkage2").map(|l| Ident::new("data write GUID", &l)),
        raw: false,
    })
}
