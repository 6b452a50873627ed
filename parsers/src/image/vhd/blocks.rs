//! A virtual disk made of fixed-size blocks, each either absent (zeros) or
//! stored contiguously in the image file: what VHD and VHDX payloads share.

use std::io;

use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

/// Where one block of the virtual disk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    /// Not stored: reads as zeros.
    Zero,
    /// Stored from this image (file) offset on.
    At(u64),
}

/// The block table of a format: block index -> where its bytes are.
pub(crate) trait BlockMap: Send + Sync + 'static {
    /// The layer name errors carry.
    const LAYER: &'static str;
    /// Where block `index` lives; errors name the table offset at fault.
    fn block(&self, index: u64) -> Result<Block>;
}

/// The virtual disk over a [`BlockMap`].
pub(crate) struct BlockDisk<M> {
    /// What block offsets point into (the image file, or its log overlay).
    pub file: Source,
    pub map: M,
    /// Virtual size in bytes.
    pub size: u64,
    /// Bytes per block (non-zero, checked by the format's open).
    pub block_size: u64,
}

impl<M: BlockMap> BlockDisk<M> {
    /// Reads `buf` at virtual `offset`, merging pieces that are contiguous in
    /// the file (within a block and across neighbouring blocks) into one
    /// positional read.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        let buf = &mut buf[..len];
        let file_size = self.file.size();
        // The pending file run: (file offset, start in buf, length).
        let mut run: Option<(u64, usize, usize)> = None;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let index = pos / self.block_size;
            let within = pos % self.block_size;
            let n = usize::try_from(self.block_size - within)
                .unwrap_or(usize::MAX)
                .min(len - done);
            match self.map.block(index)? {
                Block::Zero => {
                    self.flush(run.take(), buf)?;
                    buf[done..done + n].fill(0);
                }
                Block::At(start) => {
                    let at = start.saturating_add(within);
                    if at.saturating_add(n as u64) > file_size {
                        self.flush(run.take(), buf)?;
                        return Err(Error::corrupt(
                            M::LAYER,
                            start,
                            format!(
                                "block {index} at image offset {start} lies past the end of \
                                 the file ({file_size} bytes)"
                            ),
                        ));
                    }
                    run = match run {
                        Some((f, b, l)) if f + l as u64 == at => Some((f, b, l + n)),
                        other => {
                            self.flush(other, buf)?;
                            Some((at, done, n))
                        }
                    };
                }
            }
            done += n;
        }
        self.flush(run, buf)?;
        Ok(len)
    }

    fn flush(&self, run: Option<(u64, usize, usize)>, buf: &mut [u8]) -> Result<()> {
        if let Some((at, start, len)) = run {
            self.file
                .read_exact_at(at, &mut buf[start..start + len])
                .map_err(|e| Error::io(M::LAYER, at, e))?;
        }
        Ok(())
    }
}

impl<M: BlockMap> ReadAt for BlockDisk<M> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // Keep our error inside the io::Error so callers can still name the
        // layer and offset.
        self.read(offset, buf).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::readat::MemSource;

    struct Table(Vec<Block>);
    impl BlockMap for Table {
        const LAYER: &'static str = "test";
        fn block(&self, index: u64) -> Result<Block> {
            self.0
                .get(index as usize)
                .copied()
                .ok_or_else(|| Error::corrupt("test", index, "beyond table"))
        }
    }

    /// Counts positional reads, to check runs are merged.
    struct Counting(MemSource, AtomicUsize);
    impl ReadAt for Counting {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.read_at(offset, buf)
        }
    }

    #[test]
    fn merges_contiguous_blocks_and_fills_holes() -> crate::Result<()> {
        let file: Vec<u8> = (0..64u32).map(|i| i as u8).collect();
        let counting = Arc::new(Counting(MemSource(file), AtomicUsize::new(0)));
        let disk = BlockDisk {
            file: counting.clone(),
            map: Table(vec![
                Block::At(8),
                Block::At(16),
                Block::Zero,
                Block::At(0),
                Block::At(60),
            ]),
            size: 40,
            block_size: 8,
        };
        let mut buf = vec![0xAA; 50];
        assert_eq!(disk.read(2, &mut buf[..28])?, 28);
        let want: Vec<u8> = (10..24)
            .chain([0; 8])
            .chain(0..6)
            .map(|v| v as u8)
            .collect();
        assert_eq!(&buf[..28], &want[..]);
        // Blocks 0 and 1 are adjacent in the file: one read, then block 3.
        assert_eq!(counting.1.load(Ordering::Relaxed), 2);
        let e = disk.read(0, &mut buf).unwrap_err().to_string();
        assert!(e.contains("image offset 60"), "{e}");
        assert_eq!(disk.read(0, &mut buf[..32])?, 32);
        Ok(())
    }
}
