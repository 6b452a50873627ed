//! Windows Overlay Filter (WOF) system compression, as `compact /exe`
//! writes it.
//!
//! A file so compressed carries a reparse point of tag
//! [`TAG_WOF`] saying which provider and algorithm hold its data, an
//! unnamed `$DATA` that is all sparse but has the file's real size, and a
//! named stream `WofCompressedData`: a table of chunk offsets, then the
//! chunks. Every chunk but the last stands for `chunk_size` bytes; the
//! table has one entry per chunk after the first (4 bytes each, 8 when the
//! file is larger than 4 GiB), each the chunk's start counted from the end
//! of the table. A chunk as long as its output is stored uncompressed.

use crate::cache::ChunkCache;
use crate::{Error, ReadAt, Result};

use super::data::Stream;

/// Reparse tag of WOF-backed files.
pub(crate) const TAG_WOF: u32 = 0x8000_0017;
/// Name of the stream that holds the compressed chunks.
pub(crate) const STREAM: &str = "WofCompressedData";

/// Providers: data in a WIM file (WIMBoot), or in the file itself.
const PROVIDER_WIM: u32 = 1;
const PROVIDER_FILE: u32 = 2;

/// The compression of a WOF file-provider file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Xpress4k,
    Lzx,
    Xpress8k,
    Xpress16k,
}

impl Algorithm {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Algorithm::Xpress4k,
            1 => Algorithm::Lzx,
            2 => Algorithm::Xpress8k,
            3 => Algorithm::Xpress16k,
            _ => return None,
        })
    }

    /// Uncompressed bytes per chunk.
    pub(crate) fn chunk_size(self) -> u64 {
        match self {
            Algorithm::Xpress4k => 4096,
            Algorithm::Xpress8k => 8192,
            Algorithm::Xpress16k => 16384,
            Algorithm::Lzx => 32768,
        }
    }
}

/// The algorithm a WOF reparse buffer names, or why the file cannot be
/// read from this volume alone.
pub(crate) fn parse_reparse(data: &[u8]) -> std::result::Result<Algorithm, String> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
    };
    // After the 8-byte reparse header: WOF version and provider, then the
    // provider's own version and (for the file provider) the algorithm.
    let provider = u32_at(12).ok_or("truncated WOF reparse point")?;
    match provider {
        PROVIDER_FILE => {}
        PROVIDER_WIM => {
            return Err("WOF WIMBoot file: its data is in a WIM file outside this volume".into())
        }
        p => return Err(format!("WOF provider {p} unknown")),
    }
    let id = u32_at(20).ok_or("truncated WOF reparse point")?;
    Algorithm::from_id(id).ok_or_else(|| format!("WOF compression algorithm {id} unknown"))
}

/// A WOF-compressed file's data, decompressed a chunk at a time.
#[derive(Debug, Clone)]
pub(crate) struct Wof {
    /// The `WofCompressedData` stream.
    raw: Stream,
    size: u64,
    algorithm: Algorithm,
    /// Key of this file's chunks in the chunk cache.
    owner: u64,
}

impl Wof {
    pub(crate) fn new(raw: Stream, size: u64, algorithm: Algorithm) -> Self {
        Wof {
            raw,
            size,
            algorithm,
            owner: ChunkCache::owner(),
        }
    }

