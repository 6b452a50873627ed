//! The VHD hard disk footer: 512 bytes at the end of every VHD (and a copy at
//! offset 0 of dynamic and differencing disks). All fields are big-endian.

pub(crate) use crate::bytes::{be32, be64};
use crate::{Error, Result};

/// Size of the footer on disk.
pub const FOOTER_SIZE: usize = 512;
/// The footer cookie.
pub const COOKIE: &[u8; 8] = b"conectix";

/// The kind of VHD, from the footer's disk type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Data follows the footer's position: the file is the disk plus a footer.
    Fixed,
    /// Blocks allocated on write, mapped by the BAT.
    Dynamic,
    /// A dynamic disk whose unwritten sectors come from a parent.
    Differencing,
}

impl DiskType {
    /// The name `info` shows.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// The footer fields restorefs uses.
#[derive(Debug, Clone)]
pub struct Footer {
    /// Offset of the dynamic header (all ones for a fixed disk).
    pub data_offset: u64,
    /// Creator application, e.g. `qemu`, `vpc `, `win `.
    pub creator_app: [u8; 4],
    /// Virtual size in bytes, as the specification defines it.
    pub current_size: u64,
    /// Cylinders, heads, sectors per track. qemu sizes images made by
    /// Virtual PC (and its own, unless made with `force_size`) from this
    /// instead of `current_size`; for the images qemu writes the two agree.
    pub geometry: (u16, u8, u8),
    pub disk_type: DiskType,
    /// The disk's unique id, which differencing children record.
    pub unique_id: [u8; 16],
}

/// The VHD checksum: one's complement of the byte sum, skipping the 4-byte
/// checksum field at `skip` (the footer and dynamic header use the same).
pub fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Bytes the CHS geometry addresses.
    pub fn chs_size(&self) -> u64 {
        let (c, h, s) = self.geometry;
        u64::from(c) * u64::from(h) * u64::from(s) * 512
    }

    /// Whether `bytes` start with the footer cookie.
    pub fn has_cookie(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(COOKIE.as_slice())
    }

    /// Parses and checks a footer read from image offset `at`.
    pub fn parse(bytes: &[u8], at: u64) -> Result<Footer> {
        if bytes.len() < FOOTER_SIZE || !Self::has_cookie(bytes) {
            return Err(Error::corrupt("vhd", at, "no footer cookie \"conectix\""));
        }
        let bytes = &bytes[..FOOTER_SIZE];
        let stored = be32(bytes, 64);
        let computed = checksum(bytes, 64);
        if stored != computed {
            return Err(Error::corrupt(
                "vhd",
                at,
                format!("footer checksum {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        let version = be32(bytes, 12);
        if version >> 16 != 1 {
            return Err(Error::unsupported(
                "vhd",
                format!("footer at offset {at}: file format version {version:#x}"),
            ));
        }
        let disk_type = match be32(bytes, 60) {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            t => {
                return Err(Error::corrupt(
                    "vhd",
                    at + 60,
                    format!("unknown disk type {t}"),
                ))
            }
        };
        let geometry = be32(bytes, 56);
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&bytes[28..32]);
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&bytes[68..84]);
        Ok(Footer {
            data_offset: be64(bytes, 16),
            creator_app,
            current_size: be64(bytes, 48),
            geometry: (
                (geometry >> 16) as u16,
                (geometry >> 8) as u8,
                geometry as u8,
            ),
            disk_type,
            unique_id,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(disk_type: u32, size: u64) -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_SIZE];
        f[..8].copy_from_slice(COOKIE);
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        f[28..32].copy_from_slice(b"test");
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        let c = checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn parses_and_checks_checksum() -> crate::Result<()> {
        let mut f = sample(2, 1 << 20);
        let p = Footer::parse(&f, 0)?;
        assert_eq!(p.disk_type, DiskType::Fixed);
        assert_eq!(p.current_size, 1 << 20);
        f[100] ^= 1;
        let e = Footer::parse(&f, 4096).unwrap_err().to_string();
        assert!(e.contains("vhd") && e.contains("4096"), "{e}");
        Ok(())
    }

    #[test]
    fn rejects_unknown_type_and_short_input() {
        assert!(Footer::parse(&sample(7, 512), 0).is_err());
        assert!(Footer::parse(&sample(2, 512)[..100], 0).is_err());
    }
}
