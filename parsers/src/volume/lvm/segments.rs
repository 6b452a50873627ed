//! A VG's logical volumes from its metadata: each LV's segments, sorted and
//! checked, mapped onto extents of the PVs found on this disk.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use super::metadata::{Section, Value};
use super::SECTOR;
use crate::readat::{clamp_len, Concat, Window};
use crate::{ReadAt, Source};

/// Bounds on hostile metadata; real VGs are far smaller.
const MAX_SEGMENTS: usize = 4096;
const MAX_STRIPES: usize = 128;

/// A PV of the VG as its metadata describes it.
pub(super) struct VgPv {
    /// Where its bytes are: `None` when no PV on this disk carries its uuid.
    pub source: Option<Source>,
    /// First extent's byte offset in the PV.
    pub pe_start: u64,
    pub pe_count: u64,
    /// The PV's size as its label records it (or its bytes here, if more):
    /// no extent may lie past it.
    pub dev_size: u64,
    pub missing_why: Option<String>,
}

/// One visible LV, readable or not.
pub(super) struct LvOut {
    pub lv: String,
    pub uuid: String,
    pub result: Result<Source, String>,
    /// A note about bytes past the end of a PV (a truncated image).
    pub note: Option<String>,
}

/// One parsed segment.
struct Seg {
    start: u64,
    count: u64,
    stripe_size: u64,
    /// (PV key, first extent) per stripe.
    stripes: Vec<(String, u64)>,
}

