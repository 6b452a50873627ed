//! The FUSE request handlers.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Display;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use restorefs_parsers::fs::FileType;
use restorefs_parsers::tree::{Entry, Node, RestoreTree};
use restorefs_parsers::Error;

use crate::attr::{file_attr, kind};

/// The image never changes under the mount, so the kernel may keep names
/// and attributes for as long as it likes; an hour bounds memory pressure
/// from stale entries, not correctness.
const TTL: Duration = Duration::from_secs(3600);

/// Reads up to this size per request; also the readahead window. 1 MiB is
/// the kernel's largest FUSE request (256 pages).
const MAX_IO: u32 = 1 << 20;

/// The restore tree as a FUSE filesystem.
pub struct RestoreFs {
    tree: RestoreTree,
    /// For log lines: which image a failing request was about.
    image: String,
    /// The tree's root node, which FUSE knows as inode 1.
    root: Node,
    /// Directory listings taken at opendir, so that the many readdir calls
    /// of a large directory do not each re-read it.
    dirs: Mutex<HashMap<u64, Arc<[Entry]>>>,
    next_fh: AtomicU64,
}

/// Why a request failed: an errno for the kernel; logged where it arose.
type Res<T> = Result<T, Errno>;

impl RestoreFs {
    /// Wraps `tree`; `image` names it in logs.
    pub fn new(tree: RestoreTree, image: String) -> RestoreFs {
        let root = tree.root();
        RestoreFs {
            tree,
            image,
            root,
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn node(&self, ino: INodeNo) -> Res<Node> {
        if ino == INodeNo::ROOT {
            return Ok(self.root);
        }
        Node::from_ino(ino.0).ok_or(Errno::ENOENT)
    }

    fn ino(&self, node: Node) -> u64 {
        if node == self.root {
            1
        } else {
            node.ino()
        }
    }

    /// `p1: node 1234`, for log lines.
    fn describe(&self, node: Node) -> String {
        match node {
            _ if node == self.root => "/".into(),
            Node::Root => "/".into(),
            Node::Point(k) => match self.tree.points.get(k) {
                Some(p) => format!("/{}", p.name),
                None => format!("restore point #{k}"),
            },
            Node::Raw(v) => match self.tree.volumes.get(v) {
                Some(vol) => format!("/{}.img", vol.name),
                None => format!("volume #{v}"),
            },
            Node::Fs(v, id) => match self.tree.volumes.get(v) {
                Some(vol) => format!("{}: node {id}", vol.describe()),
                None => format!("volume #{v}: node {id}"),
            },
        }
    }

    /// Runs a handler body, turning a panic into EIO so one bad request
    /// (a parser bug on a corrupt image) never takes the mount down.
    fn guard<T>(&self, op: &str, ino: INodeNo, body: impl FnOnce() -> Res<T>) -> Res<T> {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                tracing::error!(image = %self.image, ino = ino.0, "{op}: internal error: {msg}");
                Err(Errno::EIO)
            }
        }
    }

    /// Maps a tree error to its errno, logging the ones that are not the
    /// ordinary answers of a lookup (missing names, wrong types).
    fn fail(&self, op: &str, node: Node, what: impl Display, e: Error) -> Errno {
        let errno = e.errno();
        match errno {
            libc::ENOENT | libc::ENOTDIR | libc::EISDIR | libc::EINVAL => {
                tracing::debug!(image = %self.image, "{op} {} {what}: {e}", self.describe(node))
            }
            _ => tracing::warn!(image = %self.image, "{op} {} {what}: {e}", self.describe(node)),
        }
        Errno::from_i32(errno)
    }

    fn blksize(&self, node: Node) -> u32 {
        self.tree
            .volume_of(node)
            .and_then(|v| v.fs())
            .map(|fs| fs.info().block_size)
            .filter(|&b| b.is_power_of_two() && (512..=1 << 20).contains(&b))
            .unwrap_or(4096)
    }

    fn attr(&self, op: &str, node: Node) -> Res<FileAttr> {
        let st = self
            .tree
            .stat(node)
            .map_err(|e| self.fail(op, node, "", e))?;
        Ok(file_attr(self.ino(node), &st, self.blksize(node)))
    }

    fn entries(&self, dir: Node) -> Res<Arc<[Entry]>> {
        self.tree
            .read_dir(dir)
            .map(Arc::from)
            .map_err(|e| self.fail("readdir", dir, "", e))
    }

    /// The listing cached at opendir, or a fresh one for an unknown handle.
    fn listing(&self, dir: Node, fh: FileHandle) -> Res<Arc<[Entry]>> {
        let cached = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned();
        match cached {
            Some(l) => Ok(l),
            None => self.entries(dir),
        }
    }

