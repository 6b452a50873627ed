//! Btrfs, read by our own parser from the on-disk format.
//!
//! One file per on-disk structure; this file joins them into a
//! [`FileSystem`]. Reading goes superblock (`superblock`) -> bootstrap
//! chunks (`chunk`, `sys_chunk_array`) -> chunk tree (every chunk) ->
//! root tree (`root`: one `ROOT_ITEM` per subvolume) -> each subvolume's
//! fs tree (`inode`, `dir_item`, `inode_ref`, `file_extent`). Tree blocks
//! (`node`) are checked when loaded (checksum, address, fsid, order of
//! keys) and kept in the shared chunk cache; a block failing on one copy
//! is read from the next (DUP, RAID1...), and a block failing on every
//! copy is an error naming it, never data read from it.
//!
//! The volume's root is the top-level subvolume (id 5); every other
//! subvolume and snapshot is the directory its `ROOT_REF` names, as
//! `mount -o subvolid=5` shows it. A subvolume nested in a subvolume that
//! was snapshotted shows in the snapshot as an empty directory, as in the
//! kernel (which gives it inode 2, mode 0755 and the current time; here
//! the time is the epoch).
//!
//! Node ids: `(subvolume index << 32) | inode number`, the index 0 for
//! the top-level subvolume (id 5) and `id - 255` for subvolume `id` >=
//! 256, so ids fit the 48 bits the restore tree keeps and two subvolumes
//! never share one. Subvolume ids above 65790 and inode numbers of 2^32
//! or more are refused with an error naming them.
//!
//! Data checksums (crc32c) are verified on every read of a regular
//! extent (of the compressed bytes for a compressed one): a damaged
//! sector is an error for that read (EIO through the mount).
//!
//! Not read: RAID5/6 chunks (refused), the fsync log tree (a warning says
//! the newest fsynced writes are not shown), checksums other than crc32c
//! (a warning says they are not verified).

mod chunk;
mod compression;
mod csum;
mod dir_item;
mod file_extent;
mod inode;
mod inode_ref;
mod key;
mod lzo;
mod node;
mod root;
mod superblock;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use self::chunk::{Chunk, ChunkMap};
use self::file_extent::{Body, Compression, FileExtent};
use self::inode::InodeItem;
use self::key::Key;
use self::node::{Expect, Node};
use self::root::{RootItem, RootRef, FIRST_FREE, FS_TREE};
use self::superblock::{uuid_string, Superblock, SB_LEN, SB_OFFSETS};
use crate::cache::ChunkCache;
use crate::fs::{DirEntry, FileSystem, FileType, FsInfo, NodeId, Stat, Subvolume, Timespec};
use crate::memo::Memo;
use crate::{Error, Result, Source};

pub use self::compression::MAX_RAM_BYTES;

/// Parsed directories kept.
const DIR_CACHE: usize = 256;
/// Extent lists kept.
const EXTENT_CACHE: usize = 1024;
/// Subvolume roots kept.
const SUBVOL_CACHE: usize = 1024;
/// The inode the kernel gives a subvolume stub in a snapshot.
const EMPTY_SUBVOL_DIR: u64 = 2;
/// Longest symlink target read.
const MAX_SYMLINK: u64 = 4096;
/// Deepest directory nesting followed when naming a subvolume.
const MAX_PATH_DEPTH: usize = 4096;
/// The checksum tree and its items' objectid and type.
const CSUM_TREE: u64 = 7;
const EXTENT_CSUM_OBJECTID: u64 = u64::MAX - 9;
const EXTENT_CSUM: u8 = 128;
/// Largest compressed disk extent read (btrfs writes at most 128 KiB).
const MAX_COMPRESSED_DISK: u64 = 4 << 20;

/// Where a tree starts.
#[derive(Debug, Clone, Copy)]
struct TreeRoot {
    bytenr: u64,
    level: u8,
}

/// One subvolume (fs tree).
#[derive(Debug)]
struct Subvol {
    id: u64,
    tree: TreeRoot,
    item: RootItem,
}

/// A parsed directory.
struct Dir {
    entries: Vec<DirEntry>,
    by_name: HashMap<Vec<u8>, NodeId>,
}

