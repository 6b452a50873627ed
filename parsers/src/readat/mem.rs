use std::io;

use super::{clamp_len, ReadAt};

/// Bytes held in memory: decoded tables, test fixtures.
#[derive(Debug, Clone)]
pub struct MemSource(pub Vec<u8>);

impl ReadAt for MemSource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size(), offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        // clamp_len guarantees offset < len(self.0) here.
        let start = offset as usize;
        buf[..len].copy_from_slice(&self.0[start..start + len]);
        Ok(len)
    }
}
