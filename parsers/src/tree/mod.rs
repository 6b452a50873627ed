//! The restore tree: every volume of a restore point as one tree of nodes.
//!
//! The root lists one directory per readable volume (`p1`, `p5`, ...) and a
//! raw `p<N>.img` file for each volume whose filesystem restorefs cannot read,
//! so other tools can still be pointed at it. A bare filesystem image is the
//! root itself. Front ends (`mount/`, the CLI) only ever talk to this layer.
//!
//! A tree over every restore point of a chain ([`RestoreTree::open_points`])
//! lists one directory per point at the root (`@1-base`, `@2-delta1`, ...,
//! oldest first), each holding what the root of that point alone would.
//! The volumes of all points sit in one list, so [`Node::Fs`] and
//! [`Node::Raw`] stay as they are; only [`Node::Point`] is new.
//!
//! # How the tree composes
//!
//! Everything the tree shows is one of four things, and new capabilities
//! plug in as one of them without the front ends knowing:
//!
//! - a **restore point** ([`Point`]): anything that yields a disk or a set
//!   of volumes as it was at some time. Chain layers are points today; a
//!   point's volumes join the tree's volume list and its directory lists
//!   them as the root of that point alone would.
//! - a **volume** ([`TreeVolume`]): a byte source from the table or LVM
//!   layer, probed once for a filesystem; a readable one is a directory,
//!   any other a raw `p<N>.img` file.
//! - a **filesystem** behind [`FileSystem`], on a volume: its nodes are
//!   [`Node::Fs`]`(m, id)` where `m` < the number of volumes is volume `m`.
//! - a **graft** ([`grafts`]): another [`FileSystem`] hung into the tree
//!   under a name, [`Node::Fs`]`(volumes + g, id)`. Item sources
//!   ([`items`]) graft a file's items as `PATH#` beside it; with
//!   [`TreeOptions::deleted`], a volume's [`FileSystem::deleted`] view is
//!   grafted as `$Deleted` at its root. A graft may hang inside another
//!   (a mailbox inside a deleted folder), bounded by [`grafts::MAX_GRAFTS`].
//!
//! `PATH#` is always reachable by path; listings show it only with
//! [`TreeOptions::items`], so plain listings, `rsync` and `find` see the
//! guest's filesystem exactly as it was. A name that exists as written
//! (a guest file really called `x#`) wins over an item.

mod copy;
pub mod grafts;
pub mod items;
mod node_source;
mod volumes;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;

pub use copy::{copy_out, copy_stream_out, safe_name, CopyOptions, CopyReport};
pub use grafts::{Graft, Grafts};
pub use items::ItemSource;
pub use node_source::NodeSource;
pub use volumes::{TreeVolume, VolumeState};

use crate::fs::{FileSystem, FileType, FsKind, NodeId, Stat, Timespec};
use crate::image::{self, Image};
use crate::volume::{self, Table};
use crate::{Error, ReadAt, Result};

/// The name of the deleted-files view at a volume's root.
pub const DELETED_DIR: &str = "$Deleted";

/// The suffix that names a file's items (`inbox.pst#`).
pub const ITEMS_SUFFIX: char = '#';

/// How a tree is opened and what it shows beyond the guest's files.
#[derive(Clone, Default)]
pub struct TreeOptions {
    /// Parent overrides and the link-check policy of a chain.
    pub chain: image::OpenOptions,
    /// Every restore point as its own directory at the root.
    pub all_points: bool,
    /// Listings show `PATH#` beside each file that holds items (a
    /// mailbox); without it `PATH#` is still reachable by path.
    pub items: bool,
    /// A `$Deleted` directory at the root of every volume whose
    /// filesystem can list deleted files.
    pub deleted: bool,
}

