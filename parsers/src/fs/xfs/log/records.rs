//! The physical log: head and tail found as the kernel's recovery finds
//! them (fs/xfs/xfs_log_recover.c), torn writes at the head cut off by
//! record CRCs, and records read from tail to head with the cycle numbers
//! stamped over every basic block put back.

use crate::bytes::{be32, be64};
use crate::{Error, Result};

pub const BB: u64 = 512;
const MAGIC: u32 = 0xfeed_babe;
/// `XLOG_HEADER_CYCLE_SIZE`: basic blocks covered by one header's saved
/// cycle words.
const CYCLE_BLOCKS: u64 = 64;
const UNMOUNT_TRANS: u8 = 0x20;
/// The in-core log buffers that can be in flight at once.
const MAX_ICLOGS: u64 = 8;
/// `h_fmt` of little-endian Linux: items are in host order, so only this
/// format can be read.
const FMT_LINUX_LE: u32 = 1;
/// Byte offsets in `xlog_rec_header`.
const H_CRC: usize = 32;
const H_CYCLE_DATA: usize = 44;
const H_FMT: usize = 300;
const H_UUID: usize = 304;
const H_SIZE: usize = 320;
/// Bytes of the header covered by its CRC (x86-64 layout; i386 wrote 324).
pub const REC_SIZE: usize = 328;
const REC_SIZE_OTHER: usize = 324;
/// Bytes of an extended header covered by the CRC.
const EXT_SIZE: usize = 260;
/// The largest record body.
const MAX_RECORD: u32 = 256 * 1024;

/// How to read the log and what to expect in it.
pub struct LogDev<'a> {
    /// Byte offset of the log on the device.
    pub start: u64,
    /// Length in basic blocks.
    pub len: u64,
    /// Log v2 (large records with extended headers).
    pub v2: bool,
    /// v5 filesystem: a CRC mismatch is fatal outside the head.
    pub v5: bool,
    pub uuid: [u8; 16],
    /// Log stripe unit in bytes (mkfs writes records that large with a
    /// 32 KiB `h_size`).
    pub logbsize: u32,
    pub read: &'a dyn Fn(u64, &mut [u8]) -> Result<()>,
}

/// One record, unpacked.
pub struct Record {
    pub lsn: u64,
    pub num_ops: u32,
    pub data: Vec<u8>,
}

/// The part of the log to replay.
#[derive(Debug, PartialEq, Eq)]
pub struct Span {
    pub head: u64,
    pub tail: u64,
    /// Where a torn write was cut off, if one was.
    pub torn_at: Option<u64>,
}

fn corrupt(at: u64, what: impl Into<String>) -> Error {
    Error::corrupt("xfs", at, format!("log: {}", what.into()))
}

/// A parsed record header.
struct Header {
    blk: u64,
    raw: Vec<u8>,
    hblks: u64,
    len: u32,
}

impl Header {
    fn tail_blk(&self) -> u64 {
        be64(&self.raw, 24) & 0xffff_ffff
    }
    fn bblks(&self) -> u64 {
        u64::from(self.len).div_ceil(BB as u32 as u64)
    }
}

