//! The two-level cluster map (spec: "Cluster mapping"): L1 entries point at
//! L2 tables, L2 entries say where each guest cluster lives, and with
//! extended L2 entries (incompatible bit 4) a pair of bitmaps says the same
//! for each of the cluster's 32 subclusters.

use crate::{Error, Result};

use super::LAYER;

/// Bits 9-55 of an L1 entry: the L2 table's host offset.
const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9-55 of a standard L2 entry: the data cluster's host offset.
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 62: the cluster is compressed (the rest is a compressed descriptor).
const L2E_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard descriptor: the cluster reads as zeros.
const L2E_ZERO: u64 = 1;
/// Compressed sizes are counted in these sectors.
const SECTOR: u64 = 512;

/// Sizes derived from cluster_bits and the L2 entry width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// 128-bit L2 entries with 32 subclusters per cluster.
    pub extended: bool,
}

impl Geometry {
    pub fn cluster_size(self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes of one L2 entry.
    pub fn entry_size(self) -> u64 {
        if self.extended {
            16
        } else {
            8
        }
    }

    /// log2 of the number of entries in an L2 table (one cluster).
    pub fn l2_bits(self) -> u32 {
        self.cluster_bits - if self.extended { 4 } else { 3 }
    }

    /// log2 of the guest bytes one L2 table maps (at most 2^39).
    pub fn l2_span_bits(self) -> u32 {
        self.cluster_bits + self.l2_bits()
    }

    /// log2 of the smallest unit a mapping can change at: the subcluster
    /// with extended L2, else the cluster.
    pub fn unit_bits(self) -> u32 {
        if self.extended {
            self.cluster_bits - 5
        } else {
            self.cluster_bits
        }
    }

    /// L1 entries a disk of `size` bytes needs.
    pub fn l1_entries_for(self, size: u64) -> u64 {
        size.div_ceil(1 << self.l2_span_bits())
    }
}

/// The L2 table an L1 entry (read from host offset `at`) points at, or
/// `None` when the whole range it covers is unallocated.
pub(super) fn l2_table_offset(entry: u64, geo: Geometry, at: u64) -> Result<Option<u64>> {
    let off = entry & L1E_OFFSET_MASK;
    if off == 0 {
        return Ok(None);
    }
    if off & (geo.cluster_size() - 1) != 0 {
        return Err(Error::corrupt(
            LAYER,
            at,
            format!("L1 entry points at unaligned L2 table offset {off:#x}"),
        ));
    }
    Ok(Some(off))
}

/// Where a compressed cluster's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compressed {
    /// Host byte offset of the compressed data (any alignment).
    pub host: u64,
    /// Bytes the descriptor covers; the last sector may run past the end
    /// of the file, and past the end of the compressed stream.
    pub len: u64,
}

/// What one unit (see [`Geometry::unit_bits`]) of guest space reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// Zeros: a zero cluster or subcluster.
    Zero,
    /// Not allocated: the backing file's bytes, or zeros without one.
    Unallocated,
    /// Stored uncompressed from this host offset.
    Data(u64),
    /// The whole cluster is compressed.
    Compressed(Compressed),
}

/// One L2 entry: the 64-bit cluster descriptor word and, for extended L2,
/// the subcluster bitmap word (allocation bits 0-31, zero bits 32-63).
#[derive(Debug, Clone, Copy)]
pub(super) struct L2Entry {
    word: u64,
    bitmap: u64,
}

fn be64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

impl L2Entry {
    /// Entry `index` of an L2 table's bytes, if the table holds it.
    pub fn read(table: &[u8], index: usize, geo: Geometry) -> Option<L2Entry> {
        let at = index.checked_mul(geo.entry_size() as usize)?;
        let word = be64_at(table, at)?;
        let bitmap = if geo.extended {
            be64_at(table, at + 8)?
        } else {
            0
        };
        Some(L2Entry { word, bitmap })
    }

    /// What subcluster `sub` (always 0 without extended L2) reads as.
    /// `at` is the entry's host offset, for errors.
    pub fn unit(self, sub: u32, geo: Geometry, at: u64) -> Result<Unit> {
        if self.word & L2E_COMPRESSED != 0 {
            return Ok(Unit::Compressed(self.compressed(geo)));
        }
        let host = self.word & L2E_OFFSET_MASK;
        if host & (geo.cluster_size() - 1) != 0 {
            return Err(Error::corrupt(
                LAYER,
                at,
                format!("L2 entry points at unaligned cluster offset {host:#x}"),
            ));
        }
        if !geo.extended {
            return Ok(if self.word & L2E_ZERO != 0 {
                Unit::Zero
            } else if host == 0 {
                Unit::Unallocated
            } else {
                Unit::Data(host)
            });
        }
        let alloc = (self.bitmap >> sub) & 1 != 0;
        let zero = (self.bitmap >> (32 + sub)) & 1 != 0;
        match (alloc, zero) {
            (true, true) => Err(Error::corrupt(
                LAYER,
                at,
                format!("subcluster {sub} is marked both allocated and zero"),
            )),
            (true, false) if host == 0 => Err(Error::corrupt(
                LAYER,
                at,
                format!("subcluster {sub} is allocated in a cluster with no host offset"),
            )),
            (true, false) => Ok(Unit::Data(host + (u64::from(sub) << geo.unit_bits()))),
            (false, true) => Ok(Unit::Zero),
            (false, false) => Ok(Unit::Unallocated),
        }
    }

    /// Decodes a compressed cluster descriptor: with x = 62 minus
    /// (cluster_bits - 8), bits 0..x are the host offset and bits x..62 the
    /// number of 512-byte sectors after the one holding the offset.
    fn compressed(self, geo: Geometry) -> Compressed {
        let shift = 62 - (geo.cluster_bits - 8);
        let host = self.word & ((1u64 << shift) - 1);
        let sectors = ((self.word >> shift) & ((1u64 << (geo.cluster_bits - 8)) - 1)) + 1;
        Compressed {
            host,
            len: sectors * SECTOR - (host % SECTOR),
        }
    }
}
