//! Header fields the `ntfs` crate does not expose (initialized size,
//! allocated and compressed size), read from our own
//! fixed-up copy of the file record.

use ntfs::{NtfsAttribute, NtfsFile};

use std::io::{Read, Seek, SeekFrom};

use crate::{Error, Result};

/// Sectors of a multi-sector record are protected in 512-byte strides,
/// whatever the volume's sector size.
const STRIDE: usize = 512;

/// A file record read again and fixed up, to read raw attribute headers.
pub(crate) struct RawRecord {
    bytes: Vec<u8>,
    pos: u64,
}

impl RawRecord {
    /// Reads and fixes up the record `file` was made from, through the
    /// same cursor the crate reads with (which gathers split records).
    pub(crate) fn read<T: Read + Seek>(cur: &mut T, file: &NtfsFile, size: u32) -> Result<Self> {
        let pos = file
            .position()
            .value()
            .ok_or_else(|| Error::corrupt("ntfs", 0, "file record without position"))?
            .get();
        // The crate bounds the record size when it opens the volume.
        let mut bytes = vec![0u8; size as usize];
        cur.seek(SeekFrom::Start(pos))
            .and_then(|_| cur.read_exact(&mut bytes))
            .map_err(|e| Error::io("ntfs", pos, e))?;
        let usa_ofs = le16(&bytes, 4).unwrap_or(0) as usize;
        let usa_count = le16(&bytes, 6).unwrap_or(0) as usize;
        for i in 1..usa_count {
            let end = i * STRIDE;
            let fix = usa_ofs + 2 * i;
            if end > bytes.len() || fix + 2 > bytes.len() {
                break;
            }
            let (a, b) = (bytes[fix], bytes[fix + 1]);
            bytes[end - 2] = a;
            bytes[end - 1] = b;
        }
        Ok(RawRecord { bytes, pos })
    }

    /// The header of `attr` (which must lie in this record), if in bounds.
    pub(crate) fn header(&self, attr: &NtfsAttribute) -> Result<AttrHeader<'_>> {
        let apos = attr.position().value().map(|p| p.get()).unwrap_or(0);
        let off = apos
            .checked_sub(self.pos)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o < self.bytes.len())
            .ok_or_else(|| Error::corrupt("ntfs", apos, "attribute outside its record"))?;
        Ok(AttrHeader {
            bytes: &self.bytes[off..],
            pos: apos,
        })
    }
}

/// A raw attribute header.
pub(crate) struct AttrHeader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl AttrHeader<'_> {
    fn u64_at(&self, off: usize) -> Result<u64> {
        self.bytes
            .get(off..off + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| Error::corrupt("ntfs", self.pos, "truncated attribute header"))
    }
    /// log2 of the clusters in a compression unit (0: not compressed).
    pub(crate) fn compression_unit(&self) -> Result<u8> {
        self.bytes
            .get(0x22)
            .copied()
            .ok_or_else(|| Error::corrupt("ntfs", self.pos, "truncated attribute header"))
    }
    /// First VCN this (non-resident) piece maps.
    pub(crate) fn lowest_vcn(&self) -> Result<u64> {
        self.u64_at(0x10)
    }
    /// Last VCN this (non-resident) piece maps.
    #[cfg(test)]
    pub(crate) fn highest_vcn(&self) -> Result<u64> {
        self.u64_at(0x18)
    }
    pub(crate) fn allocated_size(&self) -> Result<u64> {
        self.u64_at(0x28)
    }
    pub(crate) fn data_size(&self) -> Result<u64> {
        self.u64_at(0x30)
    }
    /// Valid data length: bytes past it read as zeros.
    pub(crate) fn initialized_size(&self) -> Result<u64> {
        self.u64_at(0x38)
    }
    /// Clusters really allocated, present only for sparse/compressed values.
    pub(crate) fn compressed_size(&self) -> Result<u64> {
        self.u64_at(0x40)
    }
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
}
