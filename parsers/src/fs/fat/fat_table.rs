//! The file allocation table: cluster chains, read in cached pages.

use std::sync::Arc;

use super::bpb::{Bpb, FatType};
use crate::memo::Memo;
use crate::{Error, Result, Source};

/// Bytes of the FAT read and cached at once.
const PAGE: u64 = 64 << 10;
const PAGES: usize = 64;
/// Larger FATs are not scanned for the free count (FSInfo is used).
pub const MAX_SCAN: u64 = 64 << 20;

/// A cluster chain as runs of consecutive clusters.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// (first cluster, cluster count) in file order.
    pub runs: Vec<(u32, u32)>,
    /// Clusters in all runs.
    pub clusters: u64,
    /// Why the chain stopped before its end marker, if it did.
    pub broken: Option<String>,
}

/// One FAT on the source.
pub struct FatTable {
    src: Source,
    fat_type: FatType,
    offset: u64,
    bytes: u64,
    /// Highest valid cluster number.
    max_cluster: u32,
    /// exFAT: all 32 bits of an entry count (FAT32 reserves the top 4).
    exfat: bool,
    pages: Memo<u64, [u8]>,
}

impl FatTable {
    pub fn new(src: Source, bpb: &Bpb) -> Self {
        FatTable {
            src,
            fat_type: bpb.fat_type,
            offset: bpb.fat_offset,
            bytes: bpb.fat_bytes,
            max_cluster: bpb.cluster_count.saturating_add(1),
            exfat: false,
            pages: Memo::new(PAGES),
        }
    }

    /// An exFAT FAT of `bytes` at `offset` for `cluster_count` clusters.
    pub fn exfat(src: Source, offset: u64, bytes: u64, cluster_count: u32) -> Self {
        FatTable {
            src,
            fat_type: FatType::Fat32,
            offset,
            bytes,
            max_cluster: cluster_count.saturating_add(1),
            exfat: true,
            pages: Memo::new(PAGES),
        }
    }

    fn page(&self, index: u64) -> Result<Arc<[u8]>> {
        self.pages.get_or_make(index, || {
            let start = index * PAGE;
            let len = PAGE.min(self.bytes.saturating_sub(start));
            let mut v = vec![0u8; len as usize];
            let off = self.offset + start;
            self.src
                .read_exact_at(off, &mut v)
                .map_err(|e| Error::io("fat", off, e))?;
            Ok(v.into())
        })
    }

    /// The byte at `pos` within the FAT.
    fn byte(&self, pos: u64) -> Result<u8> {
        let p = self.page(pos / PAGE)?;
        p.get((pos % PAGE) as usize)
            .copied()
            .ok_or_else(|| Error::corrupt("fat", self.offset + pos, "past the end of the FAT"))
    }

    /// The raw entry of cluster `c` (FAT32: the low 28 bits).
    pub fn entry(&self, c: u32) -> Result<u32> {
        let c64 = u64::from(c);
        Ok(match self.fat_type {
            FatType::Fat12 => {
                let pos = c64 + c64 / 2;
                let v = u32::from(self.byte(pos)?) | u32::from(self.byte(pos + 1)?) << 8;
                if c & 1 == 1 {
                    v >> 4
                } else {
                    v & 0xFFF
                }
            }
            FatType::Fat16 => {
                let pos = c64 * 2;
                u32::from(self.byte(pos)?) | u32::from(self.byte(pos + 1)?) << 8
            }
            FatType::Fat32 => {
                let pos = c64 * 4;
                let mut v = 0u32;
                for i in 0..4 {
                    v |= u32::from(self.byte(pos + i)?) << (8 * i);
                }
                if self.exfat {
                    v
                } else {
                    v & 0x0FFF_FFFF
                }
            }
        })
    }

    /// Entries at or above this end a chain.
    fn end_marker(&self) -> u32 {
        match self.fat_type {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 if self.exfat => 0xFFFF_FFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        }
    }

