//! The LVM2 label (`LABELONE`, in one of the first four sectors) and the
//! physical volume header that follows it: the PV's uuid and where its data
//! and metadata areas are.

use super::{calc_crc, le32, le64, SECTOR};
use crate::ReadAt;

/// The label may sit in any of these first sectors.
const LABEL_SCAN_SECTORS: u64 = 4;
/// Size of the label header before the pv_header.
const LABEL_HEADER_LEN: usize = 32;
/// pvcreate writes one data area and at most two metadata areas; anything
/// much longer is damage.
const MAX_AREAS: usize = 8;

/// A byte range of the PV, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Area {
    pub offset: u64,
    /// 0 for a data area means "to the end of the device".
    pub size: u64,
}

/// What the label says about one PV.
#[derive(Debug, Clone)]
pub(super) struct PvLabel {
    /// The 32-character uuid with LVM's dashes (6-4-4-4-4-4-6).
    pub uuid: String,
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
}

/// Finds and checks the label of `pv`. `None` when there is no usable one;
/// a label that is present but damaged adds a note.
pub(super) fn read(pv: &dyn ReadAt, name: &str, notes: &mut Vec<String>) -> Option<PvLabel> {
    let mut buf = vec![0u8; (LABEL_SCAN_SECTORS * SECTOR) as usize];
    // A PV smaller than four sectors cannot hold data anyway, but a short
    // read just means fewer sectors to look at.
    let got = read_prefix(pv, &mut buf);
    for sector in 0..LABEL_SCAN_SECTORS {
        let start = (sector * SECTOR) as usize;
        let Some(sec) = buf
            .get(start..start + SECTOR as usize)
            .filter(|_| start + 512 <= got)
        else {
            break;
        };
        if sec.get(..8) != Some(b"LABELONE".as_slice()) {
            continue;
        }
        match parse(sec, sector) {
            Ok(label) => {
                if label.device_size > pv.size() {
                    notes.push(format!(
                        "{name}: the LVM label records {} bytes but only {} are here",
                        label.device_size,
                        pv.size()
                    ));
                }
                return Some(label);
            }
            Err(why) => notes.push(format!("{name}: LVM label in sector {sector}: {why}")),
        }
    }
    None
}

/// Reads as much of `buf` as the source has; returns the count.
fn read_prefix(pv: &dyn ReadAt, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match pv.read_at(done as u64, &mut buf[done..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

fn parse(sec: &[u8], sector: u64) -> Result<PvLabel, String> {
    let sector_xl = le64(sec, 8).ok_or("short")?;
    let crc = le32(sec, 16).ok_or("short")?;
    let offset = le32(sec, 20).ok_or("short")? as usize;
    // The checksum covers everything from offset_xl to the end of the sector.
    let covered = sec.get(20..).ok_or("short")?;
    let want = calc_crc(covered);
    if crc != want {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {want:#010x})"
        ));
    }
    if sector_xl != sector {
        return Err(format!("records sector {sector_xl}"));
    }
    if sec.get(24..32) != Some(b"LVM2 001".as_slice()) {
        return Err("not an LVM2 label (type is not \"LVM2 001\")".into());
    }
    if offset < LABEL_HEADER_LEN {
        return Err(format!("pv_header offset {offset} inside the label header"));
    }
    let hdr = sec
        .get(offset..)
        .ok_or("pv_header offset past the sector")?;
    let raw_uuid = hdr.get(..32).ok_or("pv_header truncated")?;
    let device_size = le64(hdr, 32).ok_or("pv_header truncated")?;
    let mut pos = 40;
    let data_areas = area_list(hdr, &mut pos).ok_or("data area list not terminated")?;
    let metadata_areas = area_list(hdr, &mut pos).ok_or("metadata area list not terminated")?;
    Ok(PvLabel {
        uuid: format_uuid(raw_uuid),
        device_size,
        data_areas,
        metadata_areas,
    })
}

/// A zero-offset-terminated list of (offset, size) pairs at `*pos`.
fn area_list(hdr: &[u8], pos: &mut usize) -> Option<Vec<Area>> {
    let mut out = Vec::new();
    loop {
        let offset = le64(hdr, *pos)?;
        let size = le64(hdr, *pos + 8)?;
        *pos += 16;
        if offset == 0 {
            return Some(out);
        }
        if out.len() == MAX_AREAS {
            return None;
        }
        out.push(Area { offset, size });
    }
}

/// LVM prints uuids as 6-4-4-4-4-4-6 characters; the metadata text uses that
/// form, so the label's is formatted the same way to compare them.
pub(super) fn format_uuid(raw: &[u8]) -> String {
    let mut s = String::with_capacity(38);
    for (i, &b) in raw.iter().enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            s.push('-');
        }
        s.push(if b.is_ascii_graphic() { b as char } else { '?' });
    }
    s
}