impl LogDev<'_> {
    /// A corruption at log block `blk` (the error carries its byte offset).
    fn corrupt(&self, blk: u64, what: impl Into<String>) -> Error {
        corrupt(self.start.saturating_add(blk.saturating_mul(BB)), what)
    }

    fn block(&self, n: u64) -> Result<[u8; BB as usize]> {
        let mut b = [0u8; BB as usize];
        if n >= self.len {
            return Err(self.corrupt(n, "block past the end of the log"));
        }
        (self.read)(self.start + n * BB, &mut b)?;
        Ok(b)
    }

    /// `n` blocks from `first`, wrapping at the end of the log.
    fn blocks(&self, first: u64, n: u64) -> Result<Vec<u8>> {
        if n > self.len {
            return Err(self.corrupt(first, "read longer than the log"));
        }
        let mut v = vec![0u8; (n * BB) as usize];
        let mut done = 0;
        while done < n {
            let at = (first + done) % self.len;
            let run = (self.len - at).min(n - done);
            let dst = v
                .get_mut((done * BB) as usize..((done + run) * BB) as usize)
                .ok_or_else(|| self.corrupt(at, "read range"))?;
            (self.read)(self.start + at * BB, dst)?;
            done += run;
        }
        Ok(v)
    }

    fn cycle(&self, n: u64) -> Result<u32> {
        let b = self.block(n)?;
        Ok(if be32(&b, 0) == MAGIC {
            be32(&b, 4)
        } else {
            be32(&b, 0)
        })
    }

    fn is_header(&self, n: u64) -> Result<bool> {
        Ok(be32(&self.block(n)?, 0) == MAGIC)
    }

    /// Header blocks of a record, from its first block.
    fn hblks(&self, b: &[u8]) -> u64 {
        let h_size = be32(b, H_SIZE);
        if self.v2 && be32(b, 8) & 2 != 0 && h_size > 32768 {
            u64::from(h_size.div_ceil(32768))
        } else {
            1
        }
    }

    fn header(&self, blk: u64) -> Result<Header> {
        let first = self.block(blk)?;
        let hblks = self.hblks(&first).min(MAX_RECORD as u64 / 32768);
        let raw = self.blocks(blk, hblks)?;
        Ok(Header {
            blk,
            hblks,
            len: be32(&first, 12),
            raw,
        })
    }

    /// First block in `[start, start + n)` with cycle `cycle`.
    fn find_cycle(&self, start: u64, n: u64, cycle: u32) -> Result<Option<u64>> {
        for b in start..start + n {
            if self.cycle(b)? == cycle {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Binary search for the first block of cycle `cycle` in `(first, last]`.
    fn cycle_start(&self, mut first: u64, mut last: u64, cycle: u32) -> Result<u64> {
        let mut mid = (first + last) / 2;
        while mid != first && mid != last {
            if self.cycle(mid)? == cycle {
                last = mid;
            } else {
                first = mid;
            }
            mid = (first + last) / 2;
        }
        Ok(last)
    }

    /// Moves `last` back to the start of the record it cuts, if it does:
    /// `Ok(false)` when no header lies between `start` and `last`, and the
    /// search reached block 0.
    fn verify_record(&self, start: u64, last: &mut u64, extra: u64) -> Result<bool> {
        let mut i = *last;
        let found = loop {
            if i == 0 {
                break None;
            }
            i -= 1;
            if i < start {
                return Err(self.corrupt(i, "no record header before the head"));
            }
            if self.is_header(i)? {
                break Some(i);
            }
        };
        let Some(i) = found else {
            if start > 0 {
                return Err(self.corrupt(0, "no record header before the head"));
            }
            return Ok(false);
        };
        let b = self.block(i)?;
        self.check_uuid(&b, i, true)?;
        let hblks = self.hblks(&b);
        let len = u64::from(be32(&b, 12)).div_ceil(BB);
        if *last - i + extra != len + hblks {
            *last = i;
        }
        Ok(true)
    }

    fn check_uuid(&self, b: &[u8], at: u64, allow_null: bool) -> Result<()> {
        let uuid = b.get(H_UUID..H_UUID + 16).unwrap_or(&[]);
        if uuid == self.uuid.as_slice() || (allow_null && uuid.iter().all(|&x| x == 0)) {
            Ok(())
        } else {
            Err(self.corrupt(at, "record of another filesystem (uuid)"))
        }
    }

    fn scan_len(&self, total: bool) -> u64 {
        let rec = if self.v2 { 1u64 << 18 } else { 1 << 15 } / BB;
        if total {
            rec * MAX_ICLOGS
        } else {
            rec
        }
    }

    /// The head: the block after the last one written, as `xlog_find_head`.
    fn find_head(&self) -> Result<u64> {
        let n = self.len;
        let first = self.cycle(0)?;
        if first == 0 {
            return Ok(0);
        }
        let last = self.cycle(n - 1)?;
        if last == 0 {
            // Partly written first pass: the head is where zeros start.
            if first != 1 {
                return Err(self.corrupt(0, "inconsistent log (last cycle 0, first not 1)"));
            }
            let mut head = self.cycle_start(0, n - 1, 0)?;
            let scan = self.scan_len(true).min(head);
            if let Some(b) = self.find_cycle(head - scan, scan, 0)? {
                head = b;
            }
            // The cycle-0 block found may lie less than a scan from the
            // start of the log.
            if !self.verify_record(head.saturating_sub(scan), &mut head, 0)? {
                return Err(self.corrupt(0, "no record header before the head"));
            }
            return Ok(head);
        }
        let (mut head, stop) = if first == last {
            (n, last.wrapping_sub(1))
        } else {
            (self.cycle_start(0, n - 1, last)?, last)
        };
        let scan = self.scan_len(true);
        if head >= scan {
            if let Some(b) = self.find_cycle(head - scan, scan, stop)? {
                head = b;
            }
        } else {
            let from = n.saturating_sub(scan - head);
            if let Some(b) = self.find_cycle(from, n - from, stop.wrapping_sub(1))? {
                head = b;
            } else if let Some(b) = self.find_cycle(0, head, stop)? {
                head = b;
            }
        }
        let scan = self.scan_len(false);
        if head >= scan {
            if !self.verify_record(head - scan, &mut head, 0)? {
                return Err(self.corrupt(head, "no record header before the head"));
            }
        } else if !self.verify_record(0, &mut head, 0)? {
            let from = n.saturating_sub(scan - head);
            let mut new = n;
            if !self.verify_record(from, &mut new, head)? {
                return Err(self.corrupt(from, "no record header before the head"));
            }
            if new != n {
                head = new;
            }
        }
        Ok(if head == n { 0 } else { head })
    }

    /// Up to `count` record headers searched backwards from `head` to
    /// `tail` (all the way round when they are equal): the last one found.
    fn rseek(&self, head: u64, tail: u64, count: u32) -> Result<Option<u64>> {
        let end = if head > tail { tail } else { 0 };
        let wrapped = if tail >= head { tail..self.len } else { 0..0 };
        self.nth_header((end..head).rev().chain(wrapped.rev()), count)
    }

    /// Up to `count` record headers searched forwards from `tail` to
    /// `head`: the last one found.
    fn seek(&self, head: u64, tail: u64, count: u32) -> Result<Option<u64>> {
        // Inclusive of the head, as the kernel's search.
        let end = if head > tail { head + 1 } else { self.len };
        let wrapped = if tail > head { 0..head } else { 0..0 };
        self.nth_header((tail..end.min(self.len)).chain(wrapped), count)
    }

    /// The `count`th record header among `blocks`, or the last one found
    /// if there are fewer.
    fn nth_header(&self, blocks: impl Iterator<Item = u64>, count: u32) -> Result<Option<u64>> {
        let mut found = 0;
        let mut at = None;
        for i in blocks {
            if self.is_header(i)? {
                at = Some(i);
                found += 1;
                if found == count {
                    break;
                }
            }
        }
        Ok(at)
    }

    /// Whether the record at `rblk` is a lone unmount record ending at
    /// the head.
    fn unmount_at(&self, head: u64, h: &Header) -> Result<bool> {
        let after = (h.blk + h.hblks + h.bblks()) % self.len;
        if head != after || be32(&h.raw, 40) != 1 {
            return Ok(false);
        }
        let op = self.block((h.blk + h.hblks) % self.len)?;
        Ok(op.get(9).copied().unwrap_or(0) & UNMOUNT_TRANS != 0)
    }

    /// The tail block a record header names, which must lie in the log.
    fn tail_of(&self, h: &Header) -> Result<u64> {
        let tail = h.tail_blk();
        if tail >= self.len {
            return Err(self.corrupt(h.blk, format!("tail block {tail} outside the log")));
        }
        Ok(tail)
    }

    /// Where to replay, or `None` when there is nothing to replay.
    pub fn span(&self) -> Result<Option<Span>> {
        if self.len < 2 || self.len > u64::from(u32::MAX) {
            return Err(self.corrupt(0, "bad log size"));
        }
        let mut head = self.find_head()?;
        if head == 0 && self.cycle(0)? == 0 {
            return Ok(None);
        }
        let rblk = self
            .rseek(head, head, 1)?
            .ok_or_else(|| self.corrupt(head, "no record header in the log"))?;
        let mut h = self.header(rblk)?;
        let mut tail = self.tail_of(&h)?;
        if self.unmount_at(head, &h)? {
            return Ok(None);
        }
        // Torn writes: a bad record among the last ones that could have
        // been in flight ends the log there.
        let mut torn_at = None;
        let from = self.rseek(head, tail, MAX_ICLOGS as u32)?.unwrap_or(tail);
        if let Err((bad, e)) = self.pass(head, from, &mut |_| Ok(()), true) {
            if bad == 0 {
                return Err(e);
            }
            let r = self
                .rseek(bad, tail, 1)?
                .ok_or_else(|| self.corrupt(bad, "no good record before a torn one"))?;
            h = self.header(r)?;
            head = bad;
            tail = self.tail_of(&h)?;
            torn_at = Some(bad);
            if head == tail {
                return Ok(None);
            }
            if self.unmount_at(head, &h)? {
                return Ok(None);
            }
        }
        if tail == head {
            return Ok(None);
        }
        let tail = self.verify_tail(head, tail, be32(&h.raw, H_SIZE))?;
        if tail == head {
            return Ok(None);
        }
        Ok(Some(Span {
            head,
            tail,
            torn_at,
        }))
    }

    /// `xlog_verify_tail`: the tail must be a record header, and records
    /// from it must pass their CRCs, except ones just after the head that
    /// a torn write of the head may have overwritten.
    fn verify_tail(&self, head: u64, tail: u64, hsize: u32) -> Result<u64> {
        let mut tail = self
            .seek(head, tail, 1)?
            .ok_or_else(|| self.corrupt(tail, "no record header at the tail"))?;
        for _ in 0..=MAX_ICLOGS * 64 {
            match self.pass(head, tail, &mut |_| Ok(()), true) {
                Ok(()) => return Ok(tail),
                Err((bad, e)) => {
                    let distance = if head < bad {
                        bad - head
                    } else {
                        bad + self.len - head
                    };
                    if bad == 0 || distance > (MAX_ICLOGS * u64::from(hsize)).div_ceil(BB) {
                        return Err(e);
                    }
                    tail = self.seek(head, bad, 2)?.filter(|&t| t != bad).ok_or(e)?;
                }
            }
        }
        Err(self.corrupt(tail, "tail verification does not end"))
    }

    /// The records from `tail` to `head`, each given to `f`; only CRCs
    /// are checked with `crc_only`. An error comes with the block of the
    /// record it happened in.
    pub fn pass(
        &self,
        head: u64,
        tail: u64,
        f: &mut dyn FnMut(Record) -> Result<()>,
        crc_only: bool,
    ) -> std::result::Result<(), (u64, Error)> {
        // The tail comes from a record header: a hostile one may point
        // anywhere.
        if tail >= self.len || head > self.len {
            return Err((tail, self.corrupt(tail, "tail or head outside the log")));
        }
        let total = (head + self.len - tail) % self.len;
        let first = self.header(tail).map_err(|e| (tail, e))?;
        let mut h_size = if self.v2 {
            be32(&first.raw, H_SIZE)
        } else {
            32768
        };
        if self.v2 && first.len > h_size && first.len <= self.logbsize && be32(&first.raw, 40) == 1
        {
            h_size = self.logbsize;
        }
        let hblks = if self.v2 { first.hblks } else { 1 };
        let mut done = 0;
        while done < total {
            let blk = (tail + done) % self.len;
            let rec = (|| {
                let raw = self.blocks(blk, hblks)?;
                let len = self.valid_header(&raw, blk, h_size)?;
                let bblks = u64::from(len).div_ceil(BB);
                let mut data = self.blocks((blk + hblks) % self.len, bblks)?;
                data.truncate(len as usize);
                let crc = record_crc(&raw, &data, len, REC_SIZE);
                let stored = u32::from_le_bytes(
                    raw.get(H_CRC..H_CRC + 4)
                        .and_then(|c| c.try_into().ok())
                        .unwrap_or([0; 4]),
                );
                let crc_ok =
                    crc == stored || record_crc(&raw, &data, len, REC_SIZE_OTHER) == stored;
                if crc_only {
                    if stored != 0 && !crc_ok {
                        return Err(self.corrupt(blk, "record CRC mismatch"));
                    }
                } else {
                    if !crc_ok && self.v5 {
                        return Err(self.corrupt(blk, "record CRC mismatch"));
                    }
                    if be32(&raw, H_FMT) != FMT_LINUX_LE {
                        return Err(Error::unsupported(
                            "xfs",
                            "log written in a byte order other than little-endian",
                        ));
                    }
                    self.check_uuid(&raw, blk, false)?;
                    unpack(&raw, &mut data, hblks)
                        .map_err(|e| e.context(format!("record at {blk}")))?;
                    f(Record {
                        lsn: be64(&raw, 16),
                        num_ops: be32(&raw, 40),
                        data,
                    })?;
                }
                Ok(hblks + bblks)
            })();
            match rec {
                Ok(n) => done += n,
                Err(e) => return Err((blk, e)),
            }
        }
        Ok(())
    }

    /// Blocks of the record headers from `tail` to `head` (for tests).
    #[cfg(test)]
    pub fn headers(&self, head: u64, tail: u64) -> Result<Vec<u64>> {
        let total = (head + self.len - tail) % self.len;
        let mut out = Vec::new();
        let mut done = 0;
        while done < total {
            let blk = (tail + done) % self.len;
            let h = self.header(blk)?;
            out.push(blk);
            done += h.hblks + h.bblks();
        }
        Ok(out)
    }

    /// `xlog_valid_rec_header`: the record's length.
    fn valid_header(&self, raw: &[u8], blk: u64, h_size: u32) -> Result<u32> {
        if be32(raw, 0) != MAGIC {
            return Err(self.corrupt(blk, "no record header where one must be"));
        }
        let version = be32(raw, 8);
        if version == 0 || version & !3 != 0 {
            return Err(self.corrupt(blk, format!("unknown record version {version}")));
        }
        let len = be32(raw, 12);
        if len == 0 || len > h_size || len > MAX_RECORD {
            return Err(self.corrupt(blk, format!("bad record length {len}")));
        }
        Ok(len)
    }
}

/// `xlog_cksum`: crc32c of the header (its CRC field as zero), the
/// extended headers' cycle words and the body.
pub fn record_crc(raw: &[u8], data: &[u8], len: u32, rec_size: usize) -> u32 {
    let mut head = raw.get(..rec_size).unwrap_or(&[]).to_vec();
    if let Some(c) = head.get_mut(H_CRC..H_CRC + 4) {
        c.fill(0);
    }
    let mut crc = crc32c::crc32c(&head);
    let xheads = u64::from(len).div_ceil(32768) as usize;
    for i in 1..xheads {
        let at = i * BB as usize;
        crc = crc32c::crc32c_append(crc, raw.get(at..at + EXT_SIZE).unwrap_or(&[]));
    }
    crc32c::crc32c_append(crc, data)
}

/// Puts back the first word of every basic block of the body, which the
/// writer replaced with the cycle number and saved in the headers.
fn unpack(raw: &[u8], data: &mut [u8], hblks: u64) -> Result<()> {
    let blocks = (data.len() as u64).div_ceil(BB);
    for i in 0..blocks {
        let (j, k) = (i / CYCLE_BLOCKS, (i % CYCLE_BLOCKS) as usize);
        if j >= hblks {
            return Err(corrupt(0, "record body longer than its headers cover"));
        }
        let at = if j == 0 {
            H_CYCLE_DATA + 4 * k
        } else {
            (j * BB) as usize + 4 + 4 * k
        };
        let word = raw
            .get(at..at + 4)
            .ok_or_else(|| corrupt(0, "cycle data"))?;
        let d = (i * BB) as usize;
        if let Some(dst) = data.get_mut(d..(d + 4).min(data.len())) {
            let n = dst.len();
            dst.copy_from_slice(word.get(..n).unwrap_or(&[]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::xfs::log::trans::Builder;

    const LEN: u64 = 256;
    const UUID: [u8; 16] = [3; 16];

    /// A log written as the kernel writes it: records from `tail` on,
    /// each header's saved words and the blocks' cycle stamps, the stamps
    /// past the end of the log one higher, CRCs over what is on disk.
    struct Synth {
        log: Vec<u8>,
        at: u64,
        cycle: u32,
        tail: u64,
        starts: Vec<u64>,
    }

    impl Synth {
        fn new(tail: u64) -> Synth {
            let mut log = vec![0u8; (LEN * BB) as usize];
            for b in 0..LEN as usize {
                log[b * 512..b * 512 + 4].copy_from_slice(&1u32.to_be_bytes());
            }
            Synth {
                log,
                at: tail,
                cycle: 1,
                tail,
                starts: Vec::new(),
            }
        }

        fn record(&mut self, ops: &[Vec<u8>]) {
            let mut body = ops.concat();
            body.resize(body.len().div_ceil(512) * 512, 0);
            // Every record of a mount has the in-core log size.
            let h_size = 65536u32;
            let hblks = u64::from(h_size / 32768);
            let bblks = body.len() as u64 / BB;
            let mut raw = vec![0u8; (hblks * BB) as usize];
            raw[0..4].copy_from_slice(&MAGIC.to_be_bytes());
            raw[4..8].copy_from_slice(&self.cycle.to_be_bytes());
            raw[8..12].copy_from_slice(&2u32.to_be_bytes());
            raw[12..16].copy_from_slice(&(body.len() as u32).to_be_bytes());
            let lsn = (u64::from(self.cycle) << 32) | self.at;
            raw[16..24].copy_from_slice(&lsn.to_be_bytes());
            raw[24..32].copy_from_slice(&((1u64 << 32) | self.tail).to_be_bytes());
            raw[40..44].copy_from_slice(&(ops.len() as u32).to_be_bytes());
            raw[H_FMT..H_FMT + 4].copy_from_slice(&FMT_LINUX_LE.to_be_bytes());
            raw[H_UUID..H_UUID + 16].copy_from_slice(&UUID);
            raw[H_SIZE..H_SIZE + 4].copy_from_slice(&h_size.to_be_bytes());
            for j in 1..hblks as usize {
                raw[j * 512..j * 512 + 4].copy_from_slice(&self.cycle.to_be_bytes());
            }
            // Save each body block's first word; stamp the cycle.
            for i in 0..bblks as usize {
                let (j, k) = (i / 64, i % 64);
                let at = if j == 0 {
                    H_CYCLE_DATA + 4 * k
                } else {
                    j * 512 + 4 + 4 * k
                };
                raw[at..at + 4].copy_from_slice(&body[i * 512..i * 512 + 4]);
                body[i * 512..i * 512 + 4].copy_from_slice(&self.cycle.to_be_bytes());
            }
            let mut all = [raw, body].concat();
            let blocks = hblks + bblks;
            let split = LEN - self.at;
            for b in split..blocks {
                let s = &mut all[(b * BB) as usize..][..4];
                let c = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) + 1;
                s.copy_from_slice(&c.to_be_bytes());
            }
            let raw = all[..(hblks * BB) as usize].to_vec();
            let data = all[(hblks * BB) as usize..].to_vec();
            let crc = record_crc(&raw, &data, data.len() as u32, REC_SIZE);
            all[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
            self.starts.push(self.at);
            for b in 0..blocks {
                let dst = ((self.at + b) % LEN * BB) as usize;
                self.log[dst..dst + 512].copy_from_slice(&all[(b * BB) as usize..][..512]);
            }
            self.at += blocks;
            if self.at >= LEN {
                self.at -= LEN;
                self.cycle += 1;
            }
        }

        fn dev<'a>(&self, read: &'a dyn Fn(u64, &mut [u8]) -> Result<()>) -> LogDev<'a> {
            LogDev {
                start: 0,
                len: LEN,
                v2: true,
                v5: true,
                uuid: UUID,
                logbsize: 32768,
                read,
            }
        }
    }

    fn op(tid: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut v = tid.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&[0x69, flags, 0, 0]);
        v.extend_from_slice(body);
        v
    }

    fn trans_header() -> Vec<u8> {
        let mut h = 0x5452_414eu32.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 12]);
        h
    }

    fn format(n: u16) -> Vec<u8> {
        let mut f = 0x123cu16.to_le_bytes().to_vec();
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&[0; 12]);
        f
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Transaction `tid`: a 40 KiB region split over two records (the
    /// second over 32 KiB, so with an extended header), then a commit.
    fn write_trans(s: &mut Synth, tid: u32, seed: u8) -> Vec<u8> {
        let data = payload(40000, seed);
        s.record(&[
            op(tid, 0x01, &[]),
            op(tid, 0, &trans_header()),
            op(tid, 0, &format(2)),
            op(tid, 0x04, &data[..3000]),
        ]);
        s.record(&[op(tid, 0x08 | 0x10, &data[3000..]), op(tid, 0x02, &[])]);
        data
    }

    fn replayed(log: &[u8]) -> Result<(Option<Span>, Vec<Vec<u8>>)> {
        let read = |off: u64, buf: &mut [u8]| -> Result<()> {
            buf.copy_from_slice(&log[off as usize..off as usize + buf.len()]);
            Ok(())
        };
        let s = Synth::new(0);
        let dev = s.dev(&read);
        let Some(span) = dev.span()? else {
            return Ok((None, Vec::new()));
        };
        let mut b = Builder::default();
        dev.pass(span.head, span.tail, &mut |r| b.record(r), false)
            .map_err(|(_, e)| e)?;
        let regions = b
            .committed
            .iter()
            .map(|t| t.items[0].regions[1].clone())
            .collect();
        Ok((Some(span), regions))
    }

    #[test]
    fn records_across_the_end_of_the_log() -> Result<()> {
        let mut s = Synth::new(150);
        let mut want = Vec::new();
        for t in 0..2u8 {
            want.push(write_trans(&mut s, 10 + u32::from(t), t));
        }
        // The live log crosses the end, and its last record straddles it.
        let last = s.starts.last().copied().unwrap_or_default();
        assert!(s.at < 150 && s.at > 0 && last > s.at);
        let (span, got) = replayed(&s.log)?;
        let span = span.ok_or_else(|| crate::Error::corrupt("test", 0, "nothing to replay"))?;
        assert_eq!((span.tail, span.head, span.torn_at), (150, s.at, None));
        assert_eq!(got, want);

        // A torn last record: its transaction is gone, the rest stays.
        let mut torn = s.log.clone();
        torn[((last + 2) % LEN * BB) as usize + 100] ^= 1;
        let (span, got) = replayed(&torn)?;
        assert_eq!(span.map(|s| s.torn_at), Some(Some(last)));
        assert_eq!(got, want[..1].to_vec());
        Ok(())
    }
}
