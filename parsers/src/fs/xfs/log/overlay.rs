//! Replayed sectors kept in memory and laid over every read, so replay
//! never writes the image.

use std::collections::BTreeMap;

use super::records::BB;
use crate::{Error, Result};

/// Sectors held at most (1 GiB): more means a hostile log.
const MAX_SECTORS: usize = 1 << 21;

/// 512-byte sectors (by daddr) replaced by the log's replay.
#[derive(Debug, Default)]
pub struct Overlay {
    sectors: BTreeMap<u64, Box<[u8; BB as usize]>>,
}

impl Overlay {
    /// Sectors replaced.
    pub fn len(&self) -> usize {
        self.sectors.len()
    }

    /// Replaces the parts of `buf`, read from byte `offset`, that replay
    /// changed.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) {
        if self.sectors.is_empty() || buf.is_empty() {
            return;
        }
        let end = offset.saturating_add(buf.len() as u64);
        for (&s, data) in self.sectors.range(offset / BB..=(end - 1) / BB) {
            let start = s * BB;
            let from = start.max(offset);
            let to = (start + BB).min(end);
            if let (Some(d), Some(src)) = (
                buf.get_mut((from - offset) as usize..(to - offset) as usize),
                data.get((from - start) as usize..(to - start) as usize),
            ) {
                d.copy_from_slice(src);
            }
        }
    }

    /// Stores `data` (whole sectors) as the contents from sector `daddr`.
    pub fn put(&mut self, daddr: u64, data: &[u8]) -> Result<()> {
        for (i, chunk) in data.chunks(BB as usize).enumerate() {
            let mut s = Box::new([0u8; BB as usize]);
            s.get_mut(..chunk.len())
                .unwrap_or_default()
                .copy_from_slice(chunk);
            let at = daddr
                .checked_add(i as u64)
                .ok_or_else(|| Error::corrupt("xfs", 0, "replayed sector past 2^64"))?;
            self.sectors.insert(at, s);
        }
        if self.sectors.len() > MAX_SECTORS {
            return Err(Error::corrupt(
                "xfs",
                daddr.saturating_mul(BB),
                "log replays too much",
            ));
        }
        Ok(())
    }
}