    /// The chain from `first`, at most `limit` clusters long. A bad link
    /// ends it early with `broken` set; a cluster met twice is an error,
    /// since reading on would repeat data.
    pub fn chain(&self, first: u32, limit: u64) -> Result<Chain> {
        let mut chain = Chain::default();
        let limit = limit.min(u64::from(self.max_cluster));
        let mut c = first;
        while chain.clusters < limit {
            if c < 2 || c > self.max_cluster {
                chain.broken = Some(format!("chain from cluster {first} reaches cluster {c}"));
                break;
            }
            match chain.runs.last_mut() {
                Some((start, n)) if start.checked_add(*n) == Some(c) => *n += 1,
                _ => chain.runs.push((c, 1)),
            }
            chain.clusters += 1;
            if chain.clusters == limit {
                break;
            }
            let next = self.entry(c)?;
            if next >= self.end_marker() {
                break;
            }
            c = next;
        }
        check_no_loop(&chain, first)?;
        Ok(chain)
    }

    /// Free clusters, counted in the table (callers bound the size).
    pub fn count_free(&self) -> Result<u64> {
        let mut free = 0;
        match self.fat_type {
            FatType::Fat12 => {
                for c in 2..=self.max_cluster {
                    free += u64::from(self.entry(c)? == 0);
                }
            }
            FatType::Fat16 | FatType::Fat32 => {
                let width = if self.fat_type == FatType::Fat16 {
                    2
                } else {
                    4
                };
                let end = (u64::from(self.max_cluster) + 1) * width;
                let mut pos = 2 * width;
                while pos < end.min(self.bytes) {
                    let page = self.page(pos / PAGE)?;
                    let from = (pos % PAGE) as usize;
                    let to = ((end - pos / PAGE * PAGE).min(PAGE)) as usize;
                    let slice = page.get(from..to.min(page.len())).unwrap_or(&[]);
                    if slice.is_empty() {
                        break;
                    }
                    free += slice
                        .chunks_exact(width as usize)
                        .filter(|e| {
                            if width == 2 {
                                e.iter().all(|&b| b == 0)
                            } else {
                                // The top 4 bits of a FAT32 entry are reserved.
                                e.get(..3).is_some_and(|s| s.iter().all(|&b| b == 0))
                                    && e.get(3).is_some_and(|&b| b & 0x0F == 0)
                            }
                        })
                        .count() as u64;
                    pos += slice.len() as u64;
                }
            }
        }
        Ok(free)
    }
}

/// Fills `buf` with the chain's bytes from `offset`, which the caller has
/// checked lie within it; `at(c)` is the disk offset of cluster `c`.
pub fn read_chain(
    src: &Source,
    chain: &Chain,
    cs: u64,
    at: impl Fn(u32) -> u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let mut done = 0usize;
    let mut run_start = 0u64;
    for &(first, n) in &chain.runs {
        if done == buf.len() {
            break;
        }
        let run_len = u64::from(n) * cs;
        let pos = offset + done as u64;
        if pos >= run_start + run_len {
            run_start += run_len;
            continue;
        }
        let within = pos - run_start;
        let take = usize::try_from(run_len - within)
            .unwrap_or(usize::MAX)
            .min(buf.len() - done);
        let off = at(first) + within;
        let dst = buf.get_mut(done..done + take).unwrap_or_default();
        src.read_exact_at(off, dst)
            .map_err(|e| Error::io("fat", off, e))?;
        done += take;
        run_start += run_len;
    }
    if done < buf.len() {
        return Err(Error::corrupt("fat", 0, "read past the cluster chain"));
    }
    Ok(())
}

/// Fails if any cluster of `chain` is in it twice (a loop).
fn check_no_loop(chain: &Chain, first: u32) -> Result<()> {
    let mut runs = chain.runs.clone();
    runs.sort_unstable();
    for w in runs.windows(2) {
        if let [(a, n), (b, _)] = w {
            if u64::from(*a) + u64::from(*n) > u64::from(*b) {
                return Err(Error::corrupt(
                    "fat",
                    0,
                    format!("cluster chain from {first} loops"),
                ));
            }
        }
    }
    Ok(())
}
