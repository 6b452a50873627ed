//! Revoke blocks: filesystem blocks whose earlier logged copies must not
//! be replayed.

use crate::bytes::be32;

/// The block numbers revoke block `b` lists (`r_count` bytes of records
/// from byte 16, none in the checksum `tail`).
pub(super) fn blocks(b: &[u8], tail: usize, bit64: bool) -> Vec<u64> {
    let count = (be32(b, 12) as usize).min(b.len().saturating_sub(tail));
    let width = if bit64 { 8 } else { 4 };
    let mut out = Vec::new();
    let mut off = 16;
    while off + width <= count {
        out.push(if bit64 {
            (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off + 4))
        } else {
            u64::from(be32(b, off))
        });
        off += width;
    }
    out
}
