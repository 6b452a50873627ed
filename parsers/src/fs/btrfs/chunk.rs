//! Chunks: how logical addresses map to device bytes. The superblock's
//! `sys_chunk_array` holds the chunks of the system block group (enough
//! to read the chunk tree); the chunk tree's `CHUNK_ITEM`s hold all of
//! them (`btrfs_chunk`: length, owner, stripe_len, type, io_align,
//! io_width, sector_size, num_stripes, sub_stripes, then 32-byte
//! `btrfs_stripe`s: devid, offset, dev_uuid).
//!
//! Profiles: single and DUP, RAID1/1C3/1C4 (each stripe a full copy),
//! RAID0 and RAID10 (striped); RAID5/6 are refused when read.

use super::key::{Key, KEY_LEN};
use crate::bytes::{le16, le64};
use crate::{Error, Result};

const CHUNK_HDR: usize = 48;
const STRIPE_LEN: usize = 32;
/// More stripes than any profile writes (`btrfs` caps devices far lower).
const MAX_STRIPES: u16 = 256;

const RAID0: u64 = 1 << 3;
const RAID1: u64 = 1 << 4;
const DUP: u64 = 1 << 5;
const RAID10: u64 = 1 << 6;
const RAID5: u64 = 1 << 7;
const RAID6: u64 = 1 << 8;
const RAID1C3: u64 = 1 << 9;
const RAID1C4: u64 = 1 << 10;

/// One stripe of a chunk: which device and where on it.
#[derive(Debug, Clone)]
pub struct Stripe {
    pub devid: u64,
    pub offset: u64,
    pub dev_uuid: [u8; 16],
}

/// A chunk: `length` bytes of logical space from `logical`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub logical: u64,
    pub length: u64,
    pub stripe_len: u64,
    pub flags: u64,
    pub sub_stripes: u16,
    pub stripes: Vec<Stripe>,
}

/// Where a logical range lies: the device copies of its first byte and
/// how many bytes from there are contiguous on every copy.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub copies: Vec<(u64, u64, [u8; 16])>,
    pub contiguous: u64,
}

impl Chunk {
    /// The chunk item in `b` for key offset `logical`; returns it and the
    /// bytes it took. `at` names where it was read for errors.
    pub fn parse(b: &[u8], logical: u64, at: &str) -> Result<(Chunk, usize)> {
        let corrupt =
            |what: String| Error::corrupt("btrfs", logical, format!("{at}: chunk {what}"));
        if b.len() < CHUNK_HDR {
            return Err(corrupt("item too short".into()));
        }
        let n = le16(b, 44);
        if n == 0 || n > MAX_STRIPES {
            return Err(corrupt(format!("with {n} stripes")));
        }
        let len = CHUNK_HDR + usize::from(n) * STRIPE_LEN;
        let Some(sb) = b.get(CHUNK_HDR..len) else {
            return Err(corrupt("stripes past the item".into()));
        };
        let stripes = sb
            .chunks_exact(STRIPE_LEN)
            .map(|s| {
                let mut dev_uuid = [0u8; 16];
                dev_uuid.copy_from_slice(&s[16..32]);
                Stripe {
                    devid: le64(s, 0),
                    offset: le64(s, 8),
                    dev_uuid,
                }
            })
            .collect();
        let c = Chunk {
            logical,
            length: le64(b, 0),
            stripe_len: le64(b, 16),
            flags: le64(b, 24),
            sub_stripes: le16(b, 46),
            stripes,
        };
        if c.length == 0 || logical.checked_add(c.length).is_none() {
            return Err(corrupt(format!("length {}", c.length)));
        }
        if !c.stripe_len.is_power_of_two() || c.stripe_len < 4096 || c.stripe_len > 1 << 30 {
            return Err(corrupt(format!("stripe_len {}", c.stripe_len)));
        }
        if c.flags & RAID10 != 0 && (c.sub_stripes < 2 || !n.is_multiple_of(c.sub_stripes)) {
            return Err(corrupt(format!(
                "RAID10 with {n} stripes, sub_stripes {}",
                c.sub_stripes
            )));
        }
        Ok((c, len))
    }

    /// The profile's name, for messages.
    pub fn profile(&self) -> &'static str {
        match self.flags & (RAID0 | RAID1 | DUP | RAID10 | RAID5 | RAID6 | RAID1C3 | RAID1C4) {
            0 => "single",
            RAID0 => "RAID0",
            RAID1 => "RAID1",
            DUP => "DUP",
            RAID10 => "RAID10",
            RAID5 => "RAID5",
            RAID6 => "RAID6",
            RAID1C3 => "RAID1C3",
            RAID1C4 => "RAID1C4",
            _ => "mixed profile",
        }
    }

    /// Device copies of logical byte `logical` (inside this chunk).
    fn map(&self, logical: u64) -> Result<Mapping> {
        let off = logical - self.logical;
        let room = self.length - off;
        let n = self.stripes.len() as u64;
        let at = |s: &Stripe, o: u64| -> Result<(u64, u64, [u8; 16])> {
            let p = s
                .offset
                .checked_add(o)
                .ok_or_else(|| Error::corrupt("btrfs", self.logical, "chunk stripe past 2^64"))?;
            Ok((s.devid, p, s.dev_uuid))
        };
        match self.profile() {
            "single" | "DUP" | "RAID1" | "RAID1C3" | "RAID1C4" => Ok(Mapping {
                copies: self
                    .stripes
                    .iter()
                    .map(|s| at(s, off))
                    .collect::<Result<_>>()?,
                contiguous: room,
            }),
            "RAID0" | "RAID10" => {
                let sub = if self.profile() == "RAID10" {
                    u64::from(self.sub_stripes)
                } else {
                    1
                };
                let groups = n / sub;
                let nr = off / self.stripe_len;
                let in_stripe = off % self.stripe_len;
                let first = (nr % groups) * sub;
                let dev_off = (nr / groups) * self.stripe_len + in_stripe;
                let copies = (first..first + sub)
                    .filter_map(|i| self.stripes.get(i as usize))
                    .map(|s| at(s, dev_off))
                    .collect::<Result<_>>()?;
                Ok(Mapping {
                    copies,
                    contiguous: (self.stripe_len - in_stripe).min(room),
                })
            }
            p => Err(Error::unsupported(
                "btrfs",
                format!("{p} chunk at logical {:#x}", self.logical),
            )),
        }
    }
}

