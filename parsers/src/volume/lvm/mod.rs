//! LVM2: physical volumes found among a disk's volumes -> logical volumes.
//!
//! Each candidate volume is checked for an LVM2 label; the metadata areas of
//! all labelled PVs are read and, per VG, the copy with the highest seqno is
//! used. Visible LVs made only of `striped` segments (linear is one stripe)
//! over PVs of this disk become sources; anything else (thin, cache, raid,
//! mirror, snapshot stores, missing PVs) is reported, never guessed at.

mod label;
mod mda;
mod metadata;
mod segments;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::Source;
use label::PvLabel;
use metadata::Section;
use segments::VgPv;

const SECTOR: u64 = 512;
/// LVM's checksum seed (its `INITIAL_CRC`).
const INITIAL_CRC: u32 = 0xf597_a6cf;

/// One logical volume restorefs can read.
pub struct LogicalVolume {
    /// The device-mapper name, `<vg>-<lv>` with '-' doubled inside each.
    pub name: String,
    pub vg: String,
    pub lv: String,
    pub uuid: String,
    pub source: Source,
}

/// What the PVs among a disk's volumes hold.
#[derive(Default)]
pub struct LvmScan {
    pub lvs: Vec<LogicalVolume>,
    /// Indices (into the input) of the volumes carrying an LVM2 label.
    pub pvs: Vec<usize>,
    /// Damage read through and what was skipped, for `info`.
    pub notes: Vec<String>,
    /// LVs not exposed: (dm name, why).
    pub unsupported: Vec<(String, String)>,
}

/// A labelled PV of the input.
struct FoundPv {
    name: String,
    source: Source,
    label: PvLabel,
}

/// The newest metadata seen for one VG.
struct VgCopy {
    seqno: i64,
    /// Which PV and area it came from, for notes.
    from: String,
    vg_name: String,
    vg: Section,
}

/// Reads the LVM2 PVs among `volumes` (name, bytes) and their LVs.
pub fn scan(volumes: &[(String, Source)]) -> LvmScan {
    let mut out = LvmScan::default();
    let mut pvs = Vec::new();
    for (i, (name, src)) in volumes.iter().enumerate() {
        if let Some(label) = label::read(src.as_ref(), name, &mut out.notes) {
            out.pvs.push(i);
            pvs.push(FoundPv {
                name: name.clone(),
                source: src.clone(),
                label,
            });
        }
    }
    if pvs.is_empty() {
        return out;
    }
    let mut vgs: Vec<(String, VgCopy)> = Vec::new();
    for pv in &pvs {
        for (n, area) in pv.label.metadata_areas.iter().enumerate() {
            let what = format!("{}: LVM metadata area {}", pv.name, n + 1);
            let Some(t) = mda::read(pv.source.as_ref(), *area, &what, &mut out.notes) else {
                continue;
            };
            let top = match metadata::parse(&t.text) {
                Ok(top) => top,
                Err(e) => {
                    out.notes
                        .push(format!("{what}: metadata text: {e}; copy skipped"));
                    continue;
                }
            };
            // The VG is the one section at the top level.
            let Some((vg_name, vg)) = top.sections().next() else {
                out.notes.push(format!("{what}: metadata holds no VG"));
                continue;
            };
            let (Some(id), Some(seqno)) = (vg.str("id"), vg.int("seqno")) else {
                out.notes
                    .push(format!("{what}: VG {vg_name} lacks id or seqno"));
                continue;
            };
            let copy = VgCopy {
                seqno,
                from: what.clone(),
                vg_name: vg_name.to_string(),
                vg: vg.clone(),
            };
            match vgs.iter_mut().find(|(k, _)| k == id) {
                None => vgs.push((id.to_string(), copy)),
                Some((_, have)) if have.seqno != seqno => {
                    let (old, new) = if seqno > have.seqno {
                        (std::mem::replace(have, copy), &*have)
                    } else {
                        (copy, &*have)
                    };
                    out.notes.push(format!(
                        "VG {}: {} has seqno {}, older than {} in {}; the newer is used",
                        new.vg_name, old.from, old.seqno, new.seqno, new.from
                    ));
                }
                Some(_) => {}
            }
        }
    }
    for (_, copy) in &vgs {
        read_vg(copy, &pvs, &mut out);
    }
    for (name, why) in &out.unsupported {
        out.notes.push(format!("LV {name} not exposed: {why}"));
    }
    out
}

