use std::io;

use super::{clamp_len, ReadAt, Source};

/// Sources laid end to end: LVM segments, split extents.
pub struct Concat {
    /// Each part with the offset at which it starts, sorted by that offset.
    parts: Vec<(u64, Source)>,
    size: u64,
}

impl Concat {
    /// Joins `parts` in order.
    pub fn new(parts: Vec<Source>) -> Self {
        let mut size = 0u64;
        let parts = parts
            .into_iter()
            .map(|p| {
                let start = size;
                size = size.saturating_add(p.size());
                (start, p)
            })
            .collect();
        Concat { parts, size }
    }
}

impl ReadAt for Concat {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let idx = self.parts.partition_point(|(start, _)| *start <= offset) - 1;
        let (start, part) = &self.parts[idx];
        let within = offset - start;
        let avail = clamp_len(part.size(), within, len);
        if avail == 0 {
            return Ok(0);
        }
        part.read_at(within, &mut buf[..avail])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemSource;
    use std::sync::Arc;

    #[test]
    fn reads_across_parts() -> std::io::Result<()> {
        let c = Concat::new(vec![
            Arc::new(MemSource(vec![1, 2, 3])),
            Arc::new(MemSource(vec![])),
            Arc::new(MemSource(vec![4, 5])),
        ]);
        let mut buf = [0u8; 5];
        c.read_exact_at(0, &mut buf)?;
        assert_eq!(buf, [1, 2, 3, 4, 5]);
        let mut b2 = [0u8; 2];
        c.read_exact_at(2, &mut b2)?;
        assert_eq!(b2, [3, 4]);
        assert_eq!(c.read_at(5, &mut b2)?, 0);
        Ok(())
    }
}
