//! The VHD block allocation table: one big-endian u32 per block, the sector
//! of the block's bitmap, or `0xFFFFFFFF` when the block is not allocated.

use super::blocks::{Block, BlockMap};
use crate::cache::ChunkCache;
use crate::{Error, Result, Source};

/// A BAT entry for a block that is not stored.
pub const UNUSED: u32 = u32::MAX;
/// Entries per cached table page (4 KiB).
const PAGE_ENTRIES: u64 = 1024;

/// The BAT, read a page at a time through the shared chunk cache.
pub struct Bat {
    file: Source,
    table_offset: u64,
    entries: u64,
    /// Bytes of sector bitmap in front of each block's data.
    bitmap_size: u64,
    owner: u64,
}

impl Bat {
    /// The table of `entries` entries at `table_offset`; the caller has
    /// checked that it lies within the file.
    pub fn new(file: Source, table_offset: u64, entries: u32, bitmap_size: u64) -> Self {
        Bat {
            file,
            table_offset,
            entries: u64::from(entries),
            bitmap_size,
            owner: ChunkCache::owner(),
        }
    }

    /// Entry `index`, or `None` past the end of the table.
    pub fn entry(&self, index: u64) -> Result<Option<u32>> {
        if index >= self.entries {
            return Ok(None);
        }
        let page = index / PAGE_ENTRIES;
        let bytes = ChunkCache::global().get_or_load(self.owner, page, || {
            let first = page * PAGE_ENTRIES;
            let count = (self.entries - first).min(PAGE_ENTRIES);
            let at = self.table_offset + first * 4;
            let mut buf = vec![0u8; count as usize * 4];
            self.file
                .read_exact_at(at, &mut buf)
                .map_err(|e| Error::io("vhd", at, e))?;
            Ok(buf)
        })?;
        let i = ((index % PAGE_ENTRIES) * 4) as usize;
        Ok(bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    }

    /// Number of allocated blocks (reads the whole table).
    pub fn allocated_blocks(&self) -> Result<u64> {
        let mut n = 0;
        for i in 0..self.entries {
            if self.entry(i)?.is_some_and(|e| e != UNUSED) {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl BlockMap for Bat {
    const LAYER: &'static str = "vhd";

    fn block(&self, index: u64) -> Result<Block> {
        match self.entry(index)? {
            None => Err(Error::corrupt(
                "vhd",
                self.table_offset,
                format!("block {index} is beyond the BAT's {} entries", self.entries),
            )),
            Some(UNUSED) => Ok(Block::Zero),
            // For a dynamic disk the data is the block's whatever its bitmap
            // says; the bitmap only matters when a parent exists.
            Some(sector) => Ok(Block::At(u64::from(sector) * 512 + self.bitmap_size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn maps_entries() -> crate::Result<()> {
        let mut t = vec![0u8; 4096 * 2];
        t[0..4].copy_from_slice(&UNUSED.to_be_bytes());
        t[4..8].copy_from_slice(&3u32.to_be_bytes());
        t[4096..4100].copy_from_slice(&7u32.to_be_bytes());
        let bat = Bat::new(Arc::new(MemSource(t)), 0, 1025, 512);
        assert_eq!(bat.block(0)?, Block::Zero);
        assert_eq!(bat.block(1)?, Block::At(3 * 512 + 512));
        assert_eq!(bat.block(1024)?, Block::At(7 * 512 + 512));
        assert!(bat.block(1025).is_err());
        assert_eq!(bat.allocated_blocks()?, 1024);
        Ok(())
    }
}
