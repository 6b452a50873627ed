//! Descriptor blocks: the tags that say which filesystem block each of
//! the journal blocks after the descriptor is a copy of.

use crate::bytes::{be16, be32};

const TAG_ESCAPE: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;

/// How tags are laid out in this journal.
pub(super) struct Layout {
    /// Bytes of a tag (without the UUID that follows a tag lacking
    /// SAME_UUID).
    pub tag_bytes: usize,
    /// Bytes at the block's end that hold no tags (the checksum tail).
    pub tail: usize,
    pub bit64: bool,
    pub csum3: bool,
}

/// A logged block, as its descriptor tag describes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tag {
    /// Filesystem block it replaces.
    pub target: u64,
    /// Journal block holding the copy.
    pub jblock: u64,
    pub escaped: bool,
    /// The tag's checksum of the copy (v2: low 16 bits; v3: all 32).
    pub csum: u32,
}

/// The tags of descriptor block `b`, in order; `jblock` is left 0 for the
/// caller, who knows where the copies follow.
pub(super) fn tags(b: &[u8], l: &Layout) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut off = 12;
    while off + l.tag_bytes <= b.len().saturating_sub(l.tail) {
        let lo = u64::from(be32(b, off));
        let (flags, csum) = if l.csum3 {
            (be32(b, off + 4), be32(b, off + 12))
        } else {
            (u32::from(be16(b, off + 6)), u32::from(be16(b, off + 4)))
        };
        let hi = if l.bit64 {
            u64::from(be32(b, off + 8))
        } else {
            0
        };
        tags.push(Tag {
            target: lo | (hi << 32),
            jblock: 0,
            escaped: flags & TAG_ESCAPE != 0,
            csum,
        });
        off += l.tag_bytes;
        if flags & TAG_SAME_UUID == 0 {
            off += 16;
        }
        if flags & TAG_LAST != 0 {
            break;
        }
    }
    tags
}
