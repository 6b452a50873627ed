//! An LZX compressor written from the same description, for tests only:
//! greedy matching, fixed complete codes, and every block type.

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
