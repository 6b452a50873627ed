//! Byte ranges replaced in memory over a source: what a journal or log
//! replay wrote (the ext journal, the XFS log, the VHDX log), laid over
//! every read so that replay never writes the image.
//!
//! A [`Patches`] map holds non-overlapping ranges keyed by their start; a
//! later [`Patches::put`] wins over what it overlaps, splitting older
//! ranges around it, as a later write wins on disk. A range's bytes are
//! held in memory, are zeros, or are a copy of other bytes of the base
//! (an ext journal block, read when needed rather than kept). [`Patched`]
//! is a source with its patches on top, for layers that hand on a whole
//! replayed source (VHDX).

use std::collections::BTreeMap;
use std::io;

use super::{clamp_len, ReadAt, Source};

/// What a replaced range reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch {
    /// These bytes (as long as the range).
    Bytes(Vec<u8>),
    /// Zeros.
    Zeros,
    /// The base's bytes from `from` on, with `head` (if any) in place of
    /// the four bytes at absolute position `head.0`: an ext journal copy
    /// whose escaped magic must be put back.
    Copy {
        from: u64,
        head: Option<(u64, [u8; 4])>,
    },
}

#[derive(Debug, Clone)]
struct Range {
    end: u64,
    patch: Patch,
}

/// Replaced byte ranges of a source.
#[derive(Debug, Clone, Default)]
pub struct Patches {
    ranges: BTreeMap<u64, Range>,
}

impl Patches {
    /// Number of ranges held.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether nothing is replaced.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes covered by replaced ranges.
    pub fn covered(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(&start, r)| r.end - start)
            .fold(0, u64::saturating_add)
    }

    /// Replaces bytes `start..start + len` with `patch`, over anything
    /// put before.
    pub fn put(&mut self, start: u64, len: u64, patch: Patch) {
        let end = start.saturating_add(len);
        if start >= end {
            return;
        }
        let hit: Vec<u64> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > start)
            .map(|(&k, _)| k)
            .collect();
        for k in hit {
            let Some(old) = self.ranges.remove(&k) else {
                continue;
            };
            if k < start {
                let patch = slice(&old.patch, k, k, start);
                self.ranges.insert(k, Range { end: start, patch });
            }
            if old.end > end {
                let patch = slice(&old.patch, k, end, old.end);
                self.ranges.insert(
                    end,
                    Range {
                        end: old.end,
                        patch,
                    },
                );
            }
        }
        self.ranges.insert(start, Range { end, patch });
    }

    /// Lays the replaced ranges over `buf`, which holds `base`'s bytes
    /// from `offset` (or zeros past its end).
    pub fn patch(&self, base: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.ranges.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(buf.len() as u64);
        let first = self
            .ranges
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&k, _)| k);
        for (&start, r) in self.ranges.range(first..end) {
            let (s, t) = (start.max(offset), r.end.min(end));
            if s >= t {
                continue;
            }
            let Some(dst) = buf.get_mut((s - offset) as usize..(t - offset) as usize) else {
                continue;
            };
            match &r.patch {
                Patch::Zeros => dst.fill(0),
                Patch::Bytes(b) => match b.get((s - start) as usize..(t - start) as usize) {
                    Some(src) => dst.copy_from_slice(src),
                    None => return Err(io::Error::other("patch shorter than its range")),
                },
                Patch::Copy { from, head } => {
                    base.read_exact_at(from + (s - start), dst)?;
                    if let Some((at, bytes)) = head {
                        for (i, b) in bytes.iter().enumerate() {
                            let p = at + i as u64;
                            if (s..t).contains(&p) {
                                dst[(p - s) as usize] = *b;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The part `from..to` of `patch`, which covers bytes from `start`.
fn slice(patch: &Patch, start: u64, from: u64, to: u64) -> Patch {
    match patch {
        Patch::Zeros => Patch::Zeros,
        Patch::Bytes(b) => Patch::Bytes(
            b.get((from - start) as usize..(to - start) as usize)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        ),
        Patch::Copy { from: f, head } => Patch::Copy {
            from: f + (from - start),
            head: *head,
        },
    }
}

/// A source with replaced ranges on top, `size` bytes long (replay may
/// grow a file: bytes past the base's end read as zeros until patched).
pub struct Patched {
    base: Source,
    size: u64,
    patches: Patches,
}

impl Patched {
    pub fn new(base: Source, size: u64, patches: Patches) -> Patched {
        Patched {
            base,
            size,
            patches,
        }
    }

    /// The replaced ranges.
    pub fn patches(&self) -> &Patches {
        &self.patches
    }
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        let buf = &mut buf[..len];
        let from_base = clamp_len(self.base.size(), offset, len);
        self.base.read_exact_at(offset, &mut buf[..from_base])?;
        buf[from_base..].fill(0);
        self.patches.patch(&*self.base, offset, buf)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn later_puts_win_and_split() -> io::Result<()> {
        let mut p = Patches::default();
        p.put(10, 20, Patch::Bytes(vec![2; 20]));
        p.put(20, 5, Patch::Zeros);
        p.put(28, 92, Patch::Bytes(vec![3; 92]));
        let o = Patched::new(Arc::new(MemSource(vec![1; 100])), 120, p);
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
        assert_eq!(o.patches().len(), 4);
        Ok(())
    }

    #[test]
    fn copies_read_the_base_with_their_head_restored() -> io::Result<()> {
        let base: Vec<u8> = (0..64).collect();
        let mut p = Patches::default();
        // Bytes 0..8 come from 40..48, the first four replaced.
        p.put(
            0,
            8,
            Patch::Copy {
                from: 40,
                head: Some((0, *b"MAGI")),
            },
        );
        // A later write splits the copy: the head stays where it was.
        p.put(2, 1, Patch::Zeros);
        let mut buf = [0u8; 10];
        buf.copy_from_slice(&base[..10]);
        p.patch(&MemSource(base.clone()), 0, &mut buf)?;
        assert_eq!(&buf, &[b'M', b'A', 0, b'I', 44, 45, 46, 47, 8, 9]);
        let mut tail = [0u8; 3];
        tail.copy_from_slice(&base[3..6]);
        p.patch(&MemSource(base), 3, &mut tail)?;
        assert_eq!(tail, [b'I', 44, 45]);
        Ok(())
    }
}
