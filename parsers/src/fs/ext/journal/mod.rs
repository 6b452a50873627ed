//! JBD2 journal replay into memory: committed transactions become a block
//! overlay consulted by every read, so the image itself is never written.

use std::collections::{BTreeMap, HashMap};

use crate::bytes::{be16, be32};
use crate::{Error, ReadAt, Result};

const MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const SB_V1: u32 = 3;
const SB_V2: u32 = 4;
const REVOKE: u32 = 5;

const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;

const TAG_ESCAPE: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;

/// `a <= b` for wrapping 32-bit transaction ids.
fn tid_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Filesystem blocks replaced by journal copies.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Filesystem block -> (byte offset of its newest copy in the source,
    /// whether the copy was escaped and must get the magic back).
    blocks: BTreeMap<u64, (u64, bool)>,
    block_size: u64,
}

impl Overlay {
    /// An overlay that replaces nothing.
    pub fn empty(block_size: u32) -> Self {
        Overlay {
            blocks: BTreeMap::new(),
            block_size: u64::from(block_size),
        }
    }

    /// Number of replaced blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Replaces the parts of `buf` (read from `offset`) that the journal
    /// holds newer copies of.
    pub fn patch(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.blocks.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size;
        let end = offset + buf.len() as u64;
        let mut tmp = vec![0u8; bs as usize];
        for (&blk, &(copy, escaped)) in self.blocks.range(offset / bs..=(end - 1) / bs) {
            src.read_exact_at(copy, &mut tmp)
                .map_err(|e| Error::io("ext", copy, e))?;
            if escaped {
                if let Some(m) = tmp.get_mut(..4) {
                    m.copy_from_slice(&MAGIC.to_be_bytes());
                }
            }
            let bstart = blk * bs;
            let from = bstart.max(offset);
            let to = (bstart + bs).min(end);
            if let (Some(d), Some(s)) = (
                buf.get_mut((from - offset) as usize..(to - offset) as usize),
                tmp.get((from - bstart) as usize..(to - bstart) as usize),
            ) {
                d.copy_from_slice(s);
            }
        }
        Ok(())
    }
}

/// A logged block: (target filesystem block, journal block, escaped).
type Tag = (u64, u64, bool);

/// What replay found.
pub struct Replay {
    pub overlay: Overlay,
    pub transactions: usize,
    pub warnings: Vec<String>,
}

