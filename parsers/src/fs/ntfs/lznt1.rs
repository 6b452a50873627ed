//! LZNT1 ([MS-XCA] section 2.5), the compression of NTFS `$DATA`.
//!
//! A compressed buffer is a run of chunks, each standing for 4 KiB of
//! output. A chunk starts with a 16-bit header: bits 0-11 hold the chunk's
//! byte count after the header minus one, bit 15 says whether the chunk is
//! compressed. A compressed chunk is groups of one flag byte and eight
//! items: a literal byte (flag bit 0) or a 16-bit back-reference (bit 1)
//! whose split between displacement and length depends on how far into
//! the chunk the output is. A header of 0, or the end of the input, ends
//! the buffer.

/// Output of one chunk.
pub(crate) const CHUNK: usize = 4096;

/// Why a buffer does not decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lznt1Error {
    /// A chunk header claims more bytes than the input holds.
    ChunkPastEnd,
    /// A back-reference reaches before the start of its chunk.
    BadDisplacement,
    /// A back-reference copies past the end of its chunk.
    CopyPastChunk,
    /// An item is cut off by the end of its chunk.
    Truncated,
}

impl std::fmt::Display for Lznt1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lznt1Error::ChunkPastEnd => "LZNT1 chunk runs past the compressed data",
            Lznt1Error::BadDisplacement => "LZNT1 back-reference before its chunk",
            Lznt1Error::CopyPastChunk => "LZNT1 back-reference past its chunk",
            Lznt1Error::Truncated => "LZNT1 item cut off by its chunk's end",
        })
    }
}

/// Decompresses `src` into `out`, chunk `i` at `out[i * 4096..]`. Bytes
/// no chunk produces (short chunks, chunks missing at the end) are left as
/// they are, so callers pass a zeroed buffer: NTFS reads them as zeros.
/// Input beyond what `out` can hold is ignored.
pub(crate) fn decompress(src: &[u8], out: &mut [u8]) -> Result<(), Lznt1Error> {
    let mut at = 0usize;
    let mut base = 0usize;
    while base < out.len() {
        let Some(hdr) = src.get(at..at + 2) else {
            return Ok(());
        };
        let hdr = u16::from_le_bytes([hdr[0], hdr[1]]);
        if hdr == 0 {
            return Ok(());
        }
        let len = usize::from(hdr & 0x0fff) + 1;
        let body = src
            .get(at + 2..at + 2 + len)
            .ok_or(Lznt1Error::ChunkPastEnd)?;
        let end = (base + CHUNK).min(out.len());
        let dst = &mut out[base..end];
        if hdr & 0x8000 == 0 {
            // Stored: the bytes as they are.
            let n = body.len().min(dst.len());
            dst[..n].copy_from_slice(&body[..n]);
        } else {
            chunk(body, dst)?;
        }
        at += 2 + len;
        base += CHUNK;
    }
    Ok(())
}

/// Decompresses one compressed chunk's body into `dst` (at most 4 KiB).
fn chunk(body: &[u8], dst: &mut [u8]) -> Result<(), Lznt1Error> {
    let mut i = 0usize;
    let mut pos = 0usize;
    while i < body.len() {
        let flags = body[i];
        i += 1;
        for bit in 0..8 {
            if i >= body.len() {
                return Ok(());
            }
            if flags & (1 << bit) == 0 {
                if pos >= dst.len() {
                    return Err(Lznt1Error::CopyPastChunk);
                }
                dst[pos] = body[i];
                pos += 1;
                i += 1;
                continue;
            }
            let tok = body.get(i..i + 2).ok_or(Lznt1Error::Truncated)?;
            let tok = u16::from_le_bytes([tok[0], tok[1]]);
            i += 2;
            // The further into the chunk, the more bits the displacement
            // needs: 4 bits up to position 16, one more per doubling.
            let mut len_bits = 12u32;
            let mut p = pos.saturating_sub(1);
            while p >= 16 {
                p >>= 1;
                len_bits -= 1;
            }
            let len = usize::from(tok & ((1u16 << len_bits) - 1)) + 3;
            let disp = usize::from(tok >> len_bits) + 1;
            if disp > pos {
                return Err(Lznt1Error::BadDisplacement);
            }
            if len > dst.len() - pos {
                return Err(Lznt1Error::CopyPastChunk);
            }
            // Byte by byte: source and destination may overlap (runs).
            for k in pos..pos + len {
                dst[k] = dst[k - disp];
            }
            pos += len;
        }
    }
    Ok(())
}

