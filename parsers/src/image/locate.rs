//! Where the files of a restore point are read from: the parent resolver.
//!
//! Design: [`super::open`] and the chain resolver ([`super::chain`]) never
//! touch the host filesystem themselves. They hand every location to a
//! [`Locator`], which opens it read-only as a [`Source`], answers whether
//! something is there, finds a name a file writes (a parent link, an
//! extent, a data file) beside it, and says which file a location is (for
//! cycles), how to show it (never with credentials) and when it changed.
//!
//! A location is a [`Path`]: a host path for [`LocalFs`], a key for
//! [`MemLocator`], a URL for the remote locator. [`locator`] is the one the
//! library opens images with; it sends each location to the locator its
//! form calls for, so a local delta may name a parent given by URL and a
//! delta read by URL finds its relative parent beside its URL.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::readat::{FileSource, MemSource};
use crate::{Error, Result, Source};

/// Where image files are found: the host filesystem, memory, a server.
pub trait Locator: Send + Sync {
    /// Opens the file at `loc` read-only.
    fn open(&self, loc: &Path) -> Result<Source>;

    /// Whether `loc` names a file [`Locator::open`] can open (a regular
    /// file or a device, an object; not a folder), without opening it.
    fn exists(&self, loc: &Path) -> bool;

    /// The location of `name` (relative, `/`-separated, as a link names a
    /// parent) taken beside the file at `loc`, i.e. in its folder.
    fn beside(&self, loc: &Path, name: &Path) -> PathBuf;

    /// Which file `loc` is, so two locations of one file (a hard link, a
    /// symlink, `a/../b`) compare equal.
    fn identity(&self, loc: &Path) -> FileId;

    /// `loc` as messages and `info` show it: never with credentials. For a
    /// host file, the path itself.
    fn name(&self, loc: &Path) -> PathBuf;

    /// When the file at `loc` was last modified, if known.
    fn modified(&self, loc: &Path) -> Option<SystemTime>;
}

/// Which file a location is, for cycle detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileId {
    /// A host file: device and inode.
    Inode(u64, u64),
    /// Anything else: a normalized name (canonical path, URL, key).
    Name(PathBuf),
}

/// The default locator: host paths through [`LocalFs`], URLs through the
/// remote locator (see the module docs).
pub fn locator() -> &'static dyn Locator {
    &Auto
}

/// The host filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFs;

impl Locator for LocalFs {
    fn open(&self, loc: &Path) -> Result<Source> {
        let file = FileSource::open(loc)
            .map_err(|e| Error::io("image", 0, e).context(loc.display().to_string()))?;
        Ok(Arc::new(file))
    }

    fn exists(&self, loc: &Path) -> bool {
        std::fs::metadata(loc).is_ok_and(|m| !m.is_dir())
    }

    fn beside(&self, loc: &Path, name: &Path) -> PathBuf {
        join(loc.parent().unwrap_or(Path::new(".")), name)
    }

    fn identity(&self, loc: &Path) -> FileId {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(loc) {
            Ok(m) => FileId::Inode(m.dev(), m.ino()),
            Err(_) => FileId::Name(std::fs::canonicalize(loc).unwrap_or_else(|_| loc.into())),
        }
    }

    fn name(&self, loc: &Path) -> PathBuf {
        loc.to_path_buf()
    }

    fn modified(&self, loc: &Path) -> Option<SystemTime> {
        std::fs::metadata(loc).and_then(|m| m.modified()).ok()
    }
}

/// Files held in memory under path-like keys (`dir/base.vhd`): chains for
/// tests and fuzzers without touching the disk. Relative names resolve
/// beside a key as on a host, `..` taken lexically.
#[derive(Clone, Default)]
pub struct MemLocator {
    files: HashMap<PathBuf, Source>,
}

impl MemLocator {
    pub fn new() -> MemLocator {
        MemLocator::default()
    }

    /// Adds (or replaces) the file at `key`.
    pub fn insert(&mut self, key: impl Into<PathBuf>, bytes: Vec<u8>) {
        self.files
            .insert(lexical(&key.into()), Arc::new(MemSource(bytes)));
    }
}

