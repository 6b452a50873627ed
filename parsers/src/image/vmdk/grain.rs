//! Grain directory and grain tables of a hosted sparse extent, and the
//! extent as a byte source.
//!
//! A hosted grain table entry (GTE) is the sector of the grain in the extent
//! file; 0 is an unallocated grain and 1 a grain known to be zero. Both read
//! as zeros from the extent itself; in a delta, [`Layer::holds`] sends
//! unallocated grains to the parent (see [`crate::image::chain`]). SESPARSE
//! extents use 64-bit entries with a type nibble; they are decoded into the
//! same three cases.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::cache::ChunkCache;
use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

use super::sparse_header::{SparseHeader, FLAG_REDUNDANT_GT};
use super::stream::{past_end, read_compressed_grain};
use super::LAYER;
use crate::image::chain::Layer;

/// Most grain directory entries we load (32 MiB of directory maps 256 TiB
/// of 64 KiB grains); the bound keeps a hostile capacity from
/// allocating without limit.
const MAX_GD_ENTRIES: u64 = 8 << 20;
/// Bytes of grain tables one open may scan for the allocation count and
/// the redundant-table check, over all extents; beyond it both are skipped
/// so that opening a disk of thousands of extents stays quick.
pub const SCAN_BUDGET: u64 = 64 << 20;

/// How directory and table entries are laid out.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// Hosted sparse, streamOptimized, COWD: 32-bit sector numbers.
    Hosted,
    /// SESPARSE: 64-bit typed entries; tables and grains are numbered from
    /// their areas.
    SeSparse {
        /// Byte offset of the grain table area.
        tables_at: u64,
        /// Sector of the grain area.
        grains_sector: u64,
    },
}

impl Layout {
    fn entry_bytes(self) -> u64 {
        match self {
            Layout::Hosted => 4,
            Layout::SeSparse { .. } => 8,
        }
    }
}

/// SESPARSE entry type nibbles.
const SE_TYPE_SHIFT: u32 = 60;
const SE_LOW: u64 = (1 << SE_TYPE_SHIFT) - 1;

/// A sparse extent (hosted, streamOptimized, COWD, SESPARSE) as a byte
/// source.
pub struct SparseExtent {
    file: Source,
    h: SparseHeader,
    layout: Layout,
    /// Extent size in bytes, as the descriptor gives it.
    size: u64,
    /// Where the grain tables come from.
    tables: Tables,
    /// Bytes of one grain table.
    gt_bytes: u64,
    /// First grain lost with the end of a cut stream: unallocated grains
    /// from here on are unknown, not zero.
    lost_from: Option<u64>,
    /// Cache owner ids: one for grain tables, one for inflated grains.
    gt_owner: u64,
    grain_owner: u64,
    cache: &'static ChunkCache,
}

/// The grain tables of an extent.
enum Tables {
    /// The primary directory's entries, as the layout writes them.
    Dir(Vec<u64>),
    /// Tables rebuilt in memory by walking a stream's grain markers, by
    /// table index; absent tables are unallocated.
    Rebuilt(HashMap<u64, Arc<[u8]>>),
}

/// What the open-time scan of the tables found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Allocated (non-zero, non-sparse) grains, if the scan ran.
    pub allocated_grains: Option<u64>,
    /// Warnings for `info`.
    pub notes: Vec<String>,
}

/// Entry `i` of a table of `width`-byte little-endian entries (0 if out of
/// range: a short table has nothing allocated).
fn entry_at(b: &[u8], i: usize, width: u64) -> u64 {
    let w = width as usize;
    match b.get(i * w..i * w + w) {
        Some(s) => s.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)),
        None => 0,
    }
}

fn read_dir(
    file: &dyn ReadAt,
    sector: u64,
    entries: u64,
    width: u64,
    what: &str,
) -> Result<Vec<u64>> {
    let at = sector
        .checked_mul(512)
        .ok_or_else(|| Error::corrupt(LAYER, 0, format!("{what} sector {sector} overflows")))?;
    let bytes = entries * width;
    if at.checked_add(bytes).is_none_or(|end| end > file.size()) {
        return Err(Error::corrupt(
            LAYER,
            at,
            format!(
                "{what} of {entries} entries reaches past the end of the file ({} bytes)",
                file.size()
            ),
        ));
    }
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact_at(at, &mut raw)
        .map_err(|e| Error::io(LAYER, at, e))?;
    Ok((0..entries as usize)
        .map(|i| entry_at(&raw, i, width))
        .collect())
}

