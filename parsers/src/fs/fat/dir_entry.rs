//! 32-byte directory entries: 8.3 entries and the long-name (VFAT) entries
//! that precede them.

use super::{le16, le32};

pub const ENTRY: usize = 32;

pub mod attr {
    pub const READ_ONLY: u8 = 0x01;
    pub const VOLUME: u8 = 0x08;
    pub const DIR: u8 = 0x10;
    /// Read-only + hidden + system + volume: a long-name entry.
    pub const LFN: u8 = 0x0F;
}

/// First name byte of a deleted entry.
const DELETED: u8 = 0xE5;
/// NT case flags in byte 12: the base / extension is all lower case.
const LOWER_BASE: u8 = 0x08;
const LOWER_EXT: u8 = 0x10;

/// One 8.3 entry.
#[derive(Debug, Clone)]
pub struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    pub case: u8,
    pub crt_tenth: u8,
    pub crt_time: u16,
    pub crt_date: u16,
    pub acc_date: u16,
    pub wrt_time: u16,
    pub wrt_date: u16,
    pub first_cluster: u32,
    pub size: u32,
}

/// What an entry slot holds.
pub enum Slot {
    /// First byte 0: no entries follow.
    End,
    /// Deleted or otherwise unused.
    Free,
    Lfn,
    Short(ShortEntry),
}

impl ShortEntry {
    /// Classifies a 32-byte slot; `fat32` keeps the high cluster word (on
    /// FAT12/16 it held OS/2 extended-attribute handles).
    pub fn parse(b: &[u8], fat32: bool) -> Slot {
        let Some(first) = b.first().copied() else {
            return Slot::End;
        };
        if b.len() < ENTRY || first == 0 {
            return Slot::End;
        }
        if first == DELETED {
            return Slot::Free;
        }
        let a = b.get(11).copied().unwrap_or(0);
        if a & 0x3F == attr::LFN {
            return Slot::Lfn;
        }
        let mut name = [0u8; 11];
        for (i, n) in name.iter_mut().enumerate() {
            *n = b.get(i).copied().unwrap_or(b' ');
        }
        let hi = if fat32 {
            u32::from(le16(b, 20)) << 16
        } else {
            0
        };
        Slot::Short(ShortEntry {
            name,
            attr: a,
            case: b.get(12).copied().unwrap_or(0),
            crt_tenth: b.get(13).copied().unwrap_or(0),
            crt_time: le16(b, 14),
            crt_date: le16(b, 16),
            acc_date: le16(b, 18),
            wrt_time: le16(b, 22),
            wrt_date: le16(b, 24),
            first_cluster: hi | u32::from(le16(b, 26)),
            size: le32(b, 28),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.attr & attr::DIR != 0
    }

    pub fn is_label(&self) -> bool {
        self.attr & attr::VOLUME != 0
    }

    /// `.` or `..`.
    pub fn is_dot(&self) -> bool {
        self.name == *b".          " || self.name == *b"..         "
    }

    /// The checksum long-name entries carry of this 8.3 name.
    pub fn checksum(&self) -> u8 {
        self.name
            .iter()
            .fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c))
    }

    /// The 8.3 name as shown: `BASE.EXT`, lower-cased where the NT flags
    /// say, OEM bytes decoded as code page 437.
    pub fn display_name(&self) -> String {
        let mut raw = self.name;
        // 0x05 stands for a real 0xE5 first byte (0xE5 marks deletion).
        if let Some(b) = raw.first_mut().filter(|b| **b == 0x05) {
            *b = DELETED;
        }
        let (base, ext) = raw.split_at(8);
        let part = |s: &[u8], lower: bool| -> String {
            let end = s.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
            s.get(..end)
                .unwrap_or(&[])
                .iter()
                .map(|&c| {
                    let ch = cp437(c);
                    if lower {
                        ch.to_ascii_lowercase()
                    } else {
                        ch
                    }
                })
                .collect()
        };
        let mut out = part(base, self.case & LOWER_BASE != 0);
        let e = part(ext, self.case & LOWER_EXT != 0);
        if !e.is_empty() {
            out.push('.');
            out.push_str(&e);
        }
        out
    }

    /// The volume label (11 bytes, trailing spaces dropped).
    pub fn label(&self) -> String {
        label_string(&self.name)
    }
}

/// An 11-byte label as text.
pub fn label_string(raw: &[u8; 11]) -> String {
    let end = raw
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |i| i + 1);
    raw.get(..end)
        .unwrap_or(&[])
        .iter()
        .map(|&c| cp437(c))
        .collect()
}

