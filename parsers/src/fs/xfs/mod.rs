//! XFS (v5 and v4), read by our own parser from the on-disk format.
//!
//! One file per on-disk structure; this file joins them into a
//! [`FileSystem`]. Node ids are inode numbers, which encode where the
//! inode lives (AG, block in AG, slot), so no inode btree is needed.
//!
//! A dirty internal log is replayed in memory (`log::recover`) into an
//! overlay that `read_raw`, the one path every read takes, lays over the
//! image; the superblock is re-read through it. A log that cannot be
//! replayed exactly as the kernel would leaves the volume read as on disk
//! (`mount -o ro,norecovery`), with a warning saying why; so does any
//! dirty v4 log, which no kernel here mounts to check the replay against.
//!
//! Not read: files on a realtime device (refused), an external log (a
//! warning). POSIX ACLs (`trusted.SGI_ACL_FILE`, `SGI_ACL_DEFAULT` on
//! disk) show as Linux shows them: under those names and as
//! `system.posix_acl_*` (see [`acl`]).

mod attr;
mod bmap;
mod dir;
mod inode;
mod log;
mod superblock;

/// Reads, parses and checks the superblock, through `overlay` (what a log
/// replay changed): the one place the filesystem reads it.
fn read_superblock(src: &Source, overlay: &log::Overlay) -> Result<Superblock> {
    let mut b = vec![0u8; SB_LEN];
    src.read_exact_at(0, &mut b)
        .map_err(|e| Error::io("xfs", 0, e))?;
    overlay.patch(0, &mut b);
    let sb = Superblock::parse(&b)?;
    sb.check_features()?;
    Ok(sb)
}

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use self::bmap::Extent;
use self::inode::{Format, Inode};
use self::superblock::{Superblock, SB_LEN};
pub(crate) use crate::bytes::{be16, be32, be64};
use crate::fs::acl;
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat};
use crate::memo::Memo;
use crate::{Error, Result, Source};

/// Parsed directories kept.
const DIR_CACHE: usize = 256;
/// Decoded extent lists kept (per inode and fork).
const EXTENT_CACHE: usize = 1024;
/// Larger directories (data blocks only) are taken as corrupt.
const MAX_DIR_BYTES: u64 = 1 << 30;
/// The kernel's limit on a symlink target is 1024; allow slack, no more.
const MAX_SYMLINK: u64 = 4096;
/// The VFS limit on an xattr value.
const MAX_XATTR_VALUE: u32 = 65536;
/// Deeper attribute dabtrees mean a loop.
const MAX_DA_LEVELS: u16 = 8;
/// Header of v5 remote symlink and remote xattr value blocks.
const REMOTE_HDR: usize = 56;

/// A parsed directory.
struct Dir {
    entries: Vec<DirEntry>,
    by_name: HashMap<Vec<u8>, NodeId>,
}

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fork {
    Data,
    Attr,
}

/// An XFS filesystem on a source.
pub struct XfsFs {
    src: Source,
    sb: Superblock,
    warnings: Vec<String>,
    dirs: Memo<u64, Dir>,
    /// Decoded extent lists by (inode, fork).
    extents: Memo<(u64, Fork), Vec<Extent>>,
    /// Sectors the log replay changed, laid over every read.
    overlay: log::Overlay,
}

impl XfsFs {
    /// Opens the filesystem on `src`; refuses unknown incompatible
    /// features and filesystems that need repair.
    pub fn open(src: Source) -> Result<Self> {
        let sb = read_superblock(&src, &log::Overlay::default())?;
        let mut fs = XfsFs {
            src,
            sb,
            warnings: Vec::new(),
            dirs: Memo::new(DIR_CACHE),
            extents: Memo::new(EXTENT_CACHE),
            overlay: log::Overlay::default(),
        };
        if !fs.sb.crc_ok {
            fs.warnings
                .push("superblock checksum mismatch; read anyway".into());
        }
        if fs.sb.inprogress {
            fs.warnings
                .push("superblock says mkfs did not finish".into());
        }
        let bytes = fs.sb.dblocks.saturating_mul(u64::from(fs.sb.block_size));
        if bytes > fs.src.size() {
            fs.warnings.push(format!(
                "image is {} bytes, filesystem claims {bytes}: truncated?",
                fs.src.size()
            ));
        }
        fs.check_log()?;
        Ok(fs)
    }

