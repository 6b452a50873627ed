//! NTFS, read through the `ntfs` crate.
//!
//! Node ids are MFT record numbers (root = 5), so hard links are one node.
//! What the crate does not offer, or does in a way hostile images can
//! abuse, is done here:
//!
//! - `data`: values (resident, runs, attribute lists) decoded once per
//!   node and cached; reads go straight to the source, sparse runs and bytes
//!   past the valid data length read as zeros, LZNT1-compressed units are
//!   decompressed (`lznt1`) into the chunk cache, encrypted data is
//!   refused (Unsupported), never returned raw;
//! - `index`: directory B+ trees walked with cycle and depth bounds;
//! - `mft`: file records split across two $MFT runs read whole, and
//!   records of an $MFT whose runs need an attribute list reached;
//! - `names`: the listing rules (metafiles, 8.3 aliases, duplicates);
//! - `reparse`: symlinks and junctions, and ntfs-3g's Interix files;
//! - `wof`, `xpress`, `lzx`: WOF system compression (XPRESS Huffman and
//!   LZX chunks); dedup, cloud and other reparse tags refuse reads, naming
//!   the tag;
//! - `record`, `times`: raw header fields, timestamps.
//!
//! The view matches ntfs-3g mounted with
//! `-o ro,uid=0,gid=0,fmask=0133,dmask=0022,streams_interface=xattr`
//! (modes 0644/0755/0777, directories with one link, named streams as
//! `user.*` xattrs), except that: reparse points of unknown tags are files
//! whose reads fail, where ntfs-3g shows a dangling symlink; WOF files read
//! decompressed (ntfs-3g needs a plugin); links to drives other than C:
//! dangle (`/D:/...`) where ntfs-3g puts them under its mount point.

mod data;
mod index;
mod lznt1;
mod lzx;
mod mft;
mod names;
mod record;
mod reparse;
mod shutdown;
mod times;
mod wof;
mod xpress;

#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};

use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsVolumeFlags};
use ntfs::{Ntfs, NtfsAttributeType, NtfsError, NtfsFile, NtfsFileFlags};

use self::data::{NamedValue, Stream, Value};
use self::index::Walk;
use self::mft::{MftCursor, SplitRecords};
use self::names::{RawEntry, LOGFILE_RECORD, ROOT_RECORD};
use self::reparse::{Interix, Target};
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat};
use crate::memo::Memo;
use crate::{Error, ReadAt, Result, Source};

/// Decoded nodes kept (stat, data runs): enough for a busy directory walk.
const CACHE_NODES: usize = 4096;
/// Most entries one directory may list; bounds memory on a corrupt index.
const MAX_DIR_ENTRIES: usize = 1 << 22;
/// Most bytes of named streams returned as xattrs of one node.
const MAX_XATTR: u64 = 64 << 20;
/// Largest file record accepted (real volumes: 1 KiB, or 4 KiB on 4Kn disks).
const MAX_RECORD: u32 = 64 * 1024;
/// Deepest directory nesting followed when placing an absolute link.
const MAX_PATH_DEPTH: usize = 256;

/// An NTFS volume, shared by many threads: every call makes its own cursor
/// over the source, and the only shared mutable state is the node cache.
pub struct NtfsFs {
    src: Source,
    ntfs: Ntfs,
    has_upcase: bool,
    warnings: Vec<String>,
    cache: Memo<NodeId, Node>,
    info: OnceLock<FsInfo>,
    /// [`NtfsFs::shutdown_warnings`], read once.
    shutdown: OnceLock<Vec<String>>,
    split: SplitRecords,
}

/// What a node's data reads as.
#[derive(Debug)]
enum Content {
    Dir,
    Data(Stream),
    /// Reads fail with Unsupported, for this reason.
    Refused(String),
}

/// A decoded file record: its stat, its data and its link target.
#[derive(Debug)]
struct Node {
    stat: Stat,
    content: Content,
    link: Option<String>,
}

/// Opens the NTFS volume on `src` (see [`NtfsFs::open`]).
pub fn open(src: Source) -> Result<NtfsFs> {
    NtfsFs::open(src)
}

/// Turns the crate's errors into ours, keeping I/O errors apart.
pub(crate) fn ntfs_err(e: NtfsError) -> Error {
    match e {
        NtfsError::Io(io) => Error::io("ntfs", 0, io),
        other => Error::corrupt("ntfs", 0, other.to_string()),
    }
}

