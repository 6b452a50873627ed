//! File records read whole even where they straddle two runs of the
//! $MFT's data.
//!
//! `ntfs` 0.4 maps a record number to the disk position of its first byte
//! and reads the record's bytes contiguously from there. With clusters
//! smaller than records (512-byte clusters, 1 KiB records) a record can
//! start at the end of one $MFT run and go on in the next: the crate then
//! reads the wrong second half and fails its update-sequence check
//! (`testfs1` has such a record). Every read of the crate goes through
//! [`MftCursor`], which serves exactly those record reads from the run map.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};

use super::data::{Run, Stream};
use crate::ReadAt;

/// The $MFT's records that cross a run boundary, by the disk position the
/// crate will read them from.
#[derive(Debug, Default)]
pub(crate) struct SplitRecords {
    by_pos: HashMap<u64, u64>,
    mft: Option<Stream>,
    record_size: u64,
}

impl SplitRecords {
    /// Finds the split records of an $MFT with these runs.
    pub(crate) fn new(mft: Stream, record_size: u32) -> Self {
        let rs = u64::from(record_size).max(1);
        let mut by_pos = HashMap::new();
        if let Stream::NonResident { runs, .. } = &mft {
            for run in runs.iter().take(runs.len().saturating_sub(1)) {
                let end = run.start + run.len;
                if end % rs == 0 {
                    continue;
                }
                let record = end / rs;
                if let Some(pos) = phys(runs, record * rs) {
                    by_pos.insert(pos, record);
                }
            }
        }
        SplitRecords {
            by_pos,
            mft: Some(mft),
            record_size: rs,
        }
    }

    /// Record `buf` is being read from `pos`, if that is a split record.
    fn read(&self, src: &dyn ReadAt, pos: u64, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if buf.len() as u64 != self.record_size {
            return None;
        }
        let record = *self.by_pos.get(&pos)?;
        let mft = self.mft.as_ref()?;
        let n = mft
            .read(src, record * self.record_size, buf)
            .map_err(|e| io::Error::other(e.to_string()));
        Some(n)
    }
}

/// Disk position of byte `offset` of a run list.
fn phys(runs: &[Run], offset: u64) -> Option<u64> {
    let run = runs
        .iter()
        .find(|r| r.start <= offset && offset < r.start + r.len)?;
    run.pos?.checked_add(offset - run.start)
}

/// A `Read + Seek` view of the volume for the `ntfs` crate: plain
/// positional reads, except split file records, which are gathered.
pub(crate) struct MftCursor<'a> {
    src: &'a dyn ReadAt,
    split: &'a SplitRecords,
    pos: u64,
}

impl<'a> MftCursor<'a> {
    pub(crate) fn new(src: &'a dyn ReadAt, split: &'a SplitRecords) -> Self {
        MftCursor { src, split, pos: 0 }
    }
}

impl Read for MftCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.split.read(self.src, self.pos, buf) {
            Some(r) => r?,
            None => self.src.read_at(self.pos, buf)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for MftCursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.src.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn gathers_records_across_runs() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // Records of 8 bytes; runs of 12 bytes at 100 and 200: record 1
        // (bytes 8..16) is split between 108..112 and 200..204.
        let mut disk = vec![0u8; 300];
        for i in 0..12 {
            disk[100 + i] = i as u8;
            disk[200 + i] = 12 + i as u8;
        }
        let src = MemSource(disk);
        let runs = vec![
            Run {
                start: 0,
                len: 12,
                pos: Some(100),
            },
            Run {
                start: 12,
                len: 12,
                pos: Some(200),
            },
        ];
        let split = SplitRecords::new(
            Stream::NonResident {
                runs,
                size: 24,
                init: 24,
            },
            8,
        );
        let mut cur = MftCursor::new(&src, &split);
        cur.seek(SeekFrom::Start(108))?;
        let mut rec = [0u8; 8];
        cur.read_exact(&mut rec)?;
        assert_eq!(rec, [8, 9, 10, 11, 12, 13, 14, 15]);
        // Other reads at that position stay plain.
        cur.seek(SeekFrom::Start(108))?;
        let mut four = [0u8; 4];
        cur.read_exact(&mut four)?;
        assert_eq!(four, [8, 9, 10, 11]);
        Ok(())
    }
}
