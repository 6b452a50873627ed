//! XPRESS Huffman ([MS-XCA] 2.2.4, "LZ77+Huffman"), the codec of WOF's
//! XPRESS4K/8K/16K chunks.
//!
//! Each block stands for 64 KiB of output: 256 bytes of code lengths
//! (512 symbols, 4 bits each, the even symbol in the low nibble), then a
//! bit stream of 16-bit little-endian words read most significant bit
//! first. Long match lengths are extra bytes taken from the input
//! position, which runs ahead of the bits not yet used.
//!
//! Decoding runs until the output is full: streams need not end with the
//! end-of-data symbol or padding (wimlib's do not), so the input running
//! dry only matters if bits past its end would be needed.

/// Output of one block.
const BLOCK: usize = 64 * 1024;
const TABLE: usize = 256;
const SYMBOLS: usize = 512;
const MAX_CODE: usize = 15;
/// Bytes the reader may fetch past the input while bits still wait in
/// its window; needing more means the input was cut short.
const SLACK: usize = 4;

/// Why an XPRESS stream does not decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct XpressError(&'static str);

impl std::fmt::Display for XpressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XPRESS: {}", self.0)
    }
}

type Res<T> = Result<T, XpressError>;

/// The bit window: between 16 and 32 valid bits at the top of `bits`
/// after every step, refilled a word at a time as [MS-XCA] does, so the
/// byte position of extra length bytes is where the compressor put them.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    bits: u32,
    valid: i32,
}

impl<'a> Reader<'a> {
    fn word(&mut self) -> Res<u32> {
        if self.pos.saturating_sub(self.data.len()) > SLACK {
            return Err(XpressError("compressed data cut short"));
        }
        let lo = self.data.get(self.pos).copied().unwrap_or(0);
        let hi = self.data.get(self.pos + 1).copied().unwrap_or(0);
        self.pos += 2;
        Ok(u32::from(u16::from_le_bytes([lo, hi])))
    }

    fn start(data: &'a [u8], pos: usize) -> Res<Self> {
        let mut r = Reader {
            data,
            pos,
            bits: 0,
            valid: 32,
        };
        let hi = r.word()?;
        let lo = r.word()?;
        r.bits = (hi << 16) | lo;
        Ok(r)
    }

    /// The next `k` (at most 15) bits, without using them.
    fn peek(&self, k: u32) -> u32 {
        if k == 0 {
            0
        } else {
            self.bits >> (32 - k)
        }
    }

    fn consume(&mut self, k: u32) -> Res<()> {
        self.bits = self.bits.checked_shl(k).unwrap_or(0);
        self.valid -= k as i32;
        if self.valid < 16 {
            let w = self.word()?;
            self.bits |= w << (16 - self.valid);
            self.valid += 16;
        }
        Ok(())
    }

    fn byte(&mut self) -> Res<u8> {
        let b = self
            .data
            .get(self.pos)
            .copied()
            .ok_or(XpressError("match length past the input"))?;
        self.pos += 1;
        Ok(b)
    }
}

/// A canonical Huffman code over 512 symbols, at most 15 bits.
struct Code {
    count: [u16; MAX_CODE + 1],
    sorted: Vec<u16>,
}

