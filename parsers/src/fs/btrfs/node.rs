//! Tree blocks (`btrfs_header`, 101 bytes: csum, fsid, bytenr, flags,
//! chunk_tree_uuid, generation, owner, nritems, level), then either leaf
//! items (`btrfs_item`: key, data offset and size, 25 bytes each; data
//! offsets count from the end of the header) or, above level 0, key
//! pointers (`btrfs_key_ptr`: key, block address, generation, 33 bytes).
//!
//! A block is checked once, when loaded: checksum, address, fsid, level,
//! item count, item data inside the block, keys strictly increasing.

use std::sync::Arc;

use super::csum::CsumType;
use super::key::{Key, KEY_LEN};
use crate::bytes::{le32, le64};
use crate::Error;

pub const HEADER_LEN: usize = 101;
const ITEM_LEN: usize = 25;
const PTR_LEN: usize = 33;
/// `BTRFS_MAX_LEVEL`: levels run 0..8.
pub const MAX_LEVEL: u8 = 8;

/// A checked tree block.
#[derive(Clone)]
pub struct Node {
    bytes: Arc<[u8]>,
    level: u8,
    n: usize,
}

/// What the caller expects of the block at `bytenr`.
pub struct Expect<'a> {
    pub bytenr: u64,
    pub fsid: &'a [u8; 16],
    pub csum: CsumType,
}

/// Checks block `b` read for `want`; `Err` says what is wrong with it.
pub fn check(b: &[u8], want: &Expect) -> std::result::Result<(), String> {
    if b.len() < HEADER_LEN {
        return Err("short block".into());
    }
    if want.csum.verify(b) == Some(false) {
        return Err("checksum mismatch".into());
    }
    if le64(b, 0x30) != want.bytenr {
        return Err(format!("header says bytenr {:#x}", le64(b, 0x30)));
    }
    if b[0x20..0x30] != want.fsid[..] {
        return Err("fsid of another filesystem".into());
    }
    let level = b[0x64];
    if level >= MAX_LEVEL {
        return Err(format!("level {level}"));
    }
    let n = le32(b, 0x60) as usize;
    let per = if level == 0 { ITEM_LEN } else { PTR_LEN };
    if n > (b.len() - HEADER_LEN) / per {
        return Err(format!("{n} items do not fit"));
    }
    let mut prev: Option<Key> = None;
    for i in 0..n {
        let at = HEADER_LEN + i * per;
        let key = Key::parse(&b[at..at + KEY_LEN]);
        if prev.is_some_and(|p| p >= key) {
            return Err(format!("keys out of order at item {i}"));
        }
        prev = Some(key);
        if level == 0 {
            let off = le32(b, at + KEY_LEN) as usize;
            let size = le32(b, at + KEY_LEN + 4) as usize;
            let end = HEADER_LEN
                .checked_add(off)
                .and_then(|s| s.checked_add(size));
            if end.is_none_or(|e| e > b.len()) {
                return Err(format!("item {i} data past the block"));
            }
        }
    }
    Ok(())
}

impl Node {
    /// A block that passed [`check`].
    pub fn new(bytes: Arc<[u8]>) -> Node {
        let level = bytes.get(0x64).copied().unwrap_or(0);
        let per = if level == 0 { ITEM_LEN } else { PTR_LEN };
        let n = (le32(&bytes, 0x60) as usize).min(bytes.len().saturating_sub(HEADER_LEN) / per);
        Node { bytes, level, n }
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// Key of item or pointer `i` (< `len`).
    pub fn key(&self, i: usize) -> Key {
        let per = if self.level == 0 { ITEM_LEN } else { PTR_LEN };
        let at = HEADER_LEN + i * per;
        Key::parse(self.bytes.get(at..).unwrap_or(&[]))
    }

    /// Data of leaf item `i` (< `len`).
    pub fn data(&self, i: usize) -> &[u8] {
        let at = HEADER_LEN + i * ITEM_LEN + KEY_LEN;
        let off = HEADER_LEN + le32(&self.bytes, at) as usize;
        let size = le32(&self.bytes, at + 4) as usize;
        self.bytes.get(off..off + size).unwrap_or(&[])
    }

    /// Block address of pointer `i` (< `len`) of an internal node.
    pub fn child(&self, i: usize) -> u64 {
        le64(&self.bytes, HEADER_LEN + i * PTR_LEN + KEY_LEN)
    }
}

/// Error for a block that failed every copy.
pub fn bad_block(bytenr: u64, why: &str) -> Error {
    Error::corrupt(
        "btrfs",
        bytenr,
        format!("tree block at logical {bytenr:#x}: {why}"),
    )
}
