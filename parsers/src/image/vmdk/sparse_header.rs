//! The hosted sparse extent header (`KDMV`, 512 bytes, little endian).

use crate::{Error, Result};

use super::LAYER;

/// Magic at offset 0 of a hosted sparse extent.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// `gdOffset` of a stream whose grain directory is found via the footer.
pub const GD_AT_END: u64 = u64::MAX;

/// Flag: the newline-detection characters are valid.
const FLAG_NEWLINE_TEST: u32 = 1 << 0;
/// Flag: a redundant grain directory is kept.
pub const FLAG_REDUNDANT_GT: u32 = 1 << 1;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: the extent holds markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// Largest grain the spec allows: 2048 sectors (1 MiB). Bounding it keeps a
/// hostile header from asking for a huge buffer per grain.
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest grain table we accept. VMware always writes 512 entries.
pub const MAX_GTES_PER_GT: u32 = 4096;

/// The fields of a `SparseExtentHeader` that reading needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// 1, 2 or 3.
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Size of the extent in sectors.
    pub capacity: u64,
    /// Sectors per grain, a power of two.
    pub grain_sectors: u64,
    /// Sector of the embedded descriptor, or 0.
    pub descriptor_offset: u64,
    /// Sectors of the embedded descriptor.
    pub descriptor_sectors: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// The extent was not closed cleanly.
    pub unclean_shutdown: bool,
    /// 0 none, 1 deflate.
    pub compress_algorithm: u16,
}

fn u32_at(b: &[u8; 512], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8; 512], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl SparseHeader {
    /// Decodes a header sector found at byte `at` of the extent file.
    pub fn parse(b: &[u8; 512], at: u64) -> Result<Self> {
        if &b[0..4] != MAGIC {
            return Err(Error::corrupt(LAYER, at, "no KDMV sparse extent magic"));
        }
        let h = SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_sectors: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_sectors: u64_at(b, 36),
            gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        let bad = |what: String| Err(Error::corrupt(LAYER, at, what));
        if !(1..=3).contains(&h.version) {
            return Err(Error::unsupported(
                LAYER,
                format!("sparse extent version {} at offset {at}", h.version),
            ));
        }
        if h.flags & FLAG_NEWLINE_TEST != 0 && b[73..77] != *b"\n \r\n" {
            // The header was mangled by a text-mode transfer; so is every
            // grain, and reading on would return garbage.
            return bad("newline check characters are damaged (text-mode copy?)".into());
        }
        if h.grain_sectors == 0
            || h.grain_sectors > MAX_GRAIN_SECTORS
            || !h.grain_sectors.is_power_of_two()
        {
            return bad(format!(
                "grain size of {} sectors is not a power of two in 1..=2048",
                h.grain_sectors
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return bad(format!(
                "{} entries per grain table (expected 1..={MAX_GTES_PER_GT})",
                h.gtes_per_gt
            ));
        }
        if h.capacity.checked_mul(512).is_none() {
            return bad(format!("capacity of {} sectors overflows", h.capacity));
        }
        if h.compressed() && h.compress_algorithm != 1 {
            return Err(Error::unsupported(
                LAYER,
                format!(
                    "compression algorithm {} at offset {at} (only deflate is known)",
                    h.compress_algorithm
                ),
            ));
        }
        Ok(h)
    }

    /// Grains are deflate-compressed.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// The extent carries stream markers.
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[12..20].copy_from_slice(&2048u64.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[73..77].copy_from_slice(b"\n \r\n");
        b
    }

    #[test]
    fn parses_and_bounds() -> Result<()> {
        let h = SparseHeader::parse(&sample(), 0)?;
        assert_eq!(h.grain_bytes(), 65536);
        let mut b = sample();
        b[20..28].copy_from_slice(&4096u64.to_le_bytes());
        assert!(SparseHeader::parse(&b, 0).is_err());
        let mut b = sample();
        b[20..28].copy_from_slice(&3u64.to_le_bytes());
        assert!(SparseHeader::parse(&b, 0).is_err());
        let mut b = sample();
        b[75] = b'\n';
        assert!(SparseHeader::parse(&b, 0).is_err());
        Ok(())
    }
}