    /// Replays a dirty internal log into the overlay, then re-reads the
    /// superblock through it; a log that cannot be replayed as the kernel
    /// would leaves the volume read as on disk (as `norecovery`), with a
    /// warning saying why.
    fn check_log(&mut self) -> Result<()> {
        let prefix = "log not replayed: newest changes may be missing";
        if self.sb.log_start == 0 {
            self.warnings.push(
                "external log not examined; if it is dirty, newest changes may be missing".into(),
            );
            return Ok(());
        }
        let bs = u64::from(self.sb.block_size);
        let Some(start) = self.sb.linear_block(self.sb.log_start) else {
            self.warnings
                .push(format!("{prefix} (log start out of range)"));
            return Ok(());
        };
        let len_bbs = u64::from(self.sb.log_blocks) * bs / 512;
        let read = |off: u64, buf: &mut [u8]| self.read_raw(off, buf);
        match log::state(start * bs, len_bbs, &read) {
            Ok(log::State::Clean) => return Ok(()),
            Ok(log::State::Dirty(_)) => {}
            Err(e) => {
                self.warnings
                    .push(format!("{prefix} (log unreadable: {e})"));
                return Ok(());
            }
        }
        if !self.sb.is_v5() {
            // The replay follows the kernel for v4 too, but no kernel at
            // hand mounts v4 to check it against: not trusted yet.
            self.warnings.push(format!(
                "{prefix} (v4 log replay is not verified against a kernel)"
            ));
            return Ok(());
        }
        let g = log::Geometry::from_sb(&self.sb);
        // The log stripe unit sizes mkfs's records.
        let v2 = self.sb.log_v2;
        let logbsize = self.sb.log_sunit.max(32768);
        let read_dev = |off: u64, buf: &mut [u8]| {
            self.src
                .read_exact_at(off, buf)
                .map_err(|e| Error::io("xfs", off, e))
        };
        match log::recover(start * bs, len_bbs, &g, v2, logbsize, &read_dev) {
            Ok(None) => Ok(()),
            Ok(Some(r)) => {
                let sb = read_superblock(&self.src, &r.overlay)
                    .map_err(|e| e.context("superblock after log replay"));
                let sb = match sb {
                    Ok(sb) => sb,
                    Err(e) => {
                        self.warnings.push(format!("{prefix} ({e})"));
                        return Ok(());
                    }
                };
                self.sb = sb;
                let overlay_len = r.overlay.len();
                self.overlay = r.overlay;
                let torn = r
                    .torn_at
                    .map(|b| format!("; torn write at log block {b} cut off, as the kernel does"))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "log replayed in memory ({} transactions, {} sectors{torn}); the image is unchanged",
                    r.transactions,
                    overlay_len
                ));
                Ok(())
            }
            Err(e) => {
                self.warnings.push(format!("{prefix} ({e})"));
                Ok(())
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.src
            .read_exact_at(offset, buf)
            .map_err(|e| Error::io("xfs", offset, e))?;
        self.overlay.patch(offset, buf);
        Ok(())
    }

    /// One whole fs block by linear block number.
    fn read_block(&self, lin: u64) -> Result<Vec<u8>> {
        if lin >= self.sb.dblocks {
            return Err(Error::corrupt(
                "xfs",
                0,
                format!("block {lin} out of range"),
            ));
        }
        let bs = u64::from(self.sb.block_size);
        let mut v = vec![0u8; bs as usize];
        self.read_raw(lin * bs, &mut v)?;
        Ok(v)
    }

    /// Reads and parses inode `ino`.
    fn inode(&self, ino: u64) -> Result<Inode> {
        let offset = self
            .sb
            .inode_offset(ino)
            .ok_or_else(|| Error::NotFound(format!("inode {ino}")))?;
        let mut b = vec![0u8; usize::from(self.sb.inode_size)];
        self.read_raw(offset, &mut b)?;
        Inode::parse(ino, &b, self.sb.is_v5(), offset)
    }

    /// The node's inode, which must have a valid type.
    fn typed_inode(&self, ino: u64) -> Result<(Inode, FileType)> {
        let i = self.inode(ino)?;
        let kind = i.kind().ok_or_else(|| {
            Error::corrupt(
                "xfs",
                0,
                format!("inode {ino} has no valid type (mode {:#o})", i.mode),
            )
        })?;
        Ok((i, kind))
    }

    /// The decoded extent list of a fork in extents or btree format,
    /// cached; decoding happens outside the lock.
    fn extents_of(&self, ino: &Inode, fork: Fork) -> Result<Arc<Vec<Extent>>> {
        self.extents.get_or_make((ino.ino, fork), || {
            let (format, bytes, n) = match fork {
                Fork::Data => (Some(ino.format), &ino.data, ino.nextents),
                Fork::Attr => (ino.aformat, &ino.attr, ino.anextents),
            };
            let read = |lin| self.read_block(lin);
            match format {
                Some(Format::Extents) => bmap::from_extents(bytes, n, &self.sb),
                Some(Format::Btree) => bmap::from_btree(bytes, n, &self.sb, &read),
                _ => Err(Error::corrupt("xfs", 0, "fork is not block-mapped")),
            }
            .map(Arc::new)
            .map_err(|e| e.context(format!("inode {} {fork:?} fork", ino.ino)))
        })
    }

