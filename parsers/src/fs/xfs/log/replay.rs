//! Committed transactions applied to an in-memory overlay, item by item,
//! as the kernel's two recovery passes do (xfs_log_recover.c,
//! xfs_buf_item_recover.c, xfs_inode_item_recover.c,
//! xfs_icreate_item.c): pass 1 counts cancelled buffers, pass 2 replays
//! buffers, inodes and inode chunk creations in the kernel's order within
//! each transaction. Items that only touch free space, reverse mapping,
//! reference count or quota metadata are skipped, since reading files
//! never looks at those; an unfinished intent that would change a file's
//! mapping or xattrs, or any item we do not know, fails the replay.

use std::collections::{HashMap, HashSet};

use super::overlay::Overlay;
use super::records::BB;
use super::trans::{Item, Trans};
use crate::bytes::{be16, be32, be64, le16, le32, le64};
use crate::fs::xfs::superblock::{incompat, Superblock};
use crate::{Error, Result};

mod kind {
    pub const EFI: u16 = 0x1236;
    pub const EFD: u16 = 0x1237;
    pub const INODE: u16 = 0x123b;
    pub const BUF: u16 = 0x123c;
    pub const DQUOT: u16 = 0x123d;
    pub const QUOTAOFF: u16 = 0x123e;
    pub const ICREATE: u16 = 0x123f;
    pub const RUI: u16 = 0x1240;
    pub const RUD: u16 = 0x1241;
    pub const CUI: u16 = 0x1242;
    pub const CUD: u16 = 0x1243;
    pub const BUI: u16 = 0x1244;
    pub const BUD: u16 = 0x1245;
    pub const ATTRI: u16 = 0x1246;
    pub const ATTRD: u16 = 0x1247;
    pub const XMI: u16 = 0x1248;
    pub const XMD: u16 = 0x1249;
    /// Realtime EFI/EFD, RUI/RUD, CUI/CUD.
    pub const RT_FIRST: u16 = 0x124a;
    pub const RT_LAST: u16 = 0x124f;
}

/// `blf_flags`.
const BLF_INODE_BUF: u16 = 1 << 0;
const BLF_CANCEL: u16 = 1 << 1;
const BLF_DQUOT: u16 = (1 << 2) | (1 << 3) | (1 << 4);
const BLF_MAP: usize = 20;
const BLF_CHUNK: usize = 128;
/// `XFS_BLF_DATAMAP_SIZE`.
const BLF_MAP_WORDS: usize = 17;
/// The largest buffer: a 64 KiB directory block or inode cluster.
const MAX_BUF_BBS: u64 = 128;

/// `ilf_fields`.
const ILOG_CORE: u32 = 0x001;
const ILOG_DDATA: u32 = 0x002;
const ILOG_DEXT: u32 = 0x004;
const ILOG_DBROOT: u32 = 0x008;
const ILOG_DEV: u32 = 0x010;
const ILOG_ADATA: u32 = 0x040;
const ILOG_AEXT: u32 = 0x080;
const ILOG_ABROOT: u32 = 0x100;
const ILOG_DOWNER: u32 = 0x200;
const ILOG_AOWNER: u32 = 0x400;
const ILOG_DFORK: u32 = ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT;
const ILOG_AFORK: u32 = ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT;

const DINODE_MAGIC: u16 = 0x494e;
const DI_CRC: usize = 100;
const DI_NEXT_UNLINKED: usize = 96;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
const DIFLAG2_METADATA: u64 = 1 << 5;
const DI_MAX_FLUSH: u16 = 0xffff;
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;

/// What replay needs of the superblock.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub v5: bool,
    pub uuid: [u8; 16],
    /// The UUID metadata is stamped with (`sb_meta_uuid` if set).
    pub meta_uuid: [u8; 16],
    pub block_size: u64,
    pub blocklog: u32,
    pub inode_size: usize,
    pub inodelog: u32,
    pub inopblog: u32,
    pub agblklog: u32,
    pub ag_blocks: u64,
    pub ag_count: u64,
    pub dblocks: u64,
    pub inoalignmt: u64,
    /// `sb_spino_align` with sparse inodes, else 0.
    pub spino_align: u64,
    /// The superblock has a separate metadata UUID (`sb_meta_uuid`).
    pub has_meta_uuid: bool,
}

impl Geometry {
    /// From the parsed superblock: the one place it is read.
    pub fn from_sb(sb: &Superblock) -> Geometry {
        Geometry {
            v5: sb.is_v5(),
            uuid: sb.uuid,
            meta_uuid: sb.meta_uuid,
            block_size: u64::from(sb.block_size),
            blocklog: u32::from(sb.blocklog),
            inode_size: usize::from(sb.inode_size),
            inodelog: u32::from(sb.inodelog),
            inopblog: u32::from(sb.inopblog),
            agblklog: u32::from(sb.agblklog),
            ag_blocks: u64::from(sb.ag_blocks),
            ag_count: u64::from(sb.ag_count),
            dblocks: sb.dblocks,
            inoalignmt: u64::from(sb.inoalignmt),
            has_meta_uuid: sb.incompat & incompat::META_UUID != 0,
            spino_align: u64::from(sb.spino_align),
        }
    }