    /// The `WofCompressedData` stream.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Stream {
        &self.raw
    }

    /// Uncompressed length.
    pub(crate) fn len(&self) -> u64 {
        self.size
    }

    pub(crate) fn read(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let total = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = self.algorithm.chunk_size();
        let mut done = 0usize;
        while done < total {
            let at = offset + done as u64;
            let index = at / chunk;
            let data = ChunkCache::global()
                .get_or_load(self.owner, index, || self.load_chunk(src, index))?;
            // Chunks are at most 32 KiB.
            let in_chunk = (at % chunk) as usize;
            let n = (total - done).min(data.len().saturating_sub(in_chunk));
            if n == 0 {
                return Err(Error::corrupt(
                    "ntfs",
                    at,
                    "WOF chunk shorter than expected",
                ));
            }
            buf[done..done + n].copy_from_slice(&data[in_chunk..in_chunk + n]);
            done += n;
        }
        Ok(total)
    }

    /// Chunk `index`, decompressed.
    fn load_chunk(&self, src: &dyn ReadAt, index: u64) -> Result<Vec<u8>> {
        let chunk = self.algorithm.chunk_size();
        let chunks = self.size.div_ceil(chunk);
        let entry: u64 = if self.size > u64::from(u32::MAX) {
            8
        } else {
            4
        };
        let table = (chunks - 1)
            .checked_mul(entry)
            .ok_or_else(|| Error::corrupt("ntfs", 0, "WOF chunk table too large"))?;
        let raw_len = self.raw.len();
        let read_entry = |i: u64| -> Result<u64> {
            let mut b = [0u8; 8];
            let n = entry as usize;
            self.read_raw(src, i * entry, &mut b[..n])?;
            Ok(u64::from_le_bytes(b))
        };
        let start = if index == 0 {
            0
        } else {
            read_entry(index - 1)?
        };
        let end = if index + 1 == chunks {
            raw_len.saturating_sub(table)
        } else {
            read_entry(index)?
        };
        let out_len = (self.size - index * chunk).min(chunk) as usize;
        // Compressed data never needs more room than the chunk itself.
        if end < start || end - start > chunk || table.saturating_add(end) > raw_len {
            return Err(Error::corrupt(
                "ntfs",
                0,
                format!("WOF chunk {index}: bad extent {start}..{end}"),
            ));
        }
        let mut packed = vec![0u8; (end - start) as usize];
        self.read_raw(src, table + start, &mut packed)?;
        if packed.len() == out_len {
            return Ok(packed);
        }
        let fail = |what: String| Error::corrupt("ntfs", 0, format!("WOF chunk {index}: {what}"));
        let mut out = vec![0u8; out_len];
        match self.algorithm {
            Algorithm::Lzx => {
                super::lzx::decompress(&packed, &mut out).map_err(|e| fail(e.to_string()))?
            }
            _ => super::xpress::decompress(&packed, &mut out).map_err(|e| fail(e.to_string()))?,
        }
        Ok(out)
    }

    fn read_raw(&self, src: &dyn ReadAt, at: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.raw.read(src, at, buf)?;
        if n < buf.len() {
            return Err(Error::corrupt(
                "ntfs",
                at,
                "WofCompressedData shorter than its chunk table says",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::readat::MemSource;

    /// A WOF stream: the chunk table then the chunks.
    pub(crate) fn stream(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut table = Vec::new();
        let mut body: Vec<u8> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                table.extend((body.len() as u32).to_le_bytes());
            }
            body.extend(c);
        }
        table.extend(body);
        table
    }

    fn reparse(provider: u32, algorithm: u32) -> Vec<u8> {
        let mut b = TAG_WOF.to_le_bytes().to_vec();
        b.extend(16u16.to_le_bytes());
        b.extend(0u16.to_le_bytes());
        for v in [1, provider, 1, algorithm] {
            b.extend(v.to_le_bytes());
        }
        b
    }

    #[test]
    fn reparse_buffers() {
        assert_eq!(parse_reparse(&reparse(2, 0)), Ok(Algorithm::Xpress4k));
        assert_eq!(parse_reparse(&reparse(2, 1)), Ok(Algorithm::Lzx));
        assert_eq!(parse_reparse(&reparse(2, 3)), Ok(Algorithm::Xpress16k));
        assert!(parse_reparse(&reparse(1, 0)).unwrap_err().contains("WIM"));
        assert!(parse_reparse(&reparse(2, 9)).unwrap_err().contains('9'));
        assert!(parse_reparse(&reparse(2, 0)[..20]).is_err());
    }

    /// A real XPRESS Huffman stream made by Windows (see testdata/README.md)
    /// as the one chunk of an XPRESS8K file, after a stored chunk.
    #[test]
    fn xpress_chunks_from_windows() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let packed = include_bytes!("testdata/am_delta.xhuff").to_vec();
        let plain = include_bytes!("testdata/am_delta.expected");
        assert_eq!(plain.len(), 6948);
        let one = stream(std::slice::from_ref(&packed));
        let src = MemSource(Vec::new());
        let wof = Wof::new(Stream::Resident(one), 6948, Algorithm::Xpress8k);
        let mut out = vec![0u8; 10_000];
        assert_eq!(wof.read(&src, 0, &mut out)?, 6948);
        assert_eq!(&out[..6948], plain);

        // A stored 8 KiB chunk first, then the Windows chunk.
        let stored: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let two = stream(&[stored.clone(), packed]);
        let wof = Wof::new(Stream::Resident(two), 8192 + 6948, Algorithm::Xpress8k);
        let mut out = vec![0u8; 8192 + 6948];
        assert_eq!(wof.read(&src, 0, &mut out)?, out.len());
        assert_eq!(&out[..8192], &stored[..]);
        assert_eq!(&out[8192..], plain);
        // Odd reads across the chunk boundary.
        let mut b = [0u8; 10];
        assert_eq!(wof.read(&src, 8187, &mut b)?, 10);
        assert_eq!(&b[..5], &stored[8187..]);
        assert_eq!(&b[5..], &plain[..5]);
        Ok(())
    }

    /// An XPRESS chunk of 16 KiB of zeros, made by hand: a literal 0
    /// (code 0), then symbol 271 (code 1: offset 1, long length) whose
    /// length bytes 255, 16380 give 16383.
    fn zeros_16k() -> Vec<u8> {
        let mut z = vec![0u8; 256];
        z[0] = 0x01;
        z[271 / 2] = 0x10;
        z.extend([0x00, 0x40, 0x00, 0x00, 255]);
        z.extend(16380u16.to_le_bytes());
        z
    }

    /// Past 4 GiB the chunk table has 8-byte entries: a 4 GiB + 32 KiB
    /// XPRESS16K file whose chunks all alias three stored buffers.
    #[test]
    fn wide_chunk_table_past_4_gib() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use super::super::data::Run;
        let chunk = 16384u64;
        let size = (4u64 << 30) + 2 * chunk + 5;
        let n = size.div_ceil(chunk);
        let table_len = (n - 1) * 8;
        let z = zeros_16k();
        let pattern: Vec<u8> = (0..chunk as u32).map(|i| (i % 253) as u8).collect();
        // Disk: the table, then one copy of each chunk kind.
        let mut disk = Vec::with_capacity(table_len as usize + z.len() + pattern.len() + 5);
        let mut runs = vec![Run {
            start: 0,
            len: table_len,
            pos: Some(0),
        }];
        let (z_at, p_at) = (table_len, table_len + z.len() as u64);
        let h_at = p_at + chunk;
        let mut off = 0u64;
        for i in 0..n {
            if i > 0 {
                disk.extend(off.to_le_bytes());
            }
            // The chunk starting at 4 GiB is stored, the last is "hello".
            let (pos, len) = match i {
                _ if i == n - 1 => (h_at, 5),
                _ if i * chunk == 4 << 30 => (p_at, chunk),
                _ => (z_at, z.len() as u64),
            };
            runs.push(Run {
                start: table_len + off,
                len,
                pos: Some(pos),
            });
            off += len;
        }
        disk.extend(&z);
        disk.extend(&pattern);
        disk.extend(b"hello");
        let raw = Stream::NonResident {
            runs,
            size: table_len + off,
            init: table_len + off,
        };
        let wof = Wof::new(raw, size, Algorithm::Xpress16k);
        let src = MemSource(disk);
        let mut buf = vec![0xffu8; 10];
        assert_eq!(wof.read(&src, 0, &mut buf)?, 10);
        assert_eq!(buf, [0; 10]);
        assert_eq!(wof.read(&src, (4 << 30) - 3, &mut buf)?, 10);
        assert_eq!(&buf[..3], &[0; 3]);
        assert_eq!(&buf[3..], &pattern[..7]);
        assert_eq!(wof.read(&src, size - 5, &mut buf)?, 5);
        assert_eq!(&buf[..5], b"hello");
        Ok(())
    }

    #[test]
    fn hostile_streams_fail_cleanly() {
        let packed = include_bytes!("testdata/am_delta.xhuff").to_vec();
        let stored = vec![1u8; 8192];
        let good = stream(&[stored, packed]);
        let src = MemSource(Vec::new());
        let mut x = 0x2545_F491u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut out = vec![0u8; 20_000];
        for round in 0..2000 {
            let mut s = good.clone();
            if round % 4 == 0 {
                // Table entries are the likeliest to be hostile.
                let at = next() as usize % 4;
                s[at] = next() as u8;
            } else {
                for _ in 0..1 + next() % 8 {
                    let at = next() as usize % s.len();
                    s[at] ^= 1 << (next() % 8);
                }
            }
            if round % 7 == 0 {
                s.truncate(next() as usize % s.len());
            }
            let size = 8192 + u64::from(next() % 10_000);
            let wof = Wof::new(Stream::Resident(s), size, Algorithm::Xpress8k);
            let _ = wof.read(&src, 0, &mut out);
        }
    }
}
