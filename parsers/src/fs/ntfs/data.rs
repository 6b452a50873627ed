//! Attribute values as we read them: resident bytes or a decoded run list,
//! gathered across attribute lists, and positional reads from the runs.

use std::io::{Read, Seek};

use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::structured_values::NtfsAttributeList;
use ntfs::{Ntfs, NtfsAttribute, NtfsAttributeFlags, NtfsAttributeType, NtfsFile};

use super::lznt1;
use super::ntfs_err;
use super::record::RawRecord;
use crate::cache::ChunkCache;
use crate::{Error, ReadAt, Result};

/// Most runs one value may have; far above any real file (the MFT of a
/// huge volume has a few thousand), it bounds memory on hostile input.
const MAX_RUNS: usize = 1 << 20;
/// Most attribute-list entries we walk for one file.
const MAX_LIST_ENTRIES: usize = 1 << 16;
/// Largest compression unit accepted: Windows compresses only with
/// clusters up to 4 KiB, 16 to a unit (64 KiB); this leaves room for
/// other writers and bounds what one unit allocates.
const MAX_UNIT: u64 = 1 << 20;

/// One data run: `len` bytes of the value from byte `start`, at absolute
/// byte `pos` of the volume, or zeros when sparse (`pos` = None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub len: u64,
    pub pos: Option<u64>,
}

/// An attribute value ready for positional reads.
#[derive(Debug, Clone)]
pub(crate) enum Stream {
    Resident(Vec<u8>),
    NonResident {
        runs: Vec<Run>,
        /// Logical length.
        size: u64,
        /// Valid data length; the rest up to `size` reads as zeros.
        init: u64,
    },
    /// LZNT1-compressed runs, decoded one compression unit at a time.
    Compressed(Compressed),
    /// WOF system compression: chunks of another stream.
    Wof(Box<super::wof::Wof>),
}

/// A compressed value: the runs as for [`Stream::NonResident`], cut into
/// units of `unit` bytes. A unit with no sparse run is stored as is; one
/// that is all sparse reads as zeros; one with allocated clusters and a
/// sparse tail holds LZNT1 data for the whole unit.
#[derive(Debug, Clone)]
pub(crate) struct Compressed {
    runs: Vec<Run>,
    size: u64,
    init: u64,
    unit: u64,
    /// Key of this value's units in the chunk cache.
    owner: u64,
}

/// A value, or why we refuse to read it (compressed, encrypted).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Ok(Stream),
    Refused(String),
}

/// One named value of a file with its sizes.
#[derive(Debug, Clone)]
pub(crate) struct NamedValue {
    pub name: String,
    pub value: Value,
    pub size: u64,
    /// Bytes on disk, as ntfs-3g counts them.
    pub allocated: u64,
}

impl Stream {
    /// Logical length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Stream::Resident(v) => v.len() as u64,
            Stream::NonResident { size, .. } => *size,
            Stream::Compressed(c) => c.size,
            Stream::Wof(w) => w.len(),
        }
    }

    /// Reads at `offset`; 0 at or past the end.
    pub(crate) fn read(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self {
            Stream::Resident(v) => {
                let Some(rest) = usize::try_from(offset).ok().and_then(|o| v.get(o..)) else {
                    return Ok(0);
                };
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok(n)
            }
            Stream::NonResident { runs, size, init } => {
                read_runs(src, runs, *size, *init, offset, buf)
            }
            Stream::Compressed(c) => c.read(src, offset, buf),
            Stream::Wof(w) => w.read(src, offset, buf),
        }
    }
}

impl Stream {
    /// Disk extents (position, length) the value's bytes lie in, for
    /// tests that damage them.
    #[cfg(test)]
    pub(crate) fn extents(&self) -> Vec<(u64, u64)> {
        let runs = match self {
            Stream::Resident(_) => return Vec::new(),
            Stream::NonResident { runs, .. } => runs,
            Stream::Compressed(c) => &c.runs,
            Stream::Wof(w) => return w.raw().extents(),
        };
        runs.iter()
            .filter_map(|r| r.pos.map(|p| (p, r.len)))
            .collect()
    }
}

impl Compressed {
    fn read(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let total = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut done = 0usize;
        while done < total {
            let at = offset + done as u64;
            let want = total - done;
            if at >= self.init {
                buf[done..total].fill(0);
                break;
            }
            let want = want.min(usize::try_from(self.init - at).unwrap_or(usize::MAX));
            let index = at / self.unit;
            let data = ChunkCache::global()
                .get_or_load(self.owner, index, || self.load_unit(src, index))?;
            // `unit` fits in usize (at most MAX_UNIT), and so does the rest.
            let in_unit = (at % self.unit) as usize;
            let n = want.min(data.len().saturating_sub(in_unit));
            if n == 0 {
                return Err(Error::corrupt(
                    "ntfs",
                    at,
                    "compression unit shorter than expected",
                ));
            }
            buf[done..done + n].copy_from_slice(&data[in_unit..in_unit + n]);
            done += n;
        }
        Ok(total)
    }

