//! Journal checksums v2 and v3 (`JBD2_FEATURE_INCOMPAT_CSUM_V2/V3`): crc32c
//! seeded with the journal's UUID, over the superblock, descriptor and
//! revoke block tails, commit blocks and every logged copy.

use super::COMMIT_HEADER;
use crate::bytes::be32;

/// Journal checksums v2/v3: crc32c seeded with the journal's UUID.
pub(super) struct Csum {
    seed: u32,
    /// v3 tags keep all 32 bits of a block's checksum, v2 the low 16.
    full: bool,
}

/// crc32c as the kernel's `jbd2_chksum` computes it: `state` in, the raw
/// register out, with no inversions on either side.
fn crc32c_raw(state: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!state, data)
}

impl Csum {
    pub(super) fn new(sb: &[u8], full: bool) -> Csum {
        Csum {
            seed: crc32c_raw(!0, sb.get(0x30..0x40).unwrap_or(&[])),
            full,
        }
    }

    /// The checksum of `block` with the 4 bytes at `at` taken as zero,
    /// against the big-endian value stored there.
    pub(super) fn block_ok(&self, seed: u32, block: &[u8], at: usize) -> bool {
        let (Some(head), Some(tail)) = (block.get(..at), block.get(at + 4..)) else {
            return false;
        };
        let c = crc32c_raw(seed, head);
        let c = crc32c_raw(c, &[0; 4]);
        crc32c_raw(c, tail) == be32(block, at)
    }

    /// Descriptor and revoke blocks: the tail's checksum (last 4 bytes).
    pub(super) fn tail_ok(&self, block: &[u8]) -> bool {
        self.block_ok(self.seed, block, block.len().saturating_sub(4))
    }

    /// Commit blocks: `h_chksum[0]`. Also taken: a block whose checksum
    /// holds for its header (`struct commit_header`, 60 bytes) with the rest
    /// zero, i.e. a commit block torn after its header; Linux accepts those
    /// too ("incomplete commit block", since 6.6).
    pub(super) fn commit_ok(&self, block: &[u8]) -> bool {
        if self.block_ok(self.seed, block, 16) {
            return true;
        }
        let mut head = vec![0u8; block.len()];
        let n = COMMIT_HEADER.min(block.len());
        head[..n].copy_from_slice(&block[..n]);
        self.block_ok(self.seed, &head, 16)
    }

    /// A logged copy against its tag (seeded with its transaction id).
    pub(super) fn data_ok(&self, seq: u32, block: &[u8], want: u32) -> bool {
        let c = crc32c_raw(crc32c_raw(self.seed, &seq.to_be_bytes()), block);
        if self.full {
            c == want
        } else {
            c & 0xFFFF == want
        }
    }
}