/// The node id of inode `ino` of subvolume `subvol` (see the module doc).
pub fn encode(subvol: u64, ino: u64) -> Result<NodeId> {
    let index = match subvol {
        FS_TREE => 0,
        s if s >= FIRST_FREE => s - (FIRST_FREE - 1),
        s => return Err(Error::corrupt("btrfs", s, format!("subvolume id {s}"))),
    };
    if index >= 1 << 16 {
        return Err(Error::unsupported(
            "btrfs",
            format!("subvolume id {subvol} (ids above 65790 are not read)"),
        ));
    }
    if ino >= 1 << 32 {
        return Err(Error::unsupported(
            "btrfs",
            format!("inode {ino} of subvolume {subvol} (numbers of 2^32 or more are not read)"),
        ));
    }
    Ok((index << 32) | ino)
}

/// The subvolume id and inode number of `node`.
pub fn decode(node: NodeId) -> (u64, u64) {
    let index = node >> 32;
    let subvol = if index == 0 {
        FS_TREE
    } else {
        index + (FIRST_FREE - 1)
    };
    (subvol, node & 0xffff_ffff)
}

/// A Btrfs filesystem on one or more devices.
pub struct BtrfsFs {
    devices: HashMap<u64, Source>,
    sb: Superblock,
    chunks: ChunkMap,
    root_tree: TreeRoot,
    /// The checksum tree, when data checksums are verified (crc32c).
    csum_tree: Option<TreeRoot>,
    default_subvol: u64,
    warnings: Vec<String>,
    /// Chunk-cache owner of tree blocks (keyed by logical address).
    node_owner: u64,
    /// Chunk-cache owner of decoded compressed extents.
    data_owner: u64,
    subvols: Memo<u64, Subvol>,
    dirs: Memo<NodeId, Dir>,
    extents: Memo<NodeId, Vec<FileExtent>>,
}

impl BtrfsFs {
    /// Opens the single-device filesystem on `src`.
    pub fn open(src: Source) -> Result<Self> {
        Self::open_devices(vec![src])
    }

    /// Opens the filesystem whose devices are `srcs` (the first one's
    /// filesystem; devices of others are ignored). A device the chunk
    /// tree names but `srcs` lacks is an error naming its UUID.
    pub fn open_devices(srcs: Vec<Source>) -> Result<Self> {
        let mut devices = HashMap::new();
        let mut sb: Option<Superblock> = None;
        let mut warnings = Vec::new();
        for src in srcs {
            let (s, warn) = read_superblock(&src)?;
            if let Some(first) = &sb {
                if first.fsid != s.fsid {
                    continue;
                }
            } else {
                warnings.extend(warn);
            }
            devices.entry(s.dev.devid).or_insert(src);
            if sb.as_ref().is_none_or(|f| s.generation > f.generation) {
                sb = Some(s);
            }
        }
        let sb = sb.ok_or_else(|| Error::corrupt("btrfs", SB_OFFSETS[0], "no device"))?;
        sb.check_features()?;
        if sb.csum_ok.is_none() {
            warnings.push(format!(
                "{} metadata checksums are not verified",
                sb.csum_type.name()
            ));
        }
        let mut fs = BtrfsFs {
            devices,
            chunks: ChunkMap::new(chunk::parse_sys_array(&sb.sys_chunk_array)?)?,
            root_tree: TreeRoot {
                bytenr: sb.root,
                level: sb.root_level,
            },
            default_subvol: FS_TREE,
            csum_tree: None,
            warnings,
            node_owner: ChunkCache::owner(),
            data_owner: ChunkCache::owner(),
            subvols: Memo::new(SUBVOL_CACHE),
            dirs: Memo::new(DIR_CACHE),
            extents: Memo::new(EXTENT_CACHE),
            sb,
        };
        fs.read_chunk_tree()?;
        fs.default_subvol = fs.find_default()?;
        if fs.sb.csum_ok.is_some() {
            fs.csum_tree = fs.subvol_root(CSUM_TREE)?;
        } else {
            fs.warnings.push(format!(
                "{} data checksums are not verified",
                fs.sb.csum_type.name()
            ));
        }
        if fs.sb.log_root != 0 {
            fs.warnings.push(
                "fsync log tree not replayed: the newest fsynced writes are not shown".into(),
            );
        }
        Ok(fs)
    }

