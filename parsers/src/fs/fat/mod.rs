//! FAT12, FAT16 and FAT32 (with VFAT long names), read by our own parser.
//!
//! Why not the `fatfs` crate: it works on a `Read + Write + Seek` stream
//! through `&mut` access (one cursor, so FUSE threads would serialise on a
//! lock), and it hands out directory iterators and files rather than stable
//! ids; we need a node id we can stat and read later from any thread. The
//! format is small enough that our own reader, with the bounds checks our
//! other readers have, costs less than adapting it. It has no exFAT either.
//!
//! Node ids are the on-disk position of a node's 8.3 entry divided by 32
//! (an entry index that is stable and unique); the root, which has no
//! entry, is [`ROOT`]. FAT times carry no zone and are taken as UTC, as
//! mtools and Linux with `TZ=UTC` show them.
//!
//! Modes are made up, as Linux vfat does with its default umask 022:
//! directories 0o755, files 0o644, or 0o444 with the read-only attribute
//! (mtools shows no modes; exfat-fuse shows everything as 0o777). Owner
//! 0:0, one link each.

mod bpb;
mod dir_entry;
pub(crate) mod fat_table;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};

pub use self::bpb::looks_like_fat;
use self::bpb::{Bpb, FatType};
use self::dir_entry::{attr, LfnBuilder, ShortEntry, Slot, ENTRY};
use self::fat_table::{Chain, FatTable, MAX_SCAN};
pub(crate) use crate::bytes::{le16, le32, le64};
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat, Timespec};
use crate::memo::Memo;
use crate::{Error, Result, Source};

/// The root directory's node id (entry index 1 is inside the boot sector,
/// so no entry has it).
pub const ROOT: NodeId = 1;
/// FAT directories hold at most 65536 entries.
const MAX_DIR_BYTES: u64 = 65536 * ENTRY as u64;
const DIR_CACHE: usize = 256;
const CHAIN_CACHE: usize = 1024;

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A DOS date and time (2-second resolution) as seconds since the epoch;
/// out-of-range fields are clamped, not rejected, so a bad time never
/// hides a file.
pub(crate) fn dos_time(date: u16, time: u16) -> i64 {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xF).clamp(1, 12);
    let day = i64::from(date & 0x1F).max(1);
    let secs = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3F) * 60
        + i64::from(time & 0x1F) * 2;
    days_from_civil(year, month, day) * 86400 + secs
}

/// A time plus a count of 10 ms units (0..=199) of the finer field.
pub(crate) fn with_centis(secs: i64, centis: u8) -> Timespec {
    let c = u32::from(centis.min(199));
    Timespec {
        secs: secs + i64::from(c / 100),
        nanos: (c % 100) * 10_000_000,
    }
}