    /// Unit `index`, decompressed if it is compressed.
    fn load_unit(&self, src: &dyn ReadAt, index: u64) -> Result<Vec<u8>> {
        let start = index * self.unit;
        let end = start.saturating_add(self.unit);
        // The unit's pieces: disk extents in order, and how many of its
        // bytes are sparse or not mapped at all.
        let mut extents: Vec<(u64, u64)> = Vec::new();
        let mut stored = 0u64;
        let mut idx = self.runs.partition_point(|r| r.start + r.len <= start);
        while let Some(run) = self.runs.get(idx).filter(|r| r.start < end) {
            let from = run.start.max(start);
            let to = (run.start + run.len).min(end);
            if let Some(pos) = run.pos {
                let p = pos
                    .checked_add(from - run.start)
                    .ok_or_else(|| Error::corrupt("ntfs", pos, "data run past 2^64"))?;
                extents.push((p, to - from));
                stored += to - from;
            }
            idx += 1;
        }
        // Both at most MAX_UNIT.
        let unit = self.unit as usize;
        let mut disk = vec![0u8; stored as usize];
        let mut filled = 0usize;
        for (pos, len) in extents {
            let len = len as usize;
            src.read_exact_at(pos, &mut disk[filled..filled + len])
                .map_err(|e| Error::io("ntfs", pos, e))?;
            filled += len;
        }
        if stored == 0 {
            return Ok(vec![0u8; unit]);
        }
        if stored == self.unit {
            return Ok(disk);
        }
        let mut out = vec![0u8; unit];
        lznt1::decompress(&disk, &mut out).map_err(|e| {
            Error::corrupt(
                "ntfs",
                start,
                format!("compression unit at byte {start}: {e}"),
            )
        })?;
        Ok(out)
    }
}

fn read_runs(
    src: &dyn ReadAt,
    runs: &[Run],
    size: u64,
    init: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    if offset >= size {
        return Ok(0);
    }
    let total = usize::try_from(size - offset)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let buf = &mut buf[..total];
    let mut done = 0usize;
    while done < total {
        let at = offset + done as u64;
        let want = total - done;
        if at >= init {
            // Past the valid data length: zeros, whatever the clusters hold.
            buf[done..].fill(0);
            break;
        }
        // Don't read past init in this step either.
        let want = want.min(usize::try_from(init - at).unwrap_or(usize::MAX));
        let idx = runs.partition_point(|r| r.start + r.len <= at);
        let run = runs
            .get(idx)
            .filter(|r| r.start <= at)
            .ok_or_else(|| Error::corrupt("ntfs", at, "value offset not mapped by any data run"))?;
        let in_run = at - run.start;
        let n = want.min(usize::try_from(run.len - in_run).unwrap_or(usize::MAX));
        let chunk = &mut buf[done..done + n];
        match run.pos {
            None => chunk.fill(0),
            Some(pos) => {
                let p = pos
                    .checked_add(in_run)
                    .ok_or_else(|| Error::corrupt("ntfs", pos, "data run past 2^64"))?;
                src.read_exact_at(p, chunk)
                    .map_err(|e| Error::io("ntfs", p, e))?;
            }
        }
        done += n;
    }
    Ok(total)
}

/// A piece of a value as one attribute record holds it.
struct Piece {
    name: String,
    lowest_vcn: u64,
    resident: Option<Vec<u8>>,
    runs: Vec<Run>,
    flags: NtfsAttributeFlags,
    size: u64,
    init: u64,
    allocated: u64,
    /// log2 of clusters per compression unit (first piece's is used).
    unit_exp: u8,
    cluster: u64,
}