/// Code page 437, the DOS default OEM code page mtools also uses.
fn cp437(c: u8) -> char {
    const HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";
    if c < 0x80 {
        char::from(c)
    } else {
        HIGH.chars()
            .nth(usize::from(c - 0x80))
            .unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// A long name being collected from its entries (last part first).
#[derive(Default)]
pub struct LfnBuilder {
    /// UTF-16 units by part; part 1 holds the name's start.
    parts: Vec<[u16; 13]>,
    /// The next ordinal expected (counting down to 1), 0 when idle.
    next: u8,
    checksum: u8,
}

impl LfnBuilder {
    /// Feeds one long-name entry.
    pub fn push(&mut self, b: &[u8]) {
        let ord = b.first().copied().unwrap_or(0);
        let seq = ord & 0x1F;
        let sum = b.get(13).copied().unwrap_or(0);
        let mut units = [0u16; 13];
        let offs = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (u, &o) in units.iter_mut().zip(offs.iter()) {
            *u = le16(b, o);
        }
        if ord & 0x40 != 0 {
            // The last part (stored first) starts a new name.
            self.parts.clear();
            if seq == 0 {
                self.next = 0;
                return;
            }
            self.checksum = sum;
            self.parts.push(units);
            self.next = seq - 1;
        } else if self.next != 0 && seq == self.next && sum == self.checksum {
            self.parts.push(units);
            self.next -= 1;
        } else {
            // Out of sequence: drop what we had, it belongs to nothing.
            self.reset();
        }
    }

    pub fn reset(&mut self) {
        self.parts.clear();
        self.next = 0;
    }

    /// The long name for the 8.3 entry `short`, if a complete one with a
    /// matching checksum precedes it; resets either way.
    pub fn finish(&mut self, short: &ShortEntry) -> Option<String> {
        let ok = !self.parts.is_empty() && self.next == 0 && self.checksum == short.checksum();
        let parts = std::mem::take(&mut self.parts);
        self.next = 0;
        if !ok {
            return None;
        }
        let units: Vec<u16> = parts
            .iter()
            .rev()
            .flat_map(|p| p.iter().copied())
            .take_while(|&u| u != 0)
            .collect();
        if units.is_empty() {
            return None;
        }
        Some(String::from_utf16_lossy(&units))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn unusable_names() {
        use crate::fs::fat::usable_name;
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(!usable_name(bad), "{bad:?}");
        }
        assert!(usable_name("...") && usable_name(".hidden"));
    }

    #[test]
    fn cp437_table_is_complete() {
        assert_eq!(cp437(0x80), 'Ç');
        assert_eq!(cp437(0xE1), 'ß');
        assert_eq!(cp437(0xFF), '\u{a0}');
    }

    /// Long-name entries for `name` (stored order) over the 8.3 `short`.
    fn lfn_entries(name: &str, short: &ShortEntry) -> Vec<[u8; 32]> {
        let mut units: Vec<u16> = name.encode_utf16().collect();
        units.push(0);
        units.resize(units.len().div_ceil(13) * 13, 0xFFFF);
        let offs = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        let n = units.len() / 13;
        (0..n)
            .rev()
            .map(|i| {
                let mut e = [0u8; 32];
                e[0] = (i + 1) as u8 | if i + 1 == n { 0x40 } else { 0 };
                e[11] = attr::LFN;
                e[13] = short.checksum();
                for (k, &o) in offs.iter().enumerate() {
                    e[o..o + 2].copy_from_slice(&units[i * 13 + k].to_le_bytes());
                }
                e
            })
            .collect()
    }

    fn short(name: &[u8; 11]) -> ShortEntry {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(name);
        match ShortEntry::parse(&b, false) {
            Slot::Short(e) => e,
            _ => panic!("not short"),
        }
    }

    #[test]
    fn long_names_need_sequence_and_checksum() {
        let s = short(b"LONGFI~1TXT");
        let name = "A long file name – ünïcode 😀.txt";
        let entries = lfn_entries(name, &s);
        assert!(entries.len() > 2);
        let mut b = LfnBuilder::default();
        entries.iter().for_each(|e| b.push(e));
        assert_eq!(b.finish(&s).as_deref(), Some(name));
        // Another 8.3 entry (checksum differs): the long name is an orphan.
        entries.iter().for_each(|e| b.push(e));
        assert_eq!(b.finish(&short(b"OTHER   TXT")), None);
        // A missing middle part, or a deleted slot in between.
        for (i, e) in entries.iter().enumerate() {
            if i != 1 {
                b.push(e);
            }
        }
        assert_eq!(b.finish(&s), None);
        b.push(&entries[0]);
        b.reset();
        entries[1..].iter().for_each(|e| b.push(e));
        assert_eq!(b.finish(&s), None);
        // Nothing carries over to the next entry.
        assert_eq!(b.finish(&s), None);
    }

    #[test]
    fn short_name_case_flags() {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(b"README  TXT");
        b[12] = LOWER_BASE;
        let Slot::Short(e) = ShortEntry::parse(&b, false) else {
            panic!("not short")
        };
        assert_eq!(e.display_name(), "readme.TXT");
        b[12] = LOWER_EXT;
        let Slot::Short(e) = ShortEntry::parse(&b, false) else {
            panic!("not short")
        };
        assert_eq!(e.display_name(), "README.txt");
    }
}
