//! VHD differencing disks as chain layers: a block absent from the BAT is
//! the parent's; in a present block, each 512-byte sector is the child's
//! only where the block's sector bitmap (most significant bit first) has
//! it set, and the parent's otherwise.

use std::io;

use super::bat::{Bat, UNUSED};
use super::blocks::BlockDisk;
use crate::cache::ChunkCache;
use crate::image::chain::Layer;
use crate::{Error, ReadAt, Result};

/// A differencing VHD's own blocks, and which sectors of them it holds.
pub(super) struct Differencing {
    pub disk: BlockDisk<Bat>,
    /// Bytes of sector bitmap in front of each block.
    pub bitmap_size: u64,
    pub owner: u64,
}

impl Differencing {
    /// The sector bitmap of the block whose BAT entry is `sector`.
    fn bitmap(&self, index: u64, sector: u32) -> Result<std::sync::Arc<[u8]>> {
        let at = u64::from(sector) * 512;
        if at
            .checked_add(self.bitmap_size)
            .is_none_or(|end| end > self.disk.file.size())
        {
            return Err(Error::corrupt(
                "vhd",
                at,
                format!("sector bitmap of block {index} lies past the end of the file"),
            ));
        }
        ChunkCache::global().get_or_load(self.owner, index, || {
            // bitmap_size is at most 64 KiB (256 MiB blocks).
            let mut b = vec![0u8; self.bitmap_size as usize];
            self.disk
                .file
                .read_exact_at(at, &mut b)
                .map_err(|e| Error::io("vhd", at, e))?;
            Ok(b)
        })
    }
}

impl Layer for Differencing {
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)> {
        let bs = self.disk.block_size;
        let index = offset / bs;
        let within = offset % bs;
        let max = max.min(bs - within);
        let sector = match self.disk.map.entry(index)? {
            Some(UNUSED) => return Ok((false, max)),
            Some(s) => s,
            // Past the BAT: keep it here so the read reports the damage.
            None => return Ok((true, max)),
        };
        let bitmap = self.bitmap(index, sector)?;
        let bit = |s: u64| -> bool {
            usize::try_from(s / 8)
                .ok()
                .and_then(|i| bitmap.get(i))
                .is_some_and(|b| b >> (7 - s % 8) & 1 != 0)
        };
        let first = within / 512;
        let held = bit(first);
        let mut len = (512 - within % 512).min(max);
        while len < max && bit((within + len) / 512) == held {
            len = (len + 512).min(max);
        }
        Ok((held, len))
    }
}

impl ReadAt for Differencing {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.disk.read_at(offset, buf)
    }
}