/// Whether a name can be a path component (damaged entries can hold
/// `/`, NUL, `.` or nothing).
pub(crate) fn usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Case-insensitive key of a name: simple Unicode upper-casing (FAT
/// itself only upper-cases ASCII in 8.3 names, which this includes).
fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

/// A parsed directory.
struct Dir {
    entries: Vec<DirEntry>,
    by_name: HashMap<String, NodeId>,
}

/// A FAT12/16/32 filesystem on a source.
pub struct FatFs {
    src: Source,
    bpb: Bpb,
    fat: FatTable,
    label: Option<String>,
    warnings: Vec<String>,
    free: OnceLock<Option<u64>>,
    dirs: Memo<NodeId, Dir>,
    chains: Memo<(u32, u64), Chain>,
}

/// Where a directory's entries are.
enum DirLoc {
    /// FAT12/16 root: a fixed run of sectors.
    Fixed(u64, u64),
    /// A cluster chain from this cluster.
    Chain(u32),
}

impl FatFs {
    /// Opens the filesystem on `src`.
    pub fn open(src: Source) -> Result<Self> {
        let mut boot = vec![0u8; 512];
        src.read_exact_at(0, &mut boot)
            .map_err(|e| Error::io("fat", 0, e))?;
        let bpb = Bpb::parse(&boot)?;
        let mut warnings = Vec::new();
        if bpb.total_bytes > src.size() {
            warnings.push(format!(
                "image is {} bytes, filesystem claims {}: truncated?",
                src.size(),
                bpb.total_bytes
            ));
        }
        tracing::debug!(
            kind = bpb.fat_type.name(),
            clusters = bpb.cluster_count,
            "fat"
        );
        let fat = FatTable::new(src.clone(), &bpb);
        let mut fs = FatFs {
            src,
            bpb,
            fat,
            label: None,
            warnings,
            free: OnceLock::new(),
            dirs: Memo::new(DIR_CACHE),
            chains: Memo::new(CHAIN_CACHE),
        };
        // The root's volume-label entry is what Windows and blkid show; the
        // boot sector copy is often stale.
        fs.label = match fs.root_label() {
            Ok(Some(l)) => Some(l),
            Ok(None) => fs
                .bpb
                .label
                .map(|l| dir_entry::label_string(&l))
                .filter(|l| !l.is_empty() && l != "NO NAME"),
            Err(e) => {
                fs.warnings.push(format!("root directory: {e}"));
                None
            }
        };
        Ok(fs)
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_type_name(&self) -> &'static str {
        self.bpb.fat_type.name()
    }

    fn cs(&self) -> u64 {
        u64::from(self.bpb.cluster_size)
    }

    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.src
            .read_exact_at(offset, buf)
            .map_err(|e| Error::io("fat", offset, e))
    }

    /// The chain from `first`, at most `limit` clusters, cached.
    fn chain(&self, first: u32, limit: u64) -> Result<Arc<Chain>> {
        self.chains.get_or_make((first, limit), || {
            self.fat.chain(first, limit).map(Arc::new)
        })
    }

    /// The 8.3 entry of `node`, which must be a live file or directory.
    fn entry(&self, node: NodeId) -> Result<ShortEntry> {
        let not_found = || Error::NotFound(format!("fat node {node}"));
        let off = node.checked_mul(ENTRY as u64).ok_or_else(not_found)?;
        let in_root = self.bpb.fat_type != FatType::Fat32
            && off >= self.bpb.root_offset
            && off < self.bpb.root_offset + u64::from(self.bpb.root_entries) * ENTRY as u64;
        if !in_root && (off < self.bpb.data_offset || off >= self.bpb.total_bytes) {
            return Err(not_found());
        }
        let mut b = [0u8; ENTRY];
        self.read_raw(off, &mut b)?;
        match ShortEntry::parse(&b, self.bpb.fat_type == FatType::Fat32) {
            Slot::Short(e) if !e.is_label() && !e.is_dot() => Ok(e),
            _ => Err(not_found()),
        }
    }

    fn dir_loc(&self, node: NodeId) -> Result<DirLoc> {
        if node == ROOT {
            return Ok(match self.bpb.fat_type {
                FatType::Fat32 => DirLoc::Chain(self.bpb.root_cluster),
                _ => DirLoc::Fixed(
                    self.bpb.root_offset,
                    u64::from(self.bpb.root_entries) * ENTRY as u64,
                ),
            });
        }
        let e = self.entry(node)?;
        if !e.is_dir() {
            return Err(Error::NotADirectory(format!("fat node {node}")));
        }
        Ok(DirLoc::Chain(e.first_cluster))
    }

    /// A directory's raw bytes with the disk offset of each cluster's
    /// start (`unit` bytes each).
    fn dir_bytes(&self, loc: &DirLoc) -> Result<(Vec<u8>, Vec<u64>, u64)> {
        match *loc {
            DirLoc::Fixed(off, len) => {
                let mut v = vec![0u8; len as usize];
                self.read_raw(off, &mut v)?;
                Ok((v, vec![off], len.max(1)))
            }
            DirLoc::Chain(first) => {
                let cs = self.cs();
                let chain = self.chain(first, (MAX_DIR_BYTES / cs).max(1))?;
                if let Some(why) = &chain.broken {
                    tracing::warn!("fat: directory at cluster {first}: {why}");
                }
                let mut data = Vec::new();
                let mut starts = Vec::new();
                for &(start, n) in &chain.runs {
                    let off = self.bpb.cluster_offset(start);
                    let len = u64::from(n) * cs;
                    let at = data.len();
                    data.resize(at + len as usize, 0);
                    self.read_raw(off, data.get_mut(at..).unwrap_or_default())?;
                    starts.extend((0..u64::from(n)).map(|i| off + i * cs));
                }
                Ok((data, starts, cs))
            }
        }
    }

    /// The label from the root's volume entry, if it has one.
    fn root_label(&self) -> Result<Option<String>> {
        let (data, _, _) = self.dir_bytes(&self.dir_loc(ROOT)?)?;
        let fat32 = self.bpb.fat_type == FatType::Fat32;
        for b in data.chunks_exact(ENTRY) {
            match ShortEntry::parse(b, fat32) {
                Slot::End => break,
                Slot::Short(e) if e.is_label() => return Ok(Some(e.label())),
                _ => {}
            }
        }
        Ok(None)
    }

    fn dir(&self, node: NodeId) -> Result<Arc<Dir>> {
        self.dirs
            .get_or_make(node, || self.parse_dir(node).map(Arc::new))
    }

    fn parse_dir(&self, node: NodeId) -> Result<Dir> {
        let loc = self.dir_loc(node)?;
        let (data, starts, unit) = self
            .dir_bytes(&loc)
            .map_err(|e| e.context(format!("fat directory node {node}")))?;
        let fat32 = self.bpb.fat_type == FatType::Fat32;
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        let mut shorts = Vec::new();
        let mut lfn = LfnBuilder::default();
        for (i, b) in data.chunks_exact(ENTRY).enumerate() {
            let pos = (i * ENTRY) as u64;
            match ShortEntry::parse(b, fat32) {
                Slot::End => break,
                Slot::Free => lfn.reset(),
                Slot::Lfn => lfn.push(b),
                Slot::Short(e) => {
                    let long = lfn.finish(&e);
                    if e.is_label() || e.is_dot() {
                        continue;
                    }
                    let Some(start) = starts.get((pos / unit) as usize) else {
                        break;
                    };
                    let id = (start + pos % unit) / ENTRY as u64;
                    let short = e.display_name();
                    let name = match long.filter(|l| usable_name(l)) {
                        Some(l) => l,
                        None if usable_name(&short) => short.clone(),
                        None => {
                            tracing::warn!("fat: skipping entry {id} with an unusable name");
                            continue;
                        }
                    };
                    by_name.entry(fold(&name)).or_insert(id);
                    if usable_name(&short) {
                        shorts.push((fold(&short), id));
                    }
                    entries.push(DirEntry {
                        name: OsString::from(name),
                        node: id,
                        kind: if e.is_dir() {
                            FileType::Dir
                        } else {
                            FileType::File
                        },
                    });
                }
            }
        }
        // 8.3 aliases resolve too (as on Windows and Linux), never
        // shadowing a long name.
        for (k, id) in shorts {
            by_name.entry(k).or_insert(id);
        }
        Ok(Dir { entries, by_name })
    }

    /// Clusters of a directory (for its size).
    fn dir_clusters(&self, first: u32) -> u64 {
        self.chain(first, (MAX_DIR_BYTES / self.cs()).max(1))
            .map(|c| c.clusters)
            .unwrap_or(0)
    }

    fn free_bytes(&self) -> u64 {
        let free = self.free.get_or_init(|| {
            if self.bpb.fat_bytes <= MAX_SCAN {
                return self.fat.count_free().ok();
            }
            self.fsinfo_free()
        });
        free.unwrap_or(0).saturating_mul(self.cs())
    }

    /// The FAT32 FSInfo free-cluster hint, if it has one.
    fn fsinfo_free(&self) -> Option<u64> {
        let s = u64::from(self.bpb.fsinfo_sector);
        if s == 0 || s == 0xFFFF {
            return None;
        }
        let mut b = vec![0u8; 512];
        self.read_raw(s * u64::from(self.bpb.bytes_per_sector), &mut b)
            .ok()?;
        let n = le32(&b, 488);
        (le32(&b, 0) == 0x4161_5252 && le32(&b, 484) == 0x6141_7272 && n <= self.bpb.cluster_count)
            .then_some(u64::from(n))
    }
}

