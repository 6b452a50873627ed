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

mod copy;
mod volumes;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;

pub use copy::{copy_out, copy_stream_out, safe_name, CopyOptions, CopyReport};
pub use volumes::{TreeVolume, VolumeState};

use crate::fs::{FileSystem, FileType, NodeId, Stat, Timespec};
use crate::image::{self, Image};
use crate::volume::{self, Table};
use crate::{Error, ReadAt, Result};

/// A node of the restore tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The synthetic root that lists the volumes of a partitioned disk.
    Root,
    /// The raw bytes of volume `i` (`p<N>.img`).
    Raw(usize),
    /// Node `id` of the filesystem on volume `i`.
    Fs(usize, NodeId),
    /// The directory of restore point `k` (0 = oldest) in a tree over every
    /// point of a chain, when that point is a partitioned disk.
    Point(usize),
}

impl Node {
    /// A stable inode number: unique within one tree, the same every time
    /// the image is opened. The fs node id sits in the low 48 bits (ext inode
    /// and NTFS record numbers fit), the volume above it. Point directories
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
}

/// One restore point in a tree over a whole chain.
pub struct Point {
    /// `@<k>-<file stem>`, k from 1 for the oldest.
    pub name: String,
    /// The file this point is read from (the newest file at that point).
    pub file: std::path::PathBuf,
    /// The point's volumes: `volumes[first..first + count]` of the tree.
    pub first: usize,
    pub count: usize,
    /// The point's directory: [`Node::Point`], or a bare filesystem's root.
    pub root: Node,
}

impl RestoreTree {
    /// Opens the image at `path` and everything inside it.
    pub fn open(path: &Path) -> Result<RestoreTree> {
        let image = image::open(path)?;
        let mut tree = Self::from_image(image)?;
        if let Some(t) = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            tree.image_time = Timespec {
                secs: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                nanos: t.subsec_nanos(),
            };
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
            image,
            table,
            volumes,
            bare: false,
            image_time: Timespec::default(),
            points,
        })
    }

    /// Reads the partition table and filesystems of an opened image.
    pub fn from_image(image: Image) -> Result<RestoreTree> {
        let table = volume::scan(&image.disk)?;
        let bare = table.volumes.is_empty() && crate::fs::probe(&image.disk).is_some();
        let volumes = if table.volumes.is_empty() {
            vec![TreeVolume::whole_disk(&image.disk)]
        } else {
            table.volumes.iter().map(TreeVolume::open).collect()
        };
        let bare = bare && volumes_readable(&volumes);
        Ok(RestoreTree {
            image,
            table,
            volumes,
            bare,
            image_time: Timespec::default(),
            points: Vec::new(),
        })
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

    fn fs(&self, v: usize) -> Result<&Arc<dyn FileSystem>> {
        let vol = self
            .volumes
            .get(v)
            .ok_or_else(|| Error::NotFound(format!("volume #{v}")))?;
        vol.fs().ok_or_else(|| Error::NotFound(vol.name.clone()))
    }

    /// Runs `f` on volume `v`'s filesystem, naming the volume in any error.
    fn on_fs<T>(&self, v: usize, f: impl FnOnce(&dyn FileSystem) -> Result<T>) -> Result<T> {
        let fs = self.fs(v)?;
        f(fs.as_ref()).map_err(|e| match e {
            Error::NotFound(_) | Error::NotADirectory(_) | Error::IsADirectory(_) => e,
            e => e.context(self.volumes[v].describe()),
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
            Node::Fs(v, id) => Ok(self
                .on_fs(v, |fs| fs.lookup(id, name))?
                .map(|n| Node::Fs(v, n))),
        }
    }

    /// The entries of directory `dir`, without `.` and `..`.
    pub fn read_dir(&self, dir: Node) -> Result<Vec<Entry>> {
        match dir {
            Node::Root => Ok(self.root_entries()),
            Node::Point(k) => self.point_entries(k),
            Node::Raw(v) => Err(Error::NotADirectory(format!(
                "{}.img",
                self.volumes[v].name
            ))),
            Node::Fs(v, id) => Ok(self
                .on_fs(v, |fs| fs.read_dir(id))?
                .into_iter()
                .map(|e| Entry {
                    name: e.name,
                    node: Node::Fs(v, e.node),
                    kind: e.kind,
                })
                .collect()),
        }
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

    /// The volume index a node lives on, if any.
    pub fn volume_of(&self, node: Node) -> Option<&TreeVolume> {
        match node {
            Node::Root | Node::Point(_) => None,
            Node::Raw(v) | Node::Fs(v, _) => self.volumes.get(v),
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn ino_round_trips() {
        for n in [
            Node::Root,
            Node::Raw(0),
            Node::Raw(7),
            Node::Fs(0, 5),
            Node::Fs(3, 1 << 40),
            Node::Point(0),
            Node::Point(41),
        ] {
            assert_eq!(Node::from_ino(n.ino()), Some(n));
        }
        assert_eq!(Node::from_ino(0), None);
    }
}
