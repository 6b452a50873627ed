use std::io::{self, Read, Seek, SeekFrom, Write};

use super::ReadAt;

/// A `Read + Seek` view of a source for crates that want a cursor (ntfs,
/// gpt, mbrman). Cheap to make: one per call, so threads never share one.
///
/// It also implements `Write` because the `gpt` crate demands it even for
/// reading; every write fails, so no data can change through it.
pub struct Cursor<R> {
    inner: R,
    pos: u64,
}

impl<R: ReadAt> Cursor<R> {
    /// A cursor at offset 0.
    pub fn new(inner: R) -> Self {
        Cursor { inner, pos: 0 }
    }
}

impl<R: ReadAt> Read for Cursor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt> Seek for Cursor<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.inner.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing offset",
            )),
        }
    }
}

impl<R: ReadAt> Write for Cursor<R> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "restorefs opens images read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R> std::fmt::Debug for Cursor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("pos", &self.pos).finish()
    }
}
