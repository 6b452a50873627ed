//! [MS-VHDX] 2.3: the log, replayed in memory.
//!
//! Updates to metadata and the BAT are written to the circular log before
//! they reach their place in the file; after a crash the log holds writes the
//! file may lack. Replay finds the active sequence of entries and applies
//! its data and zero descriptors to an [`Overlay`] over the file, never to
//! the file itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use super::header::Header;
use super::{crc_ok, le32, le64};
use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

const SECTOR: usize = 4096;
const ENTRY_HEADER: usize = 64;
/// Largest log replayed. Tools write 1 MiB logs; this bounds the memory a
/// damaged length can make us allocate.
const MAX_LOG: u32 = 256 << 20;

/// One write the log makes to the file.
#[derive(Debug, Clone)]
enum Write {
    Zero { offset: u64, length: u64 },
    Data { offset: u64, bytes: Vec<u8> },
}

/// A valid log entry.
#[derive(Debug)]
struct Entry {
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: Vec<Write>,
}

/// `len` bytes of the circular log from `pos`.
fn circular(log: &[u8], pos: usize, len: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
    if len > log.len() {
        return None;
    }
    if pos + len <= log.len() {
        return log.get(pos..pos + len).map(Into::into);
    }
    let mut v = log.get(pos..)?.to_vec();
    v.extend_from_slice(log.get(..len - v.len())?);
    Some(v.into())
}

/// The entry at `pos`, if it is a valid entry of the log `guid`.
fn parse_entry(log: &[u8], pos: usize, guid: &[u8; 16]) -> Option<Entry> {
    let head = log.get(pos..pos + ENTRY_HEADER)?;
    if &head[..4] != b"loge" || &head[32..48] != guid {
        return None;
    }
    let length = le32(head, 8) as usize;
    let tail = u64::from(le32(head, 12));
    let sequence = le64(head, 16);
    let count = le32(head, 24) as usize;
    if length == 0 || length % SECTOR != 0 || tail % SECTOR as u64 != 0 || tail >= log.len() as u64
    {
        return None;
    }
    let entry = circular(log, pos, length)?;
    if !crc_ok(&entry, 4) {
        return None;
    }
    let desc_bytes = count.checked_mul(32)?.checked_add(ENTRY_HEADER)?;
    let mut data_at = desc_bytes.div_ceil(SECTOR) * SECTOR;
    if data_at > length {
        return None;
    }
    let mut writes = Vec::with_capacity(count);
    for d in entry[ENTRY_HEADER..desc_bytes].chunks_exact(32) {
        let offset = le64(d, 16);
        if le64(d, 24) != sequence || offset % SECTOR as u64 != 0 {
            return None;
        }
        match &d[..4] {
            b"zero" => {
                let len = le64(d, 8);
                if len % SECTOR as u64 != 0 {
                    return None;
                }
                writes.push(Write::Zero {
                    offset,
                    length: len,
                });
            }
            b"desc" => {
                let sector = entry.get(data_at..data_at + SECTOR)?;
                data_at += SECTOR;
                let seq = (u64::from(le32(sector, 4)) << 32) | u64::from(le32(sector, SECTOR - 4));
                if &sector[..4] != b"data" || seq != sequence {
                    return None;
                }
                // The sector's first 8 and last 4 bytes hold its signature
                // and sequence; the descriptor keeps the real ones.
                let mut bytes = sector.to_vec();
                bytes[..8].copy_from_slice(&d[8..16]);
                bytes[SECTOR - 4..].copy_from_slice(&d[4..8]);
                writes.push(Write::Data { offset, bytes });
            }
            _ => return None,
        }
    }
    Some(Entry {
        length: length as u64,
        tail,
        sequence,
        flushed_file_offset: le64(head, 48),
        last_file_offset: le64(head, 56),
        writes,
    })
}

/// The entries of the active sequence, oldest first: among chains of valid
/// entries with consecutive sequence numbers, each head whose tail lies in
/// its own chain ends a candidate; the one with the highest sequence wins.
fn active_sequence(log: &[u8], guid: &[u8; 16]) -> Vec<Entry> {
    let len = log.len();
    let mut entries: HashMap<usize, Entry> = (0..len)
        .step_by(SECTOR)
        .filter_map(|p| parse_entry(log, p, guid).map(|e| (p, e)))
        .collect();
    let next = |p: usize, e: &Entry| -> usize { (p + e.length as usize) % len };
    let successor = |p: usize, entries: &HashMap<usize, Entry>| -> Option<usize> {
        let e = entries.get(&p)?;
        let n = next(p, e);
        (entries.get(&n)?.sequence == e.sequence.checked_add(1)?).then_some(n)
    };
    let followed: HashSet<usize> = entries
        .keys()
        .filter_map(|&p| successor(p, &entries))
        .collect();
    let mut best: Option<(u64, Vec<usize>)> = None;
    for &start in entries.keys().filter(|p| !followed.contains(p)) {
        let mut chain = vec![start];
        while let Some(n) = chain.last().and_then(|&p| successor(p, &entries)) {
            if chain.len() > entries.len() {
                break;
            }
            chain.push(n);
        }
        for (i, p) in chain.iter().enumerate() {
            let Some(head) = entries.get(p) else { continue };
            let Some(j) = chain[..=i].iter().position(|&q| q as u64 == head.tail) else {
                continue;
            };
            if best.as_ref().is_none_or(|(s, _)| head.sequence > *s) {
                best = Some((head.sequence, chain[j..=i].to_vec()));
            }
        }
    }
    best.map(|(_, chain)| chain.iter().filter_map(|p| entries.remove(p)).collect())
        .unwrap_or_default()
}