    /// Reads every chunk from the chunk tree, and checks every device it
    /// names is here.
    fn read_chunk_tree(&mut self) -> Result<()> {
        let tree = TreeRoot {
            bytenr: self.sb.chunk_root,
            level: self.sb.chunk_root_level,
        };
        let mut chunks: Vec<Chunk> = self.chunks.chunks().to_vec();
        let mut missing = Vec::new();
        self.walk(
            tree,
            Key::first(0, 0),
            Key::last(u64::MAX, u8::MAX),
            &mut |k, d| {
                match k.kind {
                    key::CHUNK_ITEM => chunks.push(Chunk::parse(d, k.offset, "chunk tree")?.0),
                    key::DEV_ITEM if !self.devices.contains_key(&k.offset) => {
                        let mut u = [0u8; 16];
                        if let Some(s) = d.get(66..82) {
                            u.copy_from_slice(s);
                        }
                        missing.push(format!("{} (devid {})", uuid_string(&u), k.offset));
                    }
                    _ => {}
                }
                Ok(true)
            },
        )?;
        if !missing.is_empty() {
            return Err(Error::corrupt(
                "btrfs",
                self.sb.at,
                format!(
                    "filesystem {} has {} devices; missing: {}",
                    uuid_string(&self.sb.fsid),
                    self.sb.num_devices,
                    missing.join(", ")
                ),
            ));
        }
        self.chunks = ChunkMap::new(chunks)?;
        Ok(())
    }

    /// The default subvolume (`default` in the root tree's directory 6).
    fn find_default(&self) -> Result<u64> {
        let hash = csum::name_hash(b"default");
        let k = Key::new(root::ROOT_TREE_DIR, key::DIR_ITEM, hash);
        let mut id = FS_TREE;
        self.walk(self.root_tree, k, k, &mut |k, d| {
            for e in dir_item::parse(d, &k)? {
                if e.name == b"default" {
                    id = e.location.objectid;
                }
            }
            Ok(false)
        })?;
        Ok(id)
    }

    /// The root of tree `id` from its newest `ROOT_ITEM`, if it has one.
    fn subvol_root(&self, id: u64) -> Result<Option<TreeRoot>> {
        let mut found = None;
        self.walk(
            self.root_tree,
            Key::first(id, key::ROOT_ITEM),
            Key::last(id, key::ROOT_ITEM),
            &mut |_, d| {
                let r = RootItem::parse(d, id)?;
                found = Some(TreeRoot {
                    bytenr: r.bytenr,
                    level: r.level,
                });
                Ok(true)
            },
        )?;
        Ok(found)
    }

