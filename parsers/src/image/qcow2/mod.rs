//! qcow2, qemu's copy-on-write format (versions 2 and 3), read from the
//! spec in qemu's docs/interop/qcow2.txt.
//!
//! A guest offset goes through the L1 table (loaded at open, bounded by the
//! virtual size and the file size) to an L2 table (loaded on demand through
//! the shared [`ChunkCache`]) to a host cluster, a compressed cluster
//! (decompressed through the cache), or zeros. Reads map runs of
//! host-contiguous clusters to one positional read.
//!
//! With a backing file the image is a delta: unallocated clusters (and,
//! with extended L2, unallocated subclusters) read from the backing file
//! through [`crate::image::chain`], zero clusters read as zeros.
//!
//! Refused rather than guessed: external data files, encryption and
//! unknown incompatible features. Internal snapshots are
//! ignored: the active L1 table is the disk.

mod compressed;
mod header;
mod table;
#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::cache::ChunkCache;
use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

use super::chain::{Layer, Opened, ParentLink};
use super::{Image, ImageFacts};
use header::{Extensions, Header, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY};
use table::{Compressed, Geometry, L2Entry, Unit};

pub use header::{CompressionType, MAGIC};

/// Layer name in errors.
pub(crate) const LAYER: &str = "qcow2";

/// qemu refuses L1 tables over 32 MiB; so do we, which bounds the one
/// table loaded whole at open.
const MAX_L1_BYTES: u64 = 32 << 20;
/// At open, count allocated clusters only if the L2 tables to scan take
/// at most this much, so opening a huge image stays quick.
const MAX_COUNT_BYTES: u64 = 16 << 20;
/// Cache keys: L2 tables by host offset, decompressed clusters by the host
/// offset of their compressed bytes (both below 2^56), kept apart by bit 63.
const KEY_L2: u64 = 0;
const KEY_COMPRESSED: u64 = 1 << 63;

/// Whether `file` starts with the qcow2 magic.
pub fn probe(file: &dyn ReadAt) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(0, &mut magic).is_ok() && magic == MAGIC
}

/// Opens the qcow2 image in `file` (read from `path`, named in messages)
/// as a virtual disk.
pub(crate) fn open(path: &Path, file: Source) -> Result<Opened> {
    let file_bytes = file.size();
    let (disk, notes) = Qcow2Disk::new(path, file.clone())?;
    let backing = backing_link(&disk.header, &disk.ext, &*file);
    // `None` when not counted (many L2 tables, or unreadable ones).
    let facts = ImageFacts {
        subformat: Some(format!("v{}", disk.version)),
        allocated_bytes: disk.count_allocated(),
        block_size: Some(disk.geo.cluster_size()),
        cache_budget: Some(disk.cache.stats().budget as u64),
        numbers: vec![
            ("version", u64::from(disk.version)),
            ("extended_l2", u64::from(disk.geo.extended)),
        ],
        labels: vec![
            (
                "compat",
                if disk.version == 2 { "0.10" } else { "1.1" }.to_string(),
            ),
            ("compression", disk.compression.name().to_string()),
        ],
    };
    let disk = Arc::new(disk);
    let delta = backing.map(|link| (disk.clone() as Arc<dyn Layer>, link));
    let image = Image {
        disk,
        format: "qcow2",
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
        ident: None,
    })
}

/// The backing file the header names, if any.
fn backing_link(h: &Header, ext: &Extensions, file: &dyn ReadAt) -> Option<ParentLink> {
    // qemu reads an empty name as no backing file.
    if h.backing_file_offset == 0 || h.backing_file_size == 0 {
        return None;
    }
    // The spec caps names at 1023 bytes.
    let len = h.backing_file_size.min(1023) as usize;
    let mut name = vec![0u8; len];
    let name = match file.read_exact_at(h.backing_file_offset, &mut name) {
        Ok(()) => String::from_utf8_lossy(&name).into_owned(),
        Err(_) => format!("<unreadable name at offset {}>", h.backing_file_offset),
    };
    let format = ext.backing_format.clone();
    Some(ParentLink {
        written: match &format {
            Some(f) => format!("{name} (format {f})"),
            None => name.clone(),
        },
        names: vec![name],
        expect: None,
        also: None,
        raw: format.as_deref() == Some("raw"),
    })
}