/// A region of the file replaced by the log: bytes, or zeros.
#[derive(Debug)]
struct Extent {
    end: u64,
    bytes: Option<Vec<u8>>,
}

/// The file as it is after log replay: the file's bytes with the log's
/// writes on top, held in memory.
pub struct Overlay {
    base: Source,
    size: u64,
    /// Non-overlapping extents keyed by start offset.
    extents: BTreeMap<u64, Extent>,
}

impl Overlay {
    fn write(&mut self, start: u64, end: u64, bytes: Option<Vec<u8>>) {
        if start >= end {
            return;
        }
        let hit: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(_, e)| e.end > start)
            .map(|(&k, _)| k)
            .collect();
        for k in hit {
            let Some(old) = self.extents.remove(&k) else {
                continue;
            };
            let slice = |from: u64, to: u64| {
                old.bytes
                    .as_ref()
                    .and_then(|b| b.get((from - k) as usize..(to - k) as usize))
                    .map(<[u8]>::to_vec)
            };
            if k < start {
                self.extents.insert(
                    k,
                    Extent {
                        end: start,
                        bytes: slice(k, start),
                    },
                );
            }
            if old.end > end {
                self.extents.insert(
                    end,
                    Extent {
                        end: old.end,
                        bytes: slice(end, old.end),
                    },
                );
            }
        }
        self.size = self.size.max(end);
        self.extents.insert(start, Extent { end, bytes });
    }

    /// Number of extents the log replaced.
    pub fn extents(&self) -> usize {
        self.extents.len()
    }
}

impl ReadAt for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        let buf = &mut buf[..len];
        // The file's bytes (zeros where the log grew it), then the log's.
        let from_base = clamp_len(self.base.size(), offset, len);
        self.base.read_exact_at(offset, &mut buf[..from_base])?;
        buf[from_base..].fill(0);
        let end = offset + len as u64;
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&k, _)| k);
        for (&start, e) in self.extents.range(first..end) {
            let (s, t) = (start.max(offset), e.end.min(end));
            if s >= t {
                continue;
            }
            let dst = &mut buf[(s - offset) as usize..(t - offset) as usize];
            match &e.bytes {
                Some(b) => match b.get((s - start) as usize..(t - start) as usize) {
                    Some(src) => dst.copy_from_slice(src),
                    None => {
                        return Err(io::Error::other("vhdx: log extent shorter than its range"))
                    }
                },
                None => dst.fill(0),
            }
        }
        Ok(len)
    }
}

/// What replay did, for `info`.
pub struct Replay {
    pub overlay: Overlay,
    pub entries: usize,
    pub sequences: (u64, u64),
}

