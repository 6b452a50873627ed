//! SESPARSE extents (space-efficient sparse, ESXi 6.5+ snapshots).
//!
//! A constant header (magic `0xcafebabe`) gives the areas of the file:
//! grain directory, grain tables, grains; a volatile header says whether a
//! journal still has to be replayed. Entries are decoded by
//! [`SparseExtent`] with [`Layout::SeSparse`].

use std::sync::Arc;

use crate::{Error, ReadAt, Result, Source};

use super::grain::{Layout, SparseExtent};
use super::sparse_header::{SparseHeader, MAX_GRAIN_SECTORS, MAX_GTES_PER_GT};
use super::LAYER;

const MAGIC: u64 = 0xcafe_babe;
const VERSION: u64 = 0x0000_0002_0000_0001;
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;

fn u64_at(b: &[u8; 512], i: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(v)
}

/// Opens the SESPARSE extent in `file` as `size` bytes.
pub fn open(file: Source, size: u64) -> Result<Arc<SparseExtent>> {
    let mut b = [0u8; 512];
    file.read_exact_at(0, &mut b)
        .map_err(|e| Error::io(LAYER, 0, e))?;
    if u64_at(&b, 0) != MAGIC {
        return Err(Error::corrupt(LAYER, 0, "no SESPARSE magic"));
    }
    if u64_at(&b, 1) != VERSION {
        return Err(Error::unsupported(
            LAYER,
            format!("SESPARSE version {:#x}", u64_at(&b, 1)),
        ));
    }
    // Fields are 64-bit words, in this order.
    let capacity = u64_at(&b, 2);
    let grain = u64_at(&b, 3);
    let table_sectors = u64_at(&b, 4);
    let volatile = u64_at(&b, 10);
    let gd_sector = u64_at(&b, 16);
    let tables_sector = u64_at(&b, 18);
    let grains_sector = u64_at(&b, 24);
    if grain == 0 || grain > MAX_GRAIN_SECTORS || !grain.is_power_of_two() {
        return Err(Error::corrupt(
            LAYER,
            24,
            format!("grain size of {grain} sectors is not a power of two in 1..=2048"),
        ));
    }
    let gtes = table_sectors.saturating_mul(512 / 8);
    if gtes == 0 || gtes > u64::from(MAX_GTES_PER_GT) {
        return Err(Error::corrupt(
            LAYER,
            32,
            format!("grain tables of {table_sectors} sectors"),
        ));
    }
    if capacity.checked_mul(512).is_none() {
        return Err(Error::corrupt(LAYER, 16, "capacity overflows"));
    }
    let tables_at = tables_sector
        .checked_mul(512)
        .ok_or_else(|| Error::corrupt(LAYER, 144, "grain table area overflows"))?;
    // A journal left to replay holds metadata not yet in the tables:
    // reading without it could return stale grains.
    let vat = volatile.saturating_mul(512);
    let mut v = [0u8; 512];
    file.read_exact_at(vat, &mut v)
        .map_err(|e| Error::io(LAYER, vat, e))?;
    if u64_at(&v, 0) != VOLATILE_MAGIC {
        return Err(Error::corrupt(LAYER, vat, "no SESPARSE volatile header"));
    }
    if u64_at(&v, 3) != 0 {
        return Err(Error::unsupported(
            LAYER,
            "SESPARSE extent whose journal must be replayed",
        ));
    }
    let h = SparseHeader {
        version: 1,
        flags: 0,
        capacity,
        grain_sectors: grain,
        descriptor_offset: 0,
        descriptor_sectors: 0,
        gtes_per_gt: gtes as u32, // bounded above
        rgd_offset: 0,
        gd_offset: gd_sector,
        overhead: 0,
        unclean_shutdown: false,
        compress_algorithm: 0,
    };
    let layout = Layout::SeSparse {
        tables_at,
        grains_sector,
    };
    Ok(Arc::new(SparseExtent::open_layout(file, h, size, layout)?))
}