impl NtfsFs {
    /// Opens the filesystem on `src`: checks the boot sector, reads $UpCase
    /// and the root directory's record.
    pub fn open(src: Source) -> Result<Self> {
        let mut warnings = Vec::new();
        // The crate panics (`unreachable!`) when binrw reports the boot
        // sector cut short: binrw wraps that I/O error in a backtrace the
        // crate does not expect. So check it is all there first.
        let mut boot = [0u8; 512];
        src.read_exact_at(0, &mut boot)
            .map_err(|e| Error::io("ntfs", 0, e).context("boot sector"))?;
        let no_split = SplitRecords::default();
        let mut cur = MftCursor::new(&*src, &no_split);
        let mut ntfs = Ntfs::new(&mut cur).map_err(ntfs_err)?;
        // The crate accepts records of up to 127 clusters (254 MiB) and
        // allocates one per record read; real volumes use 1 or 4 KiB.
        if !(1024..=MAX_RECORD).contains(&ntfs.file_record_size()) {
            return Err(Error::corrupt(
                "ntfs",
                0,
                format!("file record size {}", ntfs.file_record_size()),
            ));
        }
        if ntfs.size() > src.size() {
            warnings.push(format!(
                "volume claims {} bytes but its source has {}",
                ntfs.size(),
                src.size()
            ));
        }
        let has_upcase = match ntfs.read_upcase_table(&mut cur) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(format!(
                    "$UpCase unreadable ({e}); names compared by ASCII case only"
                ));
                false
            }
        };
        let mut fs = NtfsFs {
            src,
            ntfs,
            has_upcase,
            warnings,
            cache: Memo::new(CACHE_NODES),
            info: OnceLock::new(),
            shutdown: OnceLock::new(),
            split: SplitRecords::default(),
        };
        // Record 0 lies in the $MFT's first run, so it reads without help.
        match fs.mft_stream() {
            Ok(mft) => {
                let mut split = SplitRecords::new(mft, fs.ntfs.file_record_size());
                if let Some(rec0) = fs.mft_record0_if_listed() {
                    let pos = fs.ntfs.mft_position().value().map_or(0, |p| p.get());
                    let cluster = u64::from(fs.ntfs.cluster_size());
                    let end = fs.src.size().max(fs.ntfs.size());
                    split.virtualize(&rec0, pos, cluster, end);
                }
                fs.split = split;
            }
            Err(e) => fs.warnings.push(format!("$MFT data unreadable: {e}")),
        }
        if fs.stat(ROOT_RECORD)?.kind != FileType::Dir {
            return Err(Error::corrupt("ntfs", 0, "root record is not a directory"));
        }
        Ok(fs)
    }

    /// Record 0's bytes as on disk, if it has an attribute list (its
    /// $DATA then continues in other records).
    fn mft_record0_if_listed(&self) -> Option<Vec<u8>> {
        let mut cur = self.cursor();
        let file = self.file(&mut cur, 0).ok()?;
        let listed = file
            .attributes_raw()
            .filter_map(|a| a.ok())
            .any(|a| matches!(a.ty(), Ok(NtfsAttributeType::AttributeList)));
        if !listed {
            return None;
        }
        let pos = self.ntfs.mft_position().value()?.get();
        let mut buf = vec![0u8; self.ntfs.file_record_size() as usize];
        self.src.read_exact_at(pos, &mut buf).ok()?;
        Some(buf)
    }

    fn cursor(&self) -> MftCursor<'_> {
        MftCursor::new(&*self.src, &self.split)
    }

    /// The $MFT's own unnamed data: the map from record numbers to disk.
    fn mft_stream(&self) -> Result<Stream> {
        let mut cur = self.cursor();
        let file = self.file(&mut cur, 0)?;
        let v = self.values(&mut cur, &file, NtfsAttributeType::Data, Some(""))?;
        match v.into_iter().next().map(|v| v.value) {
            Some(Value::Ok(s)) => Ok(s),
            Some(Value::Refused(why)) => Err(Error::unsupported("ntfs", why)),
            None => Err(Error::corrupt("ntfs", 0, "$MFT without data")),
        }
    }

    fn file<'n>(&'n self, cur: &mut MftCursor<'_>, id: NodeId) -> Result<NtfsFile<'n>> {
        let file = self.ntfs.file(cur, id).map_err(ntfs_err)?;
        if !file.flags().contains(NtfsFileFlags::IN_USE) {
            return Err(Error::NotFound(format!("ntfs file record {id}")));
        }
        Ok(file)
    }

    /// The decoded node, from the cache or the disk. The lock is never held
    /// during I/O; two threads missing at once both decode, harmlessly.
    fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.cache.get_or_make(id, || self.decode(id).map(Arc::new))
    }

    fn values(
        &self,
        cur: &mut MftCursor<'_>,
        file: &NtfsFile,
        ty: NtfsAttributeType,
        want: Option<&str>,
    ) -> Result<Vec<NamedValue>> {
        data::values(&self.ntfs, cur, file, ty, want)
    }

    /// Reads a whole value of at most `max` bytes.
    fn read_all(&self, v: &NamedValue, max: u64, what: &str) -> Result<Vec<u8>> {
        let stream = match &v.value {
            Value::Ok(s) => s,
            Value::Refused(why) => return Err(Error::unsupported("ntfs", why.clone())),
        };
        let len = stream.len();
        if len > max {
            return Err(Error::corrupt(
                "ntfs",
                0,
                format!("{what} of {len} bytes (at most {max})"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        let n = stream.read(&*self.src, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn decode(&self, id: NodeId) -> Result<Node> {
        let mut cur = self.cursor();
        let file = self.file(&mut cur, id)?;
        let si = file.info().map_err(ntfs_err)?;
        let attrs = si.file_attributes();
        let is_dir = file.is_directory();
        let mut kind = if is_dir {
            FileType::Dir
        } else {
            FileType::File
        };
        let mut link = None;
        let mut refused = None;
        let mut rdev = 0;
        let mut wof_algorithm = None;

        if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            let rp = self.values(&mut cur, &file, NtfsAttributeType::ReparsePoint, Some(""))?;
            if let Some(rp) = rp.first() {
                let bytes = self.read_all(rp, reparse::MAX_REPARSE, "reparse point")?;
                let tag = reparse::tag(&bytes).unwrap_or(0);
                match reparse::link_target(&bytes) {
                    Some(target) => {
                        kind = FileType::Symlink;
                        link = Some(self.place_target(&mut cur, &file, target));
                    }
                    None if !is_dir && tag == wof::TAG_WOF => match wof::parse_reparse(&bytes) {
                        Ok(a) => wof_algorithm = Some(a),
                        Err(why) => refused = Some(format!("file record {id}: {why}")),
                    },
                    None if !is_dir => {
                        refused = Some(format!(
                            "file record {id}: reparse point with tag {tag:#010x}{}, not readable here",
                            reparse::tag_meaning(tag)
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        ));
                    }
                    None => {}
                }
            }
        }

        let (content, size, allocated) = if is_dir {
            let ia = self.values(
                &mut cur,
                &file,
                NtfsAttributeType::IndexAllocation,
                Some("$I30"),
            )?;
            let (size, alloc) = ia.first().map(|v| (v.size, v.allocated)).unwrap_or((0, 0));
            (Content::Dir, size, alloc)
        } else {
            let data = self
                .values(&mut cur, &file, NtfsAttributeType::Data, Some(""))?
                .into_iter()
                .next();
            match data {
                None => (Content::Data(Stream::Resident(Vec::new())), 0, 0),
                Some(v) => {
                    let content = match v.value {
                        Value::Ok(s) => Content::Data(s),
                        Value::Refused(why) => Content::Refused(why),
                    };
                    (content, v.size, v.allocated)
                }
            }
        };
        let (mut content, mut allocated) = (content, allocated);
        if let Some(algorithm) = wof_algorithm {
            // The unnamed value is sparse with the real size; the data is
            // in the named stream.
            let raw = self
                .values(&mut cur, &file, NtfsAttributeType::Data, Some(wof::STREAM))?
                .into_iter()
                .next();
            // What the file takes on disk is the compressed stream.
            if let Some(v) = &raw {
                allocated = v.allocated;
            }
            content = match raw.map(|v| v.value) {
                Some(Value::Ok(raw)) => {
                    Content::Data(Stream::Wof(Box::new(wof::Wof::new(raw, size, algorithm))))
                }
                Some(Value::Refused(why)) => Content::Refused(why),
                None => Content::Refused(format!(
                    "file record {id}: WOF-compressed without its {} stream",
                    wof::STREAM
                )),
            };
        }
        if !is_dir && attrs.contains(NtfsFileAttributeFlags::ENCRYPTED) {
            content = Content::Refused(format!("file record {id}: EFS-encrypted file"));
        }

        // Interix files: ntfs-3g's `ln -s`, `mkfifo`, `mknod`.
        if kind == FileType::File
            && attrs.contains(NtfsFileAttributeFlags::SYSTEM)
            && !attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT)
            && size <= reparse::MAX_INTERIX
        {
            if let Content::Data(s) = &content {
                let mut buf = vec![0u8; size as usize];
                let n = s.read(&*self.src, 0, &mut buf)?;
                buf.truncate(n);
                match reparse::interix(&buf) {
                    Some(Interix::Symlink(t)) => {
                        kind = FileType::Symlink;
                        link = Some(t);
                    }
                    Some(Interix::Fifo) => kind = FileType::Fifo,
                    Some(Interix::Socket) => kind = FileType::Socket,
                    Some(Interix::Char(ma, mi)) => {
                        kind = FileType::CharDevice;
                        rdev = reparse::makedev(ma, mi);
                    }
                    Some(Interix::Block(ma, mi)) => {
                        kind = FileType::BlockDevice;
                        rdev = reparse::makedev(ma, mi);
                    }
                    None => {}
                }
            }
        }
        if let Some(why) = refused {
            content = Content::Refused(why);
        }

        let (size, mode, content) = match kind {
            FileType::Dir => (size, 0o755, content),
            FileType::Symlink => {
                let len = link.as_ref().map(|l| l.len() as u64).unwrap_or(0);
                let why = format!("file record {id} is a symbolic link");
                (len, 0o777, Content::Refused(why))
            }
            FileType::File => (size, 0o644, content),
            // Devices, FIFOs, sockets: ntfs-3g shows the Interix data size.
            _ => (size, 0o644, Content::Data(Stream::Resident(Vec::new()))),
        };
        let stat = Stat {
            node: id,
            kind,
            size,
            mode,
            uid: 0,
            gid: 0,
            // ntfs-3g shows directories with one link and files with the
            // record's count of names (DOS aliases included).
            nlink: if is_dir {
                1
            } else {
                u32::from(file.hard_link_count()).max(1)
            },
            rdev,
            allocated,
            atime: times::to_timespec(si.access_time().nt_timestamp()),
            mtime: times::to_timespec(si.modification_time().nt_timestamp()),
            ctime: times::to_timespec(si.mft_record_modification_time().nt_timestamp()),
            crtime: Some(times::to_timespec(si.creation_time().nt_timestamp())),
        };
        Ok(Node {
            stat,
            content,
            link,
        })
    }

    /// Where a reparse-point target points, as seen from the link.
    ///
    /// ntfs-3g shows targets on the volume with the names' case as stored
    /// (it looks each component up), relative ones relative and absolute
    /// ones (any drive letter) under its mount point. We cannot know the
    /// mount point, so absolute targets become relative paths climbing to
    /// the volume root (`../..`), which resolve to the same file wherever
    /// the volume is mounted. Only C: is taken for this volume: targets on
    /// other drives (and volume GUID paths) stay absolute (`/D:/dir`), so
    /// they dangle rather than name a file of this volume.
    fn place_target(&self, cur: &mut MftCursor<'_>, file: &NtfsFile, target: Target) -> String {
        let Some(parent) = self.parent(cur, file) else {
            return match target {
                Target::Relative(s) | Target::Foreign(s) => s,
                Target::FromRoot(s) => format!("/{s}"),
            };
        };
        match target {
            Target::Foreign(s) => s,
            Target::Relative(s) => {
                let trailing = s.ends_with('/');
                let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
                let fixed = self.fix_case(parent, &parts).join("/");
                let lead = if s.starts_with('/') { "/" } else { "" };
                format!("{lead}{fixed}{}", if trailing { "/" } else { "" })
            }
            Target::FromRoot(rest) => {
                let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
                let fixed = self.fix_case(ROOT_RECORD, &parts).join("/");
                match self.depth(cur, parent) {
                    Some(0) => fixed,
                    Some(d) => format!("{}{fixed}", "../".repeat(d)),
                    None => format!("/{fixed}"),
                }
            }
        }
    }

    /// `parts` walked from directory `dir`, each name replaced by the name
    /// as stored; from the first one not found the rest stay as written.
    fn fix_case(&self, mut dir: u64, parts: &[&str]) -> Vec<String> {
        let mut out = Vec::with_capacity(parts.len());
        let mut lost = false;
        for (i, part) in parts.iter().enumerate() {
            if lost || i >= MAX_PATH_DEPTH || *part == "." {
                out.push(part.to_string());
                continue;
            }
            if *part == ".." {
                let mut cur = self.cursor();
                let up = self
                    .file(&mut cur, dir)
                    .ok()
                    .and_then(|f| self.parent(&mut cur, &f));
                match up {
                    Some(up) => dir = up,
                    None => lost = true,
                }
                out.push(part.to_string());
                continue;
            }
            match self.find_entry(dir, part) {
                Ok(Some((rec, name))) => {
                    dir = rec;
                    out.push(name);
                }
                _ => {
                    lost = true;
                    out.push(part.to_string());
                }
            }
        }
        out
    }

    /// The entry named `name` in `dir` by Windows' rules: its record and
    /// its name as stored. An exact-case match wins over a case-folded one
    /// (POSIX-namespace names may differ only by case).
    fn find_entry(&self, dir: NodeId, name: &str) -> Result<Option<(u64, String)>> {
        if name.is_empty() || name == "." || name == ".." {
            return Ok(None);
        }
        let found = if self.has_upcase {
            let mut cur = self.cursor();
            let file = self.dir_file(&mut cur, dir)?;
            let hit = index::find(&file, &mut cur, &|key| {
                index::upcase_cmp(&self.ntfs, name, key)
            })?;
            match hit {
                Some((rec, key)) => {
                    let stored = key.name().to_string_lossy();
                    if stored == name {
                        Some((rec, stored))
                    } else {
                        // Case differs: an exact POSIX name may sit beside it.
                        let exact = self
                            .raw_entries(dir)?
                            .into_iter()
                            .find(|e| e.name == name)
                            .map(|e| (e.record, e.name));
                        Some(exact.unwrap_or((rec, stored)))
                    }
                }
                None => None,
            }
        } else {
            let raw = self.raw_entries(dir)?;
            let exact = raw.iter().find(|e| e.name == name);
            exact
                .or_else(|| raw.iter().find(|e| e.name.eq_ignore_ascii_case(name)))
                .map(|e| (e.record, e.name.clone()))
        };
        Ok(found.filter(|&(rec, _)| !names::is_metafile(dir, rec)))
    }

    /// How many directories lie between the root and directory `dir`.
    fn depth(&self, cur: &mut MftCursor<'_>, mut dir: u64) -> Option<usize> {
        for depth in 0..MAX_PATH_DEPTH {
            if dir == ROOT_RECORD {
                return Some(depth);
            }
            let f = self.file(cur, dir).ok()?;
            dir = self.parent(cur, &f)?;
        }
        None
    }

    fn parent(&self, cur: &mut MftCursor<'_>, file: &NtfsFile) -> Option<u64> {
        let name = file.name(cur, None, None)?.ok()?;
        Some(name.parent_directory_reference().file_record_number())
    }

    fn dir_file<'n>(&'n self, cur: &mut MftCursor<'_>, dir: NodeId) -> Result<NtfsFile<'n>> {
        let file = self.file(cur, dir)?;
        if !file.is_directory() {
            return Err(Error::NotADirectory(format!("ntfs file record {dir}")));
        }
        Ok(file)
    }

    /// Every name in `dir`'s index, unfiltered.
    fn raw_entries(&self, dir: NodeId) -> Result<Vec<RawEntry>> {
        let mut cur = self.cursor();
        let file = self.dir_file(&mut cur, dir)?;
        let mut raw = Vec::new();
        index::for_each(&file, &mut cur, &mut |entry, key| {
            if raw.len() >= MAX_DIR_ENTRIES {
                return Err(Error::corrupt("ntfs", 0, "directory has too many entries"));
            }
            raw.push(RawEntry {
                name: key.name().to_string_lossy(),
                record: entry.file_reference().file_record_number(),
                namespace: key.namespace(),
                attributes: key.file_attributes(),
            });
            Ok(Walk::Continue)
        })?;
        Ok(raw)
    }

    fn free_bits(&self, id: NodeId, ty: NtfsAttributeType, bits: u64) -> Option<u64> {
        let mut cur = self.cursor();
        let file = self.file(&mut cur, id).ok()?;
        let v = self.values(&mut cur, &file, ty, Some("")).ok()?;
        let Value::Ok(stream) = &v.first()?.value else {
            return None;
        };
        let bits = bits.min(stream.len().saturating_mul(8));
        let mut free = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off * 8 < bits {
            let n = stream.read(&*self.src, off, &mut buf).ok()?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let first = (off + i as u64) * 8;
                if first >= bits {
                    break;
                }
                let valid = (bits - first).min(8) as u32;
                let mask = if valid == 8 { 0xff } else { (1u8 << valid) - 1 };
                free += u64::from((!b & mask).count_ones());
            }
            off += n as u64;
        }
        Some(free)
    }

    /// `node`'s named `$DATA` stream `name` and its name as stored: the
    /// exact name first, else one equal but for ASCII case (Windows
    /// compares stream names without case).
    fn named_stream(&self, node: NodeId, name: &OsStr) -> Result<Option<(Stream, String)>> {
        let Some(name) = name.to_str().filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let mut cur = self.cursor();
        let file = self.file(&mut cur, node)?;
        let values = self.values(&mut cur, &file, NtfsAttributeType::Data, None)?;
        let found = values.iter().find(|v| v.name == name).or_else(|| {
            values
                .iter()
                .find(|v| !v.name.is_empty() && v.name.eq_ignore_ascii_case(name))
        });
        match found {
            None => Ok(None),
            Some(v) => match &v.value {
                Value::Ok(s) => Ok(Some((s.clone(), v.name.clone()))),
                Value::Refused(why) => Err(Error::unsupported("ntfs", why.clone())),
            },
        }
    }

    /// What says the volume on disk may lack the newest changes: the
    /// dirty flag, an unclean $LogFile, a hibernated Windows (see
    /// [`shutdown`]); read once.
    fn shutdown_warnings(&self) -> &[String] {
        self.shutdown.get_or_init(|| self.read_shutdown_state())
    }

    fn read_shutdown_state(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.cursor();
        match self.ntfs.volume_info(&mut cur) {
            Ok(v) if v.flags().contains(NtfsVolumeFlags::IS_DIRTY) => out.push(
                "volume marked dirty: Windows did not shut it down cleanly (or chkdsk is due)"
                    .to_string(),
            ),
            Ok(_) => {}
            Err(e) => out.push(format!("$Volume flags unreadable: {e}")),
        }
        let mut head = vec![0u8; 8192];
        match self.read(LOGFILE_RECORD, 0, &mut head) {
            Ok(n) => match shutdown::log_state(&head[..n]) {
                shutdown::LogState::Clean => {}
                shutdown::LogState::Unclean => out.push(
                    "$LogFile holds changes not known to be in place (the copy was taken while \
                     Windows was running, or after a crash): they are not replayed, so the \
                     newest changes may be missing"
                        .to_string(),
                ),
                shutdown::LogState::Unknown(why) => {
                    out.push(format!("$LogFile state unknown ({why})"))
                }
            },
            Err(e) => out.push(format!("$LogFile unreadable: {e}")),
        }
        let hiberfil = self
            .lookup(ROOT_RECORD, OsStr::new("hiberfil.sys"))
            .ok()
            .flatten();
        if let Some(h) = hiberfil {
            let mut magic = [0u8; 4];
            if matches!(self.read(h, 0, &mut magic), Ok(4)) && shutdown::hibernated(&magic) {
                out.push(
                    "Windows is hibernated (hiberfil.sys; Fast Startup does this too): its \
                     newest state is in hiberfil.sys, not on this volume"
                        .to_string(),
                );
            }
        }
        out
    }

    fn compute_info(&self) -> FsInfo {
        let mut cur = self.cursor();
        let mut warnings = self.warnings.clone();
        let label = match self.ntfs.volume_name(&mut cur) {
            Some(Ok(n)) => Some(n.name().to_string_lossy()),
            Some(Err(e)) => {
                warnings.push(format!("volume label unreadable: {e}"));
                None
            }
            None => None,
        };
        warnings.extend_from_slice(self.shutdown_warnings());
        let cluster = u64::from(self.ntfs.cluster_size());
        let total_bytes = self.ntfs.size();
        // Bitmaps are read only as far as the source could hold clusters
        // or records, so a corrupt size cannot make us scan for ages.
        let clusters = total_bytes.min(self.src.size()) / cluster.max(1);
        let free_bytes = match self.free_bits(6, NtfsAttributeType::Data, clusters) {
            Some(f) => f * cluster,
            None => {
                warnings.push("$Bitmap unreadable: free space unknown".into());
                0
            }
        };
        let record = u64::from(self.ntfs.file_record_size()).max(1);
        let total_nodes = self
            .file(&mut cur, 0)
            .ok()
            .and_then(|f| {
                self.values(&mut cur, &f, NtfsAttributeType::Data, Some(""))
                    .ok()
            })
            .and_then(|v| v.first().map(|v| v.size / record))
            .unwrap_or(0)
            .min(self.src.size() / record);
        let free_nodes = self
            .free_bits(0, NtfsAttributeType::Bitmap, total_nodes)
            .unwrap_or(0);
        FsInfo {
            kind: "ntfs".into(),
            label,
            uuid: Some(format!("{:016X}", self.ntfs.serial_number())),
            block_size: self.ntfs.cluster_size(),
            total_bytes,
            free_bytes,
            total_nodes,
            free_nodes,
            warnings,
        }
    }
}

impl FileSystem for NtfsFs {
    fn info(&self) -> FsInfo {
        self.info.get_or_init(|| self.compute_info()).clone()
    }

    fn warnings(&self) -> Vec<String> {
        match self.info.get() {
            Some(i) => i.warnings.clone(),
            None => {
                let mut w = self.warnings.clone();
                w.extend_from_slice(self.shutdown_warnings());
                w
            }
        }
    }

    fn root(&self) -> NodeId {
        ROOT_RECORD
    }

    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        let Some(name) = name.to_str() else {
            // NTFS names are UTF-16; ntfs-3g shows them as UTF-8 only.
            return Ok(None);
        };
        Ok(self.find_entry(dir, name)?.map(|(rec, _)| rec))
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        let raw = self.raw_entries(dir)?;
        let mut out = Vec::new();
        for e in names::visible(dir, raw) {
            let dir_flag = e.attributes.contains(NtfsFileAttributeFlags::IS_DIRECTORY);
            let special = e.attributes.contains(NtfsFileAttributeFlags::REPARSE_POINT)
                || (!dir_flag && e.attributes.contains(NtfsFileAttributeFlags::SYSTEM));
            let kind = if special {
                // Reparse points and Interix files need their record.
                self.stat(e.record)
                    .map(|s| s.kind)
                    .unwrap_or(FileType::File)
            } else if dir_flag {
                FileType::Dir
            } else {
                FileType::File
            };
            out.push(DirEntry {
                name: OsString::from(e.name),
                node: e.record,
                kind,
            });
        }
        Ok(out)
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        Ok(self.node(node)?.stat.clone())
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.node(node)?;
        match &n.content {
            Content::Dir => Err(Error::IsADirectory(format!("ntfs file record {node}"))),
            Content::Refused(why) => Err(Error::unsupported("ntfs", why.clone())),
            Content::Data(s) => s.read(&*self.src, offset, buf),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        match &self.node(node)?.link {
            Some(t) => Ok(OsString::from(t)),
            None => Err(Error::NotASymlink(format!("ntfs file record {node}"))),
        }
    }

    fn note(&self, node: NodeId) -> Option<String> {
        let n = self.node(node).ok()?;
        match (&n.content, n.stat.kind) {
            (Content::Refused(why), FileType::File) => {
                let prefix = format!("file record {node}: ");
                Some(why.strip_prefix(&prefix).unwrap_or(why).to_string())
            }
            _ => None,
        }
    }

    fn stream_len(&self, node: NodeId, name: &OsStr) -> Result<Option<u64>> {
        Ok(self.named_stream(node, name)?.map(|(s, _)| s.len()))
    }

    fn read_stream(
        &self,
        node: NodeId,
        name: &OsStr,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        match self.named_stream(node, name)? {
            Some((s, _)) => s.read(&*self.src, offset, buf),
            None => Err(Error::NotFound(format!(
                "ntfs file record {node}: no stream '{}'",
                name.to_string_lossy()
            ))),
        }
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        let mut cur = self.cursor();
        let file = self.file(&mut cur, node)?;
        let mut out = Vec::new();
        // One budget for all streams, so many large ones cannot add up.
        let mut budget = MAX_XATTR;
        for v in self.values(&mut cur, &file, NtfsAttributeType::Data, None)? {
            if v.name.is_empty() {
                continue;
            }
            let bytes = self.read_all(&v, budget, "named streams")?;
            budget -= bytes.len() as u64;
            out.push((OsString::from(format!("user.{}", v.name)), bytes));
        }
        Ok(out)
    }
}
