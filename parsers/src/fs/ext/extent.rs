//! Extent trees: the ext4 map from file blocks to disk blocks.

use super::{le16, le32};
use crate::{Error, Result};

const MAGIC: u16 = 0xF30A;
const HEADER_LEN: usize = 12;
const ENTRY_LEN: usize = 12;
/// The kernel never builds deeper trees; a deeper one is corrupt (and the
/// limit bounds the walk).
pub const MAX_DEPTH: u16 = 5;
/// Bound on the extents of one file, so a hostile tree cannot make us
/// allocate without limit (a 12-byte extent each: 48 MiB at most).
const MAX_EXTENTS: usize = 4 << 20;
/// Extent lengths above this mark an uninitialized (preallocated) extent.
const INIT_MAX_LEN: u16 = 32768;

/// One run of file blocks mapped to contiguous disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub len: u32,
    pub physical: u64,
    /// Allocated but never written: reads as zeros.
    pub uninit: bool,
}

/// A node header.
#[derive(Debug, Clone, Copy)]
struct Header {
    entries: u16,
    depth: u16,
}

impl Header {
    fn parse(b: &[u8], offset: u64) -> Result<Self> {
        if b.len() < HEADER_LEN || le16(b, 0) != MAGIC {
            return Err(Error::corrupt("ext", offset, "bad extent header"));
        }
        let entries = le16(b, 2);
        let max = le16(b, 4);
        let depth = le16(b, 6);
        if entries > max || HEADER_LEN + usize::from(max) * ENTRY_LEN > b.len() {
            return Err(Error::corrupt(
                "ext",
                offset,
                "extent node entry count too large",
            ));
        }
        if depth > MAX_DEPTH {
            return Err(Error::corrupt("ext", offset, "extent tree too deep"));
        }
        Ok(Header { entries, depth })
    }
}

/// Every extent of the tree rooted in `root` (the inode's `i_block`), in
/// logical order. `read_block` fetches a tree block by number; `offset` of
/// the inode, for errors.
pub fn collect(
    root: &[u8],
    offset: u64,
    read_block: &dyn Fn(u64) -> Result<Vec<u8>>,
) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    // A tree never shares nodes: a block seen twice is corrupt, and this
    // also bounds the walk of a hostile DAG of valid-looking nodes.
    let mut seen = std::collections::HashSet::new();
    // An explicit stack instead of recursion; each entry is (node bytes,
    // expected depth or None for the root, byte offset for errors).
    let mut stack: Vec<(Vec<u8>, Option<u16>, u64)> = vec![(root.to_vec(), None, offset)];
    while let Some((node, want_depth, node_off)) = stack.pop() {
        let h = Header::parse(&node, node_off)?;
        // Every child must be exactly one level below its parent: this is
        // what makes loops in the tree impossible to follow forever.
        if want_depth.is_some_and(|d| d != h.depth) {
            return Err(Error::corrupt(
                "ext",
                node_off,
                "extent tree depth mismatch",
            ));
        }
        let entries = (0..usize::from(h.entries))
            .filter_map(|i| node.get(HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN));
        if h.depth == 0 {
            for e in entries {
                let raw_len = le16(e, 4);
                let (len, uninit) = if raw_len > INIT_MAX_LEN {
                    (raw_len - INIT_MAX_LEN, true)
                } else {
                    (raw_len, false)
                };
                if len == 0 {
                    continue;
                }
                if out.len() >= MAX_EXTENTS {
                    return Err(Error::corrupt("ext", node_off, "too many extents"));
                }
                out.push(Extent {
                    logical: le32(e, 0),
                    len: u32::from(len),
                    physical: u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32),
                    uninit,
                });
            }
        } else {
            // Push children in reverse so they pop in logical order.
            let children: Vec<u64> = entries
                .map(|e| u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32))
                .collect();
            for child in children.into_iter().rev() {
                if !seen.insert(child) {
                    return Err(Error::corrupt(
                        "ext",
                        node_off,
                        "extent tree node used twice",
                    ));
                }
                let data = read_block(child)?;
                stack.push((data, Some(h.depth - 1), child));
            }
            if stack.len() > MAX_EXTENTS {
                return Err(Error::corrupt("ext", node_off, "extent tree too large"));
            }
        }
    }
    // Overlapping or unsorted extents mean a corrupt tree; mapping by
    // binary search needs them sorted and disjoint.
    for w in out.windows(2) {
        if let [a, b] = w {
            if u64::from(a.logical) + u64::from(a.len) > u64::from(b.logical) {
                return Err(Error::corrupt("ext", offset, "overlapping extents"));
            }
        }
    }
    Ok(out)
}

/// Where file block `lblock` is: `Ok(i)` inside `extents[i]`, `Err(i)` in a
/// hole before `extents[i]` (or after the last one).
pub fn find(extents: &[Extent], lblock: u64) -> std::result::Result<usize, usize> {
    let i = extents.partition_point(|e| u64::from(e.logical) + u64::from(e.len) <= lblock);
    match extents.get(i) {
        Some(e) if u64::from(e.logical) <= lblock => Ok(i),
        _ => Err(i),
    }
}