/// A node of the restore tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The synthetic root that lists the volumes of a partitioned disk.
    Root,
    /// The raw bytes of volume `i` (`p<N>.img`).
    Raw(usize),
    /// Node `id` of filesystem `m`: volume `m`'s filesystem when `m` is
    /// below the number of volumes, else graft `m - volumes`.
    Fs(usize, NodeId),
    /// The directory of restore point `k` (0 = oldest) in a tree over every
    /// point of a chain, when that point is a partitioned disk.
    Point(usize),
}

impl Node {
    /// A stable inode number: unique within one tree, the same every time
    /// the image is opened (for grafts: every time they are opened in the
    /// same order). The fs node id sits in the low 48 bits (ext inode and
    /// NTFS record numbers fit), the filesystem above it. Point directories
    /// take the small numbers from 2 on, which no volume uses.
    pub fn ino(self) -> u64 {
        const LOW: u64 = (1 << 48) - 1;
        match self {
            Node::Root => 1,
            Node::Point(k) => (k as u64).saturating_add(2).min(LOW),
            Node::Raw(v) => ((v as u64 + 1) << 48) | LOW,
            Node::Fs(v, id) => ((v as u64 + 1) << 48) | (id & LOW),
        }
    }

    /// The node `ino` was made from (the inverse of [`Node::ino`]).
    pub fn from_ino(ino: u64) -> Option<Node> {
        const LOW: u64 = (1 << 48) - 1;
        if ino == 1 {
            return Some(Node::Root);
        }
        if ino >> 48 == 0 {
            return Some(Node::Point(usize::try_from(ino.checked_sub(2)?).ok()?));
        }
        let v = (ino >> 48).checked_sub(1)? as usize;
        Some(match ino & LOW {
            LOW => Node::Raw(v),
            id => Node::Fs(v, id),
        })
    }
}

/// One name in a tree directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub node: Node,
    pub kind: FileType,
}

/// A restore point opened for reading: image, partition table, filesystems.
pub struct RestoreTree {
    pub image: Image,
    pub table: Table,
    /// Volumes in table order; for a bare filesystem, the one whole-disk
    /// volume named `root`.
    pub volumes: Vec<TreeVolume>,
    /// True when the disk is one filesystem with no table: the root is its
    /// root directory.
    pub bare: bool,
    /// Times shown for the synthetic root and raw volume files: the image
    /// file's modification time, so `ls -l` says when the backup was taken.
    pub image_time: Timespec,
    /// For a tree over every point of a chain: the points, oldest first
    /// (empty for one restore point).
    pub points: Vec<Point>,
    /// What the tree shows beyond the guest's files.
    pub options: TreeOptions,
    /// Filesystems hung into the tree: items and deleted views.
    pub grafts: Grafts,
    /// The item sources `PATH#` is tried with.
    item_sources: &'static [&'static dyn ItemSource],
}

/// What kind of restore point a [`Point`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// A layer of a chain: a base or a delta file, read with its parents.
    ChainLayer,
}

impl PointKind {
    /// `chain_layer`: the name in `info --json`.
    pub fn name(self) -> &'static str {
        match self {
            PointKind::ChainLayer => "chain_layer",
        }
    }
}

/// One restore point in a tree over every point of an image.
pub struct Point {
    /// `@<k>-<name>`, k from 1 for the oldest.
    pub name: String,
    pub kind: PointKind,
    /// Where the point lives: the file it is read from (for a chain layer,
    /// the newest file at that point).
    pub file: std::path::PathBuf,
    /// When the point was taken, as far as the image says (a chain
    /// layer's file modification time).
    pub time: Option<Timespec>,
    /// The point's image as `info` shows it, its chain (newest first) and
    /// its partition table.
    pub report: image::ImageReport,
    pub chain: Vec<image::ChainLayer>,
    pub table: Table,
    /// The point's volumes: `volumes[first..first + count]` of the tree.
    pub first: usize,
    pub count: usize,
    /// The point's directory: [`Node::Point`], or a bare filesystem's root.
    pub root: Node,
}

