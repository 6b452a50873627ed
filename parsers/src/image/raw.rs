//! A raw disk or bare filesystem: the file's bytes are the disk.

use super::Image;
use crate::{Result, Source};

pub(super) fn open(file: Source, file_bytes: u64) -> Result<Image> {
    Ok(Image {
        disk: file,
        format: "raw",
        file_bytes,
        details: Vec::new(),
        notes: Vec::new(),
    })
}