impl SparseExtent {
    /// Opens the extent in `file` whose effective header is `h` (the footer
    /// for a stream with the directory at the end), `size` bytes long.
    pub fn open(file: Source, h: SparseHeader, size: u64) -> Result<Self> {
        Self::open_layout(file, h, size, Layout::Hosted)
    }

    /// Like [`SparseExtent::open`], for entries laid out as `layout` says.
    pub fn open_layout(file: Source, h: SparseHeader, size: u64, layout: Layout) -> Result<Self> {
        let grains = h.capacity.div_ceil(h.grain_sectors);
        let gd_entries = grains.div_ceil(u64::from(h.gtes_per_gt));
        if gd_entries > MAX_GD_ENTRIES {
            return Err(Error::corrupt(
                LAYER,
                h.gd_offset.saturating_mul(512),
                format!("grain directory of {gd_entries} entries is implausibly large"),
            ));
        }
        let gd = read_dir(
            &*file,
            h.gd_offset,
            gd_entries,
            layout.entry_bytes(),
            "grain directory",
        )?;
        Ok(Self::with_tables(file, h, size, layout, Tables::Dir(gd)))
    }

    /// Opens a stream whose directory is lost (a truncated download) from
    /// `grains`: grain number -> sector of its marker, found by walking.
    pub fn open_rebuilt(
        file: Source,
        h: SparseHeader,
        size: u64,
        grains: &HashMap<u64, u32>,
        lost_from: Option<u64>,
    ) -> Self {
        let gtes = u64::from(h.gtes_per_gt);
        let mut tables: HashMap<u64, Vec<u8>> = HashMap::new();
        for (&g, &sector) in grains {
            let t = tables
                .entry(g / gtes)
                .or_insert_with(|| vec![0u8; gtes as usize * 4]);
            let j = (g % gtes) as usize * 4;
            if let Some(e) = t.get_mut(j..j + 4) {
                e.copy_from_slice(&sector.to_le_bytes());
            }
        }
        let tables = tables.into_iter().map(|(k, v)| (k, v.into())).collect();
        let mut ext = Self::with_tables(file, h, size, Layout::Hosted, Tables::Rebuilt(tables));
        ext.lost_from = lost_from;
        ext
    }

    fn with_tables(
        file: Source,
        h: SparseHeader,
        size: u64,
        layout: Layout,
        tables: Tables,
    ) -> Self {
        let gt_bytes = u64::from(h.gtes_per_gt) * layout.entry_bytes();
        SparseExtent {
            file,
            layout,
            size,
            tables,
            lost_from: None,
            gt_bytes,
            gt_owner: ChunkCache::owner(),
            grain_owner: ChunkCache::owner(),
            cache: ChunkCache::global(),
            h,
        }
    }

    /// The header in effect.
    pub fn header(&self) -> &SparseHeader {
        &self.h
    }