/// The virtual disk of a qcow2 image.
pub struct Qcow2Disk {
    file: Source,
    file_size: u64,
    version: u32,
    geo: Geometry,
    /// Virtual disk size in bytes.
    size: u64,
    compression: CompressionType,
    /// The active L1 table, only the entries the virtual size needs.
    l1: Vec<u64>,
    l1_offset: u64,
    cache: &'static ChunkCache,
    owner: u64,
    header: Header,
    ext: Extensions,
}

/// A stretch of guest bytes with one way of reading them.
#[derive(Debug, Clone, Copy)]
enum Run {
    Zero,
    /// Not allocated here: the backing file's, zeros without one.
    Unallocated,
    /// Host offset of the run's first byte.
    Data(u64),
    /// The cluster's compressed bytes and the run's offset in the cluster.
    Compressed(Compressed, u64),
}

impl Qcow2Disk {
    /// Parses the header and L1 table; returns the disk and notes for
    /// `info` (dirty or corrupt flags, ignored snapshots).
    pub fn new(path: &Path, file: Source) -> Result<(Qcow2Disk, Vec<String>)> {
        let file_size = file.size();
        let mut head = vec![0u8; clamp_len(file_size, 0, header::V3_HEADER_LEN + 8)];
        file.read_exact_at(0, &mut head)
            .map_err(|e| Error::io(LAYER, 0, e))?;
        let h = Header::parse(&head)?;
        let geo = Geometry {
            cluster_bits: h.cluster_bits,
            extended: h.extended_l2(),
        };
        // Extensions live in the rest of the first cluster.
        let mut first = vec![0u8; clamp_len(file_size, 0, geo.cluster_size() as usize)];
        file.read_exact_at(0, &mut first)
            .map_err(|e| Error::io(LAYER, 0, e))?;
        let ext = Extensions::parse(&first, h.extensions_start())?;

        refuse_unsupported(path, &h, &ext)?;
        let mut notes = Vec::new();
        if h.incompatible & INCOMPAT_DIRTY != 0 {
            notes.push(
                "dirty: the image was not closed cleanly (refcounts may be stale; \
                 the cluster map is read as it is)"
                    .to_string(),
            );
        }
        if h.incompatible & INCOMPAT_CORRUPT != 0 {
            notes.push(
                "warning: qemu flagged this image corrupt; reading it anyway, \
                 some data may be wrong"
                    .to_string(),
            );
        }
        if h.nb_snapshots > 0 {
            notes.push(format!(
                "{} internal snapshot(s) ignored: reading the active disk",
                h.nb_snapshots
            ));
        }

        let l1 = load_l1(&h, geo, &*file, file_size)?;
        Ok((
            Qcow2Disk {
                file,
                file_size,
                version: h.version,
                geo,
                size: h.size,
                compression: h.compression_type,
                l1,
                l1_offset: h.l1_table_offset,
                cache: ChunkCache::global(),
                owner: ChunkCache::owner(),
                header: h,
                ext,
            },
            notes,
        ))
    }

    /// The L2 table at host offset `off`, through the cache.
    fn l2_table(&self, off: u64) -> Result<Arc<[u8]>> {
        let len = self.geo.cluster_size();
        if off.checked_add(len).is_none_or(|end| end > self.file_size) {
            return Err(Error::corrupt(
                LAYER,
                off,
                format!(
                    "L2 table lies past the end of the file ({} bytes)",
                    self.file_size
                ),
            ));
        }
        self.cache.get_or_load(self.owner, KEY_L2 | off, || {
            let mut t = vec![0u8; len as usize];
            self.file
                .read_exact_at(off, &mut t)
                .map_err(|e| Error::io(LAYER, off, e))?;
            Ok(t)
        })
    }

