//! GPT, through the `gpt` crate.
//!
//! The crate asserts a 128-byte entry size (a panic on odd tables), allocates
//! the entry array from an unchecked count, and gives up when the primary
//! header is valid but its entry array is not. So we fetch each header with
//! the crate, check its fields against the disk before the crate reads the
//! entries, and try the backup header when the primary or its array fails.

use std::sync::Arc;

use gpt::disk::LogicalBlockSize;
use gpt::header::{read_header_from_arbitrary_device, Header};
use gpt::partition::file_read_partitions;

use super::{window, Scheme, Table, Volume};
use crate::readat::{Cursor, Window};
use crate::{ReadAt, Result, Source};

/// Entry arrays beyond this are hostile (the spec's minimum is 128 entries).
const MAX_ENTRIES: u32 = 16384;

/// Reads a GPT with 512- or 4096-byte sectors; `None` if no header is valid.
/// `pmbr_end` is the last LBA the protective MBR covers, a second place to
/// look for the backup header when the primary is gone.
pub(super) fn read(disk: &Source, pmbr_end: Option<u64>) -> Result<Option<Table>> {
    let mut notes = Vec::new();
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        let sector: u64 = lb.into();
        let last_lba = (disk.size() / sector).saturating_sub(1);
        let primary = header_at(disk, 1, lb);
        // The backup header's place comes from the primary if it is sound,
        // else from the disk's end, else from the protective MBR (which
        // counts in the disk's own logical sectors).
        let candidates: Vec<u64> = match &primary {
            Ok(h) => vec![h.backup_lba],
            Err(_) => std::iter::once(last_lba).chain(pmbr_end).collect(),
        };
        let mut backup = Err("disk too small for a backup header".to_string());
        let mut backup_lba = last_lba;
        for lba in candidates.into_iter().filter(|&l| l > 1) {
            backup_lba = lba;
            backup = header_at(disk, lba, lb);
            if backup.is_ok() {
                break;
            }
        }
        if primary.is_err() && backup.is_err() {
            continue;
        }
        let mut from_backup = false;
        let mut chosen = None;
        match &primary {
            Ok(h) => match entries(disk, h, lb) {
                Ok(parts) => chosen = Some((h.clone(), parts)),
                Err(e) => notes.push(format!("primary GPT entry array unusable: {e}")),
            },
            Err(e) => notes.push(format!("primary GPT header at LBA 1 invalid: {e}")),
        }
        if chosen.is_none() {
            match &backup {
                Ok(h) => match entries(disk, h, lb) {
                    Ok(parts) => {
                        notes.push(format!("using the backup GPT header at LBA {backup_lba}"));
                        from_backup = true;
                        chosen = Some((h.clone(), parts));
                    }
                    Err(e) => notes.push(format!("backup GPT entry array unusable: {e}")),
                },
                Err(e) => notes.push(format!(
                    "backup GPT header at LBA {backup_lba} invalid: {e}"
                )),
            }
        } else if let Err(e) = &backup {
            notes.push(format!(
                "backup GPT header at LBA {backup_lba} invalid: {e}"
            ));
        }
        let Some((header, parts)) = chosen else {
            return Err(crate::Error::corrupt(
                "gpt",
                sector,
                format!("no usable GPT: {}", notes.join("; ")),
            ));
        };
        let mut volumes = Vec::new();
        for (number, p) in parts {
            let name = format!("p{number}");
            if p.last_lba < p.first_lba {
                notes.push(format!("{name}: last LBA before first LBA; skipped"));
                continue;
            }
            let offset = p.first_lba.saturating_mul(sector);
            let size = (p.last_lba - p.first_lba + 1).saturating_mul(sector);
            let source = window(disk, &name, offset, size, &mut notes);
            volumes.push(Volume {
                name,
                number,
                offset,
                size,
                type_id: p.part_type_guid.guid.to_string().to_uppercase(),
                part_label: Some(p.name.clone()).filter(|n| !n.is_empty()),
                part_guid: Some(p.part_guid.to_string().to_uppercase()),
                kind: super::VolumeKind::Partition,
                source,
            });
        }
        return Ok(Some(Table {
            scheme: Scheme::Gpt {
                disk_guid: header.disk_guid.to_string().to_uppercase(),
                from_backup,
            },
            sector_size: sector as u32,
            volumes,
            notes,
        }));
    }
    Ok(None)
}

/// The header at `lba`, read by the crate through a window that puts that
/// sector where the crate looks for the primary (LBA 1).
fn header_at(disk: &Source, lba: u64, lb: LogicalBlockSize) -> std::result::Result<Header, String> {
    let sector: u64 = lb.into();
    let start = (lba - 1).saturating_mul(sector);
    let win: Source = Arc::new(Window::new(disk.clone(), start, 2 * sector));
    read_header_from_arbitrary_device(&mut Cursor::new(win), lb).map_err(|e| e.to_string())
}

/// The used entries of `h`'s array, checked before the crate reads them.
fn entries(
    disk: &Source,
    h: &Header,
    lb: LogicalBlockSize,
) -> std::result::Result<Vec<(u32, gpt::partition::Partition)>, String> {
    let sector: u64 = lb.into();
    if h.part_size != 128 {
        return Err(format!(
            "entry size {} (restorefs reads 128-byte entries)",
            h.part_size
        ));
    }
    if h.num_parts == 0 || h.num_parts > MAX_ENTRIES {
        return Err(format!("{} entries", h.num_parts));
    }
    let start = h
        .part_start
        .checked_mul(sector)
        .ok_or("entry array offset overflows")?;
    let end = start + u64::from(h.num_parts) * 128;
    if end > disk.size() {
        return Err(format!(
            "entry array ends at byte {end}, past the disk's end"
        ));
    }
    let parts =
        file_read_partitions(&mut Cursor::new(disk.clone()), h, lb).map_err(|e| e.to_string())?;
    Ok(parts.into_iter().collect())
}
