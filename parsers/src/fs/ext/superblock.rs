//! The superblock: geometry, features and usage counters (at byte 1024).

use super::{le16, le32};
use crate::{Error, Result};

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock structure.
pub const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const SPARSE_SUPER2: u32 = 0x200;
}

pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
}

/// Incompatible features this reader understands; any other bit makes
/// `open` refuse rather than risk returning wrong bytes.
const KNOWN_INCOMPAT: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    // Encryption is refused per inode (ENCRYPT_FL), so unencrypted files
    // of a volume with the feature on still read.
    | incompat::ENCRYPT
    // Casefolded directories still hold exact names; lookup by exact
    // bytes is correct, only case-insensitive matching is missing.
    | incompat::CASEFOLD;

/// Incompat bits that only ext4 sets.
const EXT4_INCOMPAT: u32 = incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::ENCRYPT
    | incompat::CASEFOLD;

/// ro_compat bits that only ext4 sets.
const EXT4_RO_COMPAT: u32 = ro_compat::HUGE_FILE
    | ro_compat::GDT_CSUM
    | ro_compat::DIR_NLINK
    | ro_compat::EXTRA_ISIZE
    | ro_compat::BIGALLOC
    | ro_compat::METADATA_CSUM;

/// The fields of the superblock this reader uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub first_data_block: u32,
    pub block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub journal_inum: u32,
    pub desc_size: u16,
    pub first_meta_bg: u32,
    pub backup_bgs: [u32; 2],
}

impl Superblock {
    /// Parses and sanity-checks the 1024 superblock bytes.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::corrupt("ext", SUPERBLOCK_OFFSET, what);
        if b.len() < SUPERBLOCK_SIZE {
            return Err(corrupt("superblock truncated"));
        }
        if le16(b, 0x38) != MAGIC {
            return Err(corrupt("bad superblock magic"));
        }
        let log_block = le32(b, 0x18);
        // 64 KiB is the largest block size any ext implementation writes.
        if log_block > 6 {
            return Err(corrupt("block size too large"));
        }
        let block_size = 1024u32 << log_block;
        let rev_level = le32(b, 0x4C);
        let inode_size = if rev_level == 0 { 128 } else { le16(b, 0x58) };
        if inode_size < 128 || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(corrupt("bad inode size"));
        }
        let feature_incompat = if rev_level == 0 { 0 } else { le32(b, 0x60) };
        let bit64 = feature_incompat & incompat::BIT64 != 0;
        let hi = |off: usize| {
            if bit64 {
                u64::from(le32(b, off)) << 32
            } else {
                0
            }
        };
        let desc_size = if bit64 { le16(b, 0xFE) } else { 32 };
        if desc_size < 32 || !desc_size.is_power_of_two() || u32::from(desc_size) > block_size {
            return Err(corrupt("bad group descriptor size"));
        }
        let sb = Superblock {
            inodes_count: le32(b, 0x0),
            blocks_count: u64::from(le32(b, 0x4)) | hi(0x150),
            free_blocks: u64::from(le32(b, 0xC)) | hi(0x158),
            free_inodes: le32(b, 0x10),
            first_data_block: le32(b, 0x14),
            block_size,
            blocks_per_group: le32(b, 0x20),
            inodes_per_group: le32(b, 0x28),
            inode_size,
            feature_compat: if rev_level == 0 { 0 } else { le32(b, 0x5C) },
            feature_incompat,
            feature_ro_compat: if rev_level == 0 { 0 } else { le32(b, 0x64) },
            uuid: b
                .get(0x68..0x78)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 16]),
            volume_name: b
                .get(0x78..0x88)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 16]),
            journal_inum: le32(b, 0xE0),
            desc_size,
            first_meta_bg: le32(b, 0x104),
            backup_bgs: [le32(b, 0x24C), le32(b, 0x250)],
        };
        if sb.blocks_per_group == 0 || sb.inodes_per_group == 0 {
            return Err(corrupt("zero blocks or inodes per group"));
        }
        // A group's block bitmap is one block: more blocks per group than
        // bits in a block cannot be right.
        if u64::from(sb.blocks_per_group) > u64::from(block_size) * 8
            || u64::from(sb.inodes_per_group) > u64::from(block_size) * 8
        {
            return Err(corrupt("too many blocks or inodes per group"));
        }
        if sb.first_data_block > 1 || u64::from(sb.first_data_block) >= sb.blocks_count {
            return Err(corrupt("bad first data block"));
        }
        Ok(sb)
    }

    /// Refuses features whose data this reader would get wrong.
    pub fn check_features(&self) -> Result<()> {
        let unknown = self.feature_incompat & !KNOWN_INCOMPAT;
        if unknown == 0 {
            return Ok(());
        }
        let mut names = Vec::new();
        for (bit, name) in [
            (incompat::COMPRESSION, "compression"),
            (incompat::JOURNAL_DEV, "external journal device"),
            (incompat::DIRDATA, "dirdata"),
            (incompat::ENCRYPT, "encryption"),
        ] {
            if unknown & bit != 0 {
                names.push(name.to_string());
            }
        }
        let rest = unknown
            & !(incompat::COMPRESSION
                | incompat::JOURNAL_DEV
                | incompat::DIRDATA
                | incompat::ENCRYPT);
        if rest != 0 {
            names.push(format!("unknown incompat features {rest:#x}"));
        }
        Err(Error::unsupported(
            "ext",
            format!("incompatible features: {}", names.join(", ")),
        ))
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }

    /// "ext4" if any ext4-only feature is on, "ext3" with a journal, else
    /// "ext2".
    pub fn kind(&self) -> &'static str {
        if self.feature_incompat & EXT4_INCOMPAT != 0
            || self.feature_ro_compat & EXT4_RO_COMPAT != 0
        {
            "ext4"
        } else if self.has_compat(compat::HAS_JOURNAL) {
            "ext3"
        } else {
            "ext2"
        }
    }

    /// Number of block groups, from the block count.
    pub fn group_count(&self) -> u64 {
        let data = self.blocks_count - u64::from(self.first_data_block);
        data.div_ceil(u64::from(self.blocks_per_group))
    }

    /// Whether group `g` holds a superblock backup (and so a GDT copy).
    pub fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            return self.backup_bgs.iter().any(|&b| u64::from(b) == g);
        }
        if !self.has_ro_compat(ro_compat::SPARSE_SUPER) || g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| is_power_of(g, base))
    }

    /// The volume label, if one is set.
    pub fn label(&self) -> Option<String> {
        let end = self.volume_name.iter().position(|&c| c == 0).unwrap_or(16);
        let name = self.volume_name.get(..end).unwrap_or(&[]);
        (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
    }

    /// The UUID in its usual hyphenated form.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.checked_rem(base) == Some(0) {
        n /= base;
    }
    n == 1
}
