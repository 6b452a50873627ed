//! ext2, ext3 and ext4, read by our own parser.
//!
//! We do not use the `ext4-view` crate as the adapter (it is only a test
//! cross-check): its 1.0 API is path-only and hides inode numbers (we need
//! them as node ids so hard links are one node), link counts, ctime, device
//! numbers and xattrs, and its filesystem handle is not `Send`.
//!
//! One file per on-disk structure; this file joins them into a
//! [`FileSystem`]. Every block read goes through `ExtFs::read_raw`, which
//! applies the in-memory journal replay overlay.

mod block_map;
mod dir;
mod extent;
mod group_desc;
mod inode;
mod journal;
mod superblock;
mod xattr;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use self::block_map::BlockMap;
use self::extent::Extent;
use self::group_desc::GroupDesc;
use self::inode::{flags, Inode, I_BLOCK_LEN};
use self::superblock::{
    compat, incompat, ro_compat, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
};
pub(crate) use crate::bytes::{le16, le32};
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat};
use crate::memo::Memo;
use crate::{Error, Result, Source};

/// Parsed directories kept; lookups in a big directory then cost a hash
/// probe, not a re-parse.
const DIR_CACHE: usize = 256;
/// Decoded extent lists kept.
const EXTENT_CACHE: usize = 1024;
/// Larger directories are taken as corrupt rather than read into memory.
const MAX_DIR_BYTES: u64 = 1 << 30;
/// Bytes of a directory read at once.
const DIR_CHUNK: usize = 256 << 10;
/// Larger symlink targets are taken as corrupt.
const MAX_SYMLINK: u64 = 65536;
const ROOT_INO: u64 = 2;

/// A parsed directory.
struct Dir {
    entries: Vec<DirEntry>,
    by_name: HashMap<Vec<u8>, NodeId>,
}

/// An ext2/3/4 filesystem on a source.
pub struct ExtFs {
    src: Source,
    sb: Superblock,
    groups: Vec<GroupDesc>,
    overlay: journal::Overlay,
    warnings: Vec<String>,
    dirs: Memo<u64, Dir>,
    extents: Memo<u64, Vec<Extent>>,
}

impl ExtFs {
    /// Opens the filesystem on `src`, replaying its journal in memory if it
    /// needs recovery.
    pub fn open(src: Source) -> Result<Self> {
        let sb = read_superblock(&src, &journal::Overlay::default())?;
        sb.check_features()?;
        let overlay = journal::Overlay::empty(sb.block_size);
        let groups = load_groups(&src, &sb, &overlay)?;
        let mut fs = ExtFs {
            src,
            sb,
            groups,
            overlay,
            warnings: Vec::new(),
            dirs: Memo::new(DIR_CACHE),
            extents: Memo::new(EXTENT_CACHE),
        };
        let image_bytes = fs
            .sb
            .blocks_count
            .saturating_mul(u64::from(fs.sb.block_size));
        if image_bytes > fs.src.size() {
            fs.warnings.push(format!(
                "image is {} bytes, filesystem claims {image_bytes}: truncated?",
                fs.src.size()
            ));
        }
        if fs.sb.has_incompat(incompat::RECOVER) {
            fs.replay_journal()?;
        }
        Ok(fs)
    }

    /// Replays the journal into the overlay, then re-reads what the
    /// journal may have changed (superblock, group descriptors).
    fn replay_journal(&mut self) -> Result<()> {
        let not_replayed = "journal needs recovery; not replayed: newest changes may be missing";
        if !self.sb.has_compat(compat::HAS_JOURNAL) || self.sb.journal_inum == 0 {
            self.warnings
                .push(format!("{not_replayed} (no internal journal)"));
            return Ok(());
        }
        let result = (|| {
            let jino = self.inode(u64::from(self.sb.journal_inum))?;
            let bs = u64::from(self.sb.block_size);
            let jblocks = jino.size / bs;
            let read = |b: u64| -> Result<Vec<u8>> {
                let off = self.locate(&jino, b)?;
                let mut v = vec![0u8; bs as usize];
                self.src
                    .read_exact_at(off, &mut v)
                    .map_err(|e| Error::io("ext", off, e))?;
                Ok(v)
            };
            let locate = |b: u64| self.locate(&jino, b);
            journal::replay(
                self.sb.block_size,
                self.sb.blocks_count,
                jblocks,
                &read,
                &locate,
            )
        })();
        match result {
            Ok(r) => {
                self.overlay = r.overlay;
                self.warnings.extend(r.warnings);
                tracing::debug!(
                    transactions = r.transactions,
                    blocks = self.overlay.len(),
                    "ext journal replayed"
                );
                let sb = read_superblock(&self.src, &self.overlay)?;
                sb.check_features()?;
                self.groups = load_groups(&self.src, &sb, &self.overlay)?;
                self.sb = sb;
            }
            Err(e) => self.warnings.push(format!("{not_replayed} ({e})")),
        }
        Ok(())
    }

