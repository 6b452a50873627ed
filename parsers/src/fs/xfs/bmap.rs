//! Block maps of a fork: packed 128-bit extent records, inline or in a
//! B+tree (bmbt) rooted in the inode.

use super::be16;
use super::be64;
use super::superblock::Superblock;
use crate::{Error, Result};

/// More extents than this in one fork are taken as corrupt rather than
/// decoded into memory.
pub const MAX_EXTENTS: u64 = 1 << 22;
/// Deeper bmbts cannot exist (the kernel's limit is 9 levels on the
/// largest files); deeper means a loop.
const MAX_LEVELS: u16 = 10;
const REC_LEN: usize = 16;

/// A run of file blocks: `len` blocks from file block `logical`, at
/// linear disk block `disk` (already translated from AG-relative form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub disk: u64,
    pub len: u64,
    /// Preallocated, never written: reads as zeros.
    pub unwritten: bool,
}

/// Decodes one packed record: flag(1) startoff(54) startblock(52)
/// blockcount(21), big-endian.
fn decode(rec: &[u8], sb: &Superblock, at: u64) -> Result<Extent> {
    let l0 = be64(rec, 0);
    let l1 = be64(rec, 8);
    let logical = (l0 >> 9) & ((1u64 << 54) - 1);
    let fsb = ((l0 & 0x1ff) << 43) | (l1 >> 21);
    let len = l1 & ((1u64 << 21) - 1);
    let disk = sb
        .linear_block(fsb)
        .ok_or_else(|| Error::corrupt("xfs", at, format!("extent at block {fsb} out of range")))?;
    if len == 0 || disk + len > sb.dblocks {
        return Err(Error::corrupt("xfs", at, "extent length out of range"));
    }
    // Byte offsets of the extent must fit a file size (i64), so later
    // arithmetic on them cannot overflow.
    if (logical + len)
        .checked_mul(u64::from(sb.block_size))
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(Error::corrupt("xfs", at, "extent offset out of range"));
    }
    Ok(Extent {
        logical,
        disk,
        len,
        unwritten: l0 >> 63 != 0,
    })
}

/// Appends the `n` records at the start of `b`, which must hold them.
fn push_records(b: &[u8], n: usize, sb: &Superblock, at: u64, out: &mut Vec<Extent>) -> Result<()> {
    if n.saturating_mul(REC_LEN) > b.len() {
        return Err(Error::corrupt("xfs", at, "more extent records than fit"));
    }
    if (out.len() + n) as u64 > MAX_EXTENTS {
        return Err(Error::corrupt("xfs", at, "too many extents"));
    }
    for rec in b.chunks_exact(REC_LEN).take(n) {
        out.push(decode(rec, sb, at)?);
    }
    Ok(())
}

/// Decodes an extents-format fork holding `n` records.
pub fn from_extents(fork: &[u8], n: u64, sb: &Superblock) -> Result<Vec<Extent>> {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(n.min(fork.len() / REC_LEN));
    push_records(fork, n, sb, 0, &mut out)?;
    finish(out)
}

/// Walks a btree-format fork: the root (`level`, `numrecs`, keys, then
/// pointers at a position fixed by the fork size) and every block below.
/// `read` returns one whole fs block by linear block number; `nextents`
/// from the inode bounds the work.
pub fn from_btree(
    fork: &[u8],
    nextents: u64,
    sb: &Superblock,
    read: &dyn Fn(u64) -> Result<Vec<u8>>,
) -> Result<Vec<Extent>> {
    if nextents > MAX_EXTENTS {
        return Err(Error::corrupt("xfs", 0, "too many extents"));
    }
    let level = be16(fork, 0);
    let numrecs = usize::from(be16(fork, 2));
    let maxrecs = fork.len().saturating_sub(4) / 16;
    if level == 0 || level > MAX_LEVELS || numrecs == 0 || numrecs > maxrecs {
        return Err(Error::corrupt("xfs", 0, "bad bmbt root"));
    }
    let ptrs = 4 + maxrecs * 8;
    let mut walk = Walk {
        sb,
        read,
        out: Vec::with_capacity(usize::try_from(nextents).unwrap_or(0).min(1 << 16)),
        // Every leaf holds at least one record, so a sound tree has fewer
        // blocks than twice the extents (plus one per level).
        budget: nextents.saturating_mul(2) + u64::from(MAX_LEVELS),
        nextents,
    };
    for i in 0..numrecs {
        walk.node(be64(fork, ptrs + i * 8), level - 1)?;
    }
    finish(walk.out)
}

struct Walk<'a> {
    sb: &'a Superblock,
    read: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    out: Vec<Extent>,
    budget: u64,
    nextents: u64,
}

impl Walk<'_> {
    /// Reads the block `fsb`, expected at `level`, and everything below it.
    fn node(&mut self, fsb: u64, level: u16) -> Result<()> {
        let bad = |what: &str| Error::corrupt("xfs", 0, format!("bmbt block {fsb}: {what}"));
        if self.budget == 0 {
            return Err(bad("more blocks than the extent count allows"));
        }
        self.budget -= 1;
        let lin = self
            .sb
            .linear_block(fsb)
            .ok_or_else(|| bad("out of range"))?;
        let at = lin * u64::from(self.sb.block_size);
        let b = (self.read)(lin)?;
        let (magic, hdr): (&[u8], usize) = if self.sb.is_v5() {
            (b"BMA3", 72)
        } else {
            (b"BMAP", 24)
        };
        if b.get(..4) != Some(magic) {
            return Err(bad("bad magic"));
        }
        if be16(&b, 4) != level {
            return Err(bad("wrong level"));
        }
        let numrecs = usize::from(be16(&b, 6));
        let body = b.get(hdr..).unwrap_or(&[]);
        if level == 0 {
            if (self.out.len() + numrecs) as u64 > self.nextents {
                return Err(bad("more extents than the inode says"));
            }
            return push_records(body, numrecs, self.sb, at, &mut self.out);
        }
        let maxrecs = body.len() / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(bad("bad record count"));
        }
        for i in 0..numrecs {
            self.node(be64(body, maxrecs * 8 + i * 8), level - 1)?;
        }
        Ok(())
    }
}

/// Checks order and merges neighbours contiguous on disk, so that a read
/// across them is one source read.
fn finish(list: Vec<Extent>) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::with_capacity(list.len());
    for e in list {
        if let Some(last) = out.last_mut() {
            let end = last.logical + last.len;
            if e.logical < end {
                return Err(Error::corrupt("xfs", 0, "overlapping or unsorted extents"));
            }
            if e.logical == end && e.disk == last.disk + last.len && e.unwritten == last.unwritten {
                last.len += e.len;
                continue;
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Index of the extent holding file block `lblock`, or `Err(i)` with the
/// index of the next extent after it (a hole).
pub fn find(list: &[Extent], lblock: u64) -> std::result::Result<usize, usize> {
    let i = list.partition_point(|e| e.logical + e.len <= lblock);
    match list.get(i) {
        Some(e) if e.logical <= lblock => Ok(i),
        _ => Err(i),
    }
}
