//! LZO1X decompression (the format of `lzo1x_1_compress`, which btrfs
//! uses), written from the format's description: every copy is checked
//! against the input and output bounds, so bad input is an error.
//!
//! An instruction byte `t` selects:
//! - at the start, `t > 17`: a literal run of `t - 17` bytes;
//! - `t < 16` after a match with no trailing literals: a literal run of
//!   `t + 3` bytes (`t == 0`: 18 plus a zero-byte-extended length);
//! - `t < 16` after a match with 1-3 trailing literals: a 2-byte match at
//!   distance `1 + (t >> 2) + (next << 2)`; after a literal run: a 3-byte
//!   match at distance `0x801 + (t >> 2) + (next << 2)`;
//! - `t >= 64`: a match of `(t >> 5) + 1` bytes at distance
//!   `1 + ((t >> 2) & 7) + (next << 3)`;
//! - `32 <= t < 64`: a match of `(t & 31) + 2` bytes (extended when 0),
//!   distance `1 + (le16 >> 2)`;
//! - `16 <= t < 32`: a match of `(t & 7) + 2` bytes (extended when 0),
//!   distance `((t & 8) << 11) + (le16 >> 2) + 0x4000`; distance 0x4000
//!   ends the stream.
//!
//! The low two bits of a match's last distance byte are the count of
//! literals copied after it (0-3).

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzoError {
    InputOverrun,
    OutputOverrun,
    LookBehind,
    NoEnd,
    TrailingInput,
}

struct In<'a> {
    b: &'a [u8],
    pos: usize,
}

impl In<'_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let v = *self.b.get(self.pos).ok_or(LzoError::InputOverrun)?;
        self.pos += 1;
        Ok(usize::from(v))
    }

    fn le16(&mut self) -> Result<usize, LzoError> {
        Ok(self.byte()? | (self.byte()? << 8))
    }

    /// A length extended by zero bytes (255 each) and a final non-zero
    /// byte, added to `base`.
    fn extended(&mut self, base: usize) -> Result<usize, LzoError> {
        let mut t = base;
        loop {
            let b = self.byte()?;
            if b != 0 {
                return Ok(t + b);
            }
            t += 255;
            // Bounded: each step consumes input.
            if t > self.b.len().saturating_mul(255) {
                return Err(LzoError::InputOverrun);
            }
        }
    }

    fn literals(&mut self, out: &mut Vec<u8>, n: usize, limit: usize) -> Result<(), LzoError> {
        let s = self
            .b
            .get(self.pos..self.pos.checked_add(n).ok_or(LzoError::InputOverrun)?)
            .ok_or(LzoError::InputOverrun)?;
        if out.len() + n > limit {
            return Err(LzoError::OutputOverrun);
        }
        out.extend_from_slice(s);
        self.pos += n;
        Ok(())
    }
}

fn copy_match(out: &mut Vec<u8>, dist: usize, len: usize, limit: usize) -> Result<(), LzoError> {
    if dist == 0 || dist > out.len() {
        return Err(LzoError::LookBehind);
    }
    if out.len() + len > limit {
        return Err(LzoError::OutputOverrun);
    }
    let start = out.len() - dist;
    for i in 0..len {
        let b = out[start + i];
        out.push(b);
    }
    Ok(())
}

/// Decodes `input` (one whole LZO1X stream, end marker included),
/// producing at most `limit` bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, LzoError> {
    let mut out = Vec::with_capacity(limit.min(1 << 20));
    let mut ip = In { b: input, pos: 0 };
    // Literals copied after the last instruction: 0 (none), 1-3 (a
    // match's trailing literals) or 4 (a literal run).
    let mut state;
    let first = *input.first().ok_or(LzoError::InputOverrun)?;
    if first > 17 {
        ip.pos = 1;
        let t = usize::from(first) - 17;
        ip.literals(&mut out, t, limit)?;
        state = if t < 4 { t } else { 4 };
    } else {
        state = 0;
    }
    // Each pass consumes at least one input byte.
    for _ in 0..=input.len() {
        let t = ip.byte()?;
        let (dist, len);
        if t < 16 {
            if state == 0 {
                let n = if t == 0 { ip.extended(15)? } else { t };
                ip.literals(&mut out, n + 3, limit)?;
                state = 4;
                continue;
            }
            let next = ip.byte()?;
            if state == 4 {
                dist = 1 + 0x800 + (t >> 2) + (next << 2);
                len = 3;
            } else {
                dist = 1 + (t >> 2) + (next << 2);
                len = 2;
            }
            copy_match(&mut out, dist, len, limit)?;
            state = t & 3;
        } else if t >= 64 {
            let next = ip.byte()?;
            dist = 1 + ((t >> 2) & 7) + (next << 3);
            len = (t >> 5) + 1;
            copy_match(&mut out, dist, len, limit)?;
            state = t & 3;
        } else if t >= 32 {
            let n = t & 31;
            len = if n == 0 { ip.extended(31)? } else { n } + 2;
            let d = ip.le16()?;
            copy_match(&mut out, 1 + (d >> 2), len, limit)?;
            state = d & 3;
        } else {
            let n = t & 7;
            len = if n == 0 { ip.extended(7)? } else { n } + 2;
            let d = ip.le16()?;
            let far = ((t & 8) << 11) + (d >> 2);
            if far == 0 {
                return if ip.pos == input.len() {
                    Ok(out)
                } else {
                    Err(LzoError::TrailingInput)
                };
            }
            copy_match(&mut out, far + 0x4000, len, limit)?;
            state = d & 3;
        }
        if state > 0 {
            ip.literals(&mut out, state, limit)?;
        }
    }
    Err(LzoError::NoEnd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_only_stream() {
        // A literal run of 5 then the end marker (0x11 0x00 0x00).
        let s = [17 + 5, b'h', b'e', b'l', b'l', b'o', 0x11, 0, 0];
        assert_eq!(decompress(&s, 100).unwrap(), b"hello");
        assert_eq!(decompress(&s, 3), Err(LzoError::OutputOverrun));
        assert_eq!(decompress(&s[..7], 100), Err(LzoError::InputOverrun));
        assert_eq!(decompress(&[], 100), Err(LzoError::InputOverrun));
    }

    #[test]
    fn matches_copy_overlapping() {
        // "abcd", then a 32..63 match of 8 bytes at distance 4, end.
        // len = (t & 31) + 2 = 8 -> t = 32 + 6; dist 4 -> d = 3 << 2.
        let s = [
            17 + 4,
            b'a',
            b'b',
            b'c',
            b'd',
            32 + 6,
            3 << 2,
            0,
            0x11,
            0,
            0,
        ];
        assert_eq!(decompress(&s, 100).unwrap(), b"abcdabcdabcd");
        // Distance past the start.
        let bad = [
            17 + 4,
            b'a',
            b'b',
            b'c',
            b'd',
            32 + 6,
            9 << 2,
            0,
            0x11,
            0,
            0,
        ];
        assert_eq!(decompress(&bad, 100), Err(LzoError::LookBehind));
    }
}
