//! VHDX differencing disks (.vhdx, .avhdx) as chain layers: a payload
//! block NOT_PRESENT (or UNDEFINED) is the parent's, a fully present, zero
//! or unmapped one the child's, and in a PARTIALLY_PRESENT block each
//! logical sector is the child's only where its bit in the sector bitmap
//! block (bit `n % 8` of byte `n / 8`) is set.

use std::io;
use std::sync::Arc;

use super::bat::{Bat, Held};
use crate::cache::ChunkCache;
use crate::image::chain::Layer;
use crate::image::vhd::blocks::BlockDisk;
use crate::{Error, ReadAt, Result};

/// A differencing VHDX's own blocks, and which sectors of them it holds.
pub(super) struct Differencing {
    pub disk: BlockDisk<Bat>,
    pub logical_sector: u64,
    pub owner: u64,
}

impl Differencing {
    /// The bits of payload block `block`'s sectors, from its chunk's
    /// sector bitmap block.
    fn bits(&self, block: u64) -> Result<Arc<[u8]>> {
        let bat = &self.disk.map;
        let sectors = self.disk.block_size / self.logical_sector;
        // block_size >= 1 MiB and sectors <= 4 KiB: a whole number of bytes.
        let len = sectors / 8;
        let at = bat
            .bitmap_block(block)?
            .saturating_add((block % bat.chunk_ratio()) * len);
        if at
            .checked_add(len)
            .is_none_or(|end| end > self.disk.file.size())
        {
            return Err(Error::corrupt(
                "vhdx",
                at,
                format!("sector bitmap of block {block} lies past the end of the file"),
            ));
        }
        ChunkCache::global().get_or_load(self.owner, block, || {
            // At most 64 KiB: a 256 MiB block of 512-byte sectors.
            let mut b = vec![0u8; len as usize];
            self.disk
                .file
                .read_exact_at(at, &mut b)
                .map_err(|e| Error::io("vhdx", at, e))?;
            Ok(b)
        })
    }
}

impl Layer for Differencing {
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)> {
        let bs = self.disk.block_size;
        let block = offset / bs;
        let within = offset % bs;
        let max = max.min(bs - within);
        match self.disk.map.held(block)? {
            Held::Parent => return Ok((false, max)),
            Held::All => return Ok((true, max)),
            Held::Partial => {}
        }
        let bits = self.bits(block)?;
        let ss = self.logical_sector;
        let bit = |s: u64| -> bool {
            usize::try_from(s / 8)
                .ok()
                .and_then(|i| bits.get(i))
                .is_some_and(|b| b >> (s % 8) & 1 != 0)
        };
        let held = bit(within / ss);
        let mut len = (ss - within % ss).min(max);
        while len < max && bit((within + len) / ss) == held {
            len = (len + ss).min(max);
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
