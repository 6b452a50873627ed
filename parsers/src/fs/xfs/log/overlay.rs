//! Replayed sectors kept in memory and laid over every read, so replay
//! never writes the image: the shared [`Patches`] adapter, bounded.

use super::records::BB;
use crate::readat::{MemSource, Patch, Patches};
use crate::{Error, Result};

/// Bytes held at most (1 GiB): more means a hostile log.
const MAX_BYTES: u64 = 1 << 30;

/// 512-byte sectors (by daddr) replaced by the log's replay.
#[derive(Debug, Default)]
pub struct Overlay {
    patches: Patches,
    /// Bytes put so far (an upper bound of what is held).
    held: u64,
}

impl Overlay {
    /// Sectors replaced.
    pub fn len(&self) -> u64 {
        self.patches.covered() / BB
    }

    /// Replaces the parts of `buf`, read from byte `offset`, that replay
    /// changed.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) {
        // Every patch holds its bytes: the base is never read.
        let none = MemSource(Vec::new());
        if let Err(e) = self.patches.patch(&none, offset, buf) {
            tracing::warn!("xfs log overlay at byte {offset}: {e}");
        }
    }

    /// Stores `data` (whole sectors) as the contents from sector `daddr`.
    pub fn put(&mut self, daddr: u64, data: &[u8]) -> Result<()> {
        let at = daddr
            .checked_mul(BB)
            .filter(|a| a.checked_add(data.len() as u64).is_some())
            .ok_or_else(|| {
                Error::corrupt("xfs", 0, format!("replayed sector {daddr} past 2^64 bytes"))
            })?;
        self.held = self.held.saturating_add(data.len() as u64);
        if self.held > MAX_BYTES {
            return Err(Error::corrupt("xfs", at, "log replays too much"));
        }
        let len = (data.len() as u64).div_ceil(BB) * BB;
        let mut bytes = data.to_vec();
        bytes.resize(len as usize, 0);
        self.patches.put(at, len, Patch::Bytes(bytes));
        Ok(())
    }
}
