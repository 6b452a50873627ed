//! Directory entries: primary entries (bitmap, up-case table, label,
//! file) and a file's entry set (file, stream extension, names).

use crate::fs::fat::{le16, le32, le64};
use crate::{Error, Result};

pub const ENTRY: usize = 32;

pub mod kind {
    pub const END: u8 = 0x00;
    pub const BITMAP: u8 = 0x81;
    pub const UPCASE: u8 = 0x82;
    pub const LABEL: u8 = 0x83;
    pub const FILE: u8 = 0x85;
    pub const STREAM: u8 = 0xC0;
    pub const NAME: u8 = 0xC1;
}

pub const ATTR_READ_ONLY: u16 = 0x01;
pub const ATTR_DIR: u16 = 0x10;

/// A timestamp as stored: DOS date/time, 10 ms units, UTC offset byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawTime {
    pub stamp: u32,
    pub centis: u8,
    pub utc_offset: u8,
}

/// A file's entry set, checksum-validated.
#[derive(Debug, Clone)]
pub struct FileSet {
    pub attrs: u16,
    pub created: RawTime,
    pub modified: RawTime,
    pub accessed: RawTime,
    /// The stream is one contiguous run; the FAT is not kept for it.
    pub no_fat_chain: bool,
    pub first_cluster: u32,
    /// Bytes written; the rest up to `data_len` reads as zeros.
    pub valid_len: u64,
    pub data_len: u64,
    pub name: Vec<u16>,
}

impl FileSet {
    pub fn is_dir(&self) -> bool {
        self.attrs & ATTR_DIR != 0
    }
}

/// Bytes of the set that starts with the file entry `first`.
pub fn set_len(first: &[u8]) -> usize {
    (1 + usize::from(first.get(1).copied().unwrap_or(0))) * ENTRY
}

/// The checksum over a whole entry set, skipping its own two bytes.
pub fn set_checksum(set: &[u8]) -> u16 {
    set.iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 2 | 3))
        .fold(0u16, |s, (_, &b)| {
            s.rotate_right(1).wrapping_add(u16::from(b))
        })
}

/// Parses the entry set `set` (exactly [`set_len`] bytes); `at` is its
/// disk offset, for errors.
pub fn parse_set(set: &[u8], at: u64) -> Result<FileSet> {
    let bad = |what: &str| Error::corrupt("exfat", at, format!("file entry set: {what}"));
    let secondary = usize::from(set.get(1).copied().unwrap_or(0));
    if set.first() != Some(&kind::FILE) || !(2..=18).contains(&secondary) {
        return Err(bad("not a file entry"));
    }
    if set.len() != (1 + secondary) * ENTRY {
        return Err(bad("truncated"));
    }
    if set_checksum(set) != le16(set, 2) {
        return Err(bad("checksum mismatch"));
    }
    let stream = set.get(ENTRY..2 * ENTRY).unwrap_or(&[]);
    if stream.first() != Some(&kind::STREAM) {
        return Err(bad("no stream extension"));
    }
    let name_len = usize::from(stream.get(3).copied().unwrap_or(0));
    let name_entries = name_len.div_ceil(15);
    if name_len == 0 || name_entries > secondary - 1 {
        return Err(bad("bad name length"));
    }
    let mut name = Vec::with_capacity(name_len);
    for e in set.chunks_exact(ENTRY).skip(2).take(name_entries) {
        if e.first() != Some(&kind::NAME) {
            return Err(bad("missing name entry"));
        }
        for k in 0..15 {
            if name.len() < name_len {
                name.push(le16(e, 2 + 2 * k));
            }
        }
    }
    let valid_len = le64(stream, 8);
    let data_len = le64(stream, 24);
    if valid_len > data_len {
        return Err(bad("valid data length past the data length"));
    }
    let time = |stamp: usize, centis: Option<usize>, off: usize| RawTime {
        stamp: le32(set, stamp),
        centis: centis.and_then(|c| set.get(c).copied()).unwrap_or(0),
        utc_offset: set.get(off).copied().unwrap_or(0),
    };
    Ok(FileSet {
        attrs: le16(set, 4),
        created: time(8, Some(20), 22),
        modified: time(12, Some(21), 23),
        accessed: time(16, None, 24),
        no_fat_chain: stream.get(1).is_some_and(|f| f & 2 != 0),
        first_cluster: le32(stream, 20),
        valid_len,
        data_len,
        name,
    })
}

/// The label of a volume-label entry.
pub fn label(e: &[u8]) -> String {
    let n = usize::from(e.get(1).copied().unwrap_or(0)).min(11);
    let units: Vec<u16> = (0..n).map(|k| le16(e, 2 + 2 * k)).collect();
    String::from_utf16_lossy(&units)
}

/// First cluster and length of a bitmap or up-case table entry.
pub fn data_of(e: &[u8]) -> (u32, u64) {
    (le32(e, 20), le64(e, 24))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn make_set(name: &str) -> Vec<u8> {
        let units: Vec<u16> = name.encode_utf16().collect();
        let names = units.len().div_ceil(15);
        let mut s = vec![0u8; (2 + names) * ENTRY];
        s[0] = kind::FILE;
        s[1] = (1 + names) as u8;
        s[ENTRY] = kind::STREAM;
        s[ENTRY + 3] = units.len() as u8;
        for (i, u) in units.iter().enumerate() {
            let at = (2 + i / 15) * ENTRY + 2 + 2 * (i % 15);
            s[(2 + i / 15) * ENTRY] = kind::NAME;
            s[at..at + 2].copy_from_slice(&u.to_le_bytes());
        }
        let sum = set_checksum(&s);
        s[2..4].copy_from_slice(&sum.to_le_bytes());
        s
    }

    #[test]
    fn set_checksum_is_checked() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let s = make_set("a name longer than fifteen units");
        let f = parse_set(&s, 0)?;
        assert_eq!(
            String::from_utf16_lossy(&f.name),
            "a name longer than fifteen units"
        );
        let mut bad = s.clone();
        bad[ENTRY + 5] ^= 1;
        assert!(parse_set(&bad, 0).is_err());
        // The stored checksum itself is not summed.
        let mut same = s;
        same[2] ^= 0;
        assert!(parse_set(&same, 0).is_ok());
        Ok(())
    }
}