impl Locator for MemLocator {
    fn open(&self, loc: &Path) -> Result<Source> {
        self.files
            .get(&lexical(loc))
            .cloned()
            .ok_or_else(|| Error::NotFound(loc.display().to_string()))
    }

    fn exists(&self, loc: &Path) -> bool {
        self.files.contains_key(&lexical(loc))
    }

    fn beside(&self, loc: &Path, name: &Path) -> PathBuf {
        LocalFs.beside(loc, name)
    }

    fn identity(&self, loc: &Path) -> FileId {
        FileId::Name(lexical(loc))
    }

    fn name(&self, loc: &Path) -> PathBuf {
        loc.to_path_buf()
    }

    fn modified(&self, _loc: &Path) -> Option<SystemTime> {
        None
    }
}

/// Dispatches each location by its form (see [`locator`]).
struct Auto;

impl Auto {
    fn pick(loc: &Path) -> &'static dyn Locator {
        if crate::remote::is_url(loc) {
            &crate::remote::RemoteLocator
        } else {
            &LocalFs
        }
    }
}

impl Locator for Auto {
    fn open(&self, loc: &Path) -> Result<Source> {
        Self::pick(loc).open(loc)
    }
    fn exists(&self, loc: &Path) -> bool {
        Self::pick(loc).exists(loc)
    }
    fn beside(&self, loc: &Path, name: &Path) -> PathBuf {
        Self::pick(loc).beside(loc, name)
    }
    fn identity(&self, loc: &Path) -> FileId {
        Self::pick(loc).identity(loc)
    }
    fn name(&self, loc: &Path) -> PathBuf {
        Self::pick(loc).name(loc)
    }
    fn modified(&self, loc: &Path) -> Option<SystemTime> {
        Self::pick(loc).modified(loc)
    }
}

/// `dir/rel`, without a leading `./` when `dir` is the current folder.
fn join(dir: &Path, rel: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        rel.to_path_buf()
    } else {
        dir.join(rel)
    }
}

/// `path` with `.` dropped and `..` taken against the component before it.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReadAt;

    #[test]
    fn mem_locator_resolves_beside_and_lexically() {
        let mut m = MemLocator::new();
        m.insert("vm/base.img", vec![1, 2, 3]);
        let child = Path::new("vm/deltas/top.img");
        let p = m.beside(child, Path::new("../base.img"));
        assert!(m.exists(&p));
        assert_eq!(m.identity(&p), m.identity(Path::new("vm/base.img")));
        assert!(m.open(&p).is_ok_and(|s| s.size() == 3));
        assert!(m.open(Path::new("vm/none")).is_err());
    }

    /// A qcow2 delta with a relative backing name, held in memory under
    /// other folder names than it was made in: the chain resolves through
    /// the locator alone and reads as qemu-img reads the files.
    #[test]
    fn chain_opens_from_memory() {
        use crate::testutil::{have, run, TempDir};
        use std::process::Command;
        if !have("qemu-img") {
            return;
        }
        let dir = TempDir::new("memchain");
        std::fs::create_dir_all(dir.join("d")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let (base, top) = (dir.join("base.qcow2"), dir.join("d/top.qcow2"));
        run(Command::new("qemu-img")
            .args(["create", "-f", "qcow2"])
            .arg(&base)
            .arg("4M"));
        run(Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5a 64k 1M"])
            .arg(&base));
        run(Command::new("qemu-img")
            .args([
                "create",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "../base.qcow2",
            ])
            .arg(&top));
        run(Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0xa5 512k 64k"])
            .arg(&top));
        let raw = dir.join("want.raw");
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&top)
            .arg(&raw));
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let want = read(&raw);
        let mut m = MemLocator::new();
        m.insert("mem/vm/base.qcow2", read(&base));
        m.insert("mem/vm/x/top.qcow2", read(&top));
        let img = crate::image::open_in(
            &m,
            Path::new("mem/vm/x/top.qcow2"),
            &crate::image::OpenOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.chain.len(), 2);
        assert_eq!(img.chain[1].file, Path::new("mem/vm/x/../base.qcow2"));
        let mut got = vec![0u8; img.disk.size() as usize];
        img.disk
            .read_exact_at(0, &mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got == want, "memory chain differs from qemu-img");
    }
}