    /// How the guest bytes from `pos` read, and for how many bytes (at
    /// most `want`, and never past the L2 table that maps `pos`).
    fn map_run(&self, pos: u64, want: u64) -> Result<(Run, u64)> {
        let geo = self.geo;
        let l1_index = pos >> geo.l2_span_bits();
        let span_end = (l1_index + 1) << geo.l2_span_bits();
        let max = want.min(span_end - pos);
        let l1_at = self.l1_offset + l1_index * 8;
        let entry = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .ok_or_else(|| Error::corrupt(LAYER, l1_at, "guest offset past the L1 table"))?;
        let Some(l2_off) = table::l2_table_offset(*entry, geo, l1_at)? else {
            return Ok((Run::Unallocated, max));
        };
        let t = self.l2_table(l2_off)?;

        let unit_bits = geo.unit_bits();
        let unit_mask = (1u64 << unit_bits) - 1;
        let unit_at = |p: u64| -> Result<Unit> {
            let index = (p >> geo.cluster_bits) & ((1 << geo.l2_bits()) - 1);
            let sub = if geo.extended {
                ((p >> unit_bits) & 31) as u32
            } else {
                0
            };
            let at = l2_off + index * geo.entry_size();
            let e = L2Entry::read(&t, index as usize, geo)
                .ok_or_else(|| Error::corrupt(LAYER, at, "L2 entry outside its table"))?;
            e.unit(sub, geo, at)
        };

        let first = unit_at(pos)?;
        let mut len = ((unit_mask + 1) - (pos & unit_mask)).min(max);
        let run = match first {
            Unit::Compressed(c) => {
                let cmask = geo.cluster_size() - 1;
                let in_cluster = pos & cmask;
                let len = (geo.cluster_size() - in_cluster).min(max);
                return Ok((Run::Compressed(c, in_cluster), len));
            }
            Unit::Zero => Run::Zero,
            Unit::Unallocated => Run::Unallocated,
            Unit::Data(h) => Run::Data(h + (pos & unit_mask)),
        };
        // Grow the run over following units that read the same way; an
        // entry that fails to decode ends the run, and is reported when
        // the next run starts there.
        while len < max {
            let next = pos + len;
            let same = match (run, unit_at(next)) {
                (Run::Zero, Ok(Unit::Zero)) => true,
                (Run::Unallocated, Ok(Unit::Unallocated)) => true,
                (Run::Data(h), Ok(Unit::Data(n))) => n == h + len,
                _ => false,
            };
            if !same {
                break;
            }
            len = (len + unit_mask + 1).min(max);
        }
        Ok((run, len))
    }

    /// Fills `buf` with `buf.len()` guest bytes from `pos`, all within the
    /// virtual size.
    fn read_into(&self, mut pos: u64, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            let want = buf.len() as u64;
            let (run, mut len) = self.map_run(pos, want)?;
            if let Run::Data(host) = run {
                // map_run stops at L2 table ends; data often goes on
                // contiguously in the next table, so keep the one read.
                while len < want {
                    match self.map_run(pos + len, want - len) {
                        Ok((Run::Data(h), n)) if h == host + len => len += n,
                        _ => break,
                    }
                }
            }
            // len <= buf.len() by construction, and > 0.
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(len as usize);
            match run {
                Run::Zero | Run::Unallocated => head.fill(0),
                Run::Data(host) => self.read_data(host, pos, head)?,
                Run::Compressed(c, in_cluster) => {
                    let cluster = self.decompressed(c)?;
                    let src = usize::try_from(in_cluster)
                        .ok()
                        .and_then(|s| cluster.get(s..s.checked_add(head.len())?))
                        .ok_or_else(|| {
                            Error::corrupt(LAYER, c.host, "compressed cluster too short")
                        })?;
                    head.copy_from_slice(src);
                }
            }
            pos += len;
            buf = tail;
        }
        Ok(())
    }

    /// Reads uncompressed data at host offset `host` for guest offset `pos`.
    fn read_data(&self, host: u64, pos: u64, buf: &mut [u8]) -> Result<()> {
        if host
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.file_size)
        {
            return Err(Error::corrupt(
                LAYER,
                host,
                format!(
                    "data for guest offset {pos} lies past the end of the file ({} bytes)",
                    self.file_size
                ),
            ));
        }
        self.file
            .read_exact_at(host, buf)
            .map_err(|e| Error::io(LAYER, host, e))
    }

    /// The cluster compressed at `c`, decompressed, through the cache.
    fn decompressed(&self, c: Compressed) -> Result<Arc<[u8]>> {
        self.cache
            .get_or_load(self.owner, KEY_COMPRESSED | c.host, || {
                if c.host >= self.file_size {
                    return Err(Error::corrupt(
                        LAYER,
                        c.host,
                        format!(
                            "compressed cluster lies past the end of the file ({} bytes)",
                            self.file_size
                        ),
                    ));
                }
                // The last sector may be cut off by the end of the file.
                let len = c.len.min(self.file_size - c.host);
                let mut input = vec![0u8; len as usize];
                self.file
                    .read_exact_at(c.host, &mut input)
                    .map_err(|e| Error::io(LAYER, c.host, e))?;
                compressed::decompress(
                    self.compression,
                    &input,
                    self.geo.cluster_size() as usize,
                    c.host,
                )
            })
    }

    /// Guest bytes backed by data (stored or compressed), if the L2 tables
    /// are few enough to scan at open and all readable.
    fn count_allocated(&self) -> Option<u64> {
        let tables: Vec<u64> = self
            .l1
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                table::l2_table_offset(*e, self.geo, self.l1_offset + i as u64 * 8)
                    .ok()
                    .flatten()
            })
            .collect();
        if (tables.len() as u64).saturating_mul(self.geo.cluster_size()) > MAX_COUNT_BYTES {
            return None;
        }
        let units = 1u64 << (self.geo.cluster_bits - self.geo.unit_bits());
        let mut total = 0u64;
        for off in tables {
            let t = self.l2_table(off).ok()?;
            for i in 0..(1usize << self.geo.l2_bits()) {
                let e = L2Entry::read(&t, i, self.geo)?;
                for sub in 0..units as u32 {
                    match e.unit(sub, self.geo, off).ok()? {
                        Unit::Zero | Unit::Unallocated => {}
                        _ => total += 1 << self.geo.unit_bits(),
                    }
                }
            }
        }
        // Tables can map past the virtual size; those bytes are never read.
        Some(total.min(self.size))
    }
}

