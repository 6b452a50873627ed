//! Filesystems behind one trait, found by content.
//!
//! Each adapter turns a volume's [`Source`](crate::Source) into nodes with stable ids (the
//! NTFS record number, the ext or XFS inode number, the position of a FAT or
//! exFAT directory entry) so that hard links are one node
//! and front ends can derive inode numbers from them.

pub mod acl;
pub mod btrfs;
pub mod exfat;
pub mod ext;
pub mod fat;
pub mod ntfs;
mod probe;
mod types;
pub mod xfs;

pub use probe::{open, probe, FsKind};
pub use types::{DirEntry, FileType, FsInfo, NodeId, Stat, Subvolume, Timespec};

use std::ffi::{OsStr, OsString};

use crate::Result;

/// A read-only filesystem, shared by many threads at once.
pub trait FileSystem: Send + Sync {
    /// Name, size, label and free space.
    fn info(&self) -> FsInfo;

    /// What may make the volume as read differ from its newest state or
    /// from the truth (a log not replayed, a truncated source, ...): the
    /// warnings of [`FileSystem::info`], without its free-space scan, for
    /// commands that show them before reading.
    fn warnings(&self) -> Vec<String> {
        self.info().warnings
    }

    /// The root directory's node.
    fn root(&self) -> NodeId;

    /// The node named `name` in directory `dir`, with the filesystem's own
    /// name rules (NTFS, FAT and exFAT are case-insensitive); `None` if there is none.
    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>>;

    /// Every entry of `dir` except `.` and `..`, in on-disk order.
    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>>;

    /// Type, size, owner, mode, link count and times of `node`.
    fn stat(&self, node: NodeId) -> Result<Stat>;

    /// Reads file data at `offset`; returns 0 at or past the end.
    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// The target of a symbolic link.
    fn read_link(&self, node: NodeId) -> Result<OsString>;

    /// Extended attributes as (name, value), names as Linux shows them
    /// (`user.foo`).
    fn xattrs(&self, node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>>;

    /// Why `node`'s data cannot be read, when the filesystem knows before
    /// reading (an EFS-encrypted file, a deduplicated or cloud-only one),
    /// for listings to show.
    fn note(&self, _node: NodeId) -> Option<String> {
        None
    }

    /// The files and folders this filesystem still records as deleted, as
    /// a read-only filesystem of their own (the tree shows it as
    /// `$Deleted` at the volume's root with `--deleted`); `None` when this
    /// filesystem keeps no such records restorefs reads.
    fn deleted(&self) -> crate::Result<Option<std::sync::Arc<dyn FileSystem>>> {
        Ok(None)
    }

    /// The subvolumes and snapshots of a filesystem that has them (Btrfs),
    /// the top-level one excepted; empty for the others.
    fn subvolumes(&self) -> Result<Vec<Subvolume>> {
        Ok(Vec::new())
    }

    /// Length of `node`'s named data stream `name` (an NTFS alternate data
    /// stream, `file:name`), `None` if it has none. By default the stream
    /// is the `user.<name>` xattr, as the mount shows streams.
    fn stream_len(&self, node: NodeId, name: &OsStr) -> Result<Option<u64>> {
        Ok(xattr_stream(self.xattrs(node)?, name).map(|v| v.len() as u64))
    }

    /// Reads `node`'s named data stream `name` at `offset`; 0 at or past
    /// its end. By default from the `user.<name>` xattr.
    fn read_stream(
        &self,
        node: NodeId,
        name: &OsStr,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let value = xattr_stream(self.xattrs(node)?, name)
            .ok_or_else(|| crate::Error::NotFound(format!("stream {}", name.to_string_lossy())))?;
        let Some(rest) = usize::try_from(offset).ok().and_then(|o| value.get(o..)) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// The value of xattr `user.<name>` among `xattrs`.
fn xattr_stream(xattrs: Vec<(OsString, Vec<u8>)>, name: &OsStr) -> Option<Vec<u8>> {
    let mut want = OsString::from("user.");
    want.push(name);
    xattrs.into_iter().find(|(k, _)| *k == want).map(|(_, v)| v)
}
