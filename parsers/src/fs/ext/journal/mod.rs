//! JBD2 journal replay into memory: committed transactions become a block
//! overlay consulted by every read, so the image itself is never written.
//!
//! With journal checksums (v2/v3, which ext4's metadata_csum turns on)
//! every block is verified the way the kernel's recovery (fs/jbd2/recovery.c)
//! does, so a torn or damaged log never lands in the overlay: a bad
//! superblock fails the replay; a transaction whose commit block fails is
//! where the log ends (unless its commit time says it is a stale block of
//! an older log, which ends the log too, silently; a commit block torn
//! after its header passes, as in Linux since 6.6); a bad descriptor or
//! revoke block followed by a newer commit fails the replay (the kernel
//! refuses to mount then); a logged block that fails is skipped, leaving
//! the copy before it. A failed replay leaves the volume read as it is on
//! disk, with a warning (see `ExtFs::replay_journal`).

use std::collections::HashMap;

use crate::bytes::be32;
use crate::readat::{Patch, Patches};
use crate::{Error, ReadAt, Result};

mod checksum;
mod descriptor;
mod revoke;
#[cfg(test)]
mod tests;

use checksum::Csum;
use descriptor::Tag;

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

const COMPAT_CHECKSUM: u32 = 0x1;
/// Bytes of a commit block's header.
const COMMIT_HEADER: usize = 60;
/// `s_checksum_type` of checksum v2/v3 journals.
const CRC32C: u8 = 4;

/// `a <= b` for wrapping 32-bit transaction ids.
fn tid_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Filesystem blocks replaced by journal copies: the shared
/// [`Patches`] adapter, each block a copy of its newest journal block
/// (read when needed, not held), escaped copies with the magic put back.
#[derive(Debug, Default)]
pub struct Overlay {
    patches: Patches,
    block_size: u64,
}

impl Overlay {
    /// An overlay that replaces nothing.
    pub fn empty(block_size: u32) -> Self {
        Overlay {
            patches: Patches::default(),
            block_size: u64::from(block_size),
        }
    }

    /// Number of replaced blocks.
    pub fn len(&self) -> usize {
        self.patches.len()
    }

    /// Replaces filesystem block `target` with the journal copy at byte
    /// `copy` of the source.
    fn replace(&mut self, target: u64, copy: u64, escaped: bool) {
        let at = target.saturating_mul(self.block_size);
        let head = escaped.then(|| (at, MAGIC.to_be_bytes()));
        self.patches
            .put(at, self.block_size, Patch::Copy { from: copy, head });
    }

    /// Replaces the parts of `buf` (read from `offset`) that the journal
    /// holds newer copies of.
    pub fn patch(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.patches
            .patch(src, offset, buf)
            .map_err(|e| Error::io("ext journal overlay", offset, e))
    }
}

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
    let bit64 = incompat & INCOMPAT_64BIT != 0;
    let csum3 = incompat & INCOMPAT_CSUM_V3 != 0;
    let csum2 = incompat & INCOMPAT_CSUM_V2 != 0;
    let csum = (csum2 || csum3).then(|| Csum::new(&sb, csum3));
    if let Some(c) = &csum {
        if sb.get(0x50) != Some(&CRC32C) {
            return Err(bad("checksum type is not crc32c"));
        }
        let head = sb.get(..1024).ok_or_else(|| bad("shorter than 1 KiB"))?;
        if !c.block_ok(!0, head, 0xFC) {
            return Err(bad("checksum mismatch"));
        }
    } else if be32(&sb, 0x24) & COMPAT_CHECKSUM != 0 {
        warnings.push("journal v1 (crc32) checksums not verified".to_string());
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
    let tag_bytes = if csum3 {
        16
    } else {
        8 + if csum2 { 2 } else { 0 } + if bit64 { 4 } else { 0 }
    };
    let tail = if csum2 || csum3 { 4 } else { 0 };
    let layout = descriptor::Layout {
        tag_bytes,
        tail,
        bit64,
        csum3,
    };
    let next = |p: u64| if p + 1 >= maxlen { first } else { p + 1 };

    // Scan: collect committed transactions and revocations.
    let mut committed: Vec<(u32, Vec<Tag>)> = Vec::new();
    // A descriptor or revoke block of the open transaction failed its
    // checksum: its commit's time tells a damaged log from a stale one.
    let mut suspect = false;
    let mut last_commit_time = 0u64;
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    let mut pending: Vec<Tag> = Vec::new();
    let mut pending_revokes: Vec<u64> = Vec::new();
    let mut pos = start;
    let mut steps = 0u64;
    while steps < maxlen {
        let Ok(b) = read_block(pos) else { break };
        if be32(&b, 0) != MAGIC || be32(&b, 8) != seq {
            break;
        }
        match be32(&b, 4) {
            DESCRIPTOR => {
                if csum.as_ref().is_some_and(|c| !c.tail_ok(&b)) {
                    suspect = true;
                }
                for mut tag in descriptor::tags(&b, &layout) {
                    pos = next(pos);
                    steps += 1;
                    tag.jblock = pos;
                    pending.push(tag);
                }
            }
            COMMIT => {
                let time = u64::from(be32(&b, 48)) << 32 | u64::from(be32(&b, 52));
                let stale = time < last_commit_time;
                if suspect {
                    if stale {
                        pending.clear();
                        break;
                    }
                    return Err(Error::corrupt(
                        "ext",
                        0,
                        format!(
                            "journal transaction {seq}: a descriptor or revoke block fails \
                             its checksum (the kernel refuses to mount this)"
                        ),
                    ));
                }
                if csum.as_ref().is_some_and(|c| !c.commit_ok(&b)) {
                    if !stale {
                        warnings.push(format!(
                            "journal transaction {seq} fails its commit checksum: \
                             replayed up to the transaction before it"
                        ));
                    }
                    pending.clear();
                    break;
                }
                last_commit_time = time;
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
                if csum.as_ref().is_some_and(|c| !c.tail_ok(&b)) {
                    suspect = true;
                }
                pending_revokes.extend(revoke::blocks(&b, tail, bit64));
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
    // (revoked in the same or a later transaction) are skipped, and so is
    // a copy that fails its checksum (the one before it stays).
    let transactions = committed.len();
    for (tseq, tags) in committed {
        for tag in tags {
            let target = tag.target;
            if revoked.get(&target).is_some_and(|&r| tid_le(tseq, r)) {
                continue;
            }
            if target >= fs_blocks {
                warnings.push(format!(
                    "journal block for out-of-range block {target} ignored"
                ));
                continue;
            }
            if let Some(c) = &csum {
                if !c.data_ok(tseq, &read_block(tag.jblock)?, tag.csum) {
                    warnings.push(format!(
                        "journal copy of block {target} (transaction {tseq}, journal \
                         block {}) fails its checksum: not replayed",
                        tag.jblock
                    ));
                    continue;
                }
            }
            overlay.replace(target, locate(tag.jblock)?, tag.escaped);
        }
    }
    Ok(Replay {
        overlay,
        transactions,
        warnings,
    })
}
