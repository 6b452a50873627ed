//! The one interface between layers: a positional, shared, read-only byte
//! source, and the adapters that build sources out of other sources.
//!
//! `&self` reads (no cursor) let many FUSE threads read one source at once.

mod concat;
mod cursor;
mod ext4;
mod file;
mod mem;
mod patches;
mod window;

use std::io;
use std::sync::Arc;

pub use concat::Concat;
pub use cursor::Cursor;
pub use ext4::Ext4Reader;
pub use file::FileSource;
pub use mem::MemSource;
pub use patches::{Patch, Patched, Patches};
pub use window::Window;

/// A read-only byte source read at explicit offsets.
pub trait ReadAt: Send + Sync {
    /// Total length in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`; returns 0 only at or past
    /// the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the source
    /// ends first.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(offset, buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("source ends before offset {offset}"),
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A shared byte source, as layers hand them to each other.
pub type Source = Arc<dyn ReadAt>;

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
}

/// Clamps a read of `len` bytes at `offset` to a source of `size` bytes.
pub(crate) fn clamp_len(size: u64, offset: u64, len: usize) -> usize {
    if offset >= size {
        0
    } else {
        len.min(usize::try_from(size - offset).unwrap_or(usize::MAX))
    }
}
