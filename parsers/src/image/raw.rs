//! A raw disk or bare filesystem: the file's bytes are the disk.

use super::Image;
use crate::{Result, Source};

pub(super) fn open(file: Source, file_bytes: u64) -> Result<Image> {
    Ok(Image::new(file, "raw", file_bytes))
}