    /// `.` and `..` come first: FUSE leaves them to the filesystem. The
    /// parent is not tracked, so `..` carries the directory's own number;
    /// the kernel resolves `..` itself and never uses it.
    fn dot_entries(&self, ino: u64) -> [(u64, &'static str); 2] {
        [(ino, "."), (ino, "..")]
    }

    fn xattr_value(&self, node: Node, name: &OsStr) -> Res<Vec<u8>> {
        let xattrs = self
            .tree
            .xattrs(node)
            .map_err(|e| self.fail("getxattr", node, name.to_string_lossy(), e))?;
        xattrs
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(Errno::NO_XATTR)
    }

    fn statfs_of(&self, node: Node) -> (u64, u64, u64, u64, u32) {
        let info = self
            .tree
            .volume_of(node)
            .and_then(|v| v.fs())
            .map(|fs| fs.info());
        match (node, info) {
            (Node::Fs(..), Some(i)) => {
                let bsize = u64::from(i.block_size.max(512));
                (
                    i.total_bytes / bsize,
                    i.free_bytes / bsize,
                    i.total_nodes,
                    i.free_nodes,
                    bsize as u32,
                )
            }
            // The synthetic root and raw volumes: the whole image, free space
            // being what the readable filesystems report.
            _ => {
                let free: u64 = self
                    .tree
                    .volumes
                    .iter()
                    .filter_map(|v| v.fs())
                    .map(|fs| fs.info().free_bytes)
                    .sum();
                let total = match node {
                    Node::Raw(v) => self.tree.volumes.get(v).map_or(0, |v| v.size()),
                    _ => restorefs_parsers::ReadAt::size(&self.tree.image.disk),
                };
                let free = if matches!(node, Node::Raw(_)) {
                    0
                } else {
                    free
                };
                (total / 4096, free / 4096, 0, 0, 4096)
            }
        }
    }
}

/// Logs a refused write so that a confused user sees why in `-f` mode.
fn refuse(op: &str) -> Errno {
    tracing::debug!("{op}: read-only filesystem");
    Errno::EROFS
}

impl Filesystem for RestoreFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Largest reads the kernel allows; fuser sizes max_pages from
        // max(max_write, max_readahead), so max_write matters for reads too.
        if let Err(nearest) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(nearest);
        }
        if let Err(nearest) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(nearest);
        }
        let _ = config.set_max_background(64);
        // Optional speedups; the kernel may lack any of them.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        tracing::info!(image = %self.image, "FUSE session started");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = self.guard("lookup", parent, || {
            let dir = self.node(parent)?;
            let node = self
                .tree
                .lookup(dir, name)
                .map_err(|e| self.fail("lookup", dir, name.to_string_lossy(), e))?
                .ok_or(Errno::ENOENT)?;
            self.attr("lookup", node)
        });
        match res {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.guard("getattr", ino, || self.attr("getattr", self.node(ino)?)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self.guard("readlink", ino, || {
            let node = self.node(ino)?;
            self.tree
                .read_link(node)
                .map_err(|e| self.fail("readlink", node, "", e))
        });
        match res {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.guard("open", ino, || {
            if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return Err(refuse("open for writing"));
            }
            let node = self.node(ino)?;
            self.tree
                .stat(node)
                .map_err(|e| self.fail("open", node, "", e))
        });
        match res {
            // The bytes never change: let the page cache keep them across
            // opens.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.guard("read", ino, || {
            let node = self.node(ino)?;
            let mut buf = vec![0u8; size.min(MAX_IO) as usize];
            let mut done = 0;
            // The kernel takes a short read for end of file, so fill the
            // buffer unless the tree says the file ends.
            while done < buf.len() {
                let at = offset.saturating_add(done as u64);
                let n = self
                    .tree
                    .read(node, at, &mut buf[done..])
                    .map_err(|e| self.fail("read", node, format_args!("at {at}"), e))?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf.truncate(done);
            Ok(buf)
        });
        match res {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever dirty.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let res = self.guard("opendir", ino, || {
            let node = self.node(ino)?;
            let list = self.entries(node)?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(fh, list);
            Ok(fh)
        });
        match res {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.guard("readdir", ino, || {
            let dir = self.node(ino)?;
            let list = self.listing(dir, fh)?;
            Ok((self.ino(dir), list))
        });
        let (dir_ino, list) = match res {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let dots = self.dot_entries(dir_ino);
        let total = list.len() as u64 + 2;
        for i in offset..total {
            let full = match i {
                0 | 1 => {
                    let (ino, name) = dots[i as usize];
                    reply.add(INodeNo(ino), i + 1, fuser::FileType::Directory, name)
                }
                _ => {
                    let e = &list[(i - 2) as usize];
                    reply.add(INodeNo(self.ino(e.node)), i + 1, kind(e.kind), &e.name)
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = self.guard("readdirplus", ino, || {
            let dir = self.node(ino)?;
            let list = self.listing(dir, fh)?;
            Ok((self.attr("readdirplus", dir)?, list))
        });
        let (dir_attr, list) = match res {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let total = list.len() as u64 + 2;
        for i in offset..total {
            let full = match i {
                0 | 1 => {
                    let name = if i == 0 { "." } else { ".." };
                    reply.add(dir_attr.ino, i + 1, name, &TTL, &dir_attr, Generation(0))
                }
                _ => {
                    let e = &list[(i - 2) as usize];
                    let attr = self.guard("readdirplus", ino, || self.attr("readdirplus", e.node));
                    match attr {
                        Ok(attr) => reply.add(attr.ino, i + 1, &e.name, &TTL, &attr, Generation(0)),
                        // One unreadable entry must not hide the others:
                        // list it with attributes the kernel may not cache,
                        // so that using it asks again and gets the error.
                        Err(_) => {
                            let attr = placeholder(self.ino(e.node), e.kind);
                            reply.add(
                                attr.ino,
                                i + 1,
                                &e.name,
                                &Duration::ZERO,
                                &attr,
                                Generation(0),
                            )
                        }
                    }
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.guard("statfs", ino, || Ok(self.statfs_of(self.node(ino)?))) {
            Ok((blocks, bfree, files, ffree, bsize)) => {
                reply.statfs(blocks, bfree, bfree, files, ffree, bsize, 255, bsize)
            }
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.guard("getxattr", ino, || self.xattr_value(self.node(ino)?, name)) {
            Ok(value) => xattr_reply(reply, size, &value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let res = self.guard("listxattr", ino, || {
            let node = self.node(ino)?;
            let xattrs = self
                .tree
                .xattrs(node)
                .map_err(|e| self.fail("listxattr", node, "", e))?;
            let mut names = Vec::new();
            for (name, _) in xattrs {
                names.extend_from_slice(name.as_bytes());
                names.push(0);
            }
            Ok(names)
        });
        match res {
            Ok(names) => xattr_reply(reply, size, &names),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (default_permissions);
        // what is left is existence and that nothing is writable.
        let res = self.guard("access", ino, || {
            if mask.contains(AccessFlags::W_OK) {
                return Err(Errno::EROFS);
            }
            self.attr("access", self.node(ino)?).map(|_| ())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    // Every write-type request: EROFS, not fuser's default ENOSYS, which
    // callers would read as "try another way".

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(refuse("setattr"));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(refuse("mknod"));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(refuse("mkdir"));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(refuse("unlink"));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(refuse("rmdir"));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(refuse("symlink"));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(refuse("rename"));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(refuse("link"));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(refuse("write"));
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(refuse("create"));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(refuse("setxattr"));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(refuse("removexattr"));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(refuse("fallocate"));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Only ever asked when the destination is on this mount.
        reply.error(refuse("copy_file_range"));
    }
}

/// The xattr size-probe protocol: size 0 asks for the length, a buffer
/// too small for the value is ERANGE.
fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    let len = data.len() as u32;
    if size == 0 {
        reply.size(len);
    } else if size < len {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// Attributes for an entry whose own metadata could not be read.
fn placeholder(ino: u64, k: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(k),
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use restorefs_parsers::image::Image;
    use restorefs_parsers::readat::MemSource;

    use super::*;

    /// A 1 MiB disk of zeros: no table, no filesystem, one raw volume.
    fn blank() -> RestoreFs {
        let image = Image::new(Arc::new(MemSource(vec![0; 1 << 20])), "raw", 1 << 20);
        RestoreFs::new(RestoreTree::from_image(image).unwrap(), "blank".into())
    }

    #[test]
    fn a_panicking_handler_answers_eio() {
        let fs = blank();
        let r: Res<()> = fs.guard("test", INodeNo::ROOT, || panic!("parser bug"));
        assert_eq!(r, Err(Errno::EIO));
        // And the filesystem is still usable.
        assert!(fs.attr("getattr", fs.node(INodeNo::ROOT).unwrap()).is_ok());
    }

    #[test]
    fn root_is_inode_one() {
        let fs = blank();
        let root = fs.node(INodeNo::ROOT).unwrap();
        assert_eq!(root, fs.tree.root());
        assert_eq!(fs.ino(root), 1);
        let attr = fs.attr("getattr", root).unwrap();
        assert_eq!(attr.ino, INodeNo::ROOT);
        assert_eq!(attr.kind, fuser::FileType::Directory);
        let (blocks, _, _, _, bsize) = fs.statfs_of(root);
        assert_eq!(blocks * u64::from(bsize), 1 << 20);
        assert_eq!(fs.node(INodeNo(0)), Err(Errno::ENOENT));
    }
}
