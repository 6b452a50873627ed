use std::error::Error as StdError;

use super::{ReadAt, Source};

/// An [`ext4_view::Ext4Read`] over a source, so `ext4-view` can read any
/// volume of any container.
pub struct Ext4Reader(pub Source);

impl ext4_view::Ext4Read for Ext4Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn StdError + Send + Sync + 'static>> {
        self.0.read_exact_at(start_byte, dst).map_err(Box::from)
    }
}
