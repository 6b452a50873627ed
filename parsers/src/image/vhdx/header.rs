//! [MS-VHDX] 2.2.2: the two headers at 64 KiB and 128 KiB; the valid one
//! with the higher sequence number is current.

use super::{crc_ok, le16, le32, le64, Guid};
use crate::{Error, Result};

/// Image offsets of the two header copies.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Bytes covered by a header's checksum.
pub const HEADER_SIZE: usize = 4096;

/// The header fields restorefs uses.
#[derive(Debug, Clone)]
pub struct Header {
    /// Image offset this copy was read from.
    pub at: u64,
    pub sequence: u64,
    /// Changes whenever the disk's data changes; children record it as
    /// their `parent_linkage`.
    pub data_write_guid: Guid,
    /// Non-zero when the log holds entries that must be replayed.
    pub log_guid: Guid,
    /// Bytes of log, a multiple of 1 MiB.
    pub log_length: u32,
    /// Image offset of the log, a multiple of 1 MiB.
    pub log_offset: u64,
}

impl Header {
    /// Parses and checks the header copy read from image offset `at`.
    pub fn parse(bytes: &[u8], at: u64) -> Result<Header> {
        if bytes.len() < HEADER_SIZE || bytes.get(..4) != Some(b"head".as_slice()) {
            return Err(Error::corrupt("vhdx", at, "no header signature \"head\""));
        }
        let bytes = &bytes[..HEADER_SIZE];
        if !crc_ok(bytes, 4) {
            return Err(Error::corrupt("vhdx", at + 4, "header checksum mismatch"));
        }
        let (log_version, version) = (le16(bytes, 64), le16(bytes, 66));
        if version != 1 || log_version != 0 {
            return Err(Error::unsupported(
                "vhdx",
                format!("header at offset {at}: version {version}, log version {log_version}"),
            ));
        }
        let mut log_guid = [0u8; 16];
        log_guid.copy_from_slice(&bytes[48..64]);
        let mut data_write_guid = [0u8; 16];
        data_write_guid.copy_from_slice(&bytes[32..48]);
        Ok(Header {
            at,
            data_write_guid,
            sequence: le64(bytes, 8),
            log_guid,
            log_length: le32(bytes, 68),
            log_offset: le64(bytes, 72),
        })
    }

    /// The current header among two parse results: the valid one with the
    /// higher sequence number.
    pub fn current(a: Result<Header>, b: Result<Header>) -> Result<Header> {
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
            (Ok(h), Err(_)) | (Err(_), Ok(h)) => Ok(h),
            // An unsupported version says more than a checksum error.
            (Err(e @ Error::Unsupported { .. }), Err(_)) | (Err(_), Err(e)) => Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(sequence: u64, log_guid: Guid) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        h[..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&sequence.to_le_bytes());
        h[48..64].copy_from_slice(&log_guid);
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
        h[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let c = crc32c::crc32c(&h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        h
    }

    #[test]
    fn picks_valid_header_with_higher_sequence() -> crate::Result<()> {
        let a = Header::parse(&sample(5, [0; 16]), 65536);
        let b = Header::parse(&sample(6, [1; 16]), 131072);
        let h = Header::current(a, b)?;
        assert_eq!((h.sequence, h.at, h.log_guid), (6, 131072, [1; 16]));
        let mut bad = sample(9, [0; 16]);
        bad[200] = 1;
        let a = Header::parse(&sample(5, [0; 16]), 65536);
        let e = Header::parse(&bad, 131072);
        assert!(e.as_ref().unwrap_err().to_string().contains("131076"));
        assert_eq!(Header::current(a, e)?.sequence, 5);
        assert!(Header::current(Header::parse(&bad, 0), Header::parse(&bad, 1)).is_err());
        Ok(())
    }
}