/// Replays the journal whose blocks `read_block` returns by journal block
/// number and `locate` maps to byte offsets in the source. `fs_blocks`
/// bounds the target block numbers.
pub fn replay(
    block_size: u32,
    fs_blocks: u64,
    journal_blocks: u64,
    read_block: &dyn Fn(u64) -> Result<Vec<u8>>,
    locate: &dyn Fn(u64) -> Result<u64>,
) -> Result<Replay> {
    let sb = read_block(0)?;
    let bad = |what: &str| Error::corrupt("ext", 0, format!("journal superblock: {what}"));
    let btype = be32(&sb, 4);
    if be32(&sb, 0) != MAGIC || (btype != SB_V1 && btype != SB_V2) {
        return Err(bad("bad magic"));
    }
    if be32(&sb, 0xC) != block_size {
        return Err(Error::unsupported(
            "ext",
            "journal block size differs from the filesystem's",
        ));
    }
    let mut maxlen = u64::from(be32(&sb, 0x10));
    let first = u64::from(be32(&sb, 0x14));
    let mut seq = be32(&sb, 0x18);
    let start = u64::from(be32(&sb, 0x1C));
    let incompat = if btype == SB_V2 { be32(&sb, 0x28) } else { 0 };
    let mut warnings = Vec::new();
    let known = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
    if incompat & !known != 0 {
        return Err(Error::unsupported(
            "ext",
            format!("journal features {incompat:#x}"),
        ));
    }
    if incompat & INCOMPAT_FAST_COMMIT != 0 {
        // The fast-commit area sits at the end of the journal and is not
        // part of the regular log.
        let fc = u64::from(be32(&sb, 0x54));
        maxlen = maxlen.saturating_sub(if fc == 0 { 256 } else { fc });
        warnings.push("journal fast-commit area not replayed".to_string());
    }
    let mut overlay = Overlay::empty(block_size);
    if start == 0 {
        return Ok(Replay {
            overlay,
            transactions: 0,
            warnings,
        });
    }
    if maxlen > journal_blocks || first == 0 || first >= maxlen || start < first || start >= maxlen
    {
        return Err(bad("bad log bounds"));
    }
    let bit64 = incompat & INCOMPAT_64BIT != 0;
    let csum3 = incompat & INCOMPAT_CSUM_V3 != 0;
    let csum2 = incompat & INCOMPAT_CSUM_V2 != 0;
    let tag_bytes = if csum3 {
        16
    } else {
        8 + if csum2 { 2 } else { 0 } + if bit64 { 4 } else { 0 }
    };
    let tail = if csum2 || csum3 { 4 } else { 0 };
    let next = |p: u64| if p + 1 >= maxlen { first } else { p + 1 };

    // Scan: collect committed transactions and revocations.
    let mut committed: Vec<(u32, Vec<Tag>)> = Vec::new();
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    let mut pending: Vec<Tag> = Vec::new();
    let mut pending_revokes: Vec<u64> = Vec::new();
    let mut pos = start;
    let mut steps = 0u64;
    let bs = block_size as usize;
    while steps < maxlen {
        let Ok(b) = read_block(pos) else { break };
        if be32(&b, 0) != MAGIC || be32(&b, 8) != seq {
            break;
        }
        match be32(&b, 4) {
            DESCRIPTOR => {
                let mut off = 12;
                while off + tag_bytes <= bs - tail {
                    let lo = u64::from(be32(&b, off));
                    let flags = if csum3 {
                        be32(&b, off + 4)
                    } else {
                        u32::from(be16(&b, off + 6))
                    };
                    let hi = if bit64 {
                        u64::from(be32(&b, off + 8))
                    } else {
                        0
                    };
                    pos = next(pos);
                    steps += 1;
                    pending.push((lo | (hi << 32), pos, flags & TAG_ESCAPE != 0));
                    off += tag_bytes;
                    if flags & TAG_SAME_UUID == 0 {
                        off += 16;
                    }
                    if flags & TAG_LAST != 0 {
                        break;
                    }
                }
            }
            COMMIT => {
                committed.push((seq, std::mem::take(&mut pending)));
                for blk in pending_revokes.drain(..) {
                    let e = revoked.entry(blk).or_insert(seq);
                    if tid_le(*e, seq) {
                        *e = seq;
                    }
                }
                seq = seq.wrapping_add(1);
            }
            REVOKE => {
                let count = (be32(&b, 12) as usize).min(bs);
                let width = if bit64 { 8 } else { 4 };
                let mut off = 16;
                while off + width <= count {
                    let blk = if bit64 {
                        (u64::from(be32(&b, off)) << 32) | u64::from(be32(&b, off + 4))
                    } else {
                        u64::from(be32(&b, off))
                    };
                    pending_revokes.push(blk);
                    off += width;
                }
            }
            _ => break,
        }
        pos = next(pos);
        steps += 1;
    }
    if !pending.is_empty() {
        warnings.push("journal ends in an uncommitted transaction (ignored)".to_string());
    }

    // Replay in order: later copies replace earlier ones, revoked ones
    // (revoked in the same or a later transaction) are skipped.
    let transactions = committed.len();
    for (tseq, tags) in committed {
        for (target, jblock, escaped) in tags {
            if revoked.get(&target).is_some_and(|&r| tid_le(tseq, r)) {
                continue;
            }
            if target >= fs_blocks {
                warnings.push(format!(
                    "journal block for out-of-range block {target} ignored"
                ));
                continue;
            }
            overlay.blocks.insert(target, (locate(jblock)?, escaped));
        }
    }
    Ok(Replay {
        overlay,
        transactions,
        warnings,
    })
}