impl RestoreTree {
    /// Opens the image at `path` and everything inside it.
    pub fn open(path: &Path) -> Result<RestoreTree> {
        Self::open_with(path, &TreeOptions::default())
    }

    /// Opens the image at `path` as `opts` say: one restore point, or
    /// every point with a directory each.
    pub fn open_with(path: &Path, opts: &TreeOptions) -> Result<RestoreTree> {
        let mut tree = if opts.all_points {
            Self::open_points(path, &opts.chain)?
        } else {
            Self::from_image(image::open_with(path, &opts.chain)?)?
        };
        tree.options = opts.clone();
        if let Some(t) = file_time(path) {
            tree.image_time = t;
        }
        Ok(tree)
    }

    /// Opens every restore point of the chain ending at `path` as one tree
    /// with a directory per point (see the module docs).
    pub fn open_points(path: &Path, opts: &image::OpenOptions) -> Result<RestoreTree> {
        let image = image::open_with(path, opts)?;
        let files: Vec<std::path::PathBuf> =
            image.chain.iter().rev().map(|l| l.file.clone()).collect();
        let mut volumes = Vec::new();
        let mut points = Vec::new();
        let mut newest = None;
        for (k, (img, file)) in image.into_points().into_iter().zip(files).enumerate() {
            let sub = Self::from_image(img)?;
            let first = volumes.len();
            let root = match sub.root() {
                Node::Fs(v, id) => Node::Fs(v + first, id),
                _ => Node::Point(k),
            };
            let stem = file
                .file_stem()
                .map_or_else(|| "point".into(), |s| s.to_string_lossy().into_owned());
            points.push(Point {
                name: format!("@{}-{stem}", k + 1),
                kind: PointKind::ChainLayer,
                time: file_time(&file),
                report: sub.image.report(),
                chain: sub.image.chain.clone(),
                table: sub.table.clone(),
                file,
                first,
                count: sub.volumes.len(),
                root,
            });
            volumes.extend(sub.volumes);
            newest = Some((sub.image, sub.table));
        }
        let (image, table) = newest.ok_or_else(|| Error::NotFound(path.display().to_string()))?;
        Ok(RestoreTree {
            points,
            ..Self::assemble(image, table, volumes, false)
        })
    }