    /// Byte offset in the source of file block `lblock` of `ino` (journal
    /// replay only: read directly, no overlay).
    fn locate(&self, ino: &Inode, lblock: u64) -> Result<u64> {
        let bs = u64::from(self.sb.block_size);
        let phys = if ino.has_flag(flags::EXTENTS) {
            let exts = self.extents_of(ino)?;
            match extent::find(&exts, lblock) {
                Ok(i) => exts
                    .get(i)
                    .map(|e| e.physical + (lblock - u64::from(e.logical)))
                    .unwrap_or(0),
                Err(_) => 0,
            }
        } else {
            let rb = |b| self.read_block(b);
            BlockMap::new(&ino.i_block, self.sb.block_size, &rb).map(lblock)?
        };
        if phys == 0 || phys >= self.sb.blocks_count {
            return Err(Error::corrupt(
                "ext",
                0,
                format!("journal block {lblock} unmapped"),
            ));
        }
        Ok(phys * bs)
    }

    /// Reads `buf.len()` bytes at `offset`, with journal copies applied.
    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.src
            .read_exact_at(offset, buf)
            .map_err(|e| Error::io("ext", offset, e))?;
        self.overlay.patch(&*self.src, offset, buf)
    }

    /// One whole filesystem block.
    fn read_block(&self, block: u64) -> Result<Vec<u8>> {
        if block == 0 || block >= self.sb.blocks_count {
            return Err(Error::corrupt(
                "ext",
                0,
                format!("block {block} out of range"),
            ));
        }
        let bs = u64::from(self.sb.block_size);
        let mut v = vec![0u8; bs as usize];
        self.read_raw(block * bs, &mut v)?;
        Ok(v)
    }

    /// Reads and parses inode `ino`.
    fn inode(&self, ino: u64) -> Result<Inode> {
        if ino == 0 || ino > u64::from(self.sb.inodes_count) {
            return Err(Error::NotFound(format!("inode {ino}")));
        }
        let ipg = u64::from(self.sb.inodes_per_group);
        let g = self
            .groups
            .get(((ino - 1) / ipg) as usize)
            .ok_or_else(|| Error::corrupt("ext", 0, format!("inode {ino} past the last group")))?;
        let isz = u64::from(self.sb.inode_size);
        let offset = g
            .inode_table
            .checked_mul(u64::from(self.sb.block_size))
            .and_then(|o| o.checked_add((ino - 1) % ipg * isz))
            .ok_or_else(|| Error::corrupt("ext", 0, "inode table offset overflows"))?;
        let mut b = vec![0u8; isz as usize];
        self.read_raw(offset, &mut b)?;
        Inode::parse(ino, &b, self.sb.has_ro_compat(ro_compat::HUGE_FILE), offset)
    }

    /// The node's inode, which must have a valid type.
    fn typed_inode(&self, ino: u64) -> Result<(Inode, FileType)> {
        let i = self.inode(ino)?;
        let kind = i.kind().ok_or_else(|| {
            Error::corrupt(
                "ext",
                0,
                format!("inode {ino} has no valid type (mode {:#o})", i.mode),
            )
        })?;
        Ok((i, kind))
    }

    /// The decoded extent list of an extent-mapped inode, cached.
    fn extents_of(&self, ino: &Inode) -> Result<Arc<Vec<Extent>>> {
        self.extents.get_or_make(ino.ino, || {
            let rb = |b| self.read_block(b);
            extent::collect(&ino.i_block, 0, &rb)
                .map(Arc::new)
                .map_err(|e| e.context(format!("inode {}", ino.ino)))
        })
    }

    /// Bytes of an inline-data inode: `i_block`, then the `system.data`
    /// xattr.
    fn inline_data(&self, ino: &Inode) -> Result<Vec<u8>> {
        let mut data = ino.i_block.to_vec();
        if ino.size > I_BLOCK_LEN as u64 {
            let attrs = xattr::parse_inode_area(&ino.xattr_area, 0)?;
            if let Some(a) = attrs.into_iter().find(|a| a.name == b"system.data") {
                data.extend_from_slice(&a.value);
            }
        }
        data.truncate(usize::try_from(ino.size).unwrap_or(usize::MAX));
        Ok(data)
    }

    /// Reads file data of `ino` at `offset`: one source read per run of
    /// contiguous blocks, zeros for holes and uninitialized extents.
    fn read_data(&self, ino: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= ino.size || buf.is_empty() {
            return Ok(0);
        }
        if ino.has_flag(flags::ENCRYPT) {
            return Err(Error::unsupported("ext", "encrypted file"));
        }
        let len = usize::try_from(ino.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = buf.get_mut(..len).unwrap_or_default();
        if ino.has_flag(flags::INLINE_DATA) {
            let data = self.inline_data(ino)?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = data.get(start..).unwrap_or(&[]);
            let n = src.len().min(len);
            buf.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(src.get(..n).unwrap_or(&[]));
            // Bytes past the stored inline data (if the size claims more)
            // are a hole.
            buf.get_mut(n..).unwrap_or_default().fill(0);
            return Ok(len);
        }
        let bs = u64::from(self.sb.block_size);
        let exts = if ino.has_flag(flags::EXTENTS) {
            Some(self.extents_of(ino)?)
        } else {
            None
        };
        let rb = |b| self.read_block(b);
        let mut bmap = BlockMap::new(&ino.i_block, self.sb.block_size, &rb);
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let lblock = pos / bs;
            let in_block = pos % bs;
            let want_blocks = (in_block + (len - done) as u64).div_ceil(bs);
            // (physical start or None for zeros, blocks in the run)
            let (phys, run) = match &exts {
                Some(exts) => match extent::find(exts, lblock) {
                    Ok(i) => {
                        let e = exts
                            .get(i)
                            .copied()
                            .ok_or_else(|| Error::corrupt("ext", 0, "extent index"))?;
                        let skip = lblock - u64::from(e.logical);
                        let run = (u64::from(e.len) - skip).min(want_blocks);
                        (
                            if e.uninit {
                                None
                            } else {
                                Some(e.physical + skip)
                            },
                            run,
                        )
                    }
                    Err(i) => {
                        let hole = exts
                            .get(i)
                            .map_or(want_blocks, |e| u64::from(e.logical) - lblock);
                        (None, hole.min(want_blocks))
                    }
                },
                None => {
                    let first = bmap.map(lblock)?;
                    let mut run = 1;
                    while run < want_blocks {
                        let next = bmap.map(lblock + run)?;
                        let contiguous = if first == 0 {
                            next == 0
                        } else {
                            next == first + run
                        };
                        if !contiguous {
                            break;
                        }
                        run += 1;
                    }
                    ((first != 0).then_some(first), run)
                }
            };
            let bytes = (run * bs - in_block).min((len - done) as u64) as usize;
            let dst = buf.get_mut(done..done + bytes).unwrap_or_default();
            match phys {
                Some(p) => {
                    if p.checked_add(run)
                        .is_none_or(|end| end > self.sb.blocks_count)
                    {
                        return Err(Error::corrupt(
                            "ext",
                            0,
                            format!("inode {} maps past the filesystem end", ino.ino),
                        ));
                    }
                    self.read_raw(p * bs + in_block, dst)?;
                }
                None => dst.fill(0),
            }
            done += bytes;
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
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let mut raw = Vec::new();
        if inode.has_flag(flags::INLINE_DATA) {
            // The first 4 bytes are the parent's inode number; entries follow.
            dir::parse_block(inode.i_block.get(4..).unwrap_or(&[]), filetype, 0, &mut raw)?;
            let attrs = xattr::parse_inode_area(&inode.xattr_area, 0)?;
            if let Some(a) = attrs.into_iter().find(|a| a.name == b"system.data") {
                dir::parse_block(&a.value, filetype, 0, &mut raw)?;
            }
        } else {
            if inode.size > MAX_DIR_BYTES {
                return Err(Error::corrupt("ext", 0, "directory too large"));
            }
            // Read in chunks, not all at once: a corrupt size must not make
            // us allocate (and zero) a gigabyte.
            let bs = self.sb.block_size as usize;
            let chunk_len = bs * (DIR_CHUNK / bs).max(1);
            let mut chunk = vec![0u8; chunk_len];
            let mut pos = 0u64;
            while pos < inode.size {
                let n = self.read_data(inode, pos, &mut chunk)?;
                if n == 0 {
                    break;
                }
                for (i, block) in chunk.get(..n).unwrap_or(&[]).chunks(bs).enumerate() {
                    // A hole in a directory reads as zeros: nothing there.
                    if block.iter().all(|&b| b == 0) {
                        continue;
                    }
                    dir::parse_block(block, filetype, pos + (i * bs) as u64, &mut raw)?;
                }
                pos += n as u64;
            }
        }
        let mut entries = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for e in raw {
            let node = u64::from(e.inode);
            let kind = match (filetype, e.file_type) {
                (true, 1) => Some(FileType::File),
                (true, 2) => Some(FileType::Dir),
                (true, 3) => Some(FileType::CharDevice),
                (true, 4) => Some(FileType::BlockDevice),
                (true, 5) => Some(FileType::Fifo),
                (true, 6) => Some(FileType::Socket),
                (true, 7) => Some(FileType::Symlink),
                _ => self.inode(node).ok().and_then(|i| i.kind()),
            };
            let Some(kind) = kind else {
                tracing::warn!(
                    dir = inode.ino,
                    node,
                    "ext: skipping entry with unreadable inode type"
                );
                continue;
            };
            by_name.entry(e.name.clone()).or_insert(node);
            entries.push(DirEntry {
                name: OsString::from_vec(e.name),
                node,
                kind,
            });
        }
        Ok(Dir { entries, by_name })
    }

    fn all_xattrs(&self, inode: &Inode) -> Result<Vec<xattr::Xattr>> {
        let mut out = xattr::parse_inode_area(&inode.xattr_area, 0)?;
        if inode.file_acl != 0 {
            let b = self.read_block(inode.file_acl)?;
            out.extend(xattr::parse_block(
                &b,
                inode.file_acl * u64::from(self.sb.block_size),
            )?);
        }
        Ok(out)
    }
}