/// A greedy LZNT1 compressor written from the same description, for
/// round-trip tests only.
#[cfg(test)]
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(CHUNK) {
        let mut body = Vec::new();
        let mut pos = 0usize;
        while pos < piece.len() {
            let flag_at = body.len();
            body.push(0u8);
            for bit in 0..8 {
                if pos >= piece.len() {
                    break;
                }
                let mut len_bits = 12u32;
                let mut p = pos.saturating_sub(1);
                while p >= 16 {
                    p >>= 1;
                    len_bits -= 1;
                }
                let max_len = ((1usize << len_bits) - 1 + 3).min(piece.len() - pos);
                let max_disp = (1usize << (16 - len_bits)).min(pos);
                let (mut best_len, mut best_disp) = (0, 0);
                for disp in 1..=max_disp {
                    let mut l = 0;
                    while l < max_len && piece[pos + l] == piece[pos + l - disp] {
                        l += 1;
                    }
                    if l > best_len {
                        (best_len, best_disp) = (l, disp);
                    }
                }
                if best_len >= 3 {
                    let tok = (((best_disp - 1) << len_bits) | (best_len - 3)) as u16;
                    body.extend(tok.to_le_bytes());
                    body[flag_at] |= 1 << bit;
                    pos += best_len;
                } else {
                    body.push(piece[pos]);
                    pos += 1;
                }
            }
        }
        if body.len() >= piece.len() {
            out.extend((0x3000u16 | (piece.len() as u16 - 1)).to_le_bytes());
            out.extend(piece);
        } else {
            out.extend((0xB000u16 | (body.len() as u16 - 1)).to_le_bytes());
            out.extend(body);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_chunks() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // "abc" then a reference 3 back, 6 long; at position 3 the token
        // has 4 displacement bits: (3-1) << 12 | (6-3).
        let src = [0x05, 0xB0, 0b1000, b'a', b'b', b'c', 0x03, 0x20];
        let mut out = [0u8; 16];
        decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out[..9], b"abcabcabc");
        assert!(out[9..].iter().all(|&b| b == 0));

        // A stored chunk, then a compressed one of a single run of 'x'.
        let mut src = vec![0xff, 0x3f];
        src.extend(std::iter::repeat_n(7u8, 4096));
        // At position 1 the length has 12 bits: 'x' then 4095 more.
        src.extend([0x03, 0xB0, 0b10, b'x']);
        src.extend((4095u16 - 3).to_le_bytes());
        let mut out = vec![0u8; 8192];
        decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
        assert!(out[..4096].iter().all(|&b| b == 7));
        assert!(out[4096..].iter().all(|&b| b == b'x'));
        Ok(())
    }

    #[test]
    fn split_moves_with_position() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // 20 literals, then at position 20 (5 displacement bits, 11 length
        // bits) a reference 17 back, 5 long.
        let lit: Vec<u8> = (b'A'..b'A' + 20).collect();
        let mut body = Vec::new();
        for (g, group) in lit.chunks(8).enumerate() {
            let last = g == 2;
            body.push(if last { 1 << group.len() } else { 0 });
            body.extend(group);
            if last {
                body.extend((((17u16 - 1) << 11) | (5 - 3)).to_le_bytes());
            }
        }
        let mut src = (0xB000u16 | (body.len() as u16 - 1)).to_le_bytes().to_vec();
        src.extend(&body);
        let mut out = [0u8; 4096];
        decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out[..20], &lit[..]);
        assert_eq!(&out[20..25], &lit[3..8]);
        Ok(())
    }

    #[test]
    fn round_trips() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut data = Vec::new();
        for i in 0..3000u32 {
            data.extend(format!("line {i} of the test text, {}\n", i % 17).bytes());
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        data.extend(std::iter::repeat_n(0u8, 10_000));
        let packed = compress(&data);
        assert!(packed.len() < data.len());
        let mut out = vec![0u8; data.len().div_ceil(CHUNK) * CHUNK];
        decompress(&packed, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out[..data.len()], &data[..]);
        Ok(())
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut data = Vec::new();
        for i in 0..2000u32 {
            data.extend(format!("{} ", i % 97).bytes());
        }
        let packed = compress(&data);
        let mut x = 0x9E37_79B9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut out = vec![0u8; 16384];
        for round in 0..3000 {
            let mut buf = packed.clone();
            if round % 3 == 0 {
                buf = (0..(next() % 9000) as usize)
                    .map(|_| next() as u8)
                    .collect();
            } else {
                for _ in 0..1 + next() % 6 {
                    let at = next() as usize % buf.len();
                    buf[at] ^= 1 << (next() % 8);
                }
                buf.truncate(buf.len() - next() as usize % 50);
            }
            // Output longer than the buffer is never written: the slice
            // bounds that, and a short slice must work too.
            let n = (next() as usize) % out.len();
            let _ = decompress(&buf, &mut out[..n]);
        }
    }
}
