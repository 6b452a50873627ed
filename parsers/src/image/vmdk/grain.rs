//! Grain directory and grain tables of a hosted sparse extent, and the
//! extent as a byte source.
//!
//! A grain table entry (GTE) is the sector of the grain in the extent file;
//! 0 is an unallocated grain and 1 a grain known to be zero. Both read as
//! zeros here because disks with a parent are refused at open.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::cache::ChunkCache;
use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

use super::sparse_header::{SparseHeader, FLAG_REDUNDANT_GT};
use super::stream::{past_end, read_compressed_grain};
use super::LAYER;

/// Most grain directory entries we load (32 MiB of directory maps 256 TiB
/// of 64 KiB grains); the bound keeps a hostile capacity from
/// allocating without limit.
const MAX_GD_ENTRIES: u64 = 8 << 20;
/// Bytes of grain tables scanned at open for the allocation count and the
/// redundant-table check; beyond it both are skipped.
const MAX_SCAN_BYTES: u64 = 64 << 20;

/// A hosted sparse (or streamOptimized) extent as a byte source.
pub struct SparseExtent {
    file: Source,
    h: SparseHeader,
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
    /// Sector of each grain table, from the primary directory.
    Dir(Vec<u32>),
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

fn le32(b: &[u8], i: usize) -> u32 {
    match b.get(i * 4..i * 4 + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn count_allocated(gt: &[u8]) -> u64 {
    gt.chunks_exact(4)
        .filter(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) > 1)
        .count() as u64
}

fn read_dir(file: &dyn ReadAt, sector: u64, entries: u64, what: &str) -> Result<Vec<u32>> {
    let at = sector
        .checked_mul(512)
        .ok_or_else(|| Error::corrupt(LAYER, 0, format!("{what} sector {sector} overflows")))?;
    let bytes = entries * 4;
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
    Ok((0..entries as usize).map(|i| le32(&raw, i)).collect())
}

impl SparseExtent {
    /// Opens the extent in `file` whose effective header is `h` (the footer
    /// for a stream with the directory at the end), `size` bytes long.
    pub fn open(file: Source, h: SparseHeader, size: u64) -> Result<(Self, Scan)> {
        let grains = h.capacity.div_ceil(h.grain_sectors);
        let gd_entries = grains.div_ceil(u64::from(h.gtes_per_gt));
        if gd_entries > MAX_GD_ENTRIES {
            return Err(Error::corrupt(
                LAYER,
                h.gd_offset.saturating_mul(512),
                format!("grain directory of {gd_entries} entries is implausibly large"),
            ));
        }
        let gd = read_dir(&*file, h.gd_offset, gd_entries, "grain directory")?;
        Ok(Self::with_tables(file, h, size, Tables::Dir(gd)))
    }

    /// Opens a stream whose directory is lost (a truncated download) from
    /// `grains`: grain number -> sector of its marker, found by walking.
    pub fn open_rebuilt(
        file: Source,
        h: SparseHeader,
        size: u64,
        grains: &HashMap<u64, u32>,
        lost_from: Option<u64>,
    ) -> (Self, Scan) {
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
        let (mut ext, scan) = Self::with_tables(file, h, size, Tables::Rebuilt(tables));
        ext.lost_from = lost_from;
        (ext, scan)
    }

    fn with_tables(file: Source, h: SparseHeader, size: u64, tables: Tables) -> (Self, Scan) {
        let gt_bytes = u64::from(h.gtes_per_gt) * 4;
        let ext = SparseExtent {
            file,
            size,
            tables,
            lost_from: None,
            gt_bytes,
            gt_owner: ChunkCache::owner(),
            grain_owner: ChunkCache::owner(),
            cache: ChunkCache::global(),
            h,
        };
        let scan = ext.scan();
        (ext, scan)
    }

    /// The header in effect.
    pub fn header(&self) -> &SparseHeader {
        &self.h
    }

    fn read_gt(&self, sector: u32) -> Result<Vec<u8>> {
        let at = u64::from(sector) * 512;
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
        let sector = match gd.get(i as usize) {
            Some(&s) => s,
            None => {
                return Err(Error::corrupt(
                    LAYER,
                    i * self.gt_bytes,
                    format!("grain table {i} is beyond the grain directory"),
                ))
            }
        };
        if sector == 0 {
            return Ok(None);
        }
        self.cache
            .get_or_load(self.gt_owner, i, || self.read_gt(sector))
            .map(Some)
    }

    /// Counts allocated grains and compares the redundant directory, within
    /// a bounded amount of reading.
    fn scan(&self) -> Scan {
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
                let n = t.values().map(|gt| count_allocated(gt)).sum();
                scan.allocated_grains = Some(n);
                return scan;
            }
        };
        if tables.saturating_mul(self.gt_bytes).saturating_mul(2) > MAX_SCAN_BYTES {
            return scan;
        }
        let rgd = if self.h.flags & FLAG_REDUNDANT_GT != 0 && self.h.rgd_offset != 0 {
            match read_dir(
                &*self.file,
                self.h.rgd_offset,
                tables,
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
                allocated += count_allocated(gt);
            }
            let Some(rgd) = &rgd else { continue };
            let r_sector = rgd.get(i as usize).copied().unwrap_or(0);
            let redundant = if r_sector == 0 {
                None
            } else {
                self.read_gt(r_sector).ok()
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
        let mut entry = |g: u64| -> Result<u32> {
            let (t, j) = (g / gtes, (g % gtes) as usize);
            if cur.as_ref().is_none_or(|(ct, _)| *ct != t) {
                cur = Some((t, self.gt(t)?));
            }
            Ok(match &cur {
                Some((_, Some(gt))) => le32(gt, j),
                _ => 0,
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
                let at = u64::from(gte) * 512;
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
                let mut want = u64::from(gte) + self.h.grain_sectors;
                while pos + n < len {
                    let e = entry(next).map_err(|e| (pos, e))?;
                    if u64::from(e) != want {
                        break;
                    }
                    n += (gb as usize).min(len - pos - n);
                    next += 1;
                    want += self.h.grain_sectors;
                }
                let at = u64::from(gte) * 512 + within;
                self.file
                    .read_exact_at(at, &mut buf[pos..pos + n])
                    .map_err(|e| (pos, past_end(&*self.file, at, e)))?;
            }
            pos += n;
        }
        Ok(())
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
