//! Checksums of superblocks and tree blocks (`csum_type` in the
//! superblock): crc32c is computed here; xxhash64, sha256 and blake2b are
//! recognised but not computed (the volume is read with a warning saying
//! so, never silently).

/// The checksum algorithms btrfs knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumType {
    Crc32c,
    Xxhash64,
    Sha256,
    Blake2b,
}

impl CsumType {
    /// The algorithm of superblock field `csum_type`; `None` if unknown.
    pub fn from_raw(v: u16) -> Option<CsumType> {
        Some(match v {
            0 => CsumType::Crc32c,
            1 => CsumType::Xxhash64,
            2 => CsumType::Sha256,
            3 => CsumType::Blake2b,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CsumType::Crc32c => "crc32c",
            CsumType::Xxhash64 => "xxhash64",
            CsumType::Sha256 => "sha256",
            CsumType::Blake2b => "blake2b",
        }
    }

    /// Whether `block` (its 32-byte checksum field first, then what it
    /// covers) carries the right checksum; `None` when this reader does
    /// not compute the algorithm.
    pub fn verify(self, block: &[u8]) -> Option<bool> {
        let (sum, data) = (block.get(..32)?, block.get(32..)?);
        match self {
            CsumType::Crc32c => Some(sum[..4] == crc32c::crc32c(data).to_le_bytes()),
            _ => None,
        }
    }
}

/// `btrfs_name_hash`: the raw CRC-32C (no final inversion) of `name`
/// seeded with `~1`, the offset of `DIR_ITEM` and `XATTR_ITEM` keys.
pub fn name_hash(name: &[u8]) -> u64 {
    // crc32c_append inverts before and after; undo both around seed ~1.
    u64::from(!crc32c::crc32c_append(1, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_matches_btrfs() {
        // From `btrfs inspect-internal dump-tree` of a fresh volume:
        // DIR_ITEM of "default" in the root tree.
        assert_eq!(name_hash(b"default"), 0x8dbfc2d2);
    }
}