/// Builds every visible LV of `vg` (the VG section) whose PVs are in `pvs`
/// (keyed by the metadata's `pv0`, `pv1`...). `extent` is in bytes.
pub(super) fn logical_volumes(
    vg: &Section,
    pvs: &HashMap<String, VgPv>,
    extent: u64,
) -> Vec<LvOut> {
    let Some(lvs) = vg.section("logical_volumes") else {
        return Vec::new();
    };
    // LVs whose bytes are a snapshot's exception store: their striped data
    // is COW chunks, not a volume.
    let mut cow: HashMap<&str, &str> = HashMap::new();
    for (_, lv) in lvs.sections() {
        for (_, seg) in segments_of(lv) {
            if seg.str("type") == Some("snapshot") {
                if let (Some(c), Some(o)) = (seg.str("cow_store"), seg.str("origin")) {
                    cow.insert(c, o);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (name, lv) in lvs.sections() {
        // Hidden LVs are the internals of pools, mirrors and snapshots.
        if !lv.flags("status").contains(&"VISIBLE") {
            continue;
        }
        let uuid = lv.str("id").unwrap_or("").to_string();
        let mut note = None;
        let result = match cow.get(name) {
            Some(origin) => Err(format!("snapshot of {origin} (copy-on-write store)")),
            None => build(lv, pvs, extent, &mut note),
        };
        out.push(LvOut {
            lv: name.to_string(),
            uuid,
            result,
            note,
        });
    }
    out
}

fn segments_of(lv: &Section) -> impl Iterator<Item = (&str, &Section)> {
    lv.sections().filter(|(k, _)| k.starts_with("segment"))
}

fn build(
    lv: &Section,
    pvs: &HashMap<String, VgPv>,
    extent: u64,
    note: &mut Option<String>,
) -> Result<Source, String> {
    let mut segs = Vec::new();
    for (key, s) in segments_of(lv) {
        if segs.len() == MAX_SEGMENTS {
            return Err(format!("more than {MAX_SEGMENTS} segments"));
        }
        segs.push(parse_seg(s).map_err(|e| format!("{key}: {e}"))?);
    }
    if segs.is_empty() {
        return Err("no segments".into());
    }
    if let Some(n) = lv.int("segment_count") {
        if usize::try_from(n).ok() != Some(segs.len()) {
            return Err(format!("segment_count {n} but {} segments", segs.len()));
        }
    }
    segs.sort_by_key(|s| s.start);
    let mut parts: Vec<Source> = Vec::new();
    let mut next = 0u64;
    for seg in &segs {
        if seg.start != next {
            return Err(format!(
                "segments not contiguous: extent {} expected, {} found",
                next, seg.start
            ));
        }
        next = seg.start.checked_add(seg.count).ok_or("extent overflow")?;
        parts.push(map_seg(seg, pvs, extent, note)?);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Arc::new(Concat::new(parts))
    })
}

fn parse_seg(s: &Section) -> Result<Seg, String> {
    let ty = s.str("type").unwrap_or("?");
    if ty != "striped" {
        return Err(format!("segment type {ty}"));
    }
    let num = |k: &str| {
        s.int(k)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| format!("missing or bad {k}"))
    };
    let start = num("start_extent")?;
    let count = num("extent_count")?;
    let stripe_count = num("stripe_count")?;
    if count == 0 {
        return Err("extent_count 0".into());
    }
    if stripe_count == 0 || stripe_count > MAX_STRIPES as u64 {
        return Err(format!("stripe_count {stripe_count}"));
    }
    let stripe_size = if stripe_count > 1 {
        num("stripe_size")?
    } else {
        0
    };
    let list = match s.value("stripes") {
        Some(Value::Array(a)) => a,
        _ => return Err("missing stripes".into()),
    };
    let mut stripes = Vec::new();
    for pair in list.chunks(2) {
        match pair {
            [Value::Str(pv), Value::Int(pe)] if *pe >= 0 => stripes.push((pv.clone(), *pe as u64)),
            _ => return Err("bad stripes list".into()),
        }
    }
    if stripes.len() as u64 != stripe_count {
        return Err(format!(
            "stripe_count {stripe_count} but {} stripes listed",
            stripes.len()
        ));
    }
    Ok(Seg {
        start,
        count,
        stripe_size,
        stripes,
    })
}

/// The bytes of one segment.
fn map_seg(
    seg: &Seg,
    pvs: &HashMap<String, VgPv>,
    extent: u64,
    note: &mut Option<String>,
) -> Result<Source, String> {
    let n = seg.stripes.len() as u64;
    if seg.count.checked_rem(n) != Some(0) {
        return Err(format!(
            "{} extents do not split into {n} stripes",
            seg.count
        ));
    }
    // Each stripe holds an equal share of the segment's extents.
    let area_len = seg.count / n;
    let area_bytes = area_len
        .checked_mul(extent)
        .ok_or("segment size overflows")?;
    let mut areas: Vec<Source> = Vec::new();
    for (key, pe) in &seg.stripes {
        let pv = pvs
            .get(key)
            .ok_or_else(|| format!("segment refers to unknown PV {key}"))?;
        let src = match (&pv.source, &pv.missing_why) {
            (Some(s), None) => s,
            (_, Some(why)) => return Err(format!("{key}: {why}")),
            (None, None) => return Err(format!("{key} not on this disk")),
        };
        let end_pe = pe.checked_add(area_len).ok_or("extent overflow")?;
        if end_pe > pv.pe_count {
            return Err(format!(
                "extents {pe}..{end_pe} past the {} extents of {key}",
                pv.pe_count
            ));
        }
        let offset = pe
            .checked_mul(extent)
            .and_then(|o| o.checked_add(pv.pe_start))
            .ok_or("extent offset overflows")?;
        let end = offset
            .checked_add(area_bytes)
            .ok_or("extent end overflows")?;
        if end > pv.dev_size {
            return Err(format!(
                "extents {pe}..{end_pe} end at byte {end}, past the {} bytes of {key}",
                pv.dev_size
            ));
        }
        if end > src.size() && note.is_none() {
            *note = Some(format!(
                "{key} ends at byte {} but the LV reaches byte {end}; the rest reads short",
                src.size()
            ));
        }
        areas.push(Arc::new(Window::new(src.clone(), offset, area_bytes)));
    }
    if areas.len() == 1 {
        return Ok(areas.remove(0));
    }
    let chunk = seg
        .stripe_size
        .checked_mul(SECTOR)
        .filter(|&c| c > 0)
        .ok_or("bad stripe_size")?;
    // dm-stripe needs whole chunks in every stripe.
    if area_bytes.checked_rem(chunk) != Some(0) {
        return Err(format!(
            "stripe of {area_bytes} bytes is not a whole number of {chunk}-byte chunks"
        ));
    }
    Ok(Arc::new(Striped {
        size: area_bytes * n,
        areas,
        chunk,
    }))
}

/// Stripes laid out chunk by chunk: chunk `c` of the segment is chunk
/// `c / n` of stripe `c % n`.
struct Striped {
    areas: Vec<Source>,
    chunk: u64,
    size: u64,
}

impl ReadAt for Striped {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let n = self.areas.len() as u64;
        let c = offset / self.chunk;
        let within = offset % self.chunk;
        let Some(area) = self.areas.get((c % n) as usize) else {
            return Ok(0);
        };
        let at = (c / n) * self.chunk + within;
        let len = len.min(usize::try_from(self.chunk - within).unwrap_or(usize::MAX));
        area.read_at(at, &mut buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemSource;

    #[test]
    fn striped_interleaves_chunks() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let a: Source = Arc::new(MemSource(b"AAaa".to_vec()));
        let b: Source = Arc::new(MemSource(b"BBbb".to_vec()));
        let s = Striped {
            areas: vec![a, b],
            chunk: 2,
            size: 8,
        };
        let mut buf = [0u8; 8];
        s.read_exact_at(0, &mut buf)?;
        assert_eq!(&buf, b"AABBaabb");
        let mut two = [0u8; 3];
        s.read_exact_at(3, &mut two)?;
        assert_eq!(&two, b"Baa");
        assert_eq!(s.read_at(8, &mut two)?, 0);
        Ok(())
    }
}
