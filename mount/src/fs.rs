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
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
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

thread_local! {
    /// The read buffer of this request thread (see `read` below).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

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
        if node == self.root {
            return "/".into();
        }
        self.tree.describe(node)
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
            .filesystem_of(node)
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

    /// The attributes of `name` in directory `parent`.
    ///
    /// Inode numbers are the tree's node numbers ([`Node::ino`]), not
    /// entries of a table: a lookup keeps nothing, so FORGET has nothing
    /// to drop and a walk of millions of files keeps no memory here.
    fn lookup_attr(&self, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let dir = self.node(parent)?;
        let node = self
            .tree
            .lookup(dir, name)
            .map_err(|e| self.fail("lookup", dir, name.to_string_lossy(), e))?
            .ok_or(Errno::ENOENT)?;
        self.attr("lookup", node)
    }

    /// Lists directory `ino` once for all the readdir calls of one open;
    /// kept until [`release_dir`](Self::release_dir), which the kernel
    /// sends for every opendir answered.
    fn open_dir(&self, ino: INodeNo) -> Res<u64> {
        let node = self.node(ino)?;
        let list = self.entries(node)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, list);
        Ok(fh)
    }

    fn release_dir(&self, fh: FileHandle) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
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
        let info = self.tree.filesystem_of(node).map(|fs| fs.info());
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
        match self.guard("lookup", parent, || self.lookup_attr(parent, name)) {
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

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS tells the kernel (4.19+) that opening files needs no
        // server: it stops sending OPEN, FLUSH and RELEASE for files and
        // opens them itself with FOPEN_KEEP_CACHE, which is what restorefs
        // would answer anyway. Reading a small file then costs one request
        // instead of four. Nothing is lost: files need no handle, writes
        // are refused by the kernel for the read-only mount before any
        // request is sent, and a file that cannot be read fails its read.
        reply.error(Errno::ENOSYS);
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
        let want = size.min(MAX_IO) as usize;
        // One buffer per request thread, reused: a fresh 1 MiB Vec per
        // request is an mmap, a page fault and a zeroing pass per page, and
        // an munmap, costing more than the copy into the reply.
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let buf = &mut buf[..want];
            let res = self.guard("read", ino, || {
                let node = self.node(ino)?;
                let mut done = 0;
                // The kernel takes a short read for end of file, so fill
                // the buffer unless the tree says the file ends.
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
                Ok(done)
            });
            match res {
                Ok(done) => reply.data(&buf[..done]),
                Err(e) => reply.error(e),
            }
        });
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
        match self.guard("opendir", ino, || self.open_dir(ino)) {
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
        self.release_dir(fh);
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

    /// A synthetic filesystem of `DIRS` directories of `PER_DIR` files
    /// each, made up on demand: nothing is stored, so whatever memory a
    /// walk keeps is the mount layer's.
    struct Synthetic;

    const DIRS: u64 = 1000;
    const PER_DIR: u64 = 1000;
    const ROOT: u64 = 1;

    impl Synthetic {
        fn file_id(d: u64, f: u64) -> u64 {
            DIRS + 2 + d * PER_DIR + f
        }
        fn stat_of(node: u64, kind: FileType) -> restorefs_parsers::fs::Stat {
            restorefs_parsers::fs::Stat {
                node,
                kind,
                size: node % 4096,
                mode: 0o644,
                uid: 0,
                gid: 0,
                nlink: 1,
                rdev: 0,
                allocated: 4096,
                atime: Default::default(),
                mtime: Default::default(),
                ctime: Default::default(),
                crtime: None,
            }
        }
    }

    impl restorefs_parsers::fs::FileSystem for Synthetic {
        fn info(&self) -> restorefs_parsers::fs::FsInfo {
            restorefs_parsers::fs::FsInfo {
                kind: "synthetic".into(),
                block_size: 4096,
                ..Default::default()
            }
        }
        fn root(&self) -> u64 {
            ROOT
        }
        fn lookup(&self, dir: u64, name: &OsStr) -> restorefs_parsers::Result<Option<u64>> {
            let name = name.to_string_lossy();
            let num = |prefix: &str| name.strip_prefix(prefix)?.parse::<u64>().ok();
            Ok(match dir {
                ROOT => num("d").filter(|&d| d < DIRS).map(|d| d + 2),
                d if (2..DIRS + 2).contains(&d) => num("f")
                    .filter(|&f| f < PER_DIR)
                    .map(|f| Self::file_id(d - 2, f)),
                _ => None,
            })
        }
        fn read_dir(
            &self,
            dir: u64,
        ) -> restorefs_parsers::Result<Vec<restorefs_parsers::fs::DirEntry>> {
            let entry = |name: String, node, kind| restorefs_parsers::fs::DirEntry {
                name: name.into(),
                node,
                kind,
            };
            Ok(match dir {
                ROOT => (0..DIRS)
                    .map(|d| entry(format!("d{d}"), d + 2, FileType::Dir))
                    .collect(),
                d => (0..PER_DIR)
                    .map(|f| entry(format!("f{f}"), Self::file_id(d - 2, f), FileType::File))
                    .collect(),
            })
        }
        fn stat(&self, node: u64) -> restorefs_parsers::Result<restorefs_parsers::fs::Stat> {
            let dir = node < DIRS + 2;
            Ok(Self::stat_of(
                node,
                if dir { FileType::Dir } else { FileType::File },
            ))
        }
        fn read(
            &self,
            _node: u64,
            _offset: u64,
            _buf: &mut [u8],
        ) -> restorefs_parsers::Result<usize> {
            Ok(0)
        }
        fn read_link(&self, node: u64) -> restorefs_parsers::Result<std::ffi::OsString> {
            Err(Error::NotASymlink(format!("{node}")))
        }
        fn xattrs(
            &self,
            _node: u64,
        ) -> restorefs_parsers::Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
            Ok(Vec::new())
        }
    }

    /// Bytes this thread has allocated and not freed, and the most it
    /// held since the last reset: a global allocator that counts per
    /// thread, so tests running beside this one do not count.
    mod held {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static NOW: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        fn add(n: isize) {
            // try_with: a thread being torn down still frees memory.
            let _ = NOW.try_with(|now| {
                now.set(now.get() + n);
                let _ = PEAK.try_with(|p| p.set(p.get().max(now.get())));
            });
        }

        /// (held now, peak) in bytes; the peak restarts from now.
        pub fn take() -> (isize, isize) {
            let now = NOW.with(Cell::get);
            let peak = PEAK.with(|p| p.replace(now));
            (now, peak)
        }

        struct Counting;

        // SAFETY: every call is passed on to the system allocator as it is.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                add(l.size() as isize);
                unsafe { System.alloc(l) }
            }
            unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
                add(l.size() as isize);
                unsafe { System.alloc_zeroed(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                add(-(l.size() as isize));
                unsafe { System.dealloc(p, l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
                add(new as isize - l.size() as isize);
                unsafe { System.realloc(p, l, new) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;
    }

    /// Scale, not speed: a million files walked the way the kernel walks
    /// them (lookup of every name, opendir/readdir/releasedir of every
    /// directory, getattr of every node) leave no per-node state in the
    /// mount layer, and its memory does not grow with the walk.
    #[test]
    fn a_million_files_walk_in_bounded_memory() {
        use restorefs_parsers::fs::FsKind;
        use restorefs_parsers::tree::{TreeVolume, VolumeState};

        let mut tree = blank().tree;
        let source = tree.volumes[0].source.clone();
        tree.volumes = vec![TreeVolume {
            name: "root".into(),
            partition: None,
            source,
            state: VolumeState::Fs(FsKind::Ext, Arc::new(Synthetic)),
        }];
        tree.bare = true;
        let fs = RestoreFs::new(tree, "synthetic".into());
        let root = INodeNo::ROOT;
        assert_eq!(fs.node(root).unwrap(), Node::Fs(0, ROOT));

        let mut walked = 0u64;
        let (base, _) = held::take();
        let root_fh = fs.open_dir(root).unwrap();
        let dirs = fs
            .listing(fs.node(root).unwrap(), FileHandle(root_fh))
            .unwrap();
        assert_eq!(dirs.len() as u64, DIRS);
        for (k, d) in dirs.iter().enumerate() {
            let dattr = fs.lookup_attr(root, &d.name).unwrap();
            assert_eq!(dattr.kind, fuser::FileType::Directory);
            let fh = fs.open_dir(dattr.ino).unwrap();
            let files = fs
                .listing(fs.node(dattr.ino).unwrap(), FileHandle(fh))
                .unwrap();
            for f in files.iter() {
                let a = fs.lookup_attr(dattr.ino, &f.name).unwrap();
                assert_eq!(a.ino.0, fs.ino(f.node));
                let again = fs.attr("getattr", fs.node(a.ino).unwrap()).unwrap();
                assert_eq!(again.size, a.size);
                walked += 1;
            }
            fs.release_dir(FileHandle(fh));
            drop(files);
            // Nothing of a finished directory stays behind (but the open
            // root's listing and the handle map's few slots).
            let (now, _) = held::take();
            assert!(
                now - base < 256 << 10,
                "after directory {k}: {} bytes held",
                now - base
            );
        }
        fs.release_dir(FileHandle(root_fh));
        assert_eq!(walked, DIRS * PER_DIR);
        // Every listing was dropped at its releasedir.
        assert!(fs.dirs.lock().unwrap().is_empty());
        drop(dirs);
        let (now, peak) = held::take();
        // The handle map keeps its few empty slots; nothing else remains.
        assert!(
            now - base < 4096,
            "{} bytes still held after the walk",
            now - base
        );
        // At most the root's and one directory's listing at a time.
        assert!(
            peak - base < 1 << 20,
            "peak {} bytes during the walk",
            peak - base
        );
    }
}
