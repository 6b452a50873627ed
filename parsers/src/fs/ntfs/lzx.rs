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

/// An LZX compressor written from the same description, for tests only:
/// greedy matching, fixed complete codes, and every block type.
#[cfg(test)]
pub(crate) mod encode {
    use super::*;

    struct Writer {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl Writer {
        fn put(&mut self, k: u32, v: u32) {
            for i in (0..k).rev() {
                self.acc = (self.acc << 1) | ((v >> i) & 1);
                self.n += 1;
                if self.n == 16 {
                    self.out.extend((self.acc as u16).to_le_bytes());
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }
        fn flush(&mut self) {
            if self.n > 0 {
                self.put(16 - self.n, 0);
            }
        }
    }

    /// Canonical codes for `lens`, as the decoder assigns them.
    fn codes(lens: &[u8]) -> Vec<u32> {
        let mut codes = vec![0u32; lens.len()];
        let mut code = 0u32;
        for len in 1..=MAX_CODE as u8 {
            for (s, &l) in lens.iter().enumerate() {
                if l == len {
                    codes[s] = code;
                    code += 1;
                }
            }
            code <<= 1;
        }
        codes
    }

    /// Complete code lengths for `n` symbols of two lengths `short`/+1.
    fn complete(n: usize, short: u8) -> Vec<u8> {
        // a * 2^-short + (n - a) * 2^-(short+1) = 1.
        let a = (1usize << (short + 1)) - n;
        (0..n)
            .map(|i| if i < a { short } else { short + 1 })
            .collect()
    }

    fn put_sym(w: &mut Writer, lens: &[u8], codes: &[u32], s: usize) {
        assert!(lens[s] > 0, "symbol {s} has no code");
        w.put(u32::from(lens[s]), codes[s]);
    }

    /// Sends `lens` as deltas from `prev` through a pretree; zero runs
    /// as symbols 17/18, other runs of 4-5 as 19.
    fn put_lens(w: &mut Writer, prev: &[u8], lens: &[u8]) {
        let pre = complete(PRETREE, 4);
        let pc = codes(&pre);
        for &l in &pre {
            w.put(4, u32::from(l));
        }
        let delta = |i: usize| ((prev[i] + 17 - lens[i]) % 17) as usize;
        let mut i = 0;
        while i < lens.len() {
            let same = (i..lens.len())
                .take_while(|&j| lens[j] == lens[i] && prev[j] == prev[i])
                .count();
            if lens[i] == 0 && same >= 20 {
                let run = same.min(51);
                put_sym(w, &pre, &pc, 18);
                w.put(5, (run - 20) as u32);
                i += run;
            } else if lens[i] == 0 && same >= 4 {
                let run = same.min(19);
                put_sym(w, &pre, &pc, 17);
                w.put(4, (run - 4) as u32);
                i += run;
            } else if same >= 4 {
                let run = same.min(5);
                put_sym(w, &pre, &pc, 19);
                w.put(1, (run - 4) as u32);
                put_sym(w, &pre, &pc, delta(i));
                i += run;
            } else {
                put_sym(w, &pre, &pc, delta(i));
                i += 1;
            }
        }
    }

    /// One item: a literal or a (length, offset) match.
    enum Item {
        Lit(u8),
        Match(usize, usize),
    }

    fn parse(data: &[u8], start: usize, end: usize, max_len: usize) -> Vec<Item> {
        let mut items = Vec::new();
        let mut pos = start;
        while pos < end {
            let mut best = (0usize, 0usize);
            let lo = pos.saturating_sub(WINDOW - 3);
            // Few candidates: recent positions only, enough for tests.
            for cand in (lo..pos).rev().take(300) {
                let mut l = 0;
                while pos + l < end && l < max_len && data[cand + l] == data[pos + l] {
                    l += 1;
                }
                if l > best.0 {
                    best = (l, pos - cand);
                }
            }
            if best.0 >= 3 {
                items.push(Item::Match(best.0, best.1));
                pos += best.0;
            } else {
                items.push(Item::Lit(data[pos]));
                pos += 1;
            }
        }
        items
    }

    /// A block to write: kind (1 verbatim, 2 aligned, 3 uncompressed) and
    /// length; `max_len` caps match lengths (9 or less leaves the length
    /// tree empty).
    pub(crate) struct Block {
        pub kind: u32,
        pub len: usize,
        pub max_len: usize,
    }

    /// Does the x86 call translation the decoder undoes.
    fn do_e8(data: &mut [u8]) {
        let stop = data.len().saturating_sub(10);
        let mut i = 0;
        while i < stop {
            if data[i] != 0xE8 {
                i += 1;
                continue;
            }
            let r = i64::from(i32::from_le_bytes([
                data[i + 1],
                data[i + 2],
                data[i + 3],
                data[i + 4],
            ]));
            let p = i as i64;
            if r >= -p && r < E8_SIZE {
                let abs = if r < E8_SIZE - p { r + p } else { r - E8_SIZE };
                data[i + 1..i + 5].copy_from_slice(&(abs as i32).to_le_bytes());
            }
            i += 5;
        }
    }

    /// Compresses one chunk (at most 32 KiB) as `blocks`.
    pub(crate) fn compress(plain: &[u8], blocks: &[Block]) -> Vec<u8> {
        let mut data = plain.to_vec();
        do_e8(&mut data);
        let bases = slot_bases();
        let mut w = Writer {
            out: Vec::new(),
            acc: 0,
            n: 0,
        };
        let mut prev_main = vec![0u8; MAIN];
        let mut prev_len = vec![0u8; LENGTHS];
        let mut recent = [1usize; 3];
        let mut pos = 0;
        for b in blocks {
            let end = pos + b.len;
            w.put(3, b.kind);
            if b.len == WINDOW {
                w.put(1, 1);
            } else {
                w.put(1, 0);
                w.put(16, b.len as u32);
            }
            if b.kind == 3 {
                if w.n == 0 {
                    w.put(16, 0);
                }
                w.flush();
                for r in recent {
                    w.out.extend((r as u32).to_le_bytes());
                }
                w.out.extend(&data[pos..end]);
                if b.len % 2 == 1 {
                    w.out.push(0);
                }
                pos = end;
                continue;
            }
            let aligned = complete(ALIGNED, 3);
            if b.kind == 2 {
                for &l in &aligned {
                    w.put(3, u32::from(l));
                }
            }
            let main = complete(MAIN, 8);
            let lens = if b.max_len > 8 {
                complete(LENGTHS, 7)
            } else {
                vec![0u8; LENGTHS]
            };
            put_lens(&mut w, &prev_main[..NUM_CHARS], &main[..NUM_CHARS]);
            put_lens(&mut w, &prev_main[NUM_CHARS..], &main[NUM_CHARS..]);
            put_lens(&mut w, &prev_len, &lens);
            prev_main.copy_from_slice(&main);
            prev_len.copy_from_slice(&lens);
            let (mc, lc, ac) = (codes(&main), codes(&lens), codes(&aligned));
            for item in parse(&data, pos, end, b.max_len) {
                match item {
                    Item::Lit(c) => put_sym(&mut w, &main, &mc, usize::from(c)),
                    Item::Match(len, off) => {
                        let (slot, extra) = if off == recent[0] {
                            (0, None)
                        } else if off == recent[1] {
                            recent.swap(0, 1);
                            (1, None)
                        } else if off == recent[2] {
                            recent.swap(0, 2);
                            (2, None)
                        } else {
                            let f = (off + 2) as u32;
                            // bases[3] is 3 and a real offset is >= 1 (f >= 3): the search ends at 3 at worst.
                            let slot = (3..SLOTS).rev().find(|&s| bases[s] <= f).unwrap_or(3);
                            recent = [off, recent[0], recent[1]];
                            (slot, Some(f - bases[slot]))
                        };
                        let header = (len - MIN_MATCH).min(7);
                        put_sym(&mut w, &main, &mc, NUM_CHARS + slot * 8 + header);
                        if header == 7 {
                            put_sym(&mut w, &lens, &lc, len - MIN_MATCH - 7);
                        }
                        if let Some(v) = extra {
                            let eb = extra_bits(slot);
                            if b.kind == 2 && eb >= 3 {
                                w.put(eb - 3, v >> 3);
                                put_sym(&mut w, &aligned, &ac, (v & 7) as usize);
                            } else {
                                w.put(eb, v);
                            }
                        }
                    }
                }
            }
            pos = end;
        }
        assert_eq!(pos, data.len());
        w.flush();
        w.out
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{compress, Block};
    use super::*;

    fn sample(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 5 {
                // x86-like calls, to exercise the translation.
                0 => out.extend([0xE8, x as u8, (x >> 8) as u8, 0, 0]),
                1 => out.extend(b"the quick brown fox "),
                2 => out.extend((x as u16).to_le_bytes()),
                3 => out.extend(std::iter::repeat_n(b'-', (x % 300) as usize)),
                _ => out.extend(format!("{} ", x % 1000).bytes()),
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn hand_made_uncompressed_block() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // Type 3, size bit clear, size 5: 3+1+16 bits, then 12 bits of
        // padding to the word boundary; R0-R2; 5 bytes and a pad byte.
        let mut src = Vec::new();
        let head: u32 = (3 << 17) | 5;
        let bits = head << 12; // 20 bits used, 12 of padding
        src.extend(((bits >> 16) as u16).to_le_bytes());
        src.extend((bits as u16).to_le_bytes());
        for r in [1u32, 1, 1] {
            src.extend(r.to_le_bytes());
        }
        src.extend(b"hello\0");
        let mut out = [0u8; 5];
        decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&out, b"hello");
        Ok(())
    }

    #[test]
    fn round_trips_every_block_kind() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let plain = sample(WINDOW, 7);
        let blocks = [
            Block {
                kind: 1,
                len: 10_000,
                max_len: 257,
            },
            Block {
                kind: 2,
                len: 12_001,
                max_len: 257,
            },
            Block {
                kind: 3,
                len: 3_001,
                max_len: 0,
            },
            Block {
                kind: 1,
                len: WINDOW - 25_002,
                max_len: 8,
            },
        ];
        let packed = compress(&plain, &blocks);
        assert!(packed.len() < plain.len() / 2, "{}", packed.len());
        let mut out = vec![0u8; WINDOW];
        decompress(&packed, &mut out).map_err(|e| format!("{e:?}"))?;
        assert!(out == plain, "round trip differs");

        // One full-size block (the size bit set), and a short last chunk.
        for (n, kind) in [(WINDOW, 2), (5000, 1), (11, 1), (3, 3)] {
            let plain = sample(n, n as u32);
            let packed = compress(
                &plain,
                &[Block {
                    kind,
                    len: n,
                    max_len: 257,
                }],
            );
            let mut out = vec![0u8; n];
            decompress(&packed, &mut out).map_err(|e| format!("{e:?}"))?;
            assert!(out == plain, "{n} bytes, block kind {kind}");
        }
        Ok(())
    }

    #[test]
    fn e8_translation_only_where_due() {
        // A call at position 100 to absolute 0x150 becomes 0x150-100; one
        // in the last 10 bytes stays.
        let mut data = vec![0u8; 200];
        data[100] = 0xE8;
        data[101..105].copy_from_slice(&0x150i32.to_le_bytes());
        data[195] = 0xE8;
        data[196..200].copy_from_slice(&7i32.to_le_bytes());
        undo_e8(&mut data);
        assert_eq!(&data[101..105], &(0x150 - 100i32).to_le_bytes());
        assert_eq!(&data[196..200], &7i32.to_le_bytes());
        // Negative absolute targets wrap by the translation size.
        let mut data = vec![0u8; 50];
        data[20] = 0xE8;
        data[21..25].copy_from_slice(&(-5i32).to_le_bytes());
        undo_e8(&mut data);
        assert_eq!(&data[21..25], &(12_000_000 - 5i32).to_le_bytes());
    }

    #[test]
    fn hostile_input_never_panics() {
        let plain = sample(20_000, 3);
        let packed = compress(
            &plain,
            &[
                Block {
                    kind: 2,
                    len: 15_000,
                    max_len: 257,
                },
                Block {
                    kind: 3,
                    len: 5_000,
                    max_len: 0,
                },
            ],
        );
        let mut x = 0xDEAD_BEEFu32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut out = vec![0u8; WINDOW];
        let start = std::time::Instant::now();
        for round in 0..2000 {
            let buf: Vec<u8> = if round % 4 == 0 {
                (0..next() % 4000).map(|_| next() as u8).collect()
            } else {
                let mut b = packed.clone();
                for _ in 0..1 + next() % 6 {
                    let at = next() as usize % b.len();
                    b[at] ^= 1 << (next() % 8);
                }
                if round % 3 == 0 {
                    b.truncate(next() as usize % b.len());
                }
                b
            };
            let n = next() as usize % (WINDOW + 1);
            let _ = decompress(&buf, &mut out[..n]);
        }
        assert!(start.elapsed().as_secs() < 120);
        // Larger than the window is refused, not decoded.
        let mut big = vec![0u8; WINDOW + 1];
        assert!(decompress(&packed, &mut big).is_err());
    }
}
