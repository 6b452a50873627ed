//! exFAT, read by our own parser (for the reasons in [`crate::fs::fat`];
//! the `fatfs` crate has no exFAT at all).
//!
//! Node ids are the on-disk position of a file's primary (0x85) entry
//! divided by 32; the root is [`ROOT`]. An entry set is re-read from its
//! position on `stat` and `read`, so no table of nodes is kept; when a
//! set crosses into the next cluster, the directory's FAT link is tried
//! first, then the next cluster in order (a contiguous directory), and
//! the set checksum decides. Name hashes are ignored; lookups compare
//! names folded through the volume's up-case table. Modes and owners are
//! as for FAT.

mod bitmap;
mod boot;
mod dir_entry;
mod upcase;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};

use self::boot::{Boot, REGION_SECTORS};
use self::dir_entry::{kind, FileSet, RawTime, ATTR_READ_ONLY, ENTRY};
use self::upcase::Upcase;
use crate::fs::fat::fat_table::{self, Chain, FatTable};
use crate::fs::fat::{dos_time, usable_name, with_centis};
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat, Timespec};
use crate::memo::Memo;
use crate::{Error, Result, Source};

/// The root directory's node id (inside the boot region, so no entry's).
pub const ROOT: NodeId = 1;
/// exFAT directories are at most 256 MiB.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// A stored up-case table is at most 128 KiB (plus compression slack).
const MAX_UPCASE: u64 = 256 << 10;
/// Larger bitmaps are not scanned for the free count.
const MAX_BITMAP_SCAN: u64 = 64 << 20;
/// Bytes of a directory read at once (reading stops at its end entry).
const DIR_CHUNK: u64 = 1 << 20;
const DIR_CACHE: usize = 256;
const CHAIN_CACHE: usize = 1024;

/// A parsed directory.
struct Dir {
    entries: Vec<DirEntry>,
    by_name: HashMap<Vec<u16>, NodeId>,
}

/// An exFAT filesystem on a source.
pub struct ExfatFs {
    src: Source,
    boot: Boot,
    fat: FatTable,
    upcase: Upcase,
    label: Option<String>,
    /// The allocation bitmap's first cluster and length.
    bitmap: Option<(u32, u64)>,
    warnings: Vec<String>,
    free: OnceLock<Option<u64>>,
    dirs: Memo<NodeId, Dir>,
    chains: Memo<(u32, u64), Chain>,
}

/// A time as stored, in UTC: the offset byte (bit 7 = valid, then a
/// signed count of 15 minutes) says how far local time was from UTC.
fn exfat_time(t: RawTime, centis: bool) -> Timespec {
    let mut ts = with_centis(
        dos_time((t.stamp >> 16) as u16, t.stamp as u16),
        if centis { t.centis } else { 0 },
    );
    if t.utc_offset & 0x80 != 0 {
        // Sign-extend the 7-bit field.
        let quarters = i64::from(((t.utc_offset << 1) as i8) >> 1);
        ts.secs -= quarters * 15 * 60;
    }
    ts
}

impl ExfatFs {
    /// Opens the filesystem on `src`; a damaged main boot region falls
    /// back to the backup.
    pub fn open(src: Source) -> Result<Self> {
        let mut warnings = Vec::new();
        let boot = match read_boot(&src, 0) {
            Ok(b) => b,
            Err(main) => {
                let bps = {
                    let mut s = [0u8; 512];
                    src.read_exact_at(0, &mut s)
                        .map_err(|e| Error::io("exfat", 0, e))?;
                    boot::sector_size(&s).unwrap_or(512)
                };
                let backup = read_boot(&src, REGION_SECTORS * u64::from(bps)).map_err(|_| main)?;
                warnings.push("main boot region damaged; using the backup".to_string());
                backup
            }
        };
        if boot.dirty {
            warnings.push("volume not cleanly unmounted".to_string());
        }
        if boot.volume_bytes > src.size() {
            warnings.push(format!(
                "image is {} bytes, filesystem claims {}: truncated?",
                src.size(),
                boot.volume_bytes
            ));
        }
        let fat = FatTable::exfat(
            src.clone(),
            boot.fat_offset,
            boot.fat_bytes,
            boot.cluster_count,
        );
        let mut fs = ExfatFs {
            src,
            boot,
            fat,
            upcase: Upcase::fallback(),
            label: None,
            bitmap: None,
            warnings,
            free: OnceLock::new(),
            dirs: Memo::new(DIR_CACHE),
            chains: Memo::new(CHAIN_CACHE),
        };
        fs.read_root_metadata()?;
        Ok(fs)
    }