    /// Reads the grain table at byte `at`.
    fn read_gt(&self, at: u64) -> Result<Vec<u8>> {
        let mut gt = vec![0u8; self.gt_bytes as usize];
        self.file
            .read_exact_at(at, &mut gt)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::corrupt(
                    LAYER,
                    at,
                    format!(
                        "grain table past the end of the file ({} bytes)",
                        self.file.size()
                    ),
                ),
                _ => Error::io(LAYER, at, e),
            })?;
        Ok(gt)
    }

    /// Grain table `i` (shared through the chunk cache), or `None` when the
    /// directory entry is 0 (no table: every grain in it is unallocated).
    fn gt(&self, i: u64) -> Result<Option<Arc<[u8]>>> {
        let gd = match &self.tables {
            Tables::Dir(gd) => gd,
            Tables::Rebuilt(t) => return Ok(t.get(&i).cloned()),
        };
        let raw = match gd.get(i as usize) {
            Some(&s) => s,
            None => {
                return Err(Error::corrupt(
                    LAYER,
                    i * self.gt_bytes,
                    format!("grain table {i} is beyond the grain directory"),
                ))
            }
        };
        let Some(at) = self.table_at(raw)? else {
            return Ok(None);
        };
        self.cache
            .get_or_load(self.gt_owner, i, || self.read_gt(at))
            .map(Some)
    }

    /// Byte offset of the table a directory entry names, or `None` for an
    /// entry with no table.
    fn table_at(&self, raw: u64) -> Result<Option<u64>> {
        let at = match self.layout {
            Layout::Hosted if raw == 0 => return Ok(None),
            Layout::Hosted => raw.checked_mul(512),
            Layout::SeSparse { tables_at, .. } => match raw >> SE_TYPE_SHIFT {
                0 => return Ok(None),
                1 => (raw & SE_LOW)
                    .checked_mul(self.gt_bytes)
                    .and_then(|b| b.checked_add(tables_at)),
                _ => None,
            },
        };
        at.map(Some)
            .ok_or_else(|| Error::corrupt(LAYER, 0, format!("bad grain directory entry {raw:#x}")))
    }

    /// Decodes table entry `j` of `gt` into 0 (unallocated), 1 (zero) or
    /// the grain's sector.
    fn decode(&self, gt: &[u8], j: usize) -> Result<u64> {
        let e = entry_at(gt, j, self.layout.entry_bytes());
        let Layout::SeSparse { grains_sector, .. } = self.layout else {
            return Ok(e);
        };
        let sector = match e >> SE_TYPE_SHIFT {
            0 if e == 0 => return Ok(0),
            // Unmapped (trimmed) and zeroed grains both read as zeros.
            1 | 2 => return Ok(1),
            3 => {
                // The grain number is split: its low 12 bits sit above the
                // 48-bit high part.
                let cluster = ((e >> 48) & 0xfff) | ((e & 0xffff_ffff_ffff) << 12);
                cluster
                    .checked_mul(self.h.grain_sectors)
                    .and_then(|c| c.checked_add(grains_sector))
                    .filter(|&s| s > 1)
            }
            _ => None,
        };
        sector.ok_or_else(|| Error::corrupt(LAYER, 0, format!("bad grain table entry {e:#x}")))
    }

    /// Grains that hold data in table `gt`.
    fn count_allocated(&self, gt: &[u8]) -> u64 {
        (0..self.h.gtes_per_gt as usize)
            .filter(|&j| self.decode(gt, j).is_ok_and(|s| s > 1))
            .count() as u64
    }

    /// Counts allocated grains and compares the redundant directory, if the
    /// tables fit in what is left of `budget` bytes of reading.
    pub fn scan(&self, budget: &mut u64) -> Scan {
        let mut scan = Scan::default();
        if self.h.unclean_shutdown {
            scan.notes.push(
                "the sparse extent was not closed cleanly (uncleanShutdown set); read as it is"
                    .into(),
            );
        }
        let tables = match &self.tables {
            Tables::Dir(gd) => gd.len() as u64,
            Tables::Rebuilt(t) => {
                let n = t.values().map(|gt| self.count_allocated(gt)).sum();
                scan.allocated_grains = Some(n);
                return scan;
            }
        };
        let cost = tables.saturating_mul(self.gt_bytes).saturating_mul(2);
        if cost > *budget {
            return scan;
        }
        *budget -= cost;
        let rgd = if self.h.flags & FLAG_REDUNDANT_GT != 0 && self.h.rgd_offset != 0 {
            match read_dir(
                &*self.file,
                self.h.rgd_offset,
                tables,
                self.layout.entry_bytes(),
                "redundant grain directory",
            ) {
                Ok(r) => Some(r),
                Err(e) => {
                    scan.notes.push(format!(
                        "redundant grain directory unreadable ({e}); the primary is used"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let mut allocated = 0u64;
        let mut disagree = Vec::new();
        for i in 0..tables {
            let primary = match self.gt(i) {
                Ok(gt) => gt,
                Err(_) => {
                    scan.notes.push(format!(
                        "grain table {i} is unreadable: reads of its grains will fail"
                    ));
                    continue;
                }
            };
            if let Some(gt) = &primary {
                allocated += self.count_allocated(gt);
            }
            let Some(rgd) = &rgd else { continue };
            let r_sector = rgd.get(i as usize).copied().unwrap_or(0);
            let redundant = match self.table_at(r_sector) {
                Ok(Some(at)) => self.read_gt(at).ok(),
                _ => None,
            };
            let same = match (&primary, &redundant) {
                (Some(p), Some(r)) => p[..] == r[..],
                (None, None) => true,
                (None, Some(r)) => r.iter().all(|&b| b == 0),
                (Some(_), None) => false,
            };
            if !same {
                disagree.push(i);
            }
        }
        scan.allocated_grains = Some(allocated);
        if !disagree.is_empty() {
            let shown: Vec<String> = disagree.iter().take(8).map(|i| i.to_string()).collect();
            scan.notes.push(format!(
                "{} redundant grain table(s) disagree with the primary ({}{}); the primary is used",
                disagree.len(),
                shown.join(", "),
                if disagree.len() > 8 { ", ..." } else { "" }
            ));
        }
        scan
    }

    /// Fills `buf` (within the extent) from `offset`; errors name the file
    /// offset that could not be read.
    fn fill(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), (usize, Error)> {
        let gb = self.h.grain_bytes();
        let gtes = u64::from(self.h.gtes_per_gt);
        let len = buf.len();
        let mut pos = 0usize;
        // The current table, kept across grains so a long read looks it up
        // once per table rather than once per grain.
        let mut cur: Option<(u64, Option<Arc<[u8]>>)> = None;
        let mut entry = |g: u64| -> Result<u64> {
            let (t, j) = (g / gtes, (g % gtes) as usize);
            if cur.as_ref().is_none_or(|(ct, _)| *ct != t) {
                cur = Some((t, self.gt(t)?));
            }
            match &cur {
                Some((_, Some(gt))) => self.decode(gt, j),
                _ => Ok(0),
            }
        };
        let sector_at = |s: u64, pos: usize| {
            s.checked_mul(512).ok_or_else(|| {
                (
                    pos,
                    Error::corrupt(LAYER, 0, format!("grain sector {s} overflows")),
                )
            })
        };
        while pos < len {
            let off = offset + pos as u64;
            let g = off / gb;
            let within = off % gb;
            let mut n = (gb - within).min((len - pos) as u64) as usize;
            let gte = entry(g).map_err(|e| (pos, e))?;
            if gte == 0 && self.lost_from.is_some_and(|l| g >= l) {
                return Err((
                    pos,
                    Error::corrupt(
                        LAYER,
                        self.file.size(),
                        format!("grain {g} was lost with the end of the cut stream"),
                    ),
                ));
            } else if gte <= 1 {
                buf[pos..pos + n].fill(0);
            } else if self.h.compressed() {
                let at = sector_at(gte, pos)?;
                let grain = self
                    .cache
                    .get_or_load(self.grain_owner, g, || {
                        read_compressed_grain(&*self.file, &self.h, at, g)
                    })
                    .map_err(|e| (pos, e))?;
                let src = grain
                    .get(within as usize..within as usize + n)
                    .ok_or_else(|| (pos, Error::corrupt(LAYER, at, "short grain")))?;
                buf[pos..pos + n].copy_from_slice(src);
            } else {
                // Grains laid out one after another in the file become one
                // positional read.
                let mut next = g + 1;
                let mut want = gte.saturating_add(self.h.grain_sectors);
                while pos + n < len {
                    let e = entry(next).map_err(|e| (pos, e))?;
                    if e != want {
                        break;
                    }
                    n += (gb as usize).min(len - pos - n);
                    next += 1;
                    want = want.saturating_add(self.h.grain_sectors);
                }
                let at = sector_at(gte, pos)?.saturating_add(within);
                self.file
                    .read_exact_at(at, &mut buf[pos..pos + n])
                    .map_err(|e| (pos, past_end(&*self.file, at, e)))?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl SparseExtent {
    /// The decoded entry of grain `g` (0 unallocated, 1 zero, else sector).
    fn grain_entry(&self, g: u64) -> Result<u64> {
        let gtes = u64::from(self.h.gtes_per_gt);
        match self.gt(g / gtes)? {
            Some(gt) => self.decode(&gt, (g % gtes) as usize),
            None => Ok(0),
        }
    }
}

impl Layer for SparseExtent {
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)> {
        let gb = self.h.grain_bytes();
        // A grain lost with a cut stream is not the parent's: keep it here
        // so that reading it fails.
        let held = |g: u64| -> Result<bool> {
            Ok(self.grain_entry(g)? != 0 || self.lost_from.is_some_and(|l| g >= l))
        };
        let first = held(offset / gb)?;
        let mut len = (gb - offset % gb).min(max);
        while len < max && held((offset + len) / gb)? == first {
            len = len.saturating_add(gb).min(max);
        }
        Ok((first, len))
    }
}

impl ReadAt for SparseExtent {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        match self.fill(offset, &mut buf[..len]) {
            Ok(()) => Ok(len),
            // Hand back what was read; the caller's next read starts at the
            // bad grain and gets the error.
            Err((done, _)) if done > 0 => Ok(done),
            Err((_, e)) => Err(io::Error::other(e)),
        }
    }
}
