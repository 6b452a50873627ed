//! MBR with extended and logical partitions, through `mbrman`.
//!
//! `mbrman::MBR::read_from` gives up on the whole disk at one bad EBR and can
//! overflow on hostile start sectors, so we read the primary table with
//! `MBRHeader` and walk the EBR chain ourselves (each EBR is laid out like an
//! MBR), keeping every logical partition found before a bad link.

use mbrman::{MBRHeader, MBRPartitionEntry};

use super::{window, Scheme, Table, Volume};
use crate::readat::{Cursor, Window};
use crate::{Error, Result, Source};

const SECTOR: u64 = 512;
/// Linux stops at far fewer; this only bounds a hostile chain.
const MAX_LOGICAL: usize = 256;

/// True if sector 0 lists a GPT protective (0xEE) partition.
pub(super) fn has_protective_entry(sector0: &[u8; 512]) -> bool {
    (0..4).any(|i| sector0.get(446 + i * 16 + 4) == Some(&0xEE))
}

/// The last sector the protective (0xEE) entry covers: where the backup GPT
/// header was written, even if the disk has since grown (a VHD rounded up
/// to its CHS geometry, a copy onto a larger disk).
pub(super) fn protective_end_lba(sector0: &[u8; 512]) -> Option<u64> {
    (0..4).find_map(|i| {
        let e = sector0.get(446 + i * 16..446 + i * 16 + 16)?;
        if e[4] != 0xEE {
            return None;
        }
        let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
        // 0xFFFFFFFF means "the disk is larger than an MBR can say".
        (sectors != u64::from(u32::MAX) && sectors > 0).then(|| start + sectors - 1)
    })
}

fn read_header(disk: &Source, lba: u64) -> std::result::Result<MBRHeader, mbrman::Error> {
    let win = Window::new(disk.clone(), lba.saturating_mul(SECTOR), SECTOR);
    MBRHeader::read_from(&mut Cursor::new(win))
}

pub(super) fn read(disk: &Source) -> Result<Table> {
    let header = read_header(disk, 0).map_err(|e| Error::corrupt("mbr", 0, format!("MBR: {e}")))?;
    let mut notes = Vec::new();
    let mut volumes = Vec::new();
    let mut extended = None;
    for (i, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        if entry.is_extended() {
            if extended.is_none() {
                extended = Some(entry.clone());
            } else {
                notes.push(format!("p{i}: a second extended partition is ignored"));
            }
        }
        let number = i as u32;
        let name = format!("p{number}");
        let offset = u64::from(entry.starting_lba) * SECTOR;
        let size = u64::from(entry.sectors) * SECTOR;
        let source = window(disk, &name, offset, size, &mut notes);
        volumes.push(Volume {
            name,
            number,
            offset,
            size,
            type_id: format!("0x{:02x}", entry.sys),
            part_label: None,
            part_guid: None,
            kind: if entry.is_extended() {
                super::VolumeKind::Extended
            } else {
                super::VolumeKind::Partition
            },
            source,
        });
    }
    if let Some(ext) = extended {
        walk_logical(disk, &ext, &mut volumes, &mut notes);
    }
    Ok(Table {
        scheme: Scheme::Mbr,
        sector_size: SECTOR as u32,
        volumes,
        notes,
    })
}

/// Follows the EBR chain from the extended partition's first sector.
fn walk_logical(
    disk: &Source,
    ext: &MBRPartitionEntry,
    volumes: &mut Vec<Volume>,
    notes: &mut Vec<String>,
) {
    let ext_start = u64::from(ext.starting_lba);
    let ext_end = ext_start + u64::from(ext.sectors);
    let mut rel: u64 = 0;
    let mut number = 5u32;
    loop {
        let ebr_lba = ext_start + rel;
        let ebr = match read_header(disk, ebr_lba) {
            Ok(h) => h,
            // An empty extended partition need not hold an EBR.
            Err(_) if rel == 0 => return,
            Err(e) => {
                notes.push(format!(
                    "logical partitions after p{}: EBR at LBA {ebr_lba} unreadable ({e}); chain ends here",
                    number - 1
                ));
                return;
            }
        };
        let part = &ebr.partition_1;
        if part.is_used() {
            let name = format!("p{number}");
            let start = ebr_lba + u64::from(part.starting_lba);
            let sectors = u64::from(part.sectors);
            if start + sectors > ext_end {
                notes.push(format!(
                    "{name}: runs past the end of the extended partition (LBA {ext_end})"
                ));
            }
            let offset = start * SECTOR;
            let size = sectors * SECTOR;
            let source = window(disk, &name, offset, size, notes);
            volumes.push(Volume {
                name,
                number,
                offset,
                size,
                type_id: format!("0x{:02x}", part.sys),
                part_label: None,
                part_guid: None,
                kind: super::VolumeKind::Partition,
                source,
            });
            number += 1;
        }
        let next = &ebr.partition_2;
        if next.is_unused() || next.starting_lba == 0 {
            return;
        }
        let next_rel = u64::from(next.starting_lba);
        // Links must move forward inside the extended partition; anything
        // else is a loop or a stray pointer.
        if next_rel <= rel || ext_start + next_rel >= ext_end {
            notes.push(format!(
                "EBR at LBA {ebr_lba}: bad link to relative LBA {next_rel}; chain ends here"
            ));
            return;
        }
        if volumes.len() >= MAX_LOGICAL {
            notes.push(format!(
                "more than {MAX_LOGICAL} partitions; the rest are ignored"
            ));
            return;
        }
        rel = next_rel;
    }
}
