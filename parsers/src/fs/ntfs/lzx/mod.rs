//! LZX as WIM files and WOF's LZX algorithm use it: a 32 KiB window, each
//! chunk compressed on its own, x86 call translation always on.
//!
//! Written from the LZX description ([MS-PATCH] 2, the CAB LZX format)
//! with WIM's differences: no translation header (the translation size is
//! fixed at 12 000 000), and a block size that is one bit (set: 32 KiB)
//! or that bit clear then 16 bits.
//!
//! The bit stream is 16-bit little-endian words read most significant
//! bit first. A chunk is blocks, each verbatim, aligned-offset or
//! uncompressed; Huffman code lengths are sent as deltas from the previous
//! block's, through a 20-symbol pretree.

/// Largest output of one chunk, and the window.
pub(crate) const WINDOW: usize = 32 * 1024;
/// Position slots of a 32 KiB window.
const SLOTS: usize = 30;
const NUM_CHARS: usize = 256;
const MAIN: usize = NUM_CHARS + 8 * SLOTS;
const LENGTHS: usize = 249;
const ALIGNED: usize = 8;
const PRETREE: usize = 20;
const MAX_CODE: usize = 16;
const MIN_MATCH: usize = 2;
/// The x86 call translation's fixed "file size".
const E8_SIZE: i64 = 12_000_000;
/// Bytes the reader may fetch past the input (look-ahead of a Huffman
/// code); reading more means the input was cut short.
const SLACK: usize = 4;

/// Why an LZX chunk does not decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LzxError(&'static str);

impl std::fmt::Display for LzxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LZX: {}", self.0)
    }
}

type Res<T> = Result<T, LzxError>;

/// Extra bits after each position slot's base: none for 0-3, then one
/// more every two slots.
fn extra_bits(slot: usize) -> u32 {
    if slot < 4 {
        0
    } else {
        (slot as u32 / 2) - 1
    }
}

/// Smallest formatted offset of each slot.
fn slot_bases() -> [u32; SLOTS + 1] {
    let mut b = [0u32; SLOTS + 1];
    for s in 0..SLOTS {
        b[s + 1] = b[s] + (1 << extra_bits(s));
    }
    b
}

/// Reads 16-bit little-endian words, most significant bit first; past the
/// end it reads zeros, counting them so a cut input is noticed.
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte to fetch (may run past `data`).
    pos: usize,
    /// Unconsumed bits, at the top.
    buf: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
        }
    }

    fn overrun(&self) -> usize {
        self.pos.saturating_sub(self.data.len())
    }

    fn ensure(&mut self, k: u32) -> Res<()> {
        while self.n < k {
            if self.overrun() > SLACK {
                return Err(LzxError("compressed data cut short"));
            }
            let lo = self.data.get(self.pos).copied().unwrap_or(0);
            let hi = self.data.get(self.pos + 1).copied().unwrap_or(0);
            let word = u64::from(u16::from_le_bytes([lo, hi]));
            self.buf |= word << (48 - self.n);
            self.n += 16;
            self.pos += 2;
        }
        Ok(())
    }

    /// Reads `k` (at most 32) bits.
    fn read(&mut self, k: u32) -> Res<u32> {
        if k == 0 {
            return Ok(0);
        }
        self.ensure(k)?;
        let v = (self.buf >> (64 - k)) as u32;
        self.buf <<= k;
        self.n -= k;
        Ok(v)
    }

    /// Skips to the next word boundary, or a whole word when already on
    /// one, as uncompressed blocks require; then the byte position is
    /// exact.
    fn align(&mut self) -> Res<()> {
        let drop = match self.n % 16 {
            0 => 16,
            r => r,
        };
        self.read(drop)?;
        // Give back whole words fetched ahead.
        self.pos -= (self.n / 8) as usize;
        self.buf = 0;
        self.n = 0;
        Ok(())
    }

    fn bytes(&mut self, len: usize) -> Res<&'a [u8]> {
        let s = self
            .data
            .get(self.pos..self.pos.saturating_add(len))
            .ok_or(LzxError("uncompressed block cut short"))?;
        self.pos += len;
        Ok(s)
    }
}