    fn cs(&self) -> u64 {
        u64::from(self.boot.cluster_size)
    }

    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.src
            .read_exact_at(offset, buf)
            .map_err(|e| Error::io("exfat", offset, e))
    }

    /// Label, bitmap and up-case table from the root's primary entries.
    fn read_root_metadata(&mut self) -> Result<()> {
        let root = self.root_chain()?;
        let (data, _) = self.dir_bytes(&root)?;
        let mut upcase = None;
        for e in data.chunks_exact(ENTRY) {
            match e.first().copied().unwrap_or(0) {
                kind::END => break,
                kind::LABEL => self.label = Some(dir_entry::label(e)).filter(|l| !l.is_empty()),
                // Bit 0 of the flags says which FAT's bitmap this is.
                kind::BITMAP if self.bitmap.is_none() || e.get(1).is_some_and(|f| f & 1 == 0) => {
                    self.bitmap = Some(dir_entry::data_of(e));
                }
                kind::UPCASE => {
                    upcase = Some((dir_entry::data_of(e), crate::fs::fat::le32(e, 4)));
                }
                _ => {}
            }
        }
        match upcase {
            Some(((first, len), sum)) if len > 0 && len <= MAX_UPCASE => {
                match self.stream_bytes(first, len, false) {
                    Ok(raw) if upcase::checksum(&raw) == sum => self.upcase = Upcase::parse(&raw),
                    Ok(_) => self
                        .warnings
                        .push("up-case table checksum mismatch; using the default".into()),
                    Err(e) => self
                        .warnings
                        .push(format!("up-case table unreadable ({e}); using the default")),
                }
            }
            _ => self
                .warnings
                .push("no usable up-case table; using the default".into()),
        }
        Ok(())
    }

    /// The clusters of a stream of `len` bytes.
    fn chain(&self, first: u32, len: u64, contiguous: bool) -> Result<Arc<Chain>> {
        let cs = self.cs();
        let clusters = len.div_ceil(cs);
        if contiguous {
            return Ok(Arc::new(if clusters == 0 {
                Chain::default()
            } else if self.boot.valid_run(first, clusters) {
                Chain {
                    runs: vec![(first, clusters as u32)],
                    clusters,
                    broken: None,
                }
            } else {
                Chain {
                    broken: Some(format!(
                        "contiguous run at cluster {first} leaves the volume"
                    )),
                    ..Chain::default()
                }
            }));
        }
        self.chains.get_or_make((first, clusters), || {
            Ok(Arc::new(if clusters == 0 {
                Chain::default()
            } else {
                self.fat.chain(first, clusters)?
            }))
        })
    }

    fn root_chain(&self) -> Result<Arc<Chain>> {
        self.chain(self.boot.root_cluster, MAX_DIR_BYTES, false)
    }

    /// A small stream (up-case table) read whole.
    fn stream_bytes(&self, first: u32, len: u64, contiguous: bool) -> Result<Vec<u8>> {
        let chain = self.chain(first, len, contiguous)?;
        if chain.clusters * self.cs() < len {
            return Err(Error::corrupt("exfat", 0, "stream shorter than its length"));
        }
        let mut v = vec![0u8; len as usize];
        fat_table::read_chain(
            &self.src,
            &chain,
            self.cs(),
            |c| self.boot.cluster_offset(c),
            0,
            &mut v,
        )?;
        Ok(v)
    }

    /// A directory's bytes up to its end entry, with each cluster's disk
    /// offset.
    fn dir_bytes(&self, chain: &Chain) -> Result<(Vec<u8>, Vec<u64>)> {
        if let Some(why) = &chain.broken {
            tracing::warn!("exfat: directory: {why}");
        }
        let cs = self.cs();
        let mut data = Vec::new();
        let mut starts = Vec::new();
        'runs: for &(first, n) in &chain.runs {
            let base = self.boot.cluster_offset(first);
            let run = u64::from(n) * cs;
            let mut done = 0;
            while done < run {
                let take = DIR_CHUNK.max(cs).min(run - done);
                let at = data.len();
                data.resize(at + take as usize, 0);
                self.read_raw(base + done, data.get_mut(at..).unwrap_or_default())?;
                starts.extend((0..take / cs).map(|i| base + done + i * cs));
                done += take;
                let ended = data
                    .get(at..)
                    .unwrap_or(&[])
                    .chunks_exact(ENTRY)
                    .any(|e| e.first() == Some(&kind::END));
                if ended || data.len() as u64 >= MAX_DIR_BYTES {
                    break 'runs;
                }
            }
        }
        Ok((data, starts))
    }

    /// The entry set at `node`, re-read from disk.
    fn set_at(&self, node: NodeId) -> Result<FileSet> {
        let not_found = || Error::NotFound(format!("exfat node {node}"));
        let off = node.checked_mul(ENTRY as u64).ok_or_else(not_found)?;
        let cs = self.cs();
        let heap_end = self.boot.heap_offset + u64::from(self.boot.cluster_count) * cs;
        if off < self.boot.heap_offset || off >= heap_end {
            return Err(not_found());
        }
        let mut first = [0u8; ENTRY];
        self.read_raw(off, &mut first)?;
        if first[0] != kind::FILE {
            return Err(not_found());
        }
        let len = dir_entry::set_len(&first);
        let mut last = Err(not_found());
        for follow_fat in [true, false] {
            let set = self.gather(off, len, follow_fat)?;
            last = dir_entry::parse_set(&set, off);
            if last.is_ok() || set.len() < len {
                break;
            }
        }
        last
    }

    /// `len` directory bytes from `off`, crossing cluster ends through the
    /// FAT (if `follow_fat` and the link is valid) or to the next cluster.
    fn gather(&self, off: u64, len: usize, follow_fat: bool) -> Result<Vec<u8>> {
        let cs = self.cs();
        let mut out = Vec::with_capacity(len);
        let mut pos = off;
        let mut cluster = ((off - self.boot.heap_offset) / cs) as u32 + 2;
        while out.len() < len {
            let left = cs - (pos - self.boot.heap_offset) % cs;
            let take = (len - out.len()).min(left as usize);
            let at = out.len();
            out.resize(at + take, 0);
            self.read_raw(pos, out.get_mut(at..).unwrap_or_default())?;
            if out.len() == len {
                break;
            }
            let linked = if follow_fat {
                self.fat.entry(cluster).ok()
            } else {
                None
            };
            let next = linked
                .filter(|&n| self.boot.valid_run(n, 1))
                .unwrap_or(cluster.saturating_add(1));
            if !self.boot.valid_run(next, 1) {
                out.truncate(at + take);
                return Ok(out);
            }
            cluster = next;
            pos = self.boot.cluster_offset(next);
        }
        Ok(out)
    }

    fn dir(&self, node: NodeId) -> Result<Arc<Dir>> {
        self.dirs
            .get_or_make(node, || self.parse_dir(node).map(Arc::new))
    }

    fn parse_dir(&self, node: NodeId) -> Result<Dir> {
        let chain = if node == ROOT {
            self.root_chain()?
        } else {
            let set = self.set_at(node)?;
            if !set.is_dir() {
                return Err(Error::NotADirectory(format!("exfat node {node}")));
            }
            self.chain(
                set.first_cluster,
                set.data_len.min(MAX_DIR_BYTES),
                set.no_fat_chain,
            )?
        };
        let (data, starts) = self
            .dir_bytes(&chain)
            .map_err(|e| e.context(format!("exfat directory node {node}")))?;
        let cs = self.cs() as usize;
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        let mut pos = 0usize;
        while let Some(e) = data.get(pos..pos + ENTRY) {
            let t = e.first().copied().unwrap_or(0);
            if t == kind::END {
                break;
            }
            if t != kind::FILE {
                pos += ENTRY;
                continue;
            }
            let len = dir_entry::set_len(e);
            let Some(&start) = starts.get(pos / cs) else {
                break;
            };
            let at = start + (pos % cs) as u64;
            match data
                .get(pos..pos + len)
                .ok_or_else(|| Error::corrupt("exfat", at, "entry set past the directory end"))
                .and_then(|s| dir_entry::parse_set(s, at))
            {
                Ok(set) => {
                    pos += len;
                    let id = at / ENTRY as u64;
                    let name = String::from_utf16_lossy(&set.name);
                    if !usable_name(&name) {
                        tracing::warn!("exfat: skipping entry {id} with an unusable name");
                        continue;
                    }
                    by_name.entry(self.upcase.fold(&set.name)).or_insert(id);
                    entries.push(DirEntry {
                        name: OsString::from(name),
                        node: id,
                        kind: if set.is_dir() {
                            FileType::Dir
                        } else {
                            FileType::File
                        },
                    });
                }
                Err(err) => {
                    tracing::warn!("exfat: skipping entry: {err}");
                    pos += ENTRY;
                }
            }
        }
        Ok(Dir { entries, by_name })
    }

    fn free_clusters(&self) -> Option<u64> {
        let (first, len) = self.bitmap?;
        let bits = u64::from(self.boot.cluster_count);
        let need = bits.div_ceil(8);
        if len < need || need > MAX_BITMAP_SCAN {
            return None;
        }
        let chain = self.chain(first, need, false).ok()?;
        if chain.clusters * self.cs() < need {
            return None;
        }
        let mut free = 0;
        let mut pos = 0u64;
        let mut buf = vec![0u8; (1 << 20).min(need as usize)];
        while pos < need {
            let take = (need - pos).min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..take)?;
            fat_table::read_chain(
                &self.src,
                &chain,
                self.cs(),
                |c| self.boot.cluster_offset(c),
                pos,
                chunk,
            )
            .ok()?;
            free += bitmap::count_free(chunk, (bits - pos * 8).min(take as u64 * 8));
            pos += take as u64;
        }
        Some(free)
    }
}

