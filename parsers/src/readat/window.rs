use std::io;

use super::{clamp_len, ReadAt, Source};

/// A byte range of another source: a partition, an LV segment.
///
/// A window that reaches past the end of its source is allowed (a truncated
/// image); reads there come back short, which callers report as the end.
#[derive(Clone)]
pub struct Window {
    inner: Source,
    start: u64,
    len: u64,
}

impl Window {
    /// `len` bytes of `inner` from `start`.
    pub fn new(inner: Source, start: u64, len: u64) -> Self {
        Window { inner, start, len }
    }
}

impl ReadAt for Window {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.len, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let Some(abs) = self.start.checked_add(offset) else {
            return Ok(0);
        };
        self.inner.read_at(abs, &mut buf[..len])
    }
}