/// The bootstrap chunks of `sys_chunk_array`: (key, chunk) pairs.
pub fn parse_sys_array(b: &[u8]) -> Result<Vec<Chunk>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let Some(kb) = b.get(pos..pos + KEY_LEN) else {
            return Err(Error::corrupt(
                "btrfs",
                0x10000 + 0x32b,
                "sys_chunk_array: short key",
            ));
        };
        let key = Key::parse(kb);
        if key.kind != super::key::CHUNK_ITEM {
            return Err(Error::corrupt(
                "btrfs",
                0x10000 + 0x32b,
                format!("sys_chunk_array: item type {}", key.kind),
            ));
        }
        pos += KEY_LEN;
        let (c, len) = Chunk::parse(&b[pos..], key.offset, "sys_chunk_array")?;
        pos += len;
        out.push(c);
    }
    Ok(out)
}

/// Every chunk, sorted by logical address, without overlaps.
#[derive(Debug, Default)]
pub struct ChunkMap {
    chunks: Vec<Chunk>,
}

impl ChunkMap {
    /// The map of `chunks` (any order); overlapping chunks are corrupt.
    pub fn new(mut chunks: Vec<Chunk>) -> Result<ChunkMap> {
        chunks.sort_by_key(|c| c.logical);
        chunks.dedup_by(|b, a| a.logical == b.logical && a.length == b.length);
        for w in chunks.windows(2) {
            if w[0].logical + w[0].length > w[1].logical {
                return Err(Error::corrupt(
                    "btrfs",
                    w[1].logical,
                    format!("chunk overlaps the one at logical {:#x}", w[0].logical),
                ));
            }
        }
        Ok(ChunkMap { chunks })
    }

    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Where logical byte `logical` lies.
    pub fn map(&self, logical: u64) -> Result<Mapping> {
        let i = self.chunks.partition_point(|c| c.logical <= logical);
        let c = i
            .checked_sub(1)
            .and_then(|i| self.chunks.get(i))
            .filter(|c| logical - c.logical < c.length)
            .ok_or_else(|| Error::corrupt("btrfs", logical, "logical address in no chunk"))?;
        c.map(logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(flags: u64, stripes: &[(u64, u64)], sub: u16) -> Vec<u8> {
        let mut b = vec![0u8; CHUNK_HDR];
        b[..8].copy_from_slice(&(1u64 << 30).to_le_bytes());
        b[16..24].copy_from_slice(&65536u64.to_le_bytes());
        b[24..32].copy_from_slice(&flags.to_le_bytes());
        b[44..46].copy_from_slice(&(stripes.len() as u16).to_le_bytes());
        b[46..48].copy_from_slice(&sub.to_le_bytes());
        for (d, o) in stripes {
            let mut s = [0u8; STRIPE_LEN];
            s[..8].copy_from_slice(&d.to_le_bytes());
            s[8..16].copy_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&s);
        }
        b
    }

    #[test]
    fn maps_profiles() {
        let (dup, _) =
            Chunk::parse(&chunk(DUP | 4, &[(1, 1000), (1, 5000)], 0), 1 << 20, "t").unwrap();
        let m = ChunkMap::new(vec![dup]).unwrap();
        let x = m.map((1 << 20) + 10).unwrap();
        assert_eq!(
            x.copies.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1010, 5010]
        );
        assert!(m.map(5).is_err());
        assert!(m.map((1 << 20) + (1 << 30)).is_err());

        let (r0, _) = Chunk::parse(&chunk(RAID0 | 1, &[(1, 0), (2, 0)], 0), 0, "t").unwrap();
        let x = r0.map(65536 + 7).unwrap();
        assert_eq!(x.copies, vec![(2, 7, [0; 16])]);
        assert_eq!(x.contiguous, 65536 - 7);
        let x = r0.map(2 * 65536 + 1).unwrap();
        assert_eq!(x.copies, vec![(1, 65537, [0; 16])]);

        let (r10, _) = Chunk::parse(
            &chunk(RAID10 | 1, &[(1, 0), (2, 0), (3, 0), (4, 0)], 2),
            0,
            "t",
        )
        .unwrap();
        let x = r10.map(65536).unwrap();
        assert_eq!(x.copies.iter().map(|c| c.0).collect::<Vec<_>>(), [3, 4]);

        let (r5, _) =
            Chunk::parse(&chunk(RAID5 | 1, &[(1, 0), (2, 0), (3, 0)], 0), 0, "t").unwrap();
        assert!(matches!(r5.map(0), Err(Error::Unsupported { .. })));
        assert!(Chunk::parse(&chunk(1, &[], 0), 0, "t").is_err());
    }
}