fn piece<T: Read + Seek>(
    ntfs: &Ntfs,
    cur: &mut T,
    file: &NtfsFile,
    attr: &NtfsAttribute,
) -> Result<Piece> {
    let name = attr.name().map_err(ntfs_err)?.to_string_lossy();
    let flags = attr.flags();
    if attr.is_resident() {
        let value = attr.value(cur).map_err(ntfs_err)?;
        let NtfsAttributeValue::Resident(r) = value else {
            return Err(Error::corrupt(
                "ntfs",
                0,
                "resident attribute without value",
            ));
        };
        let data = r.data().to_vec();
        let len = data.len() as u64;
        return Ok(Piece {
            name,
            lowest_vcn: 0,
            resident: Some(data),
            runs: Vec::new(),
            flags,
            size: len,
            init: len,
            // A resident value is kept 8-byte aligned in the record.
            allocated: (len + 7) & !7,
            unit_exp: 0,
            cluster: 0,
        });
    }
    let raw = RawRecord::read(cur, file, ntfs.file_record_size())?;
    let hdr = raw.header(attr)?;
    let lowest_vcn = hdr.lowest_vcn()?;
    let (size, init, mut allocated) = (
        hdr.data_size()?,
        hdr.initialized_size()?,
        hdr.allocated_size()?,
    );
    if lowest_vcn == 0
        && (flags.contains(NtfsAttributeFlags::SPARSE)
            || flags.contains(NtfsAttributeFlags::COMPRESSED))
    {
        allocated = hdr.compressed_size()?;
    }
    let unit_exp = hdr.compression_unit()?;
    let mut runs = Vec::new();
    let cluster = u64::from(ntfs.cluster_size());
    let mut start = lowest_vcn
        .checked_mul(cluster)
        .ok_or_else(|| Error::corrupt("ntfs", 0, "lowest VCN too large"))?;
    // Encrypted values are refused later; don't decode their runs.
    if !flags.contains(NtfsAttributeFlags::ENCRYPTED) {
        let value = attr.value(cur).map_err(ntfs_err)?;
        let NtfsAttributeValue::NonResident(nr) = value else {
            return Err(Error::corrupt(
                "ntfs",
                0,
                "non-resident attribute read as resident",
            ));
        };
        for run in nr.data_runs() {
            let run = run.map_err(ntfs_err)?;
            if runs.len() >= MAX_RUNS {
                return Err(Error::corrupt("ntfs", 0, "too many data runs"));
            }
            let len = run.allocated_size();
            let pos = run.data_position().value().map(|p| p.get());
            runs.push(Run { start, len, pos });
            start = start
                .checked_add(len)
                .ok_or_else(|| Error::corrupt("ntfs", 0, "data runs past 2^64 bytes"))?;
        }
    }
    Ok(Piece {
        name,
        lowest_vcn,
        resident: None,
        runs,
        flags,
        size,
        init,
        allocated,
        unit_exp,
        cluster,
    })
}

/// Every value of type `ty` of `file` (named `want` only, if given), with
/// attribute lists followed so that values split over several records
/// come back whole.
pub(crate) fn values<T: Read + Seek>(
    ntfs: &Ntfs,
    cur: &mut T,
    file: &NtfsFile,
    ty: NtfsAttributeType,
    want: Option<&str>,
) -> Result<Vec<NamedValue>> {
    let mut pieces = Vec::new();
    let mut has_list = false;
    for attr in file.attributes_raw() {
        let attr = attr.map_err(ntfs_err)?;
        match attr.ty() {
            Ok(NtfsAttributeType::AttributeList) => has_list = true,
            Ok(t) if t == ty => {
                if let Some(w) = want {
                    if attr.name().map_err(ntfs_err)? != w {
                        continue;
                    }
                }
                pieces.push(piece(ntfs, cur, file, &attr)?);
            }
            _ => {}
        }
    }
    if has_list {
        pieces = list_pieces(ntfs, cur, file, ty, want)?;
    }
    assemble(pieces, file.file_record_number())
}

fn list_pieces<T: Read + Seek>(
    ntfs: &Ntfs,
    cur: &mut T,
    file: &NtfsFile,
    ty: NtfsAttributeType,
    want: Option<&str>,
) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let list_attr = file
        .attributes_raw()
        .filter_map(|a| a.ok())
        .find(|a| matches!(a.ty(), Ok(NtfsAttributeType::AttributeList)))
        .ok_or_else(|| Error::corrupt("ntfs", 0, "attribute list vanished"))?;
    let list = list_attr
        .structured_value::<_, NtfsAttributeList>(cur)
        .map_err(ntfs_err)?;
    let mut entries = list.entries();
    let mut seen = 0usize;
    while let Some(entry) = entries.next(cur) {
        let entry = entry.map_err(ntfs_err)?;
        seen += 1;
        if seen > MAX_LIST_ENTRIES {
            return Err(Error::corrupt("ntfs", 0, "attribute list too long"));
        }
        if entry.ty().ok() != Some(ty) {
            continue;
        }
        if let Some(w) = want {
            if entry.name() != w {
                continue;
            }
        }
        let rec = entry.base_file_reference().file_record_number();
        let p = if rec == file.file_record_number() {
            let attr = entry.to_attribute(file).map_err(ntfs_err)?;
            piece(ntfs, cur, file, &attr)?
        } else {
            let other = entry.to_file(ntfs, cur).map_err(ntfs_err)?;
            let attr = entry.to_attribute(&other).map_err(ntfs_err)?;
            piece(ntfs, cur, &other, &attr)?
        };
        pieces.push(p);
    }
    Ok(pieces)
}