    /// Fills `buf` with the fork's bytes at `offset`: one source read per
    /// run of contiguous blocks, zeros for holes and unwritten extents.
    fn read_mapped(&self, exts: &[Extent], offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let lblock = pos / bs;
            let in_block = pos % bs;
            let left = (buf.len() - done) as u64;
            let (phys, avail) = match bmap::find(exts, lblock) {
                Ok(i) => {
                    let e = exts
                        .get(i)
                        .copied()
                        .ok_or_else(|| Error::corrupt("xfs", 0, "extent index"))?;
                    let skip = lblock - e.logical;
                    let bytes = (e.len - skip) * bs - in_block;
                    let phys = (!e.unwritten).then(|| (e.disk + skip) * bs + in_block);
                    (phys, bytes)
                }
                // A hole up to the next extent, or to the end.
                Err(i) => match exts.get(i) {
                    Some(e) => (None, e.logical * bs - pos),
                    None => (None, left),
                },
            };
            let n = avail.min(left) as usize;
            let dst = buf.get_mut(done..done + n).unwrap_or_default();
            match phys {
                Some(p) => self.read_raw(p, dst)?,
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Reads file data of `ino` at `offset`.
    fn read_data(&self, ino: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= ino.size || buf.is_empty() {
            return Ok(0);
        }
        let len = usize::try_from(ino.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = buf.get_mut(..len).unwrap_or_default();
        match ino.format {
            Format::Local => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = ino.data.get(start..).unwrap_or(&[]);
                let n = src.len().min(len);
                buf.get_mut(..n)
                    .unwrap_or_default()
                    .copy_from_slice(src.get(..n).unwrap_or(&[]));
                buf.get_mut(n..).unwrap_or_default().fill(0);
            }
            Format::Extents | Format::Btree => {
                if ino.flags & inode::flags::REALTIME != 0 {
                    return Err(Error::unsupported("xfs", "file on the realtime device"));
                }
                let exts = self.extents_of(ino, Fork::Data)?;
                self.read_mapped(&exts, offset, buf)?;
            }
            Format::Dev => {
                return Err(Error::corrupt(
                    "xfs",
                    0,
                    format!("inode {}: data in a device fork", ino.ino),
                ))
            }
        }
        Ok(len)
    }

    /// Reads a directory, from the cache if parsed before.
    fn dir(&self, ino: u64) -> Result<Arc<Dir>> {
        self.dirs.get_or_make(ino, || {
            let (inode, kind) = self.typed_inode(ino)?;
            if kind != FileType::Dir {
                return Err(Error::NotADirectory(format!("inode {ino}")));
            }
            self.parse_dir(&inode)
                .map(Arc::new)
                .map_err(|e| e.context(format!("directory inode {ino}")))
        })
    }

    fn parse_dir(&self, inode: &Inode) -> Result<Dir> {
        let ftype = self.sb.has_ftype;
        let mut raw = Vec::new();
        match inode.format {
            Format::Local => dir::parse_short(&inode.data, ftype, &mut raw)?,
            Format::Extents | Format::Btree => {
                let exts = self.extents_of(inode, Fork::Data)?;
                let bs = u64::from(self.sb.block_size);
                let dbs = u64::from(self.sb.dir_block_size());
                let per = dbs / bs;
                let seg_end = dir::LEAF_OFFSET / bs;
                // Every directory block that starts in a mapped extent of
                // the data segment, in order, each once.
                let mut blocks = Vec::new();
                for e in exts.iter().take_while(|e| e.logical < seg_end) {
                    let first = e.logical.div_ceil(per);
                    let end = (e.logical + e.len).min(seg_end).div_ceil(per);
                    for d in first..end {
                        if blocks.last() != Some(&d) {
                            blocks.push(d);
                        }
                        if blocks.len() as u64 * dbs > MAX_DIR_BYTES {
                            return Err(Error::corrupt("xfs", 0, "directory too large"));
                        }
                    }
                }
                let mut b = vec![0u8; dbs as usize];
                for d in blocks {
                    self.read_mapped(&exts, d * dbs, &mut b)?;
                    // A bad block loses its own entries, not the directory's.
                    if let Err(e) =
                        dir::parse_data_block(&b, self.sb.is_v5(), ftype, d * dbs, &mut raw)
                    {
                        tracing::warn!(dir = inode.ino, "xfs: {e}");
                    }
                }
            }
            Format::Dev => return Err(Error::corrupt("xfs", 0, "directory with a device fork")),
        }
        let mut entries = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for e in raw {
            let kind = match e.ftype {
                1 => Some(FileType::File),
                2 => Some(FileType::Dir),
                3 => Some(FileType::CharDevice),
                4 => Some(FileType::BlockDevice),
                5 => Some(FileType::Fifo),
                6 => Some(FileType::Socket),
                7 => Some(FileType::Symlink),
                _ => self.inode(e.ino).ok().and_then(|i| i.kind()),
            };
            let Some(kind) = kind else {
                tracing::warn!(
                    dir = inode.ino,
                    node = e.ino,
                    "xfs: skipping entry with unreadable inode type"
                );
                continue;
            };
            by_name.entry(e.name.clone()).or_insert(e.ino);
            entries.push(DirEntry {
                name: OsString::from_vec(e.name),
                node: e.ino,
                kind,
            });
        }
        Ok(Dir { entries, by_name })
    }

    /// A symlink's target: inline, or in blocks (with a header each on v5).
    fn link_target(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.size > MAX_SYMLINK {
            return Err(Error::corrupt("xfs", 0, "symlink target too long"));
        }
        let size = inode.size as usize;
        if inode.format == Format::Local {
            return inode
                .data
                .get(..size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::corrupt("xfs", 0, "inline symlink past the fork"));
        }
        let exts = self.extents_of(inode, Fork::Data)?;
        if !self.sb.is_v5() {
            let mut v = vec![0u8; size];
            self.read_mapped(&exts, 0, &mut v)?;
            return Ok(v);
        }
        self.read_remote(&exts, 0, size, b"XSLM")
    }

    /// Reads `len` bytes stored from fork block `first` in v5 remote blocks
    /// (symlinks, xattr values): a 56-byte header with `magic` and the
    /// byte count of each block.
    fn read_remote(
        &self,
        exts: &[Extent],
        first: u64,
        len: usize,
        magic: &[u8; 4],
    ) -> Result<Vec<u8>> {
        let bs = self.sb.block_size as usize;
        let per = bs - REMOTE_HDR;
        let mut out = Vec::with_capacity(len);
        let mut b = vec![0u8; bs];
        let mut block = first;
        while out.len() < len {
            self.read_mapped(exts, block * bs as u64, &mut b)?;
            if b.get(..4) != Some(magic.as_slice()) {
                return Err(Error::corrupt("xfs", 0, "remote block: bad magic"));
            }
            let n = (be32(&b, 8) as usize).min(per).min(len - out.len());
            if n == 0 {
                return Err(Error::corrupt("xfs", 0, "remote block: empty"));
            }
            out.extend_from_slice(b.get(REMOTE_HDR..REMOTE_HDR + n).unwrap_or(&[]));
            block += 1;
        }
        Ok(out)
    }

    /// Every listed xattr of `inode`, values read.
    fn all_xattrs(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let attrs = match inode.aformat {
            None => return Ok(Vec::new()),
            Some(Format::Local) => attr::parse_short(&inode.attr)?,
            Some(Format::Extents | Format::Btree) => {
                if inode.anextents == 0 {
                    return Ok(Vec::new());
                }
                self.attr_tree(inode)?
            }
            Some(Format::Dev) => return Err(Error::corrupt("xfs", 0, "attribute fork format")),
        };
        let mut out = Vec::with_capacity(attrs.len());
        let mut exts = None;
        for a in attrs {
            let value = match a.value {
                attr::Value::Local(v) => v,
                attr::Value::Remote { block, len } => {
                    if len > MAX_XATTR_VALUE {
                        return Err(Error::corrupt("xfs", 0, "xattr value too large"));
                    }
                    let exts = match &exts {
                        Some(e) => e,
                        None => exts.insert(self.extents_of(inode, Fork::Attr)?),
                    };
                    if self.sb.is_v5() {
                        self.read_remote(exts, u64::from(block), len as usize, b"XARM")?
                    } else {
                        let mut v = vec![0u8; len as usize];
                        self.read_mapped(
                            exts,
                            u64::from(block) * u64::from(self.sb.block_size),
                            &mut v,
                        )?;
                        v
                    }
                }
            };
            // Linux lists an ACL twice: as the attribute it is on disk
            // and as the system.posix_acl_* name it is set and read by.
            if let Some(name) = acl_name(&a.name) {
                out.push((name.to_vec(), xfs_acl(&value)?));
            }
            out.push((a.name, value));
        }
        Ok(out)
    }

    /// Attributes in leaf blocks: down the leftmost path of the dabtree
    /// from block 0, then along the leaves.
    fn attr_tree(&self, inode: &Inode) -> Result<Vec<attr::Attr>> {
        let exts = self.extents_of(inode, Fork::Attr)?;
        let bs = u64::from(self.sb.block_size);
        let mapped: u64 = exts.iter().map(|e| e.len).sum();
        let mut b = vec![0u8; bs as usize];
        let mut block = 0u32;
        let mut levels = 0u16;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        loop {
            // Each block is visited once: a loop in the siblings or the
            // tree ends here.
            if !seen.insert(block) || seen.len() as u64 > mapped {
                return Err(Error::corrupt("xfs", 0, "xattr block loop"));
            }
            self.read_mapped(&exts, u64::from(block) * bs, &mut b)?;
            match attr::parse_block(&b, self.sb.is_v5(), u64::from(block) * bs)? {
                attr::Block::Node { first_child, .. } => {
                    levels += 1;
                    if levels > MAX_DA_LEVELS || !out.is_empty() {
                        return Err(Error::corrupt("xfs", 0, "xattr tree too deep"));
                    }
                    block = first_child;
                }
                attr::Block::Leaf { attrs, next } => {
                    out.extend(attrs);
                    if next == 0 {
                        return Ok(out);
                    }
                    block = next;
                }
            }
        }
    }
}

impl FileSystem for XfsFs {
    fn info(&self) -> FsInfo {
        let bs = u64::from(self.sb.block_size);
        FsInfo {
            kind: "xfs".into(),
            label: self.sb.label(),
            uuid: Some(self.sb.uuid_string()),
            block_size: self.sb.block_size,
            total_bytes: self.sb.dblocks.saturating_mul(bs),
            free_bytes: self.sb.fdblocks.saturating_mul(bs),
            total_nodes: self.sb.icount,
            free_nodes: self.sb.ifree,
            warnings: self.warnings.clone(),
        }
    }

    fn root(&self) -> NodeId {
        self.sb.root_ino
    }

    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        Ok(self.dir(dir)?.by_name.get(name.as_bytes()).copied())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        Ok(self.dir(dir)?.entries.clone())
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        let (i, kind) = self.typed_inode(node)?;
        Ok(Stat {
            node,
            kind,
            size: i.size,
            mode: u32::from(i.mode) & 0o7777,
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            rdev: if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
                i.rdev()
            } else {
                0
            },
            allocated: i.nblocks.saturating_mul(u64::from(self.sb.block_size)),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (i, kind) = self.typed_inode(node)?;
        match kind {
            FileType::File => self.read_data(&i, offset, buf),
            FileType::Dir => Err(Error::IsADirectory(format!("inode {node}"))),
            _ => Ok(0),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        let (i, kind) = self.typed_inode(node)?;
        if kind != FileType::Symlink {
            return Err(Error::NotASymlink(format!("inode {node}")));
        }
        Ok(OsString::from_vec(self.link_target(&i)?))
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        let i = self.inode(node)?;
        Ok(self
            .all_xattrs(&i)?
            .into_iter()
            .map(|(n, v)| (OsString::from_vec(n), v))
            .collect())
    }
}

/// The name Linux shows an XFS ACL attribute under, if `name` is one.
fn acl_name(name: &[u8]) -> Option<&'static [u8]> {
    match name {
        b"trusted.SGI_ACL_FILE" => Some(acl::ACCESS),
        b"trusted.SGI_ACL_DEFAULT" => Some(acl::DEFAULT),
        _ => None,
    }
}

/// An XFS ACL (`xfs_acl`: a big-endian count, then 12-byte entries of
/// tag, id, perm and padding) as a `posix_acl_xattr` value.
fn xfs_acl(v: &[u8]) -> Result<Vec<u8>> {
    let bad = |what: &str| Error::corrupt("xfs", 0, format!("POSIX ACL: {what}"));
    let count = be32(v, 0) as usize;
    if count > acl::MAX_ENTRIES || v.len() < 4 + count * 12 {
        return Err(bad("entry count past its value"));
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = 4 + i * 12;
        let tag = u16::try_from(be32(v, e))
            .ok()
            .filter(|&t| acl::is_tag(t))
            .ok_or_else(|| bad("unknown entry tag"))?;
        entries.push((tag, be16(v, e + 8), be32(v, e + 4)));
    }
    Ok(acl::to_xattr(entries))
}