impl FileSystem for FatFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "vfat".into(),
            label: self.label.clone(),
            uuid: self
                .bpb
                .serial
                .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF)),
            block_size: self.bpb.cluster_size,
            total_bytes: u64::from(self.bpb.cluster_count) * self.cs(),
            free_bytes: self.free_bytes(),
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
        Ok(self.dir(dir)?.by_name.get(&fold(name)).copied())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        Ok(self.dir(dir)?.entries.clone())
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        let cs = self.cs();
        if node == ROOT {
            let size = match self.bpb.fat_type {
                FatType::Fat32 => self.dir_clusters(self.bpb.root_cluster) * cs,
                _ => u64::from(self.bpb.root_entries) * ENTRY as u64,
            };
            // FAT12/16 keep the root in a fixed region, not in clusters.
            return Ok(Stat {
                allocated: size,
                ..Stat::dos(node, true, false, size, cs)
            });
        }
        let e = self.entry(node)?;
        let size = if e.is_dir() {
            self.dir_clusters(e.first_cluster) * cs
        } else {
            u64::from(e.size)
        };
        let mtime = Timespec {
            secs: dos_time(e.wrt_date, e.wrt_time),
            nanos: 0,
        };
        Ok(Stat {
            atime: Timespec {
                secs: dos_time(e.acc_date, 0),
                nanos: 0,
            },
            mtime,
            ctime: mtime,
            crtime: Some(with_centis(dos_time(e.crt_date, e.crt_time), e.crt_tenth)),
            ..Stat::dos(node, e.is_dir(), e.attr & attr::READ_ONLY != 0, size, cs)
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if node == ROOT {
            return Err(Error::IsADirectory("fat root".into()));
        }
        let e = self.entry(node)?;
        if e.is_dir() {
            return Err(Error::IsADirectory(format!("fat node {node}")));
        }
        let size = u64::from(e.size);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let cs = self.cs();
        let chain = self.chain(e.first_cluster, size.div_ceil(cs))?;
        let end = offset + len as u64;
        if end > chain.clusters * cs {
            let why = chain
                .broken
                .clone()
                .unwrap_or_else(|| "cluster chain shorter than the file".into());
            return Err(Error::corrupt(
                "fat",
                node * ENTRY as u64,
                format!("reading to byte {end} of a {size}-byte file: {why}"),
            ));
        }
        let dst = buf.get_mut(..len).unwrap_or_default();
        fat_table::read_chain(
            &self.src,
            &chain,
            cs,
            |c| self.bpb.cluster_offset(c),
            offset,
            dst,
        )?;
        Ok(len)
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        Err(Error::NotASymlink(format!("fat node {node}")))
    }

    fn xattrs(&self, _node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        Ok(Vec::new())
    }
}
