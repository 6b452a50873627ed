//! The internal log: whether it is clean, and if not, its replay in
//! memory as the kernel's mount would do it ([`recover`]).
//!
//! Every 512-byte basic block of the log starts with the cycle number of
//! the pass that wrote it (record headers carry it in `h_cycle`); the head
//! is where the cycle drops. The log is clean if the last record before
//! the head is a lone unmount record. [`state`] is the quick look at that;
//! [`records`] finds head and tail as the kernel does, [`trans`] gathers
//! committed transactions, [`replay`] applies them to an [`Overlay`].
//!
//! Replay either matches the kernel's or does not happen: every case the
//! kernel refuses (a bad record CRC before the last eight records on v5,
//! a log of another byte order or filesystem, malformed operations or
//! items) is an error, and so is every case we do not reproduce (an
//! unfinished intent that recovery would complete on a file's mapping or
//! xattrs, an unknown item, a fork owner change); the caller then reads
//! the volume as on disk. Nothing here allocates by a count it has not
//! bounded: records are at most 256 KiB, transactions together 1 GiB,
//! the overlay 1 GiB.

mod overlay;
pub(super) mod records;
mod replay;
mod trans;

pub use self::overlay::Overlay;
pub use self::replay::Geometry;

use super::{be32, be64};
use crate::Result;

/// What a replay did.
#[derive(Debug)]
pub struct Recovery {
    pub overlay: Overlay,
    pub transactions: usize,
    /// Where a torn write at the head was cut off (log block).
    pub torn_at: Option<u64>,
}

/// Replays the log of `len_bbs` basic blocks at byte `start` of the
/// device read by `read`: `None` if there is nothing to replay.
pub fn recover(
    start: u64,
    len_bbs: u64,
    g: &Geometry,
    v2: bool,
    logbsize: u32,
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
) -> Result<Option<Recovery>> {
    let dev = records::LogDev {
        start,
        len: len_bbs,
        v2,
        v5: g.v5,
        uuid: g.uuid,
        logbsize,
        read,
    };
    let Some(span) = dev.span()? else {
        return Ok(None);
    };
    tracing::debug!(?span, len_bbs, "xfs log span");
    let mut b = trans::Builder::default();
    dev.pass(span.head, span.tail, &mut |r| b.record(r), false)
        .map_err(|(blk, e)| e.context(format!("log record at block {blk}")))?;
    let overlay = replay::replay(g, read, &b.committed)?;
    Ok(Some(Recovery {
        overlay,
        transactions: b.committed.len(),
        torn_at: span.torn_at,
    }))
}

const BB: u64 = 512;
const RECORD_MAGIC: u32 = 0xfeed_babe;
/// `oh_flags` of the unmount record's one operation.
const UNMOUNT_TRANS: u8 = 0x20;
/// How far back from the head we look for the last record header: more
/// than the largest in-core log buffer (256 KiB) plus its headers.
const MAX_BACK: u64 = 1024;

/// What the log says.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    Clean,
    /// Needs recovery; the text says what we saw.
    Dirty(String),
}

/// Examines a log of `len_bbs` basic blocks at byte `start`, reading with
/// `read(offset, buf)`.
pub fn state(
    start: u64,
    len_bbs: u64,
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
) -> Result<State> {
    let bb = |n: u64| -> Result<[u8; BB as usize]> {
        let mut b = [0u8; BB as usize];
        read(start + n * BB, &mut b)?;
        Ok(b)
    };
    let cycle = |n: u64| -> Result<u32> {
        let b = bb(n)?;
        Ok(if be32(&b, 0) == RECORD_MAGIC {
            be32(&b, 4)
        } else {
            be32(&b, 0)
        })
    };
    if len_bbs < 2 {
        return Ok(State::Dirty("log too small to examine".into()));
    }
    let first = cycle(0)?;
    if first == 0 {
        return Ok(State::Dirty("log never written (cycle 0)".into()));
    }
    // Binary search for the first block written by the previous pass; if
    // the whole log is of one pass, the head is at its end.
    let head = if cycle(len_bbs - 1)? == first {
        len_bbs
    } else {
        let (mut lo, mut hi) = (0, len_bbs - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cycle(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    // The newest record header before the head, of the current pass.
    for back in 1..=MAX_BACK.min(len_bbs) {
        let n = (head + len_bbs - back) % len_bbs;
        let b = bb(n)?;
        if be32(&b, 0) != RECORD_MAGIC {
            // Past the current pass's blocks: its records are all gone.
            if be32(&b, 0) != first {
                break;
            }
            continue;
        }
        let rec_cycle = be32(&b, 4);
        if rec_cycle != first {
            break;
        }
        let lsn = be64(&b, 16);
        let tail = be64(&b, 24);
        let num_ops = be32(&b, 40);
        let version = be32(&b, 8);
        let h_size = be32(&b, 320);
        // Big v2 log buffers spread the header over several blocks.
        let hblks = if version & 2 != 0 && h_size > 32768 {
            u64::from(h_size.div_ceil(32768))
        } else {
            1
        };
        let data = bb((n + hblks) % len_bbs)?;
        let flags = data.get(9).copied().unwrap_or(0);
        if num_ops == 1 && flags & UNMOUNT_TRANS != 0 {
            return Ok(State::Clean);
        }
        return Ok(State::Dirty(format!(
            "last record (cycle {rec_cycle}, lsn {}/{}) is not an unmount record; tail at {}/{}",
            lsn >> 32,
            lsn & 0xffff_ffff,
            tail >> 32,
            tail & 0xffff_ffff
        )));
    }
    Ok(State::Dirty(
        "no log record of the current pass found before the head".into(),
    ))
}
