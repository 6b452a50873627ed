//! FLAT, VMFS and ZERO extents as byte sources.

use std::io;

use crate::readat::clamp_len;
use crate::{Error, ReadAt, Source};

use super::LAYER;

/// Raw bytes of a file from a byte offset (FLAT, VMFS). Unlike a plain
/// window, a file too short for the extent is an error, not an early end:
/// the descriptor promised those bytes.
pub struct FlatExtent {
    file: Source,
    start: u64,
    len: u64,
}

impl FlatExtent {
    /// `len` bytes of `file` from byte `start`.
    pub fn new(file: Source, start: u64, len: u64) -> Self {
        FlatExtent { file, start, len }
    }
}

impl ReadAt for FlatExtent {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.len, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let at = self
            .start
            .checked_add(offset)
            .filter(|&a| a < self.file.size())
            .ok_or_else(|| {
                io::Error::other(Error::corrupt(
                    LAYER,
                    self.start.saturating_add(offset),
                    format!(
                        "flat extent data past the end of its file ({} bytes)",
                        self.file.size()
                    ),
                ))
            })?;
        self.file.read_at(at, &mut buf[..len])
    }
}

/// A ZERO extent: reads as zeros, has no file.
pub struct ZeroExtent(pub u64);

impl ReadAt for ZeroExtent {
    fn size(&self) -> u64 {
        self.0
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.0, offset, buf.len());
        buf[..len].fill(0);
        Ok(len)
    }
}