/// Replays the log named by `header` over `file`, in memory.
pub fn replay(file: Source, header: &Header) -> Result<Replay> {
    let file_size = file.size();
    let (at, len) = (header.log_offset, header.log_length);
    if len == 0 || len % (1 << 20) != 0 || at % (1 << 20) != 0 || at == 0 {
        return Err(Error::corrupt(
            "vhdx",
            header.at + 68,
            format!("log of {len} bytes at {at}"),
        ));
    }
    if len > MAX_LOG {
        return Err(Error::unsupported(
            "vhdx",
            format!("log of {len} bytes (header at offset {})", header.at),
        ));
    }
    if at.saturating_add(u64::from(len)) > file_size {
        return Err(Error::corrupt(
            "vhdx",
            header.at + 72,
            format!("log at {at} of {len} bytes lies past the end of the file"),
        ));
    }
    let mut log = vec![0u8; len as usize];
    file.read_exact_at(at, &mut log)
        .map_err(|e| Error::io("vhdx", at, e))?;
    let seq = active_sequence(&log, &header.log_guid);
    let (Some(first), Some(head)) = (seq.first(), seq.last()) else {
        return Err(Error::corrupt(
            "vhdx",
            at,
            "the header names a log but it holds no valid sequence to replay",
        ));
    };
    // The file must be at least as large as when the head was written, or
    // writes the log does not repeat were lost.
    if head.flushed_file_offset > file_size {
        return Err(Error::corrupt(
            "vhdx",
            at,
            format!(
                "log entry {} was written when the file had {} bytes; it has {file_size}",
                head.sequence, head.flushed_file_offset
            ),
        ));
    }
    let sequences = (first.sequence, head.sequence);
    let mut overlay = Overlay {
        base: file,
        // Replay grows the file to the head's last offset.
        size: file_size.max(head.last_file_offset),
        extents: BTreeMap::new(),
    };
    for w in seq.iter().flat_map(|e| e.writes.iter()) {
        match w {
            Write::Zero { offset, length } => {
                overlay.write(*offset, offset.saturating_add(*length), None)
            }
            Write::Data { offset, bytes } => overlay.write(
                *offset,
                offset.saturating_add(SECTOR as u64),
                Some(bytes.clone()),
            ),
        }
    }
    Ok(Replay {
        overlay,
        entries: seq.len(),
        sequences,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::readat::MemSource;

    fn overlay(size: usize) -> Overlay {
        Overlay {
            base: Arc::new(MemSource(vec![1; size])),
            size: size as u64,
            extents: BTreeMap::new(),
        }
    }

    #[test]
    fn overlay_later_writes_win_and_split() -> std::io::Result<()> {
        let mut o = overlay(100);
        o.write(10, 30, Some(vec![2; 20]));
        o.write(20, 25, None);
        o.write(28, 120, Some(vec![3; 92]));
        let mut buf = vec![9; 200];
        assert_eq!(o.read_at(0, &mut buf)?, 120);
        assert_eq!(&buf[..10], &[1; 10]);
        assert_eq!(&buf[10..20], &[2; 10]);
        assert_eq!(&buf[20..25], &[0; 5]);
        assert_eq!(&buf[25..28], &[2; 3]);
        assert_eq!(&buf[28..120], &[3; 92]);
        let mut b = [0u8; 4];
        o.read_at(23, &mut b)?;
        assert_eq!(b, [0, 0, 2, 2]);
        assert_eq!(o.extents(), 4);
        Ok(())
    }

    fn entry(seq: u64, tail: u32, guid: [u8; 16], target: u64, fill: u8) -> Vec<u8> {
        let mut e = vec![0u8; 2 * SECTOR];
        e[..4].copy_from_slice(b"loge");
        e[8..12].copy_from_slice(&(2 * SECTOR as u32).to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&1u32.to_le_bytes());
        e[32..48].copy_from_slice(&guid);
        let d = &mut e[64..96];
        d[..4].copy_from_slice(b"desc");
        d[4..8].copy_from_slice(&[0xEE; 4]);
        d[8..16].copy_from_slice(&[0xAA; 8]);
        d[16..24].copy_from_slice(&target.to_le_bytes());
        d[24..32].copy_from_slice(&seq.to_le_bytes());
        let s = &mut e[SECTOR..];
        s.fill(fill);
        s[..4].copy_from_slice(b"data");
        s[4..8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
        s[SECTOR - 4..].copy_from_slice(&(seq as u32).to_le_bytes());
        let c = crc32c::crc32c(&e);
        e[4..8].copy_from_slice(&c.to_le_bytes());
        e
    }

    #[test]
    fn replays_highest_complete_sequence_with_wrap() {
        let g = [7u8; 16];
        let mut log = vec![0u8; 8 * SECTOR];
        // A stale sequence 1..2 at 0, then the active 10..12 starting at
        // sector 4 and wrapping to 0 (overwriting the stale entry).
        log[2 * SECTOR..4 * SECTOR].copy_from_slice(&entry(2, 0, g, 0, 0x22));
        log[4 * SECTOR..6 * SECTOR].copy_from_slice(&entry(10, 4 * SECTOR as u32, g, 8192, 0x10));
        log[6 * SECTOR..8 * SECTOR].copy_from_slice(&entry(11, 4 * SECTOR as u32, g, 8192, 0x11));
        log[..2 * SECTOR].copy_from_slice(&entry(12, 6 * SECTOR as u32, g, 4096, 0x12));
        let seq = active_sequence(&log, &g);
        assert_eq!(
            seq.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![11, 12]
        );
        let Write::Data { offset, bytes } = &seq[1].writes[0] else {
            panic!()
        };
        assert_eq!(*offset, 4096);
        assert_eq!(&bytes[..8], &[0xAA; 8]);
        assert_eq!(&bytes[8..12], &[0x12; 4]);
        assert_eq!(&bytes[SECTOR - 4..], &[0xEE; 4]);
        // Another log's entries and damaged ones are not replayed.
        assert!(active_sequence(&log, &[8; 16]).is_empty());
        log[SECTOR + 100] ^= 1;
        assert_eq!(
            active_sequence(&log, &g).last().map(|e| e.sequence),
            Some(11)
        );
    }
}