    /// Size of an inode's core for its version.
    fn core(version: u8) -> usize {
        if version >= 3 {
            176
        } else {
            100
        }
    }

    /// `blocks_per_cluster` of the inode geometry.
    fn blocks_per_cluster(&self) -> u64 {
        let mut size = 8192u64;
        if self.v5 {
            let new = size * (self.inode_size as u64 / 256);
            if self.inoalignmt >= new >> self.blocklog {
                size = new;
            }
        }
        if size > self.block_size {
            size >> self.blocklog
        } else {
            1
        }
    }
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt("xfs", 0, format!("log replay: {}", what.into()))
}

/// `XFS_LSN_CMP`: cycle, then block.
fn lsn_newer_or_same(a: u64, b: u64) -> bool {
    (a >> 32, a & 0xffff_ffff) >= (b >> 32, b & 0xffff_ffff)
}

/// Replays `txs` over the device read by `read`.
pub fn replay(
    g: &Geometry,
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    txs: &[Trans],
) -> Result<Overlay> {
    let mut r = Replayer {
        g,
        read,
        overlay: Overlay::default(),
        cancels: HashMap::new(),
        intents: HashSet::new(),
        skipped: 0,
    };
    for t in txs {
        for item in &t.items {
            r.pass1(item)?;
        }
    }
    let mut kinds: std::collections::BTreeMap<u16, usize> = Default::default();
    for t in txs {
        for item in reorder(t)? {
            *kinds.entry(item.kind()).or_default() += 1;
            r.pass2(t.lsn, item)?;
        }
    }
    tracing::debug!(
        ?kinds,
        sectors = r.overlay.len(),
        newer_on_disk = r.skipped,
        "xfs log items replayed"
    );
    if let Some((k, id)) = r.intents.iter().next() {
        let what = match *k {
            kind::BUI => "block mapping",
            kind::XMI => "mapping exchange",
            _ => "xattr",
        };
        return Err(Error::unsupported(
            "xfs",
            format!("log has an unfinished {what} intent ({id:#x}) that recovery would complete"),
        ));
    }
    Ok(r.overlay)
}

/// `xlog_recover_reorder_trans`: new buffers and inode chunks first, then
/// other items, then inode unlink buffers, then cancellations.
fn reorder(t: &Trans) -> Result<Vec<&Item>> {
    let mut bufs = Vec::new();
    let mut items = Vec::new();
    let mut inode_bufs = Vec::new();
    let mut cancels = Vec::new();
    for item in &t.items {
        if item.regions.len() != item.total || item.total == 0 {
            return Err(corrupt("committed item with missing regions"));
        }
        match item.kind() {
            kind::ICREATE => bufs.push(item),
            kind::BUF => {
                let flags = le16(item.regions.first().map_or(&[][..], |r| r), 4);
                if flags & BLF_CANCEL != 0 {
                    cancels.insert(0, item);
                } else if flags & BLF_INODE_BUF != 0 {
                    inode_bufs.insert(0, item);
                } else {
                    bufs.push(item);
                }
            }
            kind::INODE
            | kind::DQUOT
            | kind::QUOTAOFF
            | kind::EFI
            | kind::EFD
            | kind::RUI
            | kind::RUD
            | kind::CUI
            | kind::CUD
            | kind::BUI
            | kind::BUD
            | kind::ATTRI
            | kind::ATTRD
            | kind::XMI
            | kind::XMD
            | kind::RT_FIRST..=kind::RT_LAST => items.push(item),
            k => return Err(corrupt(format!("unknown item type {k:#x}"))),
        }
    }
    bufs.extend(items);
    bufs.extend(inode_bufs);
    bufs.extend(cancels);
    Ok(bufs)
}

struct Replayer<'a> {
    g: &'a Geometry,
    read: &'a dyn Fn(u64, &mut [u8]) -> Result<()>,
    overlay: Overlay,
    /// Cancelled buffers (daddr, length) and how many cancellations of
    /// each are still ahead.
    cancels: HashMap<(u64, u64), u32>,
    /// Unfinished intents that change what we read: (type, id).
    intents: HashSet<(u16, u64)>,
    /// Items not replayed because the block on disk is newer.
    skipped: usize,
}

/// A `xfs_buf_log_format`.
struct BufFormat<'a> {
    flags: u16,
    blkno: u64,
    len: u64,
    map: &'a [u8],
}

