//! Item sources: readers that turn one file of the tree into a subtree of
//! its own, shown as `PATH#` beside the file (the AVFS convention).
//!
//! A mailbox file becomes its folders and messages. An item source is
//! found by content, never by the file's name: each source in
//! [`sources`] is asked in turn, and the first that recognises the bytes
//! opens them as a [`FileSystem`]. Adding an item format is one entry in
//! [`sources`]; the tree, the mount and the CLI need no change.

use std::sync::Arc;

use crate::fs::FileSystem;
use crate::{Result, Source};

/// Turns a file's bytes into a read-only filesystem of items.
pub trait ItemSource: Send + Sync {
    /// A short name for messages and `--json` (`mbox`, `pst`).
    fn name(&self) -> &'static str;

    /// Opens `file` as items, or `Ok(None)` when its content is not of
    /// this source's format. Must read only what it needs to decide
    /// (a header) before saying no: listings with `--items` ask every file.
    fn open(&self, file: Source) -> Result<Option<Arc<dyn FileSystem>>>;
}

/// Every item source restorefs has, in the order they are asked.
pub fn sources() -> &'static [&'static dyn ItemSource] {
    &[]
}

/// The first of `sources` that opens `file`, with its name.
pub fn open(
    sources: &[&dyn ItemSource],
    file: &Source,
) -> Result<Option<(&'static str, Arc<dyn FileSystem>)>> {
    for s in sources {
        if let Some(fs) = s.open(file.clone())? {
            return Ok(Some((s.name(), fs)));
        }
    }
    Ok(None)
}
