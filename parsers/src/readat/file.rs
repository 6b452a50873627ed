use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{clamp_len, ReadAt};

/// A file on the host, opened read-only and read with `pread`.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
    path: PathBuf,
}

impl FileSource {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let size = if meta.is_file() {
            meta.len()
        } else {
            // Block devices report 0 in metadata; ask the device itself.
            use std::io::{Seek, SeekFrom};
            (&file).seek(SeekFrom::End(0))?
        };
        Ok(FileSource {
            file,
            size,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ReadAt for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..len], offset)
    }
}
