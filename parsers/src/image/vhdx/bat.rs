//! [MS-VHDX] 2.5: the block allocation table. Payload block entries, with a
//! sector bitmap block entry after every `chunk_ratio` of them.

use super::region_table::Region;
use crate::cache::ChunkCache;
use crate::image::vhd::blocks::{Block, BlockMap};
use crate::{Error, Result, Source};

/// Entries per cached table page (4 KiB).
const PAGE_ENTRIES: u64 = 512;

/// Payload block states (the low 3 bits of an entry).
const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;

/// Payload blocks per sector bitmap block: a bitmap block (1 MiB) has one
/// bit per logical sector of that many payload blocks.
pub fn chunk_ratio(logical_sector_size: u32, block_size: u32) -> u64 {
    ((1u64 << 23) * u64::from(logical_sector_size)) / u64::from(block_size)
}

/// The BAT of a disk, with or without a parent.
pub struct Bat {
    source: Source,
    region: Region,
    chunk_ratio: u64,
    payload_blocks: u64,
    owner: u64,
    /// A differencing disk: partially present blocks are read (only their
    /// bitmap-marked sectors, see [`Bat::holds`]).
    differencing: bool,
}

/// What a differencing disk's payload block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Nothing: the parent's (NOT_PRESENT, UNDEFINED).
    Parent,
    /// All of it: data or zeros.
    All,
    /// The sectors its sector bitmap marks.
    Partial,
}

impl Bat {
    /// The BAT in `region` of `source` (the log-replayed file), for
    /// `payload_blocks` blocks; fails if the region cannot hold them.
    pub fn new(
        source: Source,
        region: Region,
        chunk_ratio: u64,
        payload_blocks: u64,
    ) -> Result<Bat> {
        let entries = payload_blocks + payload_blocks.saturating_sub(1) / chunk_ratio.max(1);
        if chunk_ratio == 0 || entries > u64::from(region.length) / 8 {
            return Err(Error::corrupt(
                "vhdx",
                region.offset,
                format!(
                    "BAT region of {} bytes cannot hold {entries} entries",
                    region.length
                ),
            ));
        }
        Ok(Bat {
            source,
            region,
            chunk_ratio,
            payload_blocks,
            owner: ChunkCache::owner(),
            differencing: false,
        })
    }

    /// Marks the BAT as a differencing disk's.
    pub fn differencing(mut self) -> Bat {
        self.differencing = true;
        self
    }

    /// Payload blocks per sector bitmap block.
    pub fn chunk_ratio(&self) -> u64 {
        self.chunk_ratio
    }

    /// How much of payload block `block` a differencing disk holds.
    /// Unmapped blocks read as zeros: the spec lets them read as anything,
    /// and zeros are what the disk without them had been trimmed to.
    pub fn held(&self, block: u64) -> Result<Held> {
        Ok(match self.entry(block)? & 7 {
            NOT_PRESENT | UNDEFINED => Held::Parent,
            PARTIALLY_PRESENT => Held::Partial,
            _ => Held::All,
        })
    }

    /// Image offset of the sector bitmap block covering payload block
    /// `block`.
    pub fn bitmap_block(&self, block: u64) -> Result<u64> {
        let chunk = block / self.chunk_ratio;
        let index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let at = self.region.offset + index * 8;
        let entry = self.raw_entry(index)?;
        let mb = entry >> 20;
        if entry & 7 != FULLY_PRESENT || mb == 0 {
            return Err(Error::corrupt(
                "vhdx",
                at,
                format!(
                    "block {block} is partially present but its sector bitmap block is not \
                     (entry {entry:#x})"
                ),
            ));
        }
        Ok(mb << 20)
    }

    /// Image offset of the entry of payload block `block`.
    fn entry_offset(&self, block: u64) -> u64 {
        self.region.offset + (block + block / self.chunk_ratio) * 8
    }

    /// The raw entry of payload block `block`.
    fn entry(&self, block: u64) -> Result<u64> {
        self.raw_entry(block + block / self.chunk_ratio)
    }

