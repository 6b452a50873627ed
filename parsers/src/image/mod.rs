//! Image containers: the files of a restore point -> one virtual disk.
//!
//! Formats are found by content, never by file name. Deltas are opened
//! over their parents by [`chain`]: [`open`] follows the links written in
//! the files, [`open_with`] takes overrides; both find and open files
//! through [`locate::locator`] (host paths and URLs), [`open_in`] through
//! any [`Locator`].

pub mod chain;
pub mod locate;
pub mod qcow2;
mod raw;
mod report;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use std::path::Path;

use crate::{Error, Result, Source};
use chain::Opened;
pub use chain::{ChainLayer, Ident, LinkCheck, OpenOptions};
pub use locate::{locator, FileId, LocalFs, Locator, MemLocator};
pub use report::{ImageFacts, ImageReport};

/// An opened restore point: its virtual disk and what it is made of.
pub struct Image {
    /// The virtual disk's bytes.
    pub disk: Source,
    /// `raw`, `vmdk`, ...
    pub format: &'static str,
    /// Bytes the container's files take on the host.
    pub file_bytes: u64,
    /// Container facts for `info`: allocated size, block or grain size,
    /// cache budget, per-format extras.
    pub facts: ImageFacts,
    /// Warnings for `info` (chain links, recovered damage).
    pub notes: Vec<String>,
    /// The files the disk is read through, newest first (one for a lone
    /// image).
    pub chain: Vec<ChainLayer>,
    /// The restore point below this one when this is a delta, opened on
    /// its own (for `--all-points`).
    pub parent: Option<Box<Image>>,
    /// The id deltas name this image by (CID, unique id, GUID), if any.
    pub ident: Option<Ident>,
}

impl Image {
    /// An image of one file with no chain facts yet.
    pub fn new(disk: Source, format: &'static str, file_bytes: u64) -> Image {
        Image {
            disk,
            format,
            file_bytes,
            facts: ImageFacts::default(),
            notes: Vec::new(),
            chain: Vec::new(),
            parent: None,
            ident: None,
        }
    }

    /// Every restore point of the chain, oldest (the base) first, each
    /// read as it was at that point; this image is the last.
    pub fn into_points(self) -> Vec<Image> {
        let mut points = Vec::new();
        let mut cur = Some(self);
        while let Some(mut img) = cur {
            cur = img.parent.take().map(|b| *b);
            points.push(img);
        }
        points.reverse();
        points
    }
}

/// Opens the image at `path` read-only and decodes its container, with
/// its parents if it is a delta.
pub fn open(path: &Path) -> Result<Image> {
    open_with(path, &OpenOptions::default())
}

/// [`open`] with parent overrides and link-check policy.
pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Image> {
    open_in(locator(), path, opts)
}

/// [`open_with`], finding and opening every file through `loc`.
pub fn open_in(loc: &dyn Locator, path: &Path, opts: &OpenOptions) -> Result<Image> {
    chain::open_chain(loc, path, opts)
}

/// How messages name the image at `path` (a URL without its credentials).
pub fn display_name(path: &Path) -> String {
    locator().name(path).display().to_string()
}

/// The image's name for a mount table: a host path made absolute, a URL
/// without its credentials.
pub fn mount_name(path: &Path) -> std::io::Result<std::path::PathBuf> {
    if crate::remote::is_url(path) {
        Ok(locator().name(path))
    } else {
        path.canonicalize()
    }
}

/// When the image at `path` was last modified, if known.
pub fn modified(path: &Path) -> Option<std::time::SystemTime> {
    locator().modified(path)
}

/// Opens the one file at `path` (as raw bytes if `raw`), without its parents.
fn open_one(loc: &dyn Locator, path: &Path, raw: bool) -> Result<Opened> {
    let file = loc.open(path)?;
    decode(&loc.name(path), file, raw)
}

/// Decodes the container of a single image held in `file` (read from
/// `path`, which names it in messages and is where a VMDK descriptor's
/// extents are looked up), without following a parent: lets fuzzers and
/// tests open images held in memory. A delta is refused here; [`open`]
/// resolves its chain.
pub fn open_source(path: &Path, file: Source) -> Result<Image> {
    let opened = decode(path, file, false)?;
    if opened.delta.is_some() {
        return Err(Error::unsupported(
            "image",
            "a delta image needs its parent: open it by path",
        ));
    }
    Ok(opened.image)
}

/// Finds the container format of `file` by content and decodes it.
fn decode(path: &Path, file: Source, raw: bool) -> Result<Opened> {
    let file_bytes = crate::ReadAt::size(&*file);
    if raw {
        return raw::open(file, file_bytes).map(Opened::from);
    }
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
    raw::open(file, file_bytes).map(Opened::from)
}