/// A canonical Huffman code, decoded a bit at a time by code length.
struct Code {
    /// Symbols per code length.
    count: [u16; MAX_CODE + 1],
    /// Symbols ordered by code length, then by value.
    sorted: Vec<u16>,
}

impl Code {
    fn new(lens: &[u8]) -> Res<Code> {
        let mut count = [0u16; MAX_CODE + 1];
        for &l in lens {
            let l = usize::from(l);
            if l > MAX_CODE {
                return Err(LzxError("code length over 16"));
            }
            count[l] += 1;
        }
        count[0] = 0;
        // More codes of some length than the shorter ones leave room for
        // is no prefix code; fewer (an incomplete code) is allowed, its
        // unused codes fail when met.
        let mut left = 1i32;
        for &c in &count[1..] {
            left = (left << 1) - i32::from(c);
            if left < 0 {
                return Err(LzxError("over-subscribed Huffman code"));
            }
        }
        let mut sorted = Vec::with_capacity(lens.len());
        for len in 1..=MAX_CODE as u8 {
            for (sym, &l) in lens.iter().enumerate() {
                if l == len {
                    sorted.push(sym as u16);
                }
            }
        }
        Ok(Code { count, sorted })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Res<usize> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX_CODE {
            code |= bits.read(1)? as i32;
            let count = i32::from(self.count[len]);
            if code - first < count {
                let at = (index + code - first) as usize;
                return self
                    .sorted
                    .get(at)
                    .map(|&s| usize::from(s))
                    .ok_or(LzxError("bad Huffman code"));
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(LzxError("unused Huffman code"))
    }
}

/// Reads code lengths for `lens` as deltas from their current values.
fn read_lens(bits: &mut Bits<'_>, lens: &mut [u8]) -> Res<()> {
    let mut pre = [0u8; PRETREE];
    for l in pre.iter_mut() {
        *l = bits.read(4)? as u8;
    }
    let pre = Code::new(&pre)?;
    let mut i = 0;
    while i < lens.len() {
        let sym = pre.decode(bits)?;
        let (run, value) = match sym {
            0..=16 => (1, (lens[i] + 17 - sym as u8) % 17),
            17 => (4 + bits.read(4)? as usize, 0),
            18 => (20 + bits.read(5)? as usize, 0),
            _ => {
                let run = 4 + bits.read(1)? as usize;
                let z = pre.decode(bits)?;
                if z > 16 {
                    return Err(LzxError("bad pretree run"));
                }
                (run, (lens[i] + 17 - z as u8) % 17)
            }
        };
        // A run longer than what is left is cut at the end.
        let end = (i + run).min(lens.len());
        lens[i..end].fill(value);
        i = end;
    }
    Ok(())
}

/// Decompresses one chunk into `out`, whose length is the chunk's
/// uncompressed size (at most 32 KiB).
pub(crate) fn decompress(src: &[u8], out: &mut [u8]) -> Result<(), LzxError> {
    if out.len() > WINDOW {
        return Err(LzxError("chunk larger than the window"));
    }
    let bases = slot_bases();
    let mut bits = Bits::new(src);
    let mut main_lens = [0u8; MAIN];
    let mut len_lens = [0u8; LENGTHS];
    let mut recent = [1usize; 3];
    let mut pos = 0usize;
    while pos < out.len() {
        let kind = bits.read(3)?;
        let size = if bits.read(1)? == 1 {
            WINDOW
        } else {
            bits.read(16)? as usize
        };
        if size == 0 {
            return Err(LzxError("empty block"));
        }
        // A block may claim more than the chunk has left; the chunk ends
        // it.
        let end = pos.saturating_add(size).min(out.len());
        match kind {
            3 => {
                bits.align()?;
                for r in recent.iter_mut() {
                    let b = bits.bytes(4)?;
                    *r = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                }
                let data = bits.bytes(end - pos)?;
                out[pos..end].copy_from_slice(data);
                pos = end;
                // Blocks restart on a word boundary.
                if size % 2 == 1 {
                    bits.pos += 1;
                }
            }
            1 | 2 => {
                let aligned = if kind == 2 {
                    let mut l = [0u8; ALIGNED];
                    for x in l.iter_mut() {
                        *x = bits.read(3)? as u8;
                    }
                    Some(Code::new(&l)?)
                } else {
                    None
                };
                read_lens(&mut bits, &mut main_lens[..NUM_CHARS])?;
                read_lens(&mut bits, &mut main_lens[NUM_CHARS..])?;
                read_lens(&mut bits, &mut len_lens)?;
                let main = Code::new(&main_lens)?;
                let lengths = Code::new(&len_lens)?;
                pos = block(
                    &mut bits,
                    out,
                    pos,
                    end,
                    &main,
                    &lengths,
                    aligned.as_ref(),
                    &bases,
                    &mut recent,
                )?;
            }
            _ => return Err(LzxError("bad block type")),
        }
    }
    if bits.overrun() > SLACK {
        return Err(LzxError("compressed data cut short"));
    }
    undo_e8(out);
    Ok(())
}

/// Decodes a verbatim or aligned-offset block's items into `out[pos..]`
/// until `end`; returns where output stopped (a match may run past `end`
/// but never past the chunk).
#[allow(clippy::too_many_arguments)]
fn block(
    bits: &mut Bits<'_>,
    out: &mut [u8],
    mut pos: usize,
    end: usize,
    main: &Code,
    lengths: &Code,
    aligned: Option<&Code>,
    bases: &[u32; SLOTS + 1],
    recent: &mut [usize; 3],
) -> Res<usize> {
    while pos < end {
        let sym = main.decode(bits)?;
        if sym < NUM_CHARS {
            out[pos] = sym as u8;
            pos += 1;
            continue;
        }
        let s = sym - NUM_CHARS;
        let (slot, header) = (s >> 3, s & 7);
        let mut len = header + MIN_MATCH;
        if header == 7 {
            len += lengths.decode(bits)?;
        }
        let offset = match slot {
            0 => recent[0],
            1 => {
                recent.swap(0, 1);
                recent[0]
            }
            2 => {
                recent.swap(0, 2);
                recent[0]
            }
            _ => {
                let extra = extra_bits(slot);
                let v = match aligned {
                    Some(a) if extra >= 3 => (bits.read(extra - 3)? << 3) | a.decode(bits)? as u32,
                    _ => bits.read(extra)?,
                };
                // Formatted offsets count from 2 (0-2 are the repeats).
                let off = (bases[slot] + v) as usize - 2;
                recent[2] = recent[1];
                recent[1] = recent[0];
                recent[0] = off;
                off
            }
        };
        if offset == 0 || offset > pos {
            return Err(LzxError("match before the chunk start"));
        }
        if len > out.len() - pos {
            return Err(LzxError("match past the chunk end"));
        }
        // Byte by byte: the source may overlap what is being written.
        for k in pos..pos + len {
            out[k] = out[k - offset];
        }
        pos += len;
    }
    Ok(pos)
}

/// Undoes the x86 call translation: after each 0xE8 byte (but in the
/// last 10), a 32-bit absolute target the compressor made of a relative
/// one becomes relative again.
fn undo_e8(out: &mut [u8]) {
    let stop = out.len().saturating_sub(10);
    let mut i = 0usize;
    while i < stop {
        if out[i] != 0xE8 {
            i += 1;
            continue;
        }
        let at = i + 1;
        let abs = i64::from(i32::from_le_bytes([
            out[at],
            out[at + 1],
            out[at + 2],
            out[at + 3],
        ]));
        let pos = i as i64;
        if abs >= -pos && abs < E8_SIZE {
            let rel = if abs >= 0 { abs - pos } else { abs + E8_SIZE };
            out[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        i += 5;
    }
}

#[cfg(test)]
pub(crate) mod encode;
#[cfg(test)]
mod tests;
