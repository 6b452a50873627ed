//! Image containers: the files of a restore point -> one virtual disk.
//!
//! Formats are found by content, never by file name.

pub mod qcow2;
mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use std::path::Path;
use std::sync::Arc;

use crate::readat::FileSource;
use crate::{Error, Result, Source};

/// An opened restore point: its virtual disk and what it is made of.
pub struct Image {
    /// The virtual disk's bytes.
    pub disk: Source,
    /// `raw`, `vmdk`, ...
    pub format: &'static str,
    /// Bytes the container's files take on the host.
    pub file_bytes: u64,
    /// Container facts for `info` as (key, value): allocated size, block or
    /// grain size, cache budget, ...
    pub details: Vec<(String, String)>,
    /// Warnings for `info` (chain links, recovered damage).
    pub notes: Vec<String>,
}

/// Opens the image at `path` read-only and decodes its container.
pub fn open(path: &Path) -> Result<Image> {
    let file = FileSource::open(path).map_err(|e| Error::io("image", 0, e))?;
    open_source(path, Arc::new(file))
}

/// Decodes the container in `file`, whose bytes were read from `path`:
/// the path names it in messages and is where a VMDK descriptor's extents
/// are looked up. Lets callers (fuzzers, tests) open images held in memory.
pub fn open_source(path: &Path, file: Source) -> Result<Image> {
    let file_bytes = file.size();
    if qcow2::probe(&*file) {
        return qcow2::open(path, file);
    }
    if vhdx::probe(&*file) {
        return vhdx::open(path, file);
    }
    if vhd::probe(&*file) {
        return vhd::open(path, file);
    }
    let mut head = [0u8; 512];
    let got = crate::ReadAt::read_at(&*file, 0, &mut head).map_err(|e| Error::io("image", 0, e))?;
    if vmdk::probe(&head[..got], file_bytes) {
        return vmdk::open(path, file);
    }
    raw::open(file, file_bytes)
}
