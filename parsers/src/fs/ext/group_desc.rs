//! Block group descriptors: where each group's inode table lives.

use super::le32;
use crate::{Error, Result};

/// The fields of a group descriptor this reader needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupDesc {
    /// First block of the group's inode table.
    pub inode_table: u64,
}

impl GroupDesc {
    /// Parses one descriptor of `desc_size` bytes (32, or 64+ with 64bit);
    /// `offset` is its byte position, for errors.
    pub fn parse(b: &[u8], desc_size: usize, offset: u64) -> Result<Self> {
        if b.len() < desc_size || desc_size < 32 {
            return Err(Error::corrupt("ext", offset, "group descriptor truncated"));
        }
        let hi = if desc_size >= 64 {
            u64::from(le32(b, 0x28)) << 32
        } else {
            0
        };
        Ok(GroupDesc {
            inode_table: u64::from(le32(b, 0x8)) | hi,
        })
    }
}