    /// Reads `buf.len()` bytes at logical address `logical` and checks
    /// every whole sector they touch against its data checksum, where the
    /// checksum tree has one (files written `nodatasum` have none): a
    /// mismatch is an error for this read, never the bytes.
    fn read_verified(&self, logical: u64, buf: &mut [u8]) -> Result<()> {
        let Some(tree) = self.csum_tree else {
            return self.read_logical(logical, buf);
        };
        let ss = u64::from(self.sb.sectorsize);
        let start = logical / ss * ss;
        let end = (logical + buf.len() as u64).div_ceil(ss) * ss;
        let mut raw = vec![0u8; (end - start) as usize];
        self.read_logical(start, &mut raw)?;
        // A csum item covers at most a leaf's worth of sectors.
        let span = u64::from(self.sb.nodesize) / 4 * ss;
        let mut bad = None;
        self.walk(
            tree,
            Key::new(
                EXTENT_CSUM_OBJECTID,
                EXTENT_CSUM,
                start.saturating_sub(span),
            ),
            Key::new(EXTENT_CSUM_OBJECTID, EXTENT_CSUM, end - 1),
            &mut |k, d| {
                for (i, sum) in d.chunks_exact(4).enumerate() {
                    let at = k.offset.saturating_add(i as u64 * ss);
                    if at < start {
                        continue;
                    }
                    if at >= end {
                        break;
                    }
                    let o = (at - start) as usize;
                    let sector = &raw[o..o + ss as usize];
                    if crc32c::crc32c(sector).to_le_bytes() != sum {
                        bad = Some(at);
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        if let Some(at) = bad {
            return Err(Error::corrupt(
                "btrfs",
                at,
                format!("data checksum mismatch in the sector at logical {at:#x}"),
            ));
        }
        let o = (logical - start) as usize;
        buf.copy_from_slice(&raw[o..o + buf.len()]);
        Ok(())
    }

    /// Reads `buf.len()` bytes at logical address `logical`, across
    /// chunks and stripes, from the first copy that reads.
    fn read_logical(&self, mut logical: u64, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            let m = self.chunks.map(logical)?;
            let n = usize::try_from(m.contiguous)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            let mut last = None;
            for &(devid, phys, uuid) in &m.copies {
                let Some(src) = self.devices.get(&devid) else {
                    last = Some(missing_device(devid, &uuid));
                    continue;
                };
                match src.read_exact_at(phys, now) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(Error::io("btrfs", phys, e)),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
            buf = rest;
            logical += n as u64;
        }
        Ok(())
    }

    /// The checked tree block at `bytenr`, from the cache or the first
    /// copy that passes the checks.
    fn node(&self, bytenr: u64) -> Result<Node> {
        let bytes = ChunkCache::global().get_or_load(self.node_owner, bytenr, || {
            let size = self.sb.nodesize as usize;
            let m = self.chunks.map(bytenr)?;
            if m.contiguous < size as u64 {
                return Err(node::bad_block(bytenr, "crosses a stripe or chunk end"));
            }
            let want = Expect {
                bytenr,
                fsid: &self.sb.metadata_uuid,
                csum: self.sb.csum_type,
            };
            let mut why = Vec::new();
            for (i, &(devid, phys, uuid)) in m.copies.iter().enumerate() {
                let Some(src) = self.devices.get(&devid) else {
                    why.push(missing_device(devid, &uuid).to_string());
                    continue;
                };
                let mut b = vec![0u8; size];
                if let Err(e) = src.read_exact_at(phys, &mut b) {
                    why.push(format!("copy {i} at device offset {phys}: {e}"));
                    continue;
                }
                match node::check(&b, &want) {
                    Ok(()) => {
                        if !why.is_empty() {
                            tracing::warn!(
                                "btrfs: tree block {bytenr:#x} read from copy {i}: {}",
                                why.join("; ")
                            );
                        }
                        return Ok(b);
                    }
                    Err(w) => why.push(format!("copy {i} at device offset {phys}: {w}")),
                }
            }
            Err(node::bad_block(bytenr, &why.join("; ")))
        })?;
        Ok(Node::new(bytes))
    }

    /// Calls `f` on every item of `tree` with a key in `lo..=hi`, in key
    /// order, until `f` returns `false`.
    fn walk(
        &self,
        tree: TreeRoot,
        lo: Key,
        hi: Key,
        f: &mut dyn FnMut(Key, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        if tree.level >= node::MAX_LEVEL {
            return Err(node::bad_block(tree.bytenr, "root level out of range"));
        }
        self.walk_node(tree.bytenr, tree.level, lo, hi, f)?;
        Ok(())
    }

    /// As [`walk`](Self::walk) below block `bytenr` of `level`; `false`
    /// once done. Levels strictly decrease, so the recursion is bounded.
    fn walk_node(
        &self,
        bytenr: u64,
        level: u8,
        lo: Key,
        hi: Key,
        f: &mut dyn FnMut(Key, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let n = self.node(bytenr)?;
        if n.level() != level {
            return Err(node::bad_block(
                bytenr,
                &format!("level {} where {level} was expected", n.level()),
            ));
        }
        let count = n.len();
        if level == 0 {
            let start = partition(count, |i| n.key(i) < lo);
            for i in start..count {
                let k = n.key(i);
                if k > hi || !f(k, n.data(i))? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let start = partition(count, |i| n.key(i) <= lo).saturating_sub(1);
        for i in start..count {
            if n.key(i) > hi {
                return Ok(false);
            }
            if !self.walk_node(n.child(i), level - 1, lo, hi, f)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The data of the item with key `k` in `tree`, if any.
    fn item(&self, tree: TreeRoot, k: Key) -> Result<Option<Vec<u8>>> {
        let mut out = None;
        self.walk(tree, k, k, &mut |_, d| {
            out = Some(d.to_vec());
            Ok(false)
        })?;
        Ok(out)
    }

    /// Subvolume `id`'s tree, from its newest `ROOT_ITEM`.
    fn subvol(&self, id: u64) -> Result<Arc<Subvol>> {
        self.subvols.get_or_make(id, || {
            let mut found = None;
            self.walk(
                self.root_tree,
                Key::first(id, key::ROOT_ITEM),
                Key::last(id, key::ROOT_ITEM),
                &mut |_, d| {
                    found = Some(RootItem::parse(d, id)?);
                    Ok(true)
                },
            )?;
            let item = found.ok_or_else(|| Error::NotFound(format!("btrfs subvolume {id}")))?;
            Ok(Arc::new(Subvol {
                id,
                tree: TreeRoot {
                    bytenr: item.bytenr,
                    level: item.level,
                },
                item,
            }))
        })
    }

    /// The inode item of `ino` in `sv`.
    fn inode_item(&self, sv: &Subvol, ino: u64) -> Result<InodeItem> {
        let d = self
            .item(sv.tree, Key::new(ino, key::INODE_ITEM, 0))?
            .ok_or_else(|| Error::NotFound(format!("btrfs subvolume {} inode {ino}", sv.id)))?;
        InodeItem::parse(&d, ino)
    }

    /// The subvolume and inode item of `node`; `None` as the item for the
    /// empty stub of a subvolume not carried into a snapshot.
    fn inode(&self, node: NodeId) -> Result<(Arc<Subvol>, u64, Option<InodeItem>)> {
        let (id, ino) = decode(node);
        let sv = self.subvol(id)?;
        if ino == EMPTY_SUBVOL_DIR {
            return Ok((sv, ino, None));
        }
        let i = self.inode_item(&sv, ino)?;
        Ok((sv, ino, Some(i)))
    }

    fn typed(&self, node: NodeId) -> Result<(Arc<Subvol>, u64, Option<InodeItem>, FileType)> {
        let (sv, ino, i) = self.inode(node)?;
        let kind = match &i {
            None => FileType::Dir,
            Some(i) => i.kind().ok_or_else(|| {
                Error::corrupt(
                    "btrfs",
                    ino,
                    format!("subvolume {} inode {ino}: mode {:o}", sv.id, i.mode),
                )
            })?,
        };
        Ok((sv, ino, i, kind))
    }

    /// Whether subvolume `child` is linked as `name` in directory `dir`
    /// of subvolume `parent` (its `ROOT_REF`).
    fn root_ref_matches(&self, parent: u64, child: u64, dir: u64, name: &[u8]) -> Result<bool> {
        let Some(d) = self.item(self.root_tree, Key::new(parent, key::ROOT_REF, child))? else {
            return Ok(false);
        };
        let r = RootRef::parse(&d, child)?;
        Ok(r.dirid == dir && r.name == name)
    }

    fn dir(&self, node: NodeId) -> Result<Arc<Dir>> {
        self.dirs.get_or_make(node, || {
            let (sv, ino, _, kind) = self.typed(node)?;
            if kind != FileType::Dir {
                return Err(Error::NotADirectory(format!("btrfs inode {ino}")));
            }
            let mut entries = Vec::new();
            let mut by_name = HashMap::new();
            if ino == EMPTY_SUBVOL_DIR {
                return Ok(Arc::new(Dir { entries, by_name }));
            }
            let mut raw = Vec::new();
            self.walk(
                sv.tree,
                Key::first(ino, key::DIR_INDEX),
                Key::last(ino, key::DIR_INDEX),
                &mut |k, d| {
                    for e in dir_item::parse(d, &k)? {
                        let kind = e.file_type().ok_or_else(|| {
                            Error::corrupt(
                                "btrfs",
                                ino,
                                format!("directory {ino} entry of type {}", e.kind),
                            )
                        })?;
                        raw.push((e.location, kind, e.name.to_vec()));
                    }
                    Ok(true)
                },
            )?;
            for (loc, kind, name) in raw {
                let child = match loc.kind {
                    key::INODE_ITEM => encode(sv.id, loc.objectid)?,
                    key::ROOT_ITEM => {
                        if self.root_ref_matches(sv.id, loc.objectid, ino, &name)? {
                            let child = self.subvol(loc.objectid)?;
                            encode(child.id, child.item.root_dirid)?
                        } else {
                            encode(sv.id, EMPTY_SUBVOL_DIR)?
                        }
                    }
                    t => {
                        return Err(Error::corrupt(
                            "btrfs",
                            ino,
                            format!("directory {ino}: entry pointing at item type {t}"),
                        ))
                    }
                };
                by_name.insert(name.clone(), child);
                entries.push(DirEntry {
                    name: OsString::from_vec(name),
                    node: child,
                    kind,
                });
            }
            Ok(Arc::new(Dir { entries, by_name }))
        })
    }

    fn file_extents(&self, node: NodeId, sv: &Subvol, ino: u64) -> Result<Arc<Vec<FileExtent>>> {
        self.extents.get_or_make(node, || {
            let mut v: Vec<FileExtent> = Vec::new();
            self.walk(
                sv.tree,
                Key::first(ino, key::EXTENT_DATA),
                Key::last(ino, key::EXTENT_DATA),
                &mut |k, d| {
                    let e = FileExtent::parse(d, ino, k.offset)?;
                    if let Some(p) = v.last() {
                        if p.file_offset + p.len > e.file_offset {
                            return Err(Error::corrupt(
                                "btrfs",
                                ino,
                                format!(
                                    "inode {ino}: extents overlap at file offset {}",
                                    e.file_offset
                                ),
                            ));
                        }
                    }
                    v.push(e);
                    Ok(true)
                },
            )?;
            Ok(Arc::new(v))
        })
    }

    /// Reads file bytes of `ino` at `pos` into `buf`, bounded by `size`.
    fn read_data(
        &self,
        node: NodeId,
        sv: &Subvol,
        ino: u64,
        size: u64,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(size - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let extents = self.file_extents(node, sv, ino)?;
        let mut done = 0;
        // Each pass fills at least one byte.
        while done < want {
            let at = pos + done as u64;
            let out = &mut buf[done..want];
            let i = extents.partition_point(|e| e.file_offset <= at);
            let cur = i.checked_sub(1).and_then(|i| extents.get(i));
            let n = match cur.filter(|e| at < e.file_offset + e.len) {
                Some(e) => self.read_extent(e, ino, at - e.file_offset, out)?,
                None => {
                    // A hole up to the next extent.
                    let next = extents.get(i).map_or(u64::MAX, |e| e.file_offset);
                    let n = usize::try_from(next - at)
                        .unwrap_or(usize::MAX)
                        .min(out.len());
                    out[..n].fill(0);
                    n
                }
            };
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Reads from extent `e`, `rel` bytes into it; returns the bytes given.
    fn read_extent(&self, e: &FileExtent, ino: u64, rel: u64, out: &mut [u8]) -> Result<usize> {
        let n = usize::try_from(e.len - rel)
            .unwrap_or(usize::MAX)
            .min(out.len());
        let out = &mut out[..n];
        let what = || format!("inode {ino} extent at file offset {}", e.file_offset);
        match &e.body {
            Body::Zero => out.fill(0),
            Body::Inline { data, ram_bytes } => {
                let decoded;
                let src: &[u8] = if e.compression == Compression::None {
                    data
                } else {
                    decoded = compression::decode(
                        e.compression,
                        data,
                        *ram_bytes,
                        self.sb.sectorsize,
                        &what,
                    )?;
                    &decoded
                };
                copy_from(src, rel, out);
            }
            Body::Regular {
                disk_bytenr,
                disk_num_bytes,
                ram_bytes,
                offset,
            } => {
                if e.compression == Compression::None {
                    let at = disk_bytenr
                        .checked_add(*offset)
                        .and_then(|a| a.checked_add(rel))
                        .ok_or_else(|| Error::corrupt("btrfs", ino, what()))?;
                    self.read_verified(at, out)?;
                } else {
                    if *disk_num_bytes > MAX_COMPRESSED_DISK {
                        return Err(Error::corrupt(
                            "btrfs",
                            *disk_bytenr,
                            format!("{}: compressed extent of {disk_num_bytes} bytes", what()),
                        ));
                    }
                    let decoded =
                        ChunkCache::global().get_or_load(self.data_owner, *disk_bytenr, || {
                            let mut raw = vec![0u8; *disk_num_bytes as usize];
                            self.read_verified(*disk_bytenr, &mut raw)?;
                            compression::decode(
                                e.compression,
                                &raw,
                                *ram_bytes,
                                self.sb.sectorsize,
                                &what,
                            )
                        })?;
                    copy_from(&decoded, offset.saturating_add(rel), out);
                }
            }
        }
        Ok(n)
    }

    /// The path of directory `dir` of subvolume `sv` from its root, by
    /// its `INODE_REF`s (or `INODE_EXTREF`s).
    fn dir_path(&self, sv: &Subvol, mut dir: u64) -> Result<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while dir != sv.item.root_dirid {
            if parts.len() > MAX_PATH_DEPTH {
                return Err(Error::corrupt(
                    "btrfs",
                    dir,
                    format!("subvolume {}: directory loop at inode {dir}", sv.id),
                ));
            }
            let mut up = None;
            self.walk(
                sv.tree,
                Key::first(dir, key::INODE_REF),
                Key::last(dir, key::INODE_EXTREF),
                &mut |k, d| {
                    let refs = if k.kind == key::INODE_REF {
                        inode_ref::parse_ref(d, dir, k.offset)?
                    } else {
                        inode_ref::parse_extref(d, dir)?
                    };
                    up = refs.into_iter().next();
                    Ok(up.is_none())
                },
            )?;
            let r = up.ok_or_else(|| {
                Error::corrupt(
                    "btrfs",
                    dir,
                    format!("subvolume {}: directory {dir} has no name", sv.id),
                )
            })?;
            parts.push(r.name);
            dir = r.parent;
        }
        parts.reverse();
        Ok(parts.join(&b'/'))
    }

    /// Every subvolume but the top level, with the path it shows at
    /// from the top level; `None` as the path for one being deleted.
    fn list_subvolumes(&self) -> Result<Vec<Subvolume>> {
        let mut ids = Vec::new();
        self.walk(
            self.root_tree,
            Key::first(FIRST_FREE, key::ROOT_ITEM),
            Key::last(root::LAST_FREE, key::ROOT_ITEM),
            &mut |k, _| {
                if k.kind == key::ROOT_ITEM && ids.last() != Some(&k.objectid) {
                    ids.push(k.objectid);
                }
                Ok(true)
            },
        )?;
        let mut paths: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
        paths.insert(FS_TREE, Some(Vec::new()));
        let mut out = Vec::new();
        for id in ids {
            let sv = self.subvol(id)?;
            let path = self.subvol_path(id, &mut paths, 0)?;
            out.push(Subvolume {
                id,
                path: path.map(OsString::from_vec),
                generation: sv.item.generation,
                read_only: sv.item.read_only,
                default: id == self.default_subvol,
                uuid: sv.item.uuid.map(|u| uuid_string(&u)),
            });
        }
        Ok(out)
    }

    fn subvol_path(
        &self,
        id: u64,
        paths: &mut HashMap<u64, Option<Vec<u8>>>,
        depth: usize,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(p) = paths.get(&id) {
            return Ok(p.clone());
        }
        if depth > MAX_PATH_DEPTH {
            return Err(Error::corrupt(
                "btrfs",
                id,
                format!("subvolume {id}: loop of parents"),
            ));
        }
        let mut back = None;
        self.walk(
            self.root_tree,
            Key::first(id, key::ROOT_BACKREF),
            Key::last(id, key::ROOT_BACKREF),
            &mut |k, d| {
                back = Some((k.offset, RootRef::parse(d, id)?));
                Ok(false)
            },
        )?;
        let path = match back {
            None => None,
            Some((parent, r)) => match self.subvol_path(parent, paths, depth + 1)? {
                None => None,
                Some(mut p) => {
                    let sv = self.subvol(parent)?;
                    let dir = self.dir_path(&sv, r.dirid)?;
                    for part in [dir, r.name] {
                        if !part.is_empty() {
                            if !p.is_empty() {
                                p.push(b'/');
                            }
                            p.extend_from_slice(&part);
                        }
                    }
                    Some(p)
                }
            },
        };
        paths.insert(id, path.clone());
        Ok(path)
    }
}

/// Index of the first of `0..n` for which `before` is false (`before`
/// true on a prefix).
fn partition(n: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Copies `src` from `at` into `out`, zeros past its end.
fn copy_from(src: &[u8], at: u64, out: &mut [u8]) {
    let tail = usize::try_from(at)
        .ok()
        .and_then(|a| src.get(a..))
        .unwrap_or(&[]);
    let n = tail.len().min(out.len());
    out[..n].copy_from_slice(&tail[..n]);
    out[n..].fill(0);
}

fn missing_device(devid: u64, uuid: &[u8; 16]) -> Error {
    Error::unsupported(
        "btrfs",
        format!("device {} (devid {devid}) is missing", uuid_string(uuid)),
    )
}

/// The newest valid superblock of `src`: the primary, or a mirror when
/// the primary is damaged (with a warning).
fn read_superblock(src: &Source) -> Result<(Superblock, Vec<String>)> {
    let mut errors = Vec::new();
    for &at in &SB_OFFSETS {
        if at + SB_LEN as u64 > src.size() {
            break;
        }
        let mut b = vec![0u8; SB_LEN];
        if let Err(e) = src.read_exact_at(at, &mut b) {
            errors.push(Error::io("btrfs", at, e).to_string());
            continue;
        }
        match Superblock::parse(&b, at) {
            Ok(sb) if sb.csum_ok == Some(false) => {
                errors.push(format!("superblock at {at}: checksum mismatch"))
            }
            Ok(sb) => {
                let warn = errors
                    .iter()
                    .map(|e| format!("{e}; read the copy at {at}"))
                    .collect();
                return Ok((sb, warn));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(Error::corrupt(
        "btrfs",
        SB_OFFSETS[0],
        format!("no valid superblock: {}", errors.join("; ")),
    ))
}

impl FileSystem for BtrfsFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "btrfs".into(),
            label: (!self.sb.label.is_empty()).then(|| self.sb.label.clone()),
            uuid: Some(uuid_string(&self.sb.fsid)),
            block_size: self.sb.sectorsize,
            total_bytes: self.sb.total_bytes,
            free_bytes: self.sb.total_bytes.saturating_sub(self.sb.bytes_used),
            total_nodes: 0,
            free_nodes: 0,
            warnings: self.warnings.clone(),
        }
    }

    fn root(&self) -> NodeId {
        // Subvolume 5's root directory is inode 256: index 0.
        FIRST_FREE
    }

    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        Ok(self.dir(dir)?.by_name.get(name.as_bytes()).copied())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        Ok(self.dir(dir)?.entries.clone())
    }

    fn stat(&self, node: NodeId) -> Result<Stat> {
        let (_, _, i, kind) = self.typed(node)?;
        let Some(i) = i else {
            return Ok(Stat {
                node,
                kind: FileType::Dir,
                size: 0,
                mode: 0o755,
                uid: 0,
                gid: 0,
                nlink: 1,
                rdev: 0,
                allocated: 0,
                atime: Timespec::default(),
                mtime: Timespec::default(),
                ctime: Timespec::default(),
                crtime: None,
            });
        };
        Ok(Stat {
            node,
            kind,
            size: i.size,
            mode: i.mode & 0o7777,
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            rdev: if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
                i.rdev()
            } else {
                0
            },
            allocated: i.nbytes,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: Some(i.otime),
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (sv, ino, i, kind) = self.typed(node)?;
        match (kind, i) {
            (FileType::File, Some(i)) => self.read_data(node, &sv, ino, i.size, offset, buf),
            (FileType::Dir, _) => Err(Error::IsADirectory(format!("btrfs inode {ino}"))),
            _ => Ok(0),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<OsString> {
        let (sv, ino, i, kind) = self.typed(node)?;
        let (FileType::Symlink, Some(i)) = (kind, i) else {
            return Err(Error::NotASymlink(format!("btrfs inode {ino}")));
        };
        let size = i.size.min(MAX_SYMLINK);
        let mut b = vec![0u8; size as usize];
        let n = self.read_data(node, &sv, ino, size, 0, &mut b)?;
        b.truncate(n);
        Ok(OsString::from_vec(b))
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        let (sv, ino, i) = self.inode(node)?;
        let mut out = Vec::new();
        if i.is_none() {
            return Ok(out);
        }
        self.walk(
            sv.tree,
            Key::first(ino, key::XATTR_ITEM),
            Key::last(ino, key::XATTR_ITEM),
            &mut |k, d| {
                for e in dir_item::parse(d, &k)? {
                    out.push((OsString::from_vec(e.name.to_vec()), e.data.to_vec()));
                }
                Ok(true)
            },
        )?;
        Ok(out)
    }

    fn subvolumes(&self) -> Result<Vec<Subvolume>> {
        self.list_subvolumes()
    }
}

/// Whether `sb` (4096 bytes at 64 KiB) carries the btrfs magic.
pub fn has_magic(sb: &[u8]) -> bool {
    sb.get(0x40..0x48) == Some(&superblock::MAGIC[..])
}
