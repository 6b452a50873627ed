//! [MS-VHDX] 2.3: the log, replayed in memory.
//!
//! Updates to metadata and the BAT are written to the circular log before
//! they reach their place in the file; after a crash the log holds writes the
//! file may lack. Replay finds the active sequence of entries and applies
//! its data and zero descriptors to a [`Patched`] view of the file, never to
//! the file itself.

use std::collections::{HashMap, HashSet};

use super::header::Header;
use super::{crc_ok, le32, le64};
use crate::readat::{Patch, Patched, Patches};
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

/// What replay did, for `info`.
pub struct Replay {
    /// The file after replay: its bytes with the log's writes on top.
    pub overlay: Patched,
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
    let mut patches = Patches::default();
    for w in seq.iter().flat_map(|e| e.writes.iter()) {
        match w {
            Write::Zero { offset, length } => patches.put(*offset, *length, Patch::Zeros),
            Write::Data { offset, bytes } => {
                patches.put(*offset, SECTOR as u64, Patch::Bytes(bytes.clone()))
            }
        }
    }
    // Replay grows the file to the head's last offset.
    let size = file_size.max(head.last_file_offset);
    Ok(Replay {
        overlay: Patched::new(file, size, patches),
        entries: seq.len(),
        sequences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