/// Reads and parses the superblock, through `overlay`.
fn read_superblock(src: &Source, overlay: &journal::Overlay) -> Result<Superblock> {
    let mut b = vec![0u8; SUPERBLOCK_SIZE];
    src.read_exact_at(SUPERBLOCK_OFFSET, &mut b)
        .map_err(|e| Error::io("ext", SUPERBLOCK_OFFSET, e))?;
    overlay.patch(&**src, SUPERBLOCK_OFFSET, &mut b)?;
    Superblock::parse(&b)
}

/// Loads every group descriptor, following meta_bg placement.
fn load_groups(
    src: &Source,
    sb: &Superblock,
    overlay: &journal::Overlay,
) -> Result<Vec<GroupDesc>> {
    let bs = u64::from(sb.block_size);
    let dsz = u64::from(sb.desc_size);
    let count = sb.group_count();
    // The table must fit in the source before we allocate for it.
    if count.saturating_mul(dsz) > src.size() {
        return Err(Error::corrupt(
            "ext",
            SUPERBLOCK_OFFSET,
            "more group descriptors than the image holds",
        ));
    }
    if u64::from(sb.inodes_count) > count * u64::from(sb.inodes_per_group) {
        return Err(Error::corrupt(
            "ext",
            SUPERBLOCK_OFFSET,
            "inode count exceeds the groups",
        ));
    }
    let per_block = bs / dsz;
    let meta_bg = sb.has_incompat(incompat::META_BG);
    let mut groups = Vec::with_capacity(count as usize);
    let mut cached: Option<(u64, Vec<u8>)> = None;
    for g in 0..count {
        let gd_block_index = g / per_block;
        let block = if meta_bg && gd_block_index >= u64::from(sb.first_meta_bg) {
            // meta_bg: each run of `per_block` groups keeps its descriptor
            // block in its own first group, after a superblock backup.
            let first = gd_block_index * per_block;
            u64::from(sb.first_data_block)
                + first * u64::from(sb.blocks_per_group)
                + u64::from(sb.group_has_super(first))
        } else {
            u64::from(sb.first_data_block) + 1 + gd_block_index
        };
        if cached.as_ref().is_none_or(|(b, _)| *b != block) {
            let mut v = vec![0u8; bs as usize];
            let off = block * bs;
            src.read_exact_at(off, &mut v)
                .map_err(|e| Error::io("ext", off, e))?;
            overlay.patch(&**src, off, &mut v)?;
            cached = Some((block, v));
        }
        let data = cached.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
        let at = ((g % per_block) * dsz) as usize;
        let off = block * bs + at as u64;
        groups.push(GroupDesc::parse(
            data.get(at..).unwrap_or(&[]),
            dsz as usize,
            off,
        )?);
    }
    Ok(groups)
}