/// Adds the LVs of one VG to `out`.
fn read_vg(copy: &VgCopy, found: &[FoundPv], out: &mut LvmScan) {
    let vg_name = &copy.vg_name;
    let vg = &copy.vg;
    let extent = vg
        .int("extent_size")
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(SECTOR));
    let Some(extent) = extent else {
        out.notes.push(format!(
            "VG {vg_name}: bad extent_size; its LVs are skipped"
        ));
        return;
    };
    let mut pvs = HashMap::new();
    if let Some(list) = vg.section("physical_volumes") {
        for (key, pv) in list.sections() {
            let id = pv.str("id").unwrap_or("");
            let matching: Vec<&FoundPv> = found.iter().filter(|f| f.label.uuid == id).collect();
            let mut missing_why = None;
            if pv.flags("flags").contains(&"MISSING") {
                missing_why = Some("marked MISSING in the metadata".to_string());
            } else if matching.is_empty() {
                missing_why = Some(format!("PV {id} not on this disk"));
            } else if matching.len() > 1 {
                // A cloned PV: which copy is current cannot be told.
                missing_why = Some(format!("PV {id} found more than once"));
            }
            let num = |k: &str| pv.int(k).and_then(|n| u64::try_from(n).ok());
            let pe_start = num("pe_start").and_then(|n| n.checked_mul(SECTOR));
            let pe_count = num("pe_count");
            let (Some(pe_start), Some(pe_count)) = (pe_start, pe_count) else {
                missing_why = Some("bad pe_start or pe_count".into());
                pvs.insert(
                    key.to_string(),
                    VgPv {
                        source: None,
                        pe_start: 0,
                        pe_count: 0,
                        dev_size: 0,
                        missing_why,
                    },
                );
                continue;
            };
            if let Some(f) = matching.first() {
                // LVM puts the data area where pe_start says; a difference
                // means one of the two is damaged.
                if let Some(a) = f.label.data_areas.first().filter(|a| a.offset != pe_start) {
                    out.notes.push(format!(
                        "VG {vg_name}: {key} ({}): pe_start {pe_start} but the label's data area starts at {}",
                        f.name, a.offset
                    ));
                }
            }
            pvs.insert(
                key.to_string(),
                VgPv {
                    source: matching.first().map(|f| f.source.clone()),
                    pe_start,
                    pe_count,
                    dev_size: matching
                        .first()
                        .map_or(0, |f| f.label.device_size.max(f.source.size())),
                    missing_why,
                },
            );
        }
    }
    for lv in segments::logical_volumes(vg, &pvs, extent) {
        let name = dm_name(vg_name, &lv.lv);
        if !valid_name(vg_name) || !valid_name(&lv.lv) {
            out.unsupported.push((
                name.escape_default().to_string(),
                "invalid VG or LV name".into(),
            ));
            continue;
        }
        if out.lvs.iter().any(|l| l.name == name) {
            out.unsupported
                .push((name, "a second LV with this name".into()));
            continue;
        }
        if let Some(n) = lv.note {
            out.notes.push(format!("LV {name}: {n}"));
        }
        match lv.result {
            Ok(source) => out.lvs.push(LogicalVolume {
                name,
                vg: vg_name.clone(),
                lv: lv.lv,
                uuid: lv.uuid,
                source,
            }),
            Err(why) => out.unsupported.push((name, why)),
        }
    }
}

/// LVM's device-mapper name: a '-' inside either name is doubled, so the
/// single '-' between them stays unambiguous.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The characters LVM allows in names; anything else (a '/', a NUL) would
/// make a bad path in the tree.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+_.-".contains(&c))
}

/// LVM's CRC: the reflected CRC-32 polynomial, seeded with [`INITIAL_CRC`]
/// and without the final inversion of the usual CRC-32.
fn calc_crc(buf: &[u8]) -> u32 {
    crc_update(INITIAL_CRC, buf)
}

fn crc_update(mut crc: u32, buf: &[u8]) -> u32 {
    for &b in buf {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}