/// Reads and checks the 12-sector boot region at `at`.
fn read_boot(src: &Source, at: u64) -> Result<Boot> {
    let mut first = [0u8; 512];
    src.read_exact_at(at, &mut first)
        .map_err(|e| Error::io("exfat", at, e))?;
    let bps = boot::sector_size(&first)
        .ok_or_else(|| Error::corrupt("exfat", at, "boot sector: bad bytes per sector"))?;
    let mut region = vec![0u8; bps as usize * REGION_SECTORS as usize];
    src.read_exact_at(at, &mut region)
        .map_err(|e| Error::io("exfat", at, e))?;
    Boot::parse(&region, at)
}

impl FileSystem for ExfatFs {
    fn info(&self) -> FsInfo {
        let free = self.free.get_or_init(|| self.free_clusters());
        FsInfo {
            kind: "exfat".into(),
            label: self.label.clone(),
            uuid: Some(format!(
                "{:04X}-{:04X}",
                self.boot.serial >> 16,
                self.boot.serial & 0xFFFF
            )),
            block_size: self.boot.cluster_size,
            total_bytes: u64::from(self.boot.cluster_count) * self.cs(),
            free_bytes: free.unwrap_or(0).saturating_mul(self.cs()),
            total_nodes: 0,
            free_nodes: 0,
            warnings: self.warnings.clone(),
        }
    }

