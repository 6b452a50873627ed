//! Integers read out of on-disk structures.
//!
//! Each returns 0 when the field lies past the end of `b`: parsers check a
//! structure's length before reading its fields, so these only keep a bad
//! offset from panicking, never decide what a field means.

macro_rules! reader {
    ($name:ident, $ty:ty, $from:ident) => {
        /// The field at byte `off` of `b`, 0 past the end.
        pub(crate) fn $name(b: &[u8], off: usize) -> $ty {
            b.get(off..off.saturating_add(std::mem::size_of::<$ty>()))
                .and_then(|s| s.try_into().ok())
                .map(<$ty>::$from)
                .unwrap_or(0)
        }
    };
}

reader!(le16, u16, from_le_bytes);
reader!(le32, u32, from_le_bytes);
reader!(le64, u64, from_le_bytes);
reader!(be16, u16, from_be_bytes);
reader!(be32, u32, from_be_bytes);
reader!(be64, u64, from_be_bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_stays_in_bounds() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(be32(&b, 1), 0x0203_0405);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be64(&b, 2), 0);
        assert_eq!(le32(&b, usize::MAX), 0);
    }
}