    /// BAT entry `index` (payload and sector bitmap entries interleaved).
    fn raw_entry(&self, index: u64) -> Result<u64> {
        let page = index / PAGE_ENTRIES;
        let bytes = ChunkCache::global().get_or_load(self.owner, page, || {
            let first = page * PAGE_ENTRIES;
            let count = (u64::from(self.region.length) / 8 - first).min(PAGE_ENTRIES);
            let at = self.region.offset + first * 8;
            let mut buf = vec![0u8; count as usize * 8];
            self.source
                .read_exact_at(at, &mut buf)
                .map_err(|e| Error::io("vhdx", at, e))?;
            Ok(buf)
        })?;
        let i = ((index % PAGE_ENTRIES) * 8) as usize;
        let b = bytes.get(i..i + 8).ok_or_else(|| {
            Error::corrupt(
                "vhdx",
                self.region.offset + index * 8,
                "BAT entry beyond its region",
            )
        })?;
        let mut e = [0u8; 8];
        e.copy_from_slice(b);
        Ok(u64::from_le_bytes(e))
    }

    /// Number of fully present payload blocks (reads the whole table).
    pub fn present_blocks(&self) -> Result<u64> {
        let mut n = 0;
        for b in 0..self.payload_blocks {
            if self.entry(b)? & 7 == FULLY_PRESENT {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl BlockMap for Bat {
    const LAYER: &'static str = "vhdx";

    fn block(&self, block: u64) -> Result<Block> {
        if block >= self.payload_blocks {
            return Err(Error::corrupt(
                "vhdx",
                self.region.offset,
                format!("block {block} beyond the disk"),
            ));
        }
        let entry = self.entry(block)?;
        match entry & 7 {
            // Without a parent, every absent state reads as zeros.
            NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED => Ok(Block::Zero),
            PARTIALLY_PRESENT | FULLY_PRESENT
                if entry & 7 == FULLY_PRESENT || self.differencing =>
            {
                let mb = entry >> 20;
                if mb == 0 {
                    return Err(Error::corrupt(
                        "vhdx",
                        self.entry_offset(block),
                        format!("block {block} is present at image offset 0"),
                    ));
                }
                Ok(Block::At(mb << 20))
            }
            PARTIALLY_PRESENT => Err(Error::unsupported(
                "vhdx",
                format!(
                    "block {block} is partially present (BAT entry at offset {}), which only a \
                     differencing disk may be",
                    self.entry_offset(block)
                ),
            )),
            state => Err(Error::corrupt(
                "vhdx",
                self.entry_offset(block),
                format!("block {block} has reserved state {state}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn chunk_ratio_matches_spec_examples() {
        assert_eq!(chunk_ratio(512, 1 << 20), 4096);
        assert_eq!(chunk_ratio(512, 32 << 20), 128);
        assert_eq!(chunk_ratio(4096, 256 << 20), 128);
        assert_eq!(chunk_ratio(4096, 1 << 20), 32768);
    }

    #[test]
    fn skips_sector_bitmap_entries_and_maps_states() -> crate::Result<()> {
        // Chunk ratio 2: entries are p0 p1 sb0 p2 p3 sb1 p4.
        let states = [
            6 | (5 << 20),
            2,
            6 | (99 << 20),
            6 | (7 << 20),
            7,
            6 | (99 << 20),
            5,
        ];
        let t: Vec<u8> = states.iter().flat_map(|s: &u64| s.to_le_bytes()).collect();
        let region = Region {
            offset: 0,
            length: 56,
        };
        let bat = Bat::new(Arc::new(MemSource(t)), region, 2, 5)?;
        assert_eq!(bat.block(0)?, Block::At(5 << 20));
        assert_eq!(bat.block(1)?, Block::Zero);
        assert_eq!(bat.block(2)?, Block::At(7 << 20));
        assert!(matches!(bat.block(3), Err(Error::Unsupported { .. })));
        let e = bat.block(4).unwrap_err().to_string();
        assert!(e.contains("offset 48"), "{e}");
        assert!(bat.block(5).is_err());
        assert_eq!(bat.present_blocks()?, 2);
        assert!(Bat::new(
            Arc::new(MemSource(vec![])),
            Region {
                offset: 0,
                length: 48
            },
            2,
            5
        )
        .is_err());
        Ok(())
    }
}
