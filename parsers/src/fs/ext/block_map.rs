//! ext2/ext3 block maps: 12 direct pointers, then single, double and triple
//! indirect blocks; pointer 0 is a hole.

use super::le32;
use crate::Result;

const DIRECT: u64 = 12;

/// Maps file blocks through the classic indirect scheme, remembering the
/// last indirect block read at each level so a sequential read fetches each
/// one once.
pub struct BlockMap<'a> {
    i_block: &'a [u8],
    per_block: u64,
    read_block: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    cache: [Option<(u64, Vec<u8>)>; 3],
}

impl<'a> BlockMap<'a> {
    pub fn new(
        i_block: &'a [u8],
        block_size: u32,
        read_block: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    ) -> Self {
        BlockMap {
            i_block,
            per_block: u64::from(block_size / 4),
            read_block,
            cache: [None, None, None],
        }
    }

    /// The disk block of file block `lblock`, 0 for a hole (or beyond the
    /// triple-indirect range).
    pub fn map(&mut self, lblock: u64) -> Result<u64> {
        let p = self.per_block;
        if lblock < DIRECT {
            return Ok(u64::from(le32(self.i_block, lblock as usize * 4)));
        }
        // Path of indices below the top-level pointer, outermost first.
        let mut rel = lblock - DIRECT;
        let (slot, path): (usize, Vec<u64>) = if rel < p {
            (12, vec![rel])
        } else {
            rel -= p;
            if rel < p * p {
                (13, vec![rel / p, rel % p])
            } else {
                rel -= p * p;
                if rel < p * p * p {
                    (14, vec![rel / (p * p), (rel / p) % p, rel % p])
                } else {
                    return Ok(0);
                }
            }
        };
        let mut block = u64::from(le32(self.i_block, slot * 4));
        for (level, idx) in path.into_iter().enumerate() {
            if block == 0 {
                return Ok(0);
            }
            let cached = matches!(&self.cache[level], Some((b, _)) if *b == block);
            if !cached {
                let data = (self.read_block)(block)?;
                self.cache[level] = Some((block, data));
            }
            let data = self.cache[level]
                .as_ref()
                .map(|(_, d)| d.as_slice())
                .unwrap_or(&[]);
            block = u64::from(le32(data, idx as usize * 4));
        }
        Ok(block)
    }
}