    /// Reads the partition table and filesystems of an opened image.
    ///
    /// Every source is probed once: the disk (a filesystem at byte 0 is a
    /// bare filesystem, whatever its boot sector looks like), then each
    /// partition; partitions that hold no filesystem are offered to LVM,
    /// and the logical volumes found are probed in their turn.
    pub fn from_image(image: Image) -> Result<RestoreTree> {
        if let Some(kind) = crate::fs::probe(&image.disk) {
            let volumes = vec![TreeVolume::whole_disk(&image.disk, Some(kind))];
            let bare = volumes_readable(&volumes);
            return Ok(Self::assemble(image, Table::none(), volumes, bare));
        }
        let mut table = volume::scan(&image.disk)?;
        let probes: Vec<Option<FsKind>> = table
            .volumes
            .iter()
            .map(|v| match v.is_container() {
                true => None,
                false => crate::fs::probe(&v.source),
            })
            .collect();
        // A volume with a filesystem is not a PV, whatever stale label it
        // carries.
        let candidates: Vec<usize> = (0..probes.len()).filter(|&i| probes[i].is_none()).collect();
        let in_table = table.volumes.len();
        let pvs = volume::add_lvm(&image.disk, &mut table, &candidates);
        let mut volumes: Vec<TreeVolume> = table
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| match probes.get(i) {
                Some(&probe) if !pvs.contains(&i) => TreeVolume::open(v, probe),
                Some(_) => TreeVolume::lvm_pv(v),
                None => TreeVolume::open(v, crate::fs::probe(&v.source)),
            })
            .collect();
        if in_table == 0 {
            // No table: the logical volumes of a whole-disk PV, or else the
            // disk as one raw volume.
            if volumes.is_empty() {
                volumes.push(TreeVolume::whole_disk(&image.disk, None));
            }
        }
        Ok(Self::assemble(image, table, volumes, false))
    }

    fn assemble(image: Image, table: Table, volumes: Vec<TreeVolume>, bare: bool) -> RestoreTree {
        RestoreTree {
            image,
            table,
            volumes,
            bare,
            image_time: Timespec::default(),
            points: Vec::new(),
            options: TreeOptions::default(),
            grafts: Grafts::default(),
            item_sources: items::sources(),
        }
    }

    /// Uses `sources` instead of [`items::sources`] for `PATH#`.
    pub fn with_item_sources(mut self, sources: &'static [&'static dyn ItemSource]) -> Self {
        self.item_sources = sources;
        self
    }

    /// The tree's root node.
    pub fn root(&self) -> Node {
        if !self.points.is_empty() {
            return Node::Root;
        }
        match (self.bare, self.volumes.first().and_then(|v| v.fs())) {
            (true, Some(fs)) => Node::Fs(0, fs.root()),
            _ => Node::Root,
        }
    }

    /// Filesystem `m` of [`Node::Fs`]: a volume's, or a graft's.
    fn fs(&self, m: usize) -> Result<Arc<dyn FileSystem>> {
        if let Some(vol) = self.volumes.get(m) {
            return vol
                .fs()
                .cloned()
                .ok_or_else(|| Error::NotFound(vol.name.clone()));
        }
        self.graft(m)
            .map(|g| g.fs.clone())
            .ok_or_else(|| Error::NotFound(format!("filesystem #{m}")))
    }

    /// The graft filesystem `m` of [`Node::Fs`] stands for, if it is one.
    pub fn graft(&self, m: usize) -> Option<Arc<Graft>> {
        m.checked_sub(self.volumes.len())
            .and_then(|g| self.grafts.get(g))
    }

    /// What filesystem `m` is, for messages: `p1 (ntfs)`, `items of x.pst`.
    fn describe_fs(&self, m: usize) -> String {
        match (self.volumes.get(m), self.graft(m)) {
            (Some(v), _) => v.describe(),
            (None, Some(g)) => g.what.clone(),
            (None, None) => format!("filesystem #{m}"),
        }
    }

    /// Runs `f` on filesystem `m`, naming it in any error.
    fn on_fs<T>(&self, m: usize, f: impl FnOnce(&dyn FileSystem) -> Result<T>) -> Result<T> {
        let fs = self.fs(m)?;
        f(fs.as_ref()).map_err(|e| match e {
            Error::NotFound(_) | Error::NotADirectory(_) | Error::IsADirectory(_) => e,
            e => e.context(self.describe_fs(m)),
        })
    }

    /// The entries at the root: the points of a chain tree, or the volumes.
    fn root_entries(&self) -> Vec<Entry> {
        if self.points.is_empty() {
            return self.volume_entries(0, self.volumes.len());
        }
        self.points
            .iter()
            .map(|p| Entry {
                name: p.name.clone().into(),
                node: p.root,
                kind: FileType::Dir,
            })
            .collect()
    }

    /// The entries for volumes `first..first + count`: a directory per
    /// readable filesystem, a raw image per other volume.
    fn volume_entries(&self, first: usize, count: usize) -> Vec<Entry> {
        self.volumes
            .iter()
            .enumerate()
            .skip(first)
            .take(count)
            .filter(|(_, v)| !v.is_container())
            .map(|(i, v)| match v.fs() {
                Some(_) => Entry {
                    name: v.name.clone().into(),
                    node: Node::Fs(i, v.fs().map(|f| f.root()).unwrap_or(0)),
                    kind: FileType::Dir,
                },
                None => Entry {
                    name: format!("{}.img", v.name).into(),
                    node: Node::Raw(i),
                    kind: FileType::File,
                },
            })
            .collect()
    }

    /// The entries of point directory `k`.
    fn point_entries(&self, k: usize) -> Result<Vec<Entry>> {
        let p = self
            .points
            .get(k)
            .ok_or_else(|| Error::NotFound(format!("restore point #{k}")))?;
        Ok(self.volume_entries(p.first, p.count))
    }

    /// The node named `name` in `dir`, if any.
    pub fn lookup(&self, dir: Node, name: &OsStr) -> Result<Option<Node>> {
        match dir {
            Node::Root => Ok(self
                .root_entries()
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| e.node)),
            Node::Point(k) => Ok(self
                .point_entries(k)?
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| e.node)),
            Node::Raw(_) => Err(Error::NotADirectory(name.to_string_lossy().into_owned())),
            Node::Fs(m, id) => {
                if self.is_volume_root(dir) && name == DELETED_DIR {
                    if let Some(g) = self.deleted_graft(m)? {
                        return Ok(Some(g));
                    }
                }
                if let Some(n) = self.on_fs(m, |fs| fs.lookup(id, name))? {
                    return Ok(Some(Node::Fs(m, n)));
                }
                self.items_graft(dir, name)
            }
        }
    }

    /// The entries of directory `dir`, without `.` and `..`.
    pub fn read_dir(&self, dir: Node) -> Result<Vec<Entry>> {
        match dir {
            Node::Root => Ok(self.root_entries()),
            Node::Point(k) => self.point_entries(k),
            Node::Raw(v) => Err(Error::NotADirectory(format!(
                "{}.img",
                self.volumes.get(v).map_or("?", |v| v.name.as_str())
            ))),
            Node::Fs(m, id) => {
                let mut entries: Vec<Entry> = self
                    .on_fs(m, |fs| fs.read_dir(id))?
                    .into_iter()
                    .map(|e| Entry {
                        name: e.name,
                        node: Node::Fs(m, e.node),
                        kind: e.kind,
                    })
                    .collect();
                if self.options.items {
                    let mut found = Vec::new();
                    for e in entries.iter().filter(|e| e.kind == FileType::File) {
                        let mut name = e.name.clone();
                        name.push(ITEMS_SUFFIX.to_string());
                        if entries.iter().any(|x| x.name == name) {
                            continue;
                        }
                        if let Some(node) = self.items_graft(dir, &name)? {
                            found.push(Entry {
                                name,
                                node,
                                kind: FileType::Dir,
                            });
                        }
                    }
                    entries.extend(found);
                }
                if self.is_volume_root(dir) {
                    if let Some(node) = self.deleted_graft(m)? {
                        entries.retain(|e| e.name != DELETED_DIR);
                        entries.push(Entry {
                            name: DELETED_DIR.into(),
                            node,
                            kind: FileType::Dir,
                        });
                    }
                }
                Ok(entries)
            }
        }
    }

    /// Whether `node` is the root directory of a volume's filesystem.
    fn is_volume_root(&self, node: Node) -> bool {
        match node {
            Node::Fs(m, id) => self
                .volumes
                .get(m)
                .and_then(|v| v.fs())
                .is_some_and(|fs| fs.root() == id),
            _ => false,
        }
    }

    /// The root of volume `m`'s `$Deleted` view, grafted on first use;
    /// `None` without [`TreeOptions::deleted`] or when the filesystem
    /// keeps no deleted files restorefs can list.
    fn deleted_graft(&self, m: usize) -> Result<Option<Node>> {
        if !self.options.deleted {
            return Ok(None);
        }
        let Some(vol) = self.volumes.get(m) else {
            return Ok(None);
        };
        let Some(fs) = vol.fs() else {
            return Ok(None);
        };
        let host = Node::Fs(m, fs.root());
        let g = self.grafts.get_or_make(host, OsStr::new(DELETED_DIR), || {
            let view = fs.deleted().map_err(|e| e.context(vol.describe()))?;
            Ok(view.map(|fs| Graft {
                fs,
                host,
                name: DELETED_DIR.into(),
                volume: m,
                what: format!("{}: deleted files", vol.describe()),
            }))
        })?;
        Ok(g.and_then(|g| self.graft_root(g)))
    }

    /// The root of the items of file `name` minus its `#` in `dir`,
    /// grafted on first use; `None` when `name` does not end in `#`, the
    /// file does not exist or is not a regular file, or no item source
    /// knows its content.
    fn items_graft(&self, dir: Node, name: &OsStr) -> Result<Option<Node>> {
        let Node::Fs(m, dir_id) = dir else {
            return Ok(None);
        };
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(ITEMS_SUFFIX))
            .filter(|b| !b.is_empty())
        else {
            return Ok(None);
        };
        let g = self.grafts.get_or_make(dir, name, || {
            let fs = self.fs(m)?;
            let Some(file) = fs.lookup(dir_id, OsStr::new(base))? else {
                return Ok(None);
            };
            let st = fs.stat(file)?;
            if st.kind != FileType::File {
                return Ok(None);
            }
            let what = format!("{}: items of {base}", self.describe_fs(m));
            let src: crate::Source = Arc::new(NodeSource::new(fs, file, st.size));
            let opened = items::open(self.item_sources, &src).map_err(|e| e.context(&what))?;
            Ok(opened.map(|(kind, fs)| Graft {
                fs,
                host: dir,
                name: name.to_owned(),
                volume: self.volume_index(dir).unwrap_or(m),
                what: format!("{what} ({kind})"),
            }))
        })?;
        Ok(g.and_then(|g| self.graft_root(g)))
    }

    /// The root node of graft `g`.
    fn graft_root(&self, g: usize) -> Option<Node> {
        let graft = self.grafts.get(g)?;
        Some(Node::Fs(self.volumes.len() + g, graft.fs.root()))
    }

    /// Metadata of `node`.
    pub fn stat(&self, node: Node) -> Result<Stat> {
        match node {
            Node::Root => Ok(synthetic_stat(
                self.image_time,
                FileType::Dir,
                0,
                0o555,
                2 + self.root_entries().len() as u32,
            )),
            Node::Point(k) => Ok(synthetic_stat(
                self.image_time,
                FileType::Dir,
                0,
                0o555,
                2 + self.point_entries(k)?.len() as u32,
            )),
            Node::Raw(v) => Ok(synthetic_stat(
                self.image_time,
                FileType::File,
                self.volumes.get(v).map_or(0, |vol| vol.source.size()),
                0o444,
                1,
            )),
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.stat(id)),
        }
    }

    /// Reads `node`'s bytes at `offset`; 0 at or past the end.
    pub fn read(&self, node: Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match node {
            Node::Root => Err(Error::IsADirectory("/".into())),
            Node::Point(k) => Err(Error::IsADirectory(
                self.points
                    .get(k)
                    .map_or_else(String::new, |p| p.name.clone()),
            )),
            Node::Raw(v) => {
                let vol = self
                    .volumes
                    .get(v)
                    .ok_or_else(|| Error::NotFound(format!("volume #{v}")))?;
                vol.source
                    .read_at(offset, buf)
                    .map_err(|e| Error::io("volume", offset, e).context(vol.describe()))
            }
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.read(id, offset, buf)),
        }
    }

    /// The target of symlink `node`.
    pub fn read_link(&self, node: Node) -> Result<OsString> {
        match node {
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.read_link(id)),
            _ => Err(Error::NotASymlink(format!("{node:?}"))),
        }
    }

    /// Why `node`'s data cannot be read, if known without reading.
    pub fn note(&self, node: Node) -> Option<String> {
        match node {
            Node::Fs(v, id) => self.fs(v).ok()?.note(id),
            _ => None,
        }
    }

    /// Extended attributes of `node`.
    pub fn xattrs(&self, node: Node) -> Result<Vec<(OsString, Vec<u8>)>> {
        match node {
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.xattrs(id)),
            _ => Ok(Vec::new()),
        }
    }

    /// The node at `path` (`/p1/Users/alice`), without following symlinks.
    pub fn resolve(&self, path: &str) -> Result<Node> {
        let mut node = self.root();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            walked.push('/');
            walked.push_str(part);
            if self.stat(node)?.kind != FileType::Dir {
                return Err(Error::NotADirectory(walked));
            }
            node = self
                .lookup(node, OsStr::new(part))?
                .ok_or_else(|| Error::NotFound(walked.clone()))?;
        }
        Ok(node)
    }

    /// The node at `path` and, when its last component names an alternate
    /// data stream (`file:stream`, or `file:stream:$DATA` as Windows
    /// writes it), the stream's name. A name that exists as written wins:
    /// ext names may hold ':'.
    pub fn resolve_stream(&self, path: &str) -> Result<(Node, Option<OsString>)> {
        let err = match self.resolve(path) {
            Ok(node) => return Ok((node, None)),
            Err(e @ Error::NotFound(_)) => e,
            Err(e) => return Err(e),
        };
        let trimmed = path.trim_end_matches('/');
        let (dir, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        let last = match last.rsplit_once(':') {
            Some((rest, ty)) if ty.eq_ignore_ascii_case("$DATA") && rest.contains(':') => rest,
            _ => last,
        };
        let Some((file, stream)) = last.rsplit_once(':') else {
            return Err(err);
        };
        if file.is_empty() || stream.is_empty() {
            return Err(err);
        }
        let node = self.resolve(&format!("{dir}/{file}"))?;
        let stream = OsString::from(stream);
        match self.stream_len(node, &stream)? {
            Some(_) => Ok((node, Some(stream))),
            None => Err(Error::NotFound(path.to_string())),
        }
    }

    /// Length of `node`'s named data stream `name`, `None` if it has none.
    pub fn stream_len(&self, node: Node, name: &OsStr) -> Result<Option<u64>> {
        match node {
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.stream_len(id, name)),
            _ => Ok(None),
        }
    }

    /// Reads `node`'s named data stream `name` at `offset`.
    pub fn read_stream(
        &self,
        node: Node,
        name: &OsStr,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        match node {
            Node::Fs(v, id) => self.on_fs(v, |fs| fs.read_stream(id, name, offset, buf)),
            _ => Err(Error::NotFound(name.to_string_lossy().into_owned())),
        }
    }

    /// Reads `node`'s data, or its stream `stream` if given.
    pub fn read_data(
        &self,
        node: Node,
        stream: Option<&OsStr>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        match stream {
            None => self.read(node, offset, buf),
            Some(name) => self.read_stream(node, name, offset, buf),
        }
    }

    /// Length of `node`'s data, or of its stream `stream` if given.
    pub fn data_len(&self, node: Node, stream: Option<&OsStr>) -> Result<u64> {
        match stream {
            None => Ok(self.stat(node)?.size),
            Some(name) => self
                .stream_len(node, name)?
                .ok_or_else(|| Error::NotFound(name.to_string_lossy().into_owned())),
        }
    }

    /// The path of volume `v`'s directory in the tree, as components
    /// (`["@2-delta", "p1"]`; empty for a bare filesystem's root).
    pub fn volume_path(&self, v: usize) -> Vec<String> {
        let mut path = Vec::new();
        if let Some(p) = self
            .points
            .iter()
            .find(|p| (p.first..p.first + p.count).contains(&v))
        {
            path.push(p.name.clone());
        }
        if !self.bare {
            if let Some(vol) = self.volumes.get(v) {
                path.push(vol.name.clone());
            }
        }
        path
    }

    /// What may make the volumes read differ from their newest state (a
    /// log not replayed, a hibernated Windows, ...), as (volume directory,
    /// warning): of every volume, or with `path`, of the volume holding it.
    pub fn volume_warnings(&self, path: Option<&str>) -> Vec<(String, String)> {
        let parts: Vec<&str> = path
            .map(|p| {
                p.split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let Some(fs) = v.fs() else { continue };
            let prefix = self.volume_path(i);
            let inside =
                parts.len() >= prefix.len() && prefix.iter().zip(&parts).all(|(a, b)| a == b);
            if path.is_some() && !inside {
                continue;
            }
            let dir = format!("/{}", prefix.join("/"));
            out.extend(fs.warnings().into_iter().map(|w| (dir.clone(), w)));
        }
        out
    }

    /// The volume a user names as `p1`, `/p1`, `p1.img` or `/p1.img` (for
    /// `raw`), with its point first in a tree of every point
    /// (`@2-delta/p1`).
    pub fn volume_named(&self, name: &str) -> Option<&TreeVolume> {
        let name = name.trim_matches('/');
        let name = name.strip_suffix(".img").unwrap_or(name);
        let want: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        (0..self.volumes.len())
            .find(|&i| {
                let path = self.volume_path(i);
                match (path.is_empty(), self.volumes.get(i)) {
                    // A bare filesystem: its volume is `root`.
                    (true, Some(v)) => want == [v.name.as_str()],
                    _ => path.iter().map(String::as_str).eq(want.iter().copied()),
                }
            })
            .and_then(|i| self.volumes.get(i))
    }

    /// The volume a node lives on, if any (for a graft, the volume its
    /// host file is on).
    pub fn volume_of(&self, node: Node) -> Option<&TreeVolume> {
        self.volumes.get(self.volume_index(node)?)
    }

    /// The index of the volume a node lives on, if any.
    pub fn volume_index(&self, node: Node) -> Option<usize> {
        match node {
            Node::Root | Node::Point(_) => None,
            Node::Raw(v) => Some(v),
            Node::Fs(m, _) if m < self.volumes.len() => Some(m),
            Node::Fs(m, _) => self.graft(m).map(|g| g.volume),
        }
    }

    /// The filesystem a node belongs to (a volume's or a graft's), for
    /// block sizes and free space.
    pub fn filesystem_of(&self, node: Node) -> Option<Arc<dyn FileSystem>> {
        match node {
            Node::Fs(m, _) => self.fs(m).ok(),
            _ => None,
        }
    }

    /// `/p1: node 1234`, `/p1.img`, for log lines.
    pub fn describe(&self, node: Node) -> String {
        match node {
            Node::Root => "/".into(),
            Node::Point(k) => match self.points.get(k) {
                Some(p) => format!("/{}", p.name),
                None => format!("restore point #{k}"),
            },
            Node::Raw(v) => match self.volumes.get(v) {
                Some(vol) => format!("/{}.img", vol.name),
                None => format!("volume #{v}"),
            },
            Node::Fs(m, id) => format!("{}: node {id}", self.describe_fs(m)),
        }
    }
}

/// The modification time of the file at `path` (a host file or a URL's
/// Last-Modified), if it is known.
fn file_time(path: &Path) -> Option<Timespec> {
    let t = image::modified(path)?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(Timespec {
        secs: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        nanos: t.subsec_nanos(),
    })
}

fn volumes_readable(volumes: &[TreeVolume]) -> bool {
    volumes.first().is_some_and(|v| v.fs().is_some())
}

fn synthetic_stat(time: Timespec, kind: FileType, size: u64, mode: u32, nlink: u32) -> Stat {
    Stat {
        node: 0,
        kind,
        size,
        mode,
        uid: 0,
        gid: 0,
        nlink,
        rdev: 0,
        allocated: size,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: None,
    }
}

#[cfg(test)]
mod tests;
