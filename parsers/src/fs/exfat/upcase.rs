//! The up-case table: how the volume compares names case-insensitively.

use crate::fs::fat::le16;

/// A full map of the 16-bit code units.
pub struct Upcase(Vec<u16>);

/// The table checksum kept in its directory entry.
pub fn checksum(raw: &[u8]) -> u32 {
    raw.iter()
        .fold(0u32, |s, &b| s.rotate_right(1).wrapping_add(u32::from(b)))
}

impl Upcase {
    /// Simple Unicode upper-casing, for a missing or damaged table.
    pub fn fallback() -> Self {
        Upcase(
            (0..=u16::MAX)
                .map(|u| {
                    let Some(c) = char::from_u32(u32::from(u)) else {
                        return u;
                    };
                    let mut up = c.to_uppercase();
                    match (up.next(), up.next()) {
                        (Some(x), None) => u16::try_from(u32::from(x)).unwrap_or(u),
                        _ => u,
                    }
                })
                .collect(),
        )
    }

    /// Expands the stored table: `0xFFFF, n` stands for `n` code units
    /// that map to themselves.
    pub fn parse(raw: &[u8]) -> Self {
        let mut map: Vec<u16> = (0..=u16::MAX).collect();
        let mut next = 0usize;
        let mut i = 0usize;
        while i + 1 < raw.len() && next < map.len() {
            let v = le16(raw, i);
            i += 2;
            if v == 0xFFFF && i + 1 < raw.len() {
                next += usize::from(le16(raw, i));
                i += 2;
            } else {
                if let Some(m) = map.get_mut(next) {
                    *m = v;
                }
                next += 1;
            }
        }
        Upcase(map)
    }

    /// The name's code units, upper-cased.
    pub fn fold(&self, name: &[u16]) -> Vec<u16> {
        name.iter()
            .map(|&u| self.0.get(usize::from(u)).copied().unwrap_or(u))
            .collect()
    }
}
