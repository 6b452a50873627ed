//! VMFSSPARSE extents (`COWD` header, ESX delta disks).
//!
//! The layout is the hosted sparse one with fixed 4096-entry grain tables
//! and 32-bit header fields, so the extent is read by [`SparseExtent`].

use std::sync::Arc;

use crate::{Error, ReadAt, Result, Source};

use super::grain::SparseExtent;
use super::sparse_header::{SparseHeader, MAX_GRAIN_SECTORS};
use super::LAYER;

/// Magic at offset 0 of a VMFSSPARSE extent.
pub const MAGIC: &[u8; 4] = b"COWD";
/// Grain table entries per table: fixed in this format.
const GTES_PER_GT: u32 = 4096;

fn u32_at(b: &[u8; 512], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes a COWD header into the equivalent hosted sparse header.
pub fn parse(b: &[u8; 512]) -> Result<SparseHeader> {
    if &b[0..4] != MAGIC {
        return Err(Error::corrupt(LAYER, 0, "no COWD magic"));
    }
    let version = u32_at(b, 4);
    if version != 1 {
        return Err(Error::unsupported(
            LAYER,
            format!("VMFSSPARSE version {version}"),
        ));
    }
    let capacity = u64::from(u32_at(b, 12));
    let grain = u64::from(u32_at(b, 16));
    let gd_offset = u64::from(u32_at(b, 20));
    if grain == 0 || grain > MAX_GRAIN_SECTORS || !grain.is_power_of_two() {
        return Err(Error::corrupt(
            LAYER,
            16,
            format!("grain size of {grain} sectors is not a power of two in 1..=2048"),
        ));
    }
    if gd_offset == 0 {
        return Err(Error::corrupt(LAYER, 20, "no grain directory"));
    }
    Ok(SparseHeader {
        version: 1,
        flags: 0,
        capacity,
        grain_sectors: grain,
        descriptor_offset: 0,
        descriptor_sectors: 0,
        gtes_per_gt: GTES_PER_GT,
        rgd_offset: 0,
        gd_offset,
        overhead: 0,
        // uncleanShutdown sits at byte 1648, past the sector read here;
        // it only matters for a note.
        unclean_shutdown: false,
        compress_algorithm: 0,
    })
}

/// Opens the VMFSSPARSE extent in `file` as `size` bytes.
pub fn open(file: Source, size: u64) -> Result<Arc<SparseExtent>> {
    let mut sector = [0u8; 512];
    file.read_exact_at(0, &mut sector)
        .map_err(|e| Error::io(LAYER, 0, e))?;
    let h = parse(&sector)?;
    Ok(Arc::new(SparseExtent::open(file, h, size)?))
}
