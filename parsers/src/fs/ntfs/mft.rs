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
//!
//! The crate also maps record numbers through the $DATA of record 0 alone,
//! so on an $MFT fragmented enough to need an attribute list, records
//! past that first piece cannot be found. There the cursor shows the crate
//! a record 0 whose $DATA is one run at a cluster past the end of the
//! volume, and serves that virtual range from the whole $MFT.

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
    /// Record 0 as the crate should see it, with its disk position, and
    /// where the virtual contiguous $MFT starts.
    virtual_mft: Option<(u64, Vec<u8>, u64)>,
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
            virtual_mft: None,
        }
    }

    /// Makes records past the first piece of an $MFT with an attribute
    /// list reachable (see the module comment): `record0` is record 0 as
    /// on disk at `mft_pos`, `volume_end` a byte past which nothing is
    /// read. Leaves things as they are if record 0 cannot be rewritten.
    pub(crate) fn virtualize(
        &mut self,
        record0: &[u8],
        mft_pos: u64,
        cluster: u64,
        volume_end: u64,
    ) {
        let Some(mft) = &self.mft else {
            return;
        };
        let cluster = cluster.max(1);
        // A whole number of clusters past the end, with room to spare.
        let lcn = volume_end.div_ceil(cluster) + (1 << 20);
        let clusters = mft.len().div_ceil(cluster);
        if let Some(rec) = one_run_record0(record0, lcn, clusters) {
            self.virtual_mft = Some((mft_pos, rec, lcn * cluster));
        }
    }

    /// Whether the crate is shown a one-run $MFT.
    #[cfg(test)]
    pub(crate) fn is_virtual(&self) -> bool {
        self.virtual_mft.is_some()
    }

    /// Serves `buf` at `pos` if it is a split record or virtual $MFT.
    fn read(&self, src: &dyn ReadAt, pos: u64, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if let Some((rec0_pos, rec0, base)) = &self.virtual_mft {
            if pos == *rec0_pos && buf.len() == rec0.len() {
                buf.copy_from_slice(rec0);
                return Some(Ok(buf.len()));
            }
            if pos >= *base {
                let mft = self.mft.as_ref()?;
                let n = mft
                    .read(src, pos - base, buf)
                    .map_err(|e| io::Error::other(e.to_string()));
                return Some(n);
            }
        }
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

/// Sectors of a record are protected in 512-byte strides.
const STRIDE: usize = 512;

/// `raw` (record 0 as on disk, update sequence applied) with its unnamed
/// $DATA rewritten to map all `clusters` from one run at `lcn`, the
/// update sequence applied again; `None` if anything does not fit.
fn one_run_record0(raw: &[u8], lcn: u64, clusters: u64) -> Option<Vec<u8>> {
    let mut rec = raw.to_vec();
    let le16 = |b: &[u8], o: usize| -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(
            b.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    let usa_ofs = le16(&rec, 4)?;
    let usa_count = le16(&rec, 6)?;
    // Undo the protection: the sector tails are kept in the array.
    for i in 1..usa_count {
        let (end, fix) = (i * STRIDE, usa_ofs + 2 * i);
        let saved: [u8; 2] = rec.get(fix..fix + 2)?.try_into().ok()?;
        rec.get_mut(end - 2..end)?.copy_from_slice(&saved);
    }
    let mut at = le16(&rec, 0x14)?;
    loop {
        let ty = u32::from_le_bytes(rec.get(at..at + 4)?.try_into().ok()?);
        let len = u32::from_le_bytes(rec.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        if ty == 0xFFFF_FFFF || len == 0 {
            return None;
        }
        let non_resident = *rec.get(at + 8)? == 1;
        let name_len = *rec.get(at + 9)?;
        if ty == 0x80 && name_len == 0 && non_resident {
            let last_vcn = clusters.checked_sub(1)?;
            rec.get_mut(at + 0x10..at + 0x18)?
                .copy_from_slice(&0u64.to_le_bytes());
            rec.get_mut(at + 0x18..at + 0x20)?
                .copy_from_slice(&last_vcn.to_le_bytes());
            let mp = at + le16(&rec, at + 0x20)?;
            // One run: header, length and LCN as little-endian integers
            // (signed, so one byte more when the top bit would be set).
            let bytes = |v: u64| {
                (1..=8)
                    .find(|&n| n == 8 || v < 1 << (8 * n - 1))
                    .unwrap_or(8)
            };
            let (nl, nc) = (bytes(clusters), bytes(lcn));
            let mut run = vec![((nc << 4) | nl) as u8];
            run.extend(&clusters.to_le_bytes()[..nl]);
            run.extend(&lcn.to_le_bytes()[..nc]);
            run.push(0);
            if mp + run.len() > at + len {
                return None;
            }
            rec.get_mut(mp..mp + run.len())?.copy_from_slice(&run);
            break;
        }
        at = at.checked_add(len)?;
    }
    // Protect again.
    let usn: [u8; 2] = rec.get(usa_ofs..usa_ofs + 2)?.try_into().ok()?;
    for i in 1..usa_count {
        let (end, fix) = (i * STRIDE, usa_ofs + 2 * i);
        let tail: [u8; 2] = rec.get(end - 2..end)?.try_into().ok()?;
        rec.get_mut(fix..fix + 2)?.copy_from_slice(&tail);
        rec.get_mut(end - 2..end)?.copy_from_slice(&usn);
    }
    Some(rec)
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
