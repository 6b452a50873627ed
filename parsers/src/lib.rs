//! Read-only parsers for virtual-machine backup images.
//!
//! The crate is a stack of layers (see `shared/DESIGN.md`), each turning one
//! byte source into the next, all joined by the positional [`ReadAt`] trait:
//!
//! - [`image`]: container formats (raw today) -> one virtual disk;
//!   its files found through [`image::Locator`] (host paths, memory, and
//!   URLs read by [`remote`]);
//! - [`volume`]: partition tables (GPT, MBR with logical partitions) -> volumes;
//! - [`fs`]: filesystems (NTFS, ext2/3/4, FAT12/16/32, exFAT) -> nodes behind
//!   [`fs::FileSystem`];
//! - [`tree`]: one restore tree over every volume, what front ends use.
//!
//! ```no_run
//! use restorefs_parsers::tree::RestoreTree;
//! # fn main() -> restorefs_parsers::Result<()> {
//! let tree = RestoreTree::open("disk.img".as_ref())?;
//! let node = tree.resolve("/p1/etc/hostname")?;
//! let mut buf = vec![0; 4096];
//! let n = tree.read(node, 0, &mut buf)?;
//! print!("{}", String::from_utf8_lossy(&buf[..n]));
//! # Ok(())
//! # }
//! ```
//!
//! Nothing here writes: every source is opened read-only and no layer has a
//! write path.

mod bytes;
pub mod cache;
pub mod error;
pub mod fs;
pub mod image;
pub mod memo;
pub mod readat;
pub mod remote;
#[cfg(test)]
mod testutil;
pub mod tree;
pub mod volume;

pub use error::{Error, Result};
pub use readat::{ReadAt, Source};