impl FileSystem for ExtFs {
    fn info(&self) -> FsInfo {
        let bs = u64::from(self.sb.block_size);
        FsInfo {
            kind: self.sb.kind().to_string(),
            label: self.sb.label(),
            uuid: Some(self.sb.uuid_string()),
            block_size: self.sb.block_size,
            total_bytes: self.sb.blocks_count.saturating_mul(bs),
            free_bytes: self.sb.free_blocks.saturating_mul(bs),
            total_nodes: u64::from(self.sb.inodes_count),
            free_nodes: u64::from(self.sb.free_inodes),
            warnings: self.warnings.clone(),
        }
    }

    fn root(&self) -> NodeId {
        ROOT_INO
    }

    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        Ok(self.dir(dir)?.by_name.get(name.as_bytes()).copied())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        Ok(self.dir(dir)?.entries.clone())
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        let (i, kind) = self.typed_inode(node)?;
        let huge = self.sb.has_ro_compat(ro_compat::HUGE_FILE);
        Ok(Stat {
            node,
            kind,
            size: i.size,
            mode: u32::from(i.mode) & 0o7777,
            uid: i.uid,
            gid: i.gid,
            // With dir_nlink a directory past 65000 links stores 1, which
            // stat also reports.
            nlink: u32::from(i.links_count),
            rdev: if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
                i.rdev()
            } else {
                0
            },
            allocated: i.allocated(huge, self.sb.block_size),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (i, kind) = self.typed_inode(node)?;
        if kind == FileType::Dir {
            return Err(Error::IsADirectory(format!("inode {node}")));
        }
        if kind != FileType::File && kind != FileType::Symlink {
            return Ok(0);
        }
        if kind == FileType::Symlink {
            let t = self.read_link(node)?.into_vec();
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(t.len());
            let src = t.get(start..).unwrap_or(&[]);
            let n = src.len().min(buf.len());
            buf.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(src.get(..n).unwrap_or(&[]));
            return Ok(n);
        }
        self.read_data(&i, offset, buf)
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        let (i, kind) = self.typed_inode(node)?;
        if kind != FileType::Symlink {
            return Err(Error::NotASymlink(format!("inode {node}")));
        }
        if i.has_flag(flags::ENCRYPT) {
            return Err(Error::unsupported("ext", "encrypted symlink"));
        }
        if i.size > MAX_SYMLINK {
            return Err(Error::corrupt(
                "ext",
                0,
                format!("symlink inode {node} too long"),
            ));
        }
        let ea_sectors = if i.file_acl != 0 {
            u64::from(self.sb.block_size) / 512
        } else {
            0
        };
        let fast = !i.has_flag(flags::INLINE_DATA)
            && i.size < I_BLOCK_LEN as u64
            && i.blocks.saturating_sub(ea_sectors) == 0;
        let target = if fast {
            i.i_block.get(..i.size as usize).unwrap_or(&[]).to_vec()
        } else {
            let mut v = vec![0u8; i.size as usize];
            let n = self.read_data(&i, 0, &mut v)?;
            v.truncate(n);
            v
        };
        Ok(OsString::from_vec(target))
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        let i = self.inode(node)?;
        Ok(self
            .all_xattrs(&i)?
            .into_iter()
            .filter(|a| a.name != b"system.data")
            .map(|a| (OsString::from_vec(a.name), a.value))
            .collect())
    }
}