impl Layer for Qcow2Disk {
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)> {
        let (run, len) = self.map_run(offset, max)?;
        Ok((!matches!(run, Run::Unallocated), len))
    }
}

impl ReadAt for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let (buf, _) = buf.split_at_mut(len);
        self.read_into(offset, buf).map_err(io::Error::other)?;
        Ok(len)
    }
}

/// Fails with a clear `Unsupported` for what this reader cannot read
/// correctly: encryption, external data files, unknown incompatible
/// features.
fn refuse_unsupported(path: &Path, h: &Header, ext: &Extensions) -> Result<()> {
    if h.crypt_method != 0 {
        let how = match h.crypt_method {
            1 => "AES",
            2 => "LUKS",
            _ => "unknown method",
        };
        return Err(Error::unsupported(
            LAYER,
            format!("{}: encrypted image ({how})", path.display()),
        ));
    }
    if h.incompatible & INCOMPAT_DATA_FILE != 0 {
        return Err(Error::unsupported(
            LAYER,
            format!(
                "{}: guest data is in an external data file ({})",
                path.display(),
                ext.data_file.as_deref().unwrap_or("name not given")
            ),
        ));
    }
    let unknown = h.unknown_incompatible();
    if unknown != 0 {
        let names: Vec<String> = (0..64)
            .filter(|b| unknown >> b & 1 != 0)
            .map(|b| match ext.incompatible_name(b) {
                Some(n) => format!("bit {b} ({n})"),
                None => format!("bit {b}"),
            })
            .collect();
        return Err(Error::unsupported(
            LAYER,
            format!(
                "{}: unknown incompatible features: {}",
                path.display(),
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Loads the L1 entries the virtual size needs, after checking the table
/// is big enough for the virtual size and lies inside the file.
fn load_l1(h: &Header, geo: Geometry, file: &dyn ReadAt, file_size: u64) -> Result<Vec<u64>> {
    let needed = geo.l1_entries_for(h.size);
    if u64::from(h.l1_size) < needed {
        return Err(Error::corrupt(
            LAYER,
            36,
            format!(
                "L1 table has {} entries; a virtual size of {} needs {needed}",
                h.l1_size, h.size
            ),
        ));
    }
    let bytes = needed * 8;
    if bytes > MAX_L1_BYTES {
        return Err(Error::unsupported(
            LAYER,
            format!(
                "virtual size {} needs a {bytes}-byte L1 table (over qemu's 32 MiB limit)",
                h.size
            ),
        ));
    }
    if needed == 0 {
        return Ok(Vec::new());
    }
    if h.l1_table_offset & (geo.cluster_size() - 1) != 0
        || h.l1_table_offset
            .checked_add(bytes)
            .is_none_or(|end| end > file_size)
    {
        return Err(Error::corrupt(
            LAYER,
            40,
            format!(
                "L1 table at {} ({bytes} bytes) is unaligned or past the end of the file",
                h.l1_table_offset
            ),
        ));
    }
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact_at(h.l1_table_offset, &mut raw)
        .map_err(|e| Error::io(LAYER, h.l1_table_offset, e))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect())
}