impl<'a> BufFormat<'a> {
    fn parse(r: &'a [u8]) -> Result<Self> {
        let words = le32(r, 16) as usize;
        if r.len() < BLF_MAP || words > BLF_MAP_WORDS || r.len() < BLF_MAP + words * 4 {
            return Err(corrupt("bad buffer item format size"));
        }
        let blkno = le64(r, 8);
        if blkno >> 63 != 0 {
            return Err(corrupt("negative buffer address"));
        }
        Ok(BufFormat {
            flags: le16(r, 4),
            blkno,
            len: u64::from(le16(r, 6)),
            map: r.get(BLF_MAP..BLF_MAP + words * 4).unwrap_or(&[]),
        })
    }

    fn bit(&self, n: usize) -> bool {
        le32(self.map, n / 32 * 4) & (1 << (n % 32)) != 0
    }

    fn next_bit(&self, from: usize) -> Option<usize> {
        (from..self.map.len() * 8).find(|&n| self.bit(n))
    }

    fn contig(&self, from: usize) -> usize {
        (from..self.map.len() * 8)
            .take_while(|&n| self.bit(n))
            .count()
    }
}

impl Replayer<'_> {
    fn pass1(&mut self, item: &Item) -> Result<()> {
        if item.kind() == kind::BUF {
            let f = BufFormat::parse(item.regions.first().map_or(&[][..], |r| r))?;
            if f.flags & BLF_CANCEL != 0 {
                *self.cancels.entry((f.blkno, f.len)).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    fn cancelled(&self, blkno: u64, len: u64) -> bool {
        self.cancels.get(&(blkno, len)).is_some_and(|&n| n > 0)
    }

    fn pass2(&mut self, lsn: u64, item: &Item) -> Result<()> {
        let first = item.regions.first().map_or(&[][..], |r| r);
        let id = le64(first, 8);
        if first.len() < 16 {
            return Err(corrupt("item format too short"));
        }
        match item.kind() {
            kind::BUF => self.buffer(lsn, item),
            kind::INODE => self.inode(lsn, item),
            kind::ICREATE => self.icreate(first),
            kind::BUI | kind::XMI | kind::ATTRI => {
                self.intents.insert((item.kind(), id));
                Ok(())
            }
            kind::BUD => self.done(kind::BUI, id),
            kind::XMD => self.done(kind::XMI, id),
            kind::ATTRD => self.done(kind::ATTRI, id),
            // Free space, reverse mapping, reference counts, quotas.
            _ => Ok(()),
        }
    }

    fn done(&mut self, intent: u16, id: u64) -> Result<()> {
        self.intents.remove(&(intent, id));
        Ok(())
    }

    /// `len` basic blocks from `daddr`, as replayed so far.
    fn read_buf(&self, daddr: u64, len: u64) -> Result<Vec<u8>> {
        let end = daddr.checked_add(len).and_then(|e| e.checked_mul(BB));
        let dev = self.g.dblocks.saturating_mul(self.g.block_size);
        if len == 0 || len > MAX_BUF_BBS || end.is_none_or(|e| e > dev) {
            return Err(corrupt(format!("buffer {daddr}+{len} out of range")));
        }
        let mut b = vec![0u8; (len * BB) as usize];
        (self.read)(daddr * BB, &mut b)?;
        self.overlay.patch(daddr * BB, &mut b);
        Ok(b)
    }

    /// `xlog_recover_buf_commit_pass2`.
    fn buffer(&mut self, lsn: u64, item: &Item) -> Result<()> {
        let f = BufFormat::parse(item.regions.first().map_or(&[][..], |r| r))?;
        if f.flags & BLF_CANCEL != 0 {
            if let Some(n) = self.cancels.get_mut(&(f.blkno, f.len)) {
                *n = n.saturating_sub(1);
            }
            return Ok(());
        }
        if self.cancelled(f.blkno, f.len) {
            return Ok(());
        }
        let mut b = self.read_buf(f.blkno, f.len)?;
        if self.g.v5 {
            let on_disk = self.buf_lsn(&b);
            if on_disk != 0 && on_disk != u64::MAX && lsn_newer_or_same(on_disk, lsn) {
                self.skipped += 1;
                return Ok(());
            }
        }
        if f.flags & BLF_INODE_BUF != 0 {
            self.inode_buffer(&f, item, &mut b)?;
        } else if f.flags & BLF_DQUOT != 0 {
            // Quota blocks: never read for files.
            return Ok(());
        } else {
            regular_buffer(&f, item, &mut b)?;
        }
        self.overlay.put(f.blkno, &b)
    }

    /// `xlog_recover_get_buf_lsn`: the LSN stamped in a v5 metadata
    /// block, `u64::MAX` if it has none we trust.
    fn buf_lsn(&self, b: &[u8]) -> u64 {
        let at = |lsn: usize, uuid: usize, want: &[u8; 16]| -> u64 {
            if b.get(uuid..uuid + 16) == Some(want.as_slice()) {
                be64(b, lsn)
            } else {
                u64::MAX
            }
        };
        let meta = &self.g.meta_uuid;
        let magic: [u8; 4] = b.get(..4).and_then(|m| m.try_into().ok()).unwrap_or([0; 4]);
        match &magic {
            // Short-form btree blocks (free space, inodes, rmap, refcount).
            b"AB3B" | b"AB3C" | b"ABTB" | b"ABTC" | b"RMB3" | b"R3FC" | b"IAB3" | b"IABT" => {
                return at(24, 32, meta)
            }
            b"BMA3" | b"BMAP" => return at(32, 40, meta),
            b"XAGF" => return at(208, 64, meta),
            b"XAFL" => return at(24, 8, meta),
            b"XAGI" => return at(320, 296, meta),
            b"XSLM" => return at(48, 16, meta),
            b"XDB3" | b"XDD3" | b"XDF3" => return at(16, 24, meta),
            b"XARM" => return u64::MAX,
            b"XFSB" => return at(240, if self.g.has_meta_uuid { 248 } else { 32 }, meta),
            _ => {}
        }
        match be16(b, 8) {
            0x3df1 | 0x3dff | 0x3ebe => at(24, 32, &self.g.uuid),
            _ => u64::MAX,
        }
    }

    /// `xlog_recover_do_inode_buffer`: only the unlinked-list pointers.
    fn inode_buffer(&self, f: &BufFormat, item: &Item, b: &mut [u8]) -> Result<()> {
        let isize = self.g.inode_size;
        let inodes = b.len() >> self.g.inodelog;
        let (mut bit, mut nbits, mut reg_off, mut reg_bytes, mut idx) = (0, 0, 0, 0, 0);
        for i in 0..inodes {
            let at = i * isize + DI_NEXT_UNLINKED;
            while at >= reg_off + reg_bytes {
                bit += nbits;
                let Some(next) = f.next_bit(bit) else {
                    return Ok(());
                };
                bit = next;
                nbits = f.contig(bit);
                reg_off = bit * BLF_CHUNK;
                reg_bytes = nbits * BLF_CHUNK;
                idx += 1;
            }
            if at < reg_off {
                continue;
            }
            let v = item
                .regions
                .get(idx)
                .and_then(|r| r.get(at - reg_off..at - reg_off + 4))
                .ok_or_else(|| corrupt("inode buffer region too short"))?;
            if v == [0; 4] {
                return Err(corrupt("zero di_next_unlinked in an inode buffer"));
            }
            b.get_mut(at..at + 4)
                .ok_or_else(|| corrupt("inode buffer region past the buffer"))?
                .copy_from_slice(v);
            if self.g.v5 {
                if let Some(d) = b.get_mut(i * isize..(i + 1) * isize) {
                    dinode_crc(d);
                }
            }
        }
        Ok(())
    }

    /// `xlog_recover_inode_commit_pass2`.
    fn inode(&mut self, lsn: u64, item: &Item) -> Result<()> {
        let f = item.regions.first().map_or(&[][..], |r| r);
        // The 64-bit layout has 4 bytes of padding the 32-bit one lacks.
        let pad = match f.len() {
            56 => 4,
            52 => 0,
            n => return Err(corrupt(format!("bad inode item format size {n}"))),
        };
        let nregions = usize::from(le16(f, 2));
        let fields = le32(f, 4);
        let rdev = le32(f, 20 + pad);
        let blkno = le64(f, 36 + pad);
        let len = u64::from(le32(f, 44 + pad));
        let boffset = le32(f, 48 + pad) as usize;
        if blkno >> 63 != 0 {
            return Err(corrupt("negative inode buffer address"));
        }
        if self.cancelled(blkno, len) {
            return Ok(());
        }
        if fields & (ILOG_DOWNER | ILOG_AOWNER) != 0 {
            return Err(Error::unsupported(
                "xfs",
                "log changes a fork's btree owner (extent swap)",
            ));
        }
        if fields & ILOG_CORE == 0 {
            return Err(corrupt("inode item without its core"));
        }
        let mut b = self.read_buf(blkno, len)?;
        let isize = self.g.inode_size;
        let dip = b
            .get_mut(boffset..boffset.saturating_add(isize))
            .ok_or_else(|| corrupt("inode past its buffer"))?;
        if be16(dip, 0) != DINODE_MAGIC {
            return Err(corrupt("replaying an inode over a block that is not one"));
        }
        let ld = item
            .regions
            .get(1)
            .ok_or_else(|| corrupt("inode item without its core"))?;
        let ld_size = if self.g.v5 { 176 } else { 96 };
        if le16(ld, 0) != DINODE_MAGIC || ld.len() < ld_size.min(96) || ld.len() > ld_size {
            return Err(corrupt("bad logged inode core"));
        }
        let mut ld = ld.clone();
        ld.resize(176, 0);
        let disk_version = dip.get(4).copied().unwrap_or(0);
        if disk_version >= 3 {
            let on_disk = be64(dip, 112);
            // Only a strictly newer inode is kept: checkpoints can share
            // a start LSN.
            if on_disk != 0 && on_disk != u64::MAX && !lsn_newer_or_same(lsn, on_disk) {
                self.skipped += 1;
                return Ok(());
            }
        }
        if !self.g.v5 {
            let (log_fi, disk_fi) = (le16(&ld, 30), be16(dip, 30));
            if log_fi < disk_fi && !(disk_fi == DI_MAX_FLUSH && log_fi < DI_MAX_FLUSH >> 1) {
                return Ok(());
            }
        }
        // Reset the flush counter, as the kernel does.
        if let Some(fi) = ld.get_mut(30..32) {
            fi.fill(0);
        }
        let mode = le16(&ld, 2);
        let format = ld.get(5).copied().unwrap_or(0);
        let bad_format = match mode & S_IFMT {
            S_IFREG => format != FMT_EXTENTS && format != FMT_BTREE,
            S_IFDIR => !matches!(format, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE),
            _ => false,
        };
        let version = ld.get(4).copied().unwrap_or(0);
        let flags2 = if version >= 3 { le64(&ld, 120) } else { 0 };
        let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
        let (nextents, anextents) = if nrext64 {
            (le64(&ld, 24), u64::from(le32(&ld, 76)))
        } else {
            if version >= 3 && le64(&ld, 24) != 0 {
                return Err(corrupt("logged inode with nonzero padding"));
            }
            (u64::from(le32(&ld, 76)), u64::from(le16(&ld, 80)))
        };
        let forkoff = usize::from(ld.get(82).copied().unwrap_or(0));
        if bad_format || nextents.saturating_add(anextents) > le64(&ld, 64) || forkoff > isize {
            return Err(corrupt("logged inode fails the kernel's checks"));
        }
        log_dinode_to_disk(&ld, dip, lsn, flags2, nrext64);

        let core = Geometry::core(version);
        let litino = isize.saturating_sub(core);
        let dsize = if forkoff != 0 { forkoff * 8 } else { litino };
        let asize = if forkoff != 0 {
            litino.saturating_sub(forkoff * 8)
        } else {
            0
        };
        let dfork = core;
        let afork = core + forkoff * 8;
        if fields & ILOG_DEV != 0 {
            if let Some(d) = dip.get_mut(dfork..dfork + 4) {
                d.copy_from_slice(&rdev.to_be_bytes());
            }
        }
        if nregions > 2 {
            let src = item
                .regions
                .get(2)
                .ok_or_else(|| corrupt("inode item without its fork"))?;
            match fields & ILOG_DFORK {
                ILOG_DDATA | ILOG_DEXT => copy_fork(dip, dfork, isize, src)?,
                ILOG_DBROOT => bmbt_to_bmdr(self.g.v5, src, dip, dfork, dsize)?,
                _ => {}
            }
            if fields & ILOG_AFORK != 0 {
                let i = if fields & ILOG_DFORK != 0 { 3 } else { 2 };
                let src = item
                    .regions
                    .get(i)
                    .ok_or_else(|| corrupt("inode item without its attribute fork"))?;
                match fields & ILOG_AFORK {
                    ILOG_ADATA | ILOG_AEXT => {
                        if src.len() > asize {
                            return Err(corrupt("logged attribute fork too large"));
                        }
                        copy_fork(dip, afork, isize, src)?
                    }
                    ILOG_ABROOT => bmbt_to_bmdr(self.g.v5, src, dip, afork, asize)?,
                    _ => return Err(corrupt("bad attribute fork flags")),
                }
            }
        }
        if self.g.v5 {
            dinode_crc(dip);
        }
        self.overlay.put(blkno, &b)
    }

    /// `xlog_recover_icreate_commit_pass2` and `xfs_ialloc_inode_init`.
    fn icreate(&mut self, f: &[u8]) -> Result<()> {
        let g = self.g;
        let bad = |what: &str| corrupt(format!("inode create item: {what}"));
        if f.len() < 28 || le16(f, 2) != 1 {
            return Err(bad("bad size"));
        }
        let agno = u64::from(be32(f, 4));
        let agbno = u64::from(be32(f, 8));
        let count = u64::from(be32(f, 12));
        let isize = be32(f, 16) as usize;
        let length = u64::from(be32(f, 20));
        let gen = be32(f, 24);
        let ialloc_blks = (64u64.max(g.block_size >> g.inodelog)) >> g.inopblog;
        let min_blks = if g.spino_align != 0 {
            g.spino_align
        } else {
            ialloc_blks
        };
        if agno >= g.ag_count
            || agbno == 0
            || agbno >= g.ag_blocks
            || isize != g.inode_size
            || count == 0
            || length == 0
            || length >= g.ag_blocks
            || (length != ialloc_blks && length != min_blks)
            || count >> g.inopblog != length
        {
            return Err(bad("fails the kernel's checks"));
        }
        let per = g.blocks_per_cluster();
        let bbs = per << (g.blocklog - 9);
        let daddr = |i: u64| ((agno * g.ag_blocks) + agbno + i * per) << (g.blocklog - 9);
        let nbufs = length / per;
        if (0..nbufs).any(|i| self.cancelled(daddr(i), bbs)) {
            return Ok(());
        }
        let version = if g.v5 { 3 } else { 2 };
        let mut ino = (agno << (g.agblklog + g.inopblog)) | (agbno << g.inopblog);
        for i in 0..nbufs {
            let mut b = vec![0u8; (bbs * BB) as usize];
            for d in b.chunks_mut(isize) {
                d.get_mut(0..2)
                    .unwrap_or_default()
                    .copy_from_slice(&DINODE_MAGIC.to_be_bytes());
                if let Some(v) = d.get_mut(4) {
                    *v = version;
                }
                d.get_mut(92..96)
                    .unwrap_or_default()
                    .copy_from_slice(&gen.to_be_bytes());
                d.get_mut(96..100)
                    .unwrap_or_default()
                    .copy_from_slice(&u32::MAX.to_be_bytes());
                if version == 3 {
                    d.get_mut(152..160)
                        .unwrap_or_default()
                        .copy_from_slice(&ino.to_be_bytes());
                    ino += 1;
                    d.get_mut(160..176)
                        .unwrap_or_default()
                        .copy_from_slice(&g.meta_uuid);
                    dinode_crc(d);
                }
            }
            if (daddr(i) + bbs) * BB > g.dblocks * g.block_size {
                return Err(bad("chunk past the end"));
            }
            self.overlay.put(daddr(i), &b)?;
        }
        Ok(())
    }
}

/// `xlog_recover_do_reg_buffer`: logged 128-byte chunks over the buffer.
fn regular_buffer(f: &BufFormat, item: &Item, b: &mut [u8]) -> Result<()> {
    let (mut bit, mut i) = (0, 1);
    while let Some(first) = f.next_bit(bit) {
        let region = item
            .regions
            .get(i)
            .ok_or_else(|| corrupt("buffer item has fewer regions than its bitmap"))?;
        let nbits = f.contig(first).min(region.len() / BLF_CHUNK);
        let (off, n) = (first * BLF_CHUNK, nbits * BLF_CHUNK);
        b.get_mut(off..off + n)
            .ok_or_else(|| corrupt("logged region past its buffer"))?
            .copy_from_slice(region.get(..n).unwrap_or_default());
        i += 1;
        bit = first + nbits;
    }
    Ok(())
}

fn copy_fork(dip: &mut [u8], at: usize, isize: usize, src: &[u8]) -> Result<()> {
    if at + src.len() > isize {
        return Err(corrupt("logged fork larger than the inode"));
    }
    dip.get_mut(at..at + src.len())
        .ok_or_else(|| corrupt("logged fork"))?
        .copy_from_slice(src);
    Ok(())
}

/// `xfs_bmbt_to_bmdr`: the in-memory btree root (a whole btree block
/// header) to the on-disk root in the inode fork.
fn bmbt_to_bmdr(v5: bool, src: &[u8], dip: &mut [u8], at: usize, dlen: usize) -> Result<()> {
    let hdr = if v5 { 72 } else { 24 };
    if src.len() < hdr || dlen < 4 {
        return Err(corrupt("logged btree root too short"));
    }
    let numrecs = usize::from(be16(src, 6));
    let rmax = (src.len() - hdr) / 16;
    let dmax = (dlen - 4) / 16;
    if numrecs > rmax || numrecs > dmax {
        return Err(corrupt("logged btree root has too many records"));
    }
    let keys = src.get(hdr..hdr + numrecs * 8);
    let ptrs = src.get(hdr + rmax * 8..hdr + rmax * 8 + numrecs * 8);
    let (Some(keys), Some(ptrs)) = (keys, ptrs) else {
        return Err(corrupt("logged btree root"));
    };
    let d = dip
        .get_mut(at..at + dlen)
        .ok_or_else(|| corrupt("btree root past the inode"))?;
    d.get_mut(0..4)
        .unwrap_or_default()
        .copy_from_slice(src.get(4..8).unwrap_or(&[0; 4]));
    d.get_mut(4..4 + numrecs * 8)
        .unwrap_or_default()
        .copy_from_slice(keys);
    d.get_mut(4 + dmax * 8..4 + dmax * 8 + numrecs * 8)
        .unwrap_or_default()
        .copy_from_slice(ptrs);
    Ok(())
}

/// `xfs_log_dinode_to_disk`: the logged core (little-endian, as the host
/// kept it) over the on-disk one (big-endian). The unlinked pointer and
/// CRC stay; v3 inodes get the transaction's LSN.
fn log_dinode_to_disk(ld: &[u8], dip: &mut [u8], lsn: u64, flags2: u64, nrext64: bool) {
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(d) = dip.get_mut(at..at + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    };
    let version = ld.get(4).copied().unwrap_or(0);
    let bigtime = version >= 3 && flags2 & DIFLAG2_BIGTIME != 0;
    let ts = |at: usize| -> [u8; 8] {
        let mut t = [0u8; 8];
        if bigtime {
            t.copy_from_slice(&le64(ld, at).to_be_bytes());
        } else {
            t[..4].copy_from_slice(&le32(ld, at).to_be_bytes());
            t[4..].copy_from_slice(&le32(ld, at + 4).to_be_bytes());
        }
        t
    };
    put(0, &le16(ld, 0).to_be_bytes());
    put(2, &le16(ld, 2).to_be_bytes());
    put(4, ld.get(4..6).unwrap_or(&[0; 2]));
    let metatype = if flags2 & DIFLAG2_METADATA != 0 {
        le16(ld, 6)
    } else {
        0
    };
    put(6, &metatype.to_be_bytes());
    for at in [8, 12, 16] {
        put(at, &le32(ld, at).to_be_bytes());
    }
    put(20, &le16(ld, 20).to_be_bytes());
    put(22, &le16(ld, 22).to_be_bytes());
    for at in [32, 40, 48] {
        put(at, &ts(at));
    }
    put(56, &le64(ld, 56).to_be_bytes());
    put(64, &le64(ld, 64).to_be_bytes());
    put(72, &le32(ld, 72).to_be_bytes());
    put(82, ld.get(82..84).unwrap_or(&[0; 2]));
    put(84, &le32(ld, 84).to_be_bytes());
    put(88, &le16(ld, 88).to_be_bytes());
    put(90, &le16(ld, 90).to_be_bytes());
    put(92, &le32(ld, 92).to_be_bytes());
    if version == 3 {
        put(104, &le64(ld, 104).to_be_bytes());
        put(144, &ts(144));
        put(120, &le64(ld, 120).to_be_bytes());
        put(128, &le32(ld, 128).to_be_bytes());
        put(152, &le64(ld, 152).to_be_bytes());
        put(112, &lsn.to_be_bytes());
        put(132, &[0; 12]);
        put(160, ld.get(160..176).unwrap_or(&[0; 16]));
        put(24, &[0; 8]);
    } else {
        put(30, &le16(ld, 30).to_be_bytes());
        put(24, &[0; 6]);
    }
    if nrext64 {
        put(24, &le64(ld, 24).to_be_bytes());
        put(76, &le32(ld, 76).to_be_bytes());
        put(80, &le16(ld, 80).to_be_bytes());
    } else {
        put(76, &le32(ld, 76).to_be_bytes());
        put(80, &le16(ld, 80).to_be_bytes());
    }
}

/// `xfs_dinode_calc_crc`.
fn dinode_crc(d: &mut [u8]) {
    if let Some(c) = d.get_mut(DI_CRC..DI_CRC + 4) {
        c.fill(0);
    }
    let crc = crc32c::crc32c(d);
    if let Some(c) = d.get_mut(DI_CRC..DI_CRC + 4) {
        c.copy_from_slice(&crc.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            v5: true,
            uuid: [7; 16],
            meta_uuid: [7; 16],
            has_meta_uuid: false,
            block_size: 4096,
            blocklog: 12,
            inode_size: 512,
            inodelog: 9,
            inopblog: 3,
            agblklog: 8,
            ag_blocks: 256,
            ag_count: 1,
            dblocks: 256,
            inoalignmt: 4,
            spino_align: 0,
        }
    }

    /// A buffer item logging `chunks` 128-byte chunks at `first` of the
    /// 8-sector buffer at `daddr`, with `flags`.
    fn buf_item(daddr: u64, flags: u16, first: usize, chunks: &[u8]) -> Item {
        let mut f = vec![0u8; BLF_MAP + 4 * 2];
        f[0..2].copy_from_slice(&kind::BUF.to_le_bytes());
        f[2..4].copy_from_slice(&2u16.to_le_bytes());
        f[4..6].copy_from_slice(&flags.to_le_bytes());
        f[6..8].copy_from_slice(&8u16.to_le_bytes());
        f[8..16].copy_from_slice(&daddr.to_le_bytes());
        f[16..20].copy_from_slice(&2u32.to_le_bytes());
        let n = chunks.len() / BLF_CHUNK;
        for b in first..first + n {
            f[BLF_MAP + b / 32 * 4 + (b % 32) / 8] |= 1 << (b % 8);
        }
        let mut regions = vec![f];
        if n > 0 {
            regions.push(chunks.to_vec());
        }
        Item {
            total: regions.len(),
            regions,
        }
    }

    fn intent(k: u16, id: u64) -> Item {
        let mut f = vec![0u8; 16];
        f[0..2].copy_from_slice(&k.to_le_bytes());
        f[2..4].copy_from_slice(&1u16.to_le_bytes());
        f[8..16].copy_from_slice(&id.to_le_bytes());
        Item {
            total: 1,
            regions: vec![f],
        }
    }

    fn run(txs: &[Trans]) -> Result<Overlay> {
        let dev = |_: u64, buf: &mut [u8]| -> Result<()> {
            buf.fill(0xee);
            Ok(())
        };
        replay(&geometry(), &dev, txs)
    }

    fn tx(lsn: u64, items: Vec<Item>) -> Trans {
        Trans { lsn, items }
    }

    fn sector(o: &Overlay, daddr: u64) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        o.patch(daddr * 512, &mut b);
        b
    }

    #[test]
    fn logged_chunks_land_in_place() -> Result<()> {
        let o = run(&[tx(1 << 32, vec![buf_item(16, 0, 5, &[0xab; 256])])])?;
        // Chunks 5 and 6: bytes 640..896 of the buffer, in sector 17.
        let s = sector(&o, 17);
        assert_eq!(&s[..128], &[0xee; 128][..]);
        assert_eq!(&s[128..384], &[0xab; 256][..]);
        assert_eq!(&s[384..], &[0xee; 128][..]);
        Ok(())
    }

    #[test]
    fn cancelled_buffers_replay_only_after_their_last_cancel() -> Result<()> {
        let o = run(&[
            tx(1 << 32, vec![buf_item(16, 0, 0, &[1; 128])]),
            tx(2 << 32, vec![buf_item(16, BLF_CANCEL, 0, &[])]),
            tx(3 << 32, vec![buf_item(24, 0, 0, &[3; 128])]),
        ])?;
        assert_eq!(sector(&o, 16), vec![0; 512], "cancelled copy replayed");
        assert_eq!(sector(&o, 24)[..128], [3; 128]);
        let o = run(&[
            tx(1 << 32, vec![buf_item(16, BLF_CANCEL, 0, &[])]),
            tx(2 << 32, vec![buf_item(16, 0, 0, &[2; 128])]),
        ])?;
        assert_eq!(sector(&o, 16)[..128], [2; 128], "reuse after cancel lost");
        Ok(())
    }

    #[test]
    fn unfinished_mapping_intents_refuse_the_replay() {
        assert!(run(&[tx(1 << 32, vec![intent(kind::BUI, 9)])]).is_err());
        assert!(run(&[tx(1 << 32, vec![intent(kind::XMI, 9)])]).is_err());
        assert!(run(&[tx(1 << 32, vec![intent(kind::ATTRI, 9)])]).is_err());
        assert!(run(&[
            tx(1 << 32, vec![intent(kind::BUI, 9)]),
            tx(2 << 32, vec![intent(kind::BUD, 9)]),
        ])
        .is_ok());
        // Free-space and rmap intents do not change what files read.
        assert!(run(&[tx(
            1 << 32,
            vec![intent(kind::EFI, 1), intent(kind::RUI, 2)]
        )])
        .is_ok());
        // Unknown items are never guessed at.
        assert!(run(&[tx(1 << 32, vec![intent(0x1238, 1)])]).is_err());
        assert!(run(&[tx(1 << 32, vec![intent(0x7777, 1)])]).is_err());
    }

    #[test]
    fn newer_v5_blocks_on_disk_are_kept() -> Result<()> {
        // A v5 directory data block of this filesystem stamped with LSN
        // 5/0: transactions of 4/0 and 5/0 are not replayed over it (for
        // buffers the kernel skips an equal LSN too), one of 6/0 is.
        let dev = |off: u64, buf: &mut [u8]| -> Result<()> {
            buf.fill(0);
            if off == 16 * 512 {
                buf[..4].copy_from_slice(b"XDD3");
                buf[16..24].copy_from_slice(&(5u64 << 32).to_be_bytes());
                buf[24..40].copy_from_slice(&[7; 16]);
            }
            Ok(())
        };
        for (lsn, replayed) in [(4, false), (5, false), (6, true)] {
            let t = tx(lsn << 32, vec![buf_item(16, 0, 2, &[9; 128])]);
            let o = replay(&geometry(), &dev, &[t])?;
            assert_eq!(sector(&o, 16)[256] == 9, replayed, "lsn {lsn}");
        }
        Ok(())
    }

    #[test]
    fn hostile_buffer_items_fail_cleanly() {
        // Bitmap past a 4 KiB buffer, regions missing, huge addresses.
        let mut i = buf_item(16, 0, 60, &[1; 512]);
        assert!(run(&[tx(1 << 32, vec![i])]).is_err());
        i = buf_item(16, 0, 0, &[1; 128]);
        i.regions.pop();
        i.total = 1;
        assert!(run(&[tx(1 << 32, vec![i])]).is_err());
        i = buf_item(u64::MAX >> 1, 0, 0, &[1; 128]);
        assert!(run(&[tx(1 << 32, vec![i])]).is_err());
    }
}