impl Code {
    fn new(table: &[u8]) -> Res<Code> {
        let mut lens = [0u8; SYMBOLS];
        for (i, &b) in table.iter().enumerate().take(TABLE) {
            lens[2 * i] = b & 0x0f;
            lens[2 * i + 1] = b >> 4;
        }
        let mut count = [0u16; MAX_CODE + 1];
        for &l in &lens {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let mut left = 1i32;
        for &c in &count[1..] {
            left = (left << 1) - i32::from(c);
            if left < 0 {
                return Err(XpressError("over-subscribed Huffman code"));
            }
        }
        let mut sorted = Vec::with_capacity(SYMBOLS);
        for len in 1..=MAX_CODE as u8 {
            for (s, &l) in lens.iter().enumerate() {
                if l == len {
                    sorted.push(s as u16);
                }
            }
        }
        Ok(Code { count, sorted })
    }

    fn decode(&self, r: &mut Reader<'_>) -> Res<usize> {
        let window = r.peek(MAX_CODE as u32);
        let (mut first, mut index) = (0u32, 0u32);
        for len in 1..=MAX_CODE {
            let code = window >> (MAX_CODE - len);
            let count = u32::from(self.count[len]);
            if code.wrapping_sub(first) < count {
                let sym = self
                    .sorted
                    .get((index + code - first) as usize)
                    .copied()
                    .ok_or(XpressError("bad Huffman code"))?;
                r.consume(len as u32)?;
                return Ok(usize::from(sym));
            }
            index += count;
            first = (first + count) << 1;
        }
        Err(XpressError("unused Huffman code"))
    }
}

/// Decompresses `src` into all of `out`.
pub(crate) fn decompress(src: &[u8], out: &mut [u8]) -> Result<(), XpressError> {
    let mut pos = 0usize;
    let mut at = 0usize;
    while pos < out.len() {
        let table = src
            .get(at..at + TABLE)
            .ok_or(XpressError("Huffman table cut short"))?;
        let code = Code::new(table)?;
        let mut r = Reader::start(src, at + TABLE)?;
        let end = (pos + BLOCK).min(out.len());
        while pos < end {
            let sym = code.decode(&mut r)?;
            if sym < 256 {
                out[pos] = sym as u8;
                pos += 1;
                continue;
            }
            let sym = sym - 256;
            let mut len = sym & 15;
            let offset_bits = (sym >> 4) as u32;
            if len == 15 {
                len = usize::from(r.byte()?);
                if len == 255 {
                    let lo = r.byte()?;
                    let hi = r.byte()?;
                    len = usize::from(u16::from_le_bytes([lo, hi]));
                    if len == 0 {
                        let mut b = [0u8; 4];
                        for x in b.iter_mut() {
                            *x = r.byte()?;
                        }
                        len = u32::from_le_bytes(b) as usize;
                    }
                    len = len
                        .checked_sub(15)
                        .ok_or(XpressError("bad long match length"))?;
                }
                len += 15;
            }
            len += 3;
            let offset = (1usize << offset_bits) + r.peek(offset_bits) as usize;
            r.consume(offset_bits)?;
            if offset > pos {
                return Err(XpressError("match before the output start"));
            }
            if len > out.len() - pos {
                return Err(XpressError("match past the output end"));
            }
            // Byte by byte: the source may overlap what is being written.
            for k in pos..pos + len {
                out[k] = out[k - offset];
            }
            pos += len;
        }
        // The next block's table starts at the input position; bits
        // left in the window are dropped.
        at = r.pos;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream compressed by Windows, and its plaintext (see
    /// testdata/README.md).
    #[test]
    fn windows_stream() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let packed = include_bytes!("testdata/am_delta.xhuff");
        let plain = include_bytes!("testdata/am_delta.expected");
        let mut out = vec![0u8; plain.len()];
        decompress(packed, &mut out).map_err(|e| format!("{e:?}"))?;
        assert!(out == plain[..]);
        // A shorter output is a prefix.
        let mut out = vec![0u8; 100];
        decompress(packed, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out[..], &plain[..100]);
        Ok(())
    }

    #[test]
    fn hand_made_stream() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // Symbols 'a' (97) and 256+16*1+0 (a match, 1 offset bit, length
        // 3) with 1-bit codes: 'a' = 0, match = 1.
        let mut table = [0u8; TABLE];
        table[97 / 2] = 1 << 4; // odd symbol: high nibble
        table[272 / 2] = 1; // even symbol: low nibble
                            // Bits 0 0 1 0: 'a', 'a', then the match with offset bit 0
                            // (offset 2 + 0), 3 bytes: "aaaaa".
        let bits: u32 = 0b0010 << 28;
        let mut src = table.to_vec();
        src.extend(((bits >> 16) as u16).to_le_bytes());
        src.extend((bits as u16).to_le_bytes());
        let mut out = [0u8; 5];
        decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out, b"aaaaa");
        // Asking for more than the stream holds reads zero bits ('a'
        // codes) only within the slack, then fails.
        let mut out = [0u8; 200];
        assert!(decompress(&src, &mut out).is_err());
        Ok(())
    }

    #[test]
    fn hostile_input_never_panics() {
        let packed = include_bytes!("testdata/am_delta.xhuff");
        let mut x = 0x1357_9BDFu32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut out = vec![0u8; 1 << 17];
        for round in 0..2000 {
            let buf: Vec<u8> = if round % 4 == 0 {
                (0..next() % 3000).map(|_| next() as u8).collect()
            } else {
                let mut b = packed.to_vec();
                for _ in 0..1 + next() % 6 {
                    let at = next() as usize % b.len();
                    b[at] ^= 1 << (next() % 8);
                }
                if round % 3 == 0 {
                    b.truncate(next() as usize % b.len());
                }
                b
            };
            let n = next() as usize % out.len();
            let _ = decompress(&buf, &mut out[..n]);
        }
    }
}