/// Joins the pieces of each name into one value, checking that they
/// follow each other without gaps or overlaps.
fn assemble(mut pieces: Vec<Piece>, record: u64) -> Result<Vec<NamedValue>> {
    pieces.sort_by(|a, b| a.name.cmp(&b.name).then(a.lowest_vcn.cmp(&b.lowest_vcn)));
    let mut out: Vec<NamedValue> = Vec::new();
    let mut iter = pieces.into_iter().peekable();
    while let Some(first) = iter.next() {
        if first.lowest_vcn != 0 {
            return Err(Error::corrupt(
                "ntfs",
                0,
                format!(
                    "file record {record}: value '{}' has no first piece",
                    first.name
                ),
            ));
        }
        let flags = first.flags;
        let what = if first.name.is_empty() {
            "data".to_string()
        } else {
            format!("stream '{}'", first.name)
        };
        let refused = if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            Some(format!("file record {record}: EFS-encrypted {what}"))
        } else {
            None
        };
        // Resident values are never compressed, whatever their flags say.
        let unit = if flags.contains(NtfsAttributeFlags::COMPRESSED) && first.resident.is_none() {
            match 1u64
                .checked_shl(u32::from(first.unit_exp))
                .and_then(|n| n.checked_mul(first.cluster))
                .filter(|&u| first.unit_exp > 0 && u <= MAX_UNIT && u > 0)
            {
                Some(u) => Some(u),
                None => {
                    return Err(Error::corrupt(
                        "ntfs",
                        0,
                        format!(
                            "file record {record}: compressed {what} with compression unit 2^{}",
                            first.unit_exp
                        ),
                    ))
                }
            }
        } else {
            None
        };
        let (name, size, init, allocated) = (first.name, first.size, first.init, first.allocated);
        let mut runs = first.runs;
        let resident = first.resident;
        while let Some(next) = iter.next_if(|p| p.name == name) {
            if resident.is_some() || next.resident.is_some() {
                return Err(Error::corrupt(
                    "ntfs",
                    0,
                    format!("file record {record}: resident value '{name}' in pieces"),
                ));
            }
            let end = runs.last().map(|r| r.start + r.len).unwrap_or(0);
            let start = next.runs.first().map(|r| r.start);
            if refused.is_none() && start.is_some_and(|s| s != end) {
                return Err(Error::corrupt(
                    "ntfs",
                    0,
                    format!("file record {record}: pieces of value '{name}' do not join"),
                ));
            }
            if runs.len().saturating_add(next.runs.len()) > MAX_RUNS {
                return Err(Error::corrupt("ntfs", 0, "too many data runs"));
            }
            runs.extend(next.runs);
        }
        let init = init.min(size);
        let value = match (refused, resident, unit) {
            (Some(why), _, _) => Value::Refused(why),
            (None, Some(bytes), _) => Value::Ok(Stream::Resident(bytes)),
            (None, None, Some(unit)) => Value::Ok(Stream::Compressed(Compressed {
                runs,
                size,
                init,
                unit,
                owner: ChunkCache::owner(),
            })),
            (None, None, None) => Value::Ok(Stream::NonResident { runs, size, init }),
        };
        out.push(NamedValue {
            name,
            value,
            size,
            allocated,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn runs_sparse_and_init() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let src = MemSource((0..=255u8).cycle().take(8192).collect::<Vec<u8>>());
        let runs = vec![
            Run {
                start: 0,
                len: 4,
                pos: Some(10),
            },
            Run {
                start: 4,
                len: 4,
                pos: None,
            },
            Run {
                start: 8,
                len: 8,
                pos: Some(100),
            },
        ];
        let s = Stream::NonResident {
            runs,
            size: 14,
            init: 12,
        };
        let mut buf = [0xffu8; 20];
        let n = s.read(&src, 0, &mut buf)?;
        assert_eq!(n, 14);
        assert_eq!(
            &buf[..14],
            &[10, 11, 12, 13, 0, 0, 0, 0, 100, 101, 102, 103, 0, 0]
        );
        assert_eq!(s.read(&src, 14, &mut buf)?, 0);
        assert_eq!(s.read(&src, 9, &mut buf[..2])?, 2);
        assert_eq!(&buf[..2], &[101, 102]);
        Ok(())
    }
}