    fn root(&self) -> NodeId {
        ROOT
    }

    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        let Some(name) = name.to_str() else {
            return Ok(None);
        };
        let units: Vec<u16> = name.encode_utf16().collect();
        Ok(self
            .dir(dir)?
            .by_name
            .get(&self.upcase.fold(&units))
            .copied())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        Ok(self.dir(dir)?.entries.clone())
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        let cs = self.cs();
        if node == ROOT {
            let size = self.root_chain().map(|c| c.clusters * cs).unwrap_or(0);
            return Ok(Stat::dos(node, true, false, size, cs));
        }
        let s = self.set_at(node)?;
        let mtime = exfat_time(s.modified, true);
        Ok(Stat {
            atime: exfat_time(s.accessed, false),
            mtime,
            ctime: mtime,
            crtime: Some(exfat_time(s.created, true)),
            ..Stat::dos(
                node,
                s.is_dir(),
                s.attrs & ATTR_READ_ONLY != 0,
                s.data_len,
                cs,
            )
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if node == ROOT {
            return Err(Error::IsADirectory("exfat root".into()));
        }
        let s = self.set_at(node)?;
        if s.is_dir() {
            return Err(Error::IsADirectory(format!("exfat node {node}")));
        }
        if offset >= s.data_len || buf.is_empty() {
            return Ok(0);
        }
        let len = usize::try_from(s.data_len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let end = offset + len as u64;
        // Only bytes below the valid data length are stored.
        let stored_end = end.min(s.valid_len);
        let stored = usize::try_from(stored_end.saturating_sub(offset)).unwrap_or(0);
        if stored > 0 {
            let chain = self.chain(s.first_cluster, s.valid_len, s.no_fat_chain)?;
            if stored_end > chain.clusters * self.cs() {
                let why = chain
                    .broken
                    .clone()
                    .unwrap_or_else(|| "cluster chain shorter than the file".into());
                return Err(Error::corrupt(
                    "exfat",
                    node * ENTRY as u64,
                    format!(
                        "reading to byte {stored_end} of a {}-byte file: {why}",
                        s.data_len
                    ),
                ));
            }
            fat_table::read_chain(
                &self.src,
                &chain,
                self.cs(),
                |c| self.boot.cluster_offset(c),
                offset,
                buf.get_mut(..stored).unwrap_or_default(),
            )?;
        }
        buf.get_mut(stored..len).unwrap_or_default().fill(0);
        Ok(len)
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        Err(Error::NotASymlink(format!("exfat node {node}")))
    }

    fn xattrs(&self, _node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn utc_offsets_and_centiseconds() {
        // 2020-01-02 03:04:06, as a DOS date and time.
        let stamp = (40u32 << 25 | 1 << 21 | 2 << 16) | (3 << 11 | 4 << 5 | 3);
        let utc = 1_577_934_246;
        let t = |centis, utc_offset| {
            exfat_time(
                RawTime {
                    stamp,
                    centis,
                    utc_offset,
                },
                true,
            )
        };
        assert_eq!(
            t(0, 0),
            Timespec {
                secs: utc,
                nanos: 0
            }
        );
        assert_eq!(
            t(150, 0),
            Timespec {
                secs: utc + 1,
                nanos: 500_000_000
            }
        );
        // Valid offset +1 h (4 quarters): local time was an hour ahead.
        assert_eq!(t(0, 0x80 | 4).secs, utc - 3600);
        // -1 h, as a 7-bit two's complement.
        assert_eq!(t(0, 0x80 | 0x7C).secs, utc + 3600);
        // Offset bits without the valid bit are ignored.
        assert_eq!(t(0, 4).secs, utc);
    }
}
