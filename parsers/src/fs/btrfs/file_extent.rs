//! `EXTENT_DATA` (`btrfs_file_extent_item`): generation u64, ram_bytes
//! u64, compression u8, encryption u8, other_encoding u16, type u8; an
//! inline extent's data follows (21 bytes in); a regular or preallocated
//! one continues with disk_bytenr, disk_num_bytes, offset, num_bytes.

use crate::bytes::{le16, le64};
use crate::{Error, Result};

const INLINE_HDR: usize = 21;
const REG_LEN: usize = 53;

/// How the extent's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Lzo,
    Zstd,
}

/// Where one run of a file's bytes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Bytes stored in the item (possibly compressed), decoding to
    /// `ram_bytes`.
    Inline { data: Vec<u8>, ram_bytes: u64 },
    /// `disk_bytenr == 0` (a hole written as an extent) or preallocated:
    /// reads as zeros.
    Zero,
    /// The disk extent at logical `disk_bytenr` of `disk_num_bytes`
    /// (decoding to `ram_bytes` when compressed); the file's run starts
    /// `offset` bytes into the decoded extent.
    Regular {
        disk_bytenr: u64,
        disk_num_bytes: u64,
        ram_bytes: u64,
        offset: u64,
    },
}

/// One file extent: `len` bytes of the file from `file_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    pub file_offset: u64,
    pub len: u64,
    pub compression: Compression,
    pub body: Body,
}

impl FileExtent {
    /// Parses the item of inode `ino` at file offset `file_offset`.
    pub fn parse(b: &[u8], ino: u64, file_offset: u64) -> Result<FileExtent> {
        let corrupt = |what: String| {
            Error::corrupt(
                "btrfs",
                ino,
                format!("inode {ino} extent at file offset {file_offset}: {what}"),
            )
        };
        if b.len() < INLINE_HDR {
            return Err(corrupt("item too short".into()));
        }
        let ram_bytes = le64(b, 8);
        let compression = match b[16] {
            0 => Compression::None,
            1 => Compression::Zlib,
            2 => Compression::Lzo,
            3 => Compression::Zstd,
            c => {
                return Err(Error::unsupported(
                    "btrfs",
                    format!("inode {ino}: compression type {c}"),
                ))
            }
        };
        if b[17] != 0 || le16(b, 18) != 0 {
            return Err(Error::unsupported(
                "btrfs",
                format!("inode {ino}: encrypted or encoded extent"),
            ));
        }
        match b[20] {
            0 => {
                let data = b[INLINE_HDR..].to_vec();
                let len = if compression == Compression::None {
                    data.len() as u64
                } else {
                    ram_bytes
                };
                Ok(FileExtent {
                    file_offset,
                    len,
                    compression,
                    body: Body::Inline { data, ram_bytes },
                })
            }
            t @ (1 | 2) => {
                if b.len() < REG_LEN {
                    return Err(corrupt("regular extent item too short".into()));
                }
                let disk_bytenr = le64(b, 21);
                let disk_num_bytes = le64(b, 29);
                let offset = le64(b, 37);
                let len = le64(b, 45);
                if file_offset.checked_add(len).is_none() {
                    return Err(corrupt(format!("length {len}")));
                }
                let body = if t == 2 || disk_bytenr == 0 {
                    Body::Zero
                } else {
                    if compression == Compression::None
                        && offset.checked_add(len).is_none_or(|e| e > disk_num_bytes)
                    {
                        return Err(corrupt("run past its disk extent".into()));
                    }
                    Body::Regular {
                        disk_bytenr,
                        disk_num_bytes,
                        ram_bytes,
                        offset,
                    }
                };
                Ok(FileExtent {
                    file_offset,
                    len,
                    compression,
                    body,
                })
            }
            t => Err(corrupt(format!("type {t}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        let mut b = vec![0u8; REG_LEN];
        b[8..16].copy_from_slice(&8192u64.to_le_bytes());
        b[20] = 1;
        b[21..29].copy_from_slice(&(1u64 << 20).to_le_bytes());
        b[29..37].copy_from_slice(&8192u64.to_le_bytes());
        b[37..45].copy_from_slice(&4096u64.to_le_bytes());
        b[45..53].copy_from_slice(&4096u64.to_le_bytes());
        let e = FileExtent::parse(&b, 257, 0).unwrap();
        assert_eq!(e.len, 4096);
        assert!(matches!(e.body, Body::Regular { offset: 4096, .. }));
        b[45..53].copy_from_slice(&8192u64.to_le_bytes());
        assert!(FileExtent::parse(&b, 257, 0).is_err());
        b[20] = 2;
        assert_eq!(FileExtent::parse(&b, 257, 0).unwrap().body, Body::Zero);
        b[20] = 0;
        b.truncate(25);
        assert_eq!(FileExtent::parse(&b, 257, 0).unwrap().len, 4);
        b[16] = 9;
        assert!(FileExtent::parse(&b, 257, 0).is_err());
    }
}
