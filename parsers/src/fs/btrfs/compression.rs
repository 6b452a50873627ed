//! Compressed extents: zlib (one zlib stream), zstd (one zstd frame) and
//! LZO in btrfs's own framing: a little-endian u32 total length, then
//! segments of a u32 length and one LZO1X stream each (at most one sector
//! of output each); a segment header never straddles a sector boundary,
//! the rest of a sector too short for one is zero padding.
//!
//! Every decoder stops at the extent's `ram_bytes`; output shorter than
//! that reads as zeros after it, as in the kernel.

use std::io::Read;

use super::file_extent::Compression;
use super::lzo;
use crate::bytes::le32;
use crate::{Error, Result};

/// Largest decoded extent accepted (btrfs writes at most 128 KiB).
pub const MAX_RAM_BYTES: u64 = 1 << 20;

/// Decodes `data`, which must give `ram_bytes`; `what` names the extent.
pub fn decode(
    kind: Compression,
    data: &[u8],
    ram_bytes: u64,
    sectorsize: u32,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let corrupt = |why: String| Error::corrupt("btrfs", 0, format!("{}: {why}", what()));
    if ram_bytes > MAX_RAM_BYTES {
        return Err(corrupt(format!("compressed extent of {ram_bytes} bytes")));
    }
    let limit = ram_bytes as usize;
    let mut out = match kind {
        Compression::None => data.get(..limit).unwrap_or(data).to_vec(),
        Compression::Zlib => {
            let mut v = Vec::with_capacity(limit);
            flate2::read::ZlibDecoder::new(data)
                .take(ram_bytes)
                .read_to_end(&mut v)
                .map_err(|e| corrupt(format!("zlib: {e}")))?;
            v
        }
        Compression::Zstd => {
            let mut v = Vec::with_capacity(limit);
            zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| corrupt(format!("zstd: {e}")))?
                .single_frame()
                .take(ram_bytes)
                .read_to_end(&mut v)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            v
        }
        Compression::Lzo => lzo_segments(data, limit, sectorsize as usize).map_err(corrupt)?,
    };
    out.resize(limit, 0);
    Ok(out)
}

fn lzo_segments(data: &[u8], limit: usize, sector: usize) -> std::result::Result<Vec<u8>, String> {
    let total = le32(data, 0) as usize;
    if total < 4 || total > data.len() {
        return Err(format!("lzo: total length {total} of {} bytes", data.len()));
    }
    let mut out = Vec::with_capacity(limit);
    let mut pos = 4;
    // Each segment takes at least four bytes of input.
    while pos < total && out.len() < limit {
        let left = sector - pos % sector;
        if left < 4 {
            pos += left;
            continue;
        }
        let len = le32(data, pos) as usize;
        pos += 4;
        let seg = pos
            .checked_add(len)
            .and_then(|end| {
                data.get(pos..end.min(total).max(pos))
                    .filter(|s| s.len() == len)
            })
            .ok_or_else(|| format!("lzo: segment of {len} bytes past the extent"))?;
        let part = lzo::decompress(seg, (limit - out.len()).min(sector.max(4096)))
            .map_err(|e| format!("lzo segment at byte {pos}: {e:?}"))?;
        out.extend_from_slice(&part);
        pos += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_zlib_and_zstd_with_padding() {
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &text).unwrap();
        let mut z = z.finish().unwrap();
        z.resize(z.len().div_ceil(4096) * 4096, 0);
        let w = || "t".to_string();
        let got = decode(Compression::Zlib, &z, 12288, 4096, &w).unwrap();
        assert_eq!(&got[..10_000], &text[..]);
        assert!(got[10_000..].iter().all(|&b| b == 0));

        let mut s = zstd::bulk::compress(&text, 3).unwrap();
        s.resize(s.len().div_ceil(4096) * 4096, 0);
        assert_eq!(
            &decode(Compression::Zstd, &s, 10_000, 4096, &w).unwrap(),
            &text
        );
        assert!(decode(Compression::Zstd, &[1, 2, 3], 10, 4096, &w).is_err());
        assert!(decode(Compression::Zlib, &[1, 2, 3], MAX_RAM_BYTES + 1, 4096, &w).is_err());
    }

    #[test]
    fn lzo_framing() {
        // One segment: literal "hello" + end marker, total 4 + 4 + 9.
        let seg = [17 + 5, b'h', b'e', b'l', b'l', b'o', 0x11, 0, 0];
        let mut b = 17u32.to_le_bytes().to_vec();
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&seg);
        let w = || "t".to_string();
        assert_eq!(decode(Compression::Lzo, &b, 5, 4096, &w).unwrap(), b"hello");
        b[4] = 200;
        assert!(decode(Compression::Lzo, &b, 5, 4096, &w).is_err());
        assert!(decode(Compression::Lzo, &b[..3], 5, 4096, &w).is_err());
    }
}
