//! Partition tables: a virtual disk -> volumes.
//!
//! Which table a disk has is decided by content: a protective MBR (type
//! 0xEE) or a valid GPT header means GPT; a boot-signed MBR with entries
//! means MBR. This layer reads tables only: whether a disk is rather a bare
//! filesystem (whose boot sector may carry 0x55AA too) and which volumes
//! hold filesystems is for the caller (the restore tree) to decide, by
//! probing each source once; it then hands the volumes that hold none to
//! [`add_lvm`]. The crates that parse
//! the tables (`gpt`, `mbrman`) are wrapped so that damaged tables give what
//! can still be read plus a note, never a panic.

mod gpt;
pub mod lvm;
mod mbr;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::readat::Window;
use crate::{Error, ReadAt, Result, Source};

/// The kind of partition table found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// No table: the disk is one filesystem (or unknown bytes).
    None,
    Mbr,
    Gpt {
        disk_guid: String,
        /// The primary header or its entry array was damaged and the backup
        /// copy was used.
        from_backup: bool,
    },
}

impl Scheme {
    /// `none`, `mbr` or `gpt`.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::None => "none",
            Scheme::Mbr => "mbr",
            Scheme::Gpt { .. } => "gpt",
        }
    }
}

/// One partition of a disk.
#[derive(Clone)]
pub struct Volume {
    /// `p<N>`, N as Linux numbers it; `<vg>-<lv>` for an LVM LV.
    pub name: String,
    /// 0 for an LVM LV.
    pub number: u32,
    /// Byte offset on the disk; 0 for an LVM logical volume, whose extents
    /// may lie anywhere.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// GPT type GUID (uppercase) or MBR type id (`0x83`).
    pub type_id: String,
    /// GPT partition name, if any.
    pub part_label: Option<String>,
    /// GPT unique partition GUID (uppercase), if any.
    pub part_guid: Option<String>,
    /// What kind of volume this is.
    pub kind: VolumeKind,
    /// The volume's bytes.
    pub source: Source,
}

/// Where a volume comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A GPT partition, or an MBR primary or logical partition.
    Partition,
    /// An MBR extended partition: a container of logical partitions, listed
    /// in `info` but holding no filesystem of its own.
    Extended,
    /// An LVM2 logical volume (its extents may lie anywhere on its PVs).
    LogicalVolume,
}

impl Volume {
    /// An MBR extended partition.
    pub fn is_container(&self) -> bool {
        self.kind == VolumeKind::Extended
    }
}

/// What a partition type id (GPT type GUID, MBR `0x..` id, `lvm2-lv`)
/// stands for, for the common ones.
pub fn type_name(type_id: &str) -> Option<&'static str> {
    Some(match type_id.to_ascii_uppercase().as_str() {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" | "0XEF" => "EFI system",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "basic data",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" | "0X27" => "Windows recovery",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "LDM data",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" | "0X83" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux /home",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux /boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" | "0X82" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" | "0X8E" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" | "0XFD" => "Linux RAID",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0X07" => "NTFS/exFAT",
        "0X0B" | "0X0C" => "FAT32",
        "0X04" | "0X06" | "0X0E" => "FAT16",
        "0X01" => "FAT12",
        "0X05" | "0X0F" | "0X85" => "extended",
        "0XEE" => "GPT protective",
        "LVM2-LV" => "LVM logical volume",
        _ => return None,
    })
}

/// What a disk's partition table holds.
#[derive(Clone)]
pub struct Table {
    pub scheme: Scheme,
    pub sector_size: u32,
    pub volumes: Vec<Volume>,
    /// Damage read through or worked around, for `info`.
    pub notes: Vec<String>,
}

/// Reads the partition table of `disk`; `Scheme::None` when there is none.
/// Tables only: see the module docs for filesystems and LVM.
pub fn scan(disk: &Source) -> Result<Table> {
    scan_table(disk)
}

/// Appends the LVs of the PVs among `candidates` (indices of `table`'s
/// volumes that hold no filesystem; with no table, the whole disk is the
/// one candidate) as volumes named `<vg>-<lv>`, and returns the indices
/// of the candidates that are PVs (`usize::MAX` for the whole disk).
pub fn add_lvm(disk: &Source, table: &mut Table, candidates: &[usize]) -> Vec<usize> {
    let (index, sources): (Vec<usize>, Vec<(String, Source)>) = if table.volumes.is_empty() {
        [(usize::MAX, ("disk".to_string(), disk.clone()))]
            .into_iter()
            .unzip()
    } else {
        candidates
            .iter()
            .filter_map(|&i| table.volumes.get(i).map(|v| (i, v)))
            .filter(|(_, v)| !v.is_container())
            .map(|(i, v)| (i, (v.name.clone(), v.source.clone())))
            .unzip()
    };
    let scan = lvm::scan(&sources);
    let pvs = scan
        .pvs
        .iter()
        .filter_map(|&c| index.get(c).copied())
        .collect();
    table
        .notes
        .extend(scan.notes.into_iter().map(|n| format!("lvm: {n}")));
    for lv in scan.lvs {
        table.volumes.push(Volume {
            name: lv.name,
            // LVs have no partition number.
            number: 0,
            offset: 0,
            size: lv.source.size(),
            type_id: "lvm2-lv".into(),
            part_label: Some(format!("{}/{}", lv.vg, lv.lv)),
            part_guid: Some(lv.uuid),
            kind: VolumeKind::LogicalVolume,
            source: lv.source,
        });
    }
    pvs
}

fn scan_table(disk: &Source) -> Result<Table> {
    let mut mbr_sector = [0u8; 512];
    let have_sector0 = disk.read_exact_at(0, &mut mbr_sector).is_ok();
    let boot_signed = have_sector0 && mbr_sector[510..512] == [0x55, 0xAA];
    let protective = boot_signed && mbr::has_protective_entry(&mbr_sector);

    if protective || !boot_signed {
        match gpt::read(disk, mbr::protective_end_lba(&mbr_sector))? {
            Some(table) => return Ok(table),
            None if protective => {
                return Err(Error::corrupt(
                    "gpt",
                    512,
                    "protective MBR present but neither GPT header is valid",
                ))
            }
            None => {}
        }
    }
    if boot_signed {
        return mbr::read(disk);
    }
    Ok(Table::none())
}

impl Table {
    /// No table: the disk is one volume (a bare filesystem or raw bytes).
    pub fn none() -> Table {
        Table {
            scheme: Scheme::None,
            sector_size: 512,
            volumes: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// A volume's window on the disk, with a note when it runs past the end
/// (a truncated image: the part that exists stays readable).
fn window(disk: &Source, name: &str, offset: u64, size: u64, notes: &mut Vec<String>) -> Source {
    let disk_size = disk.size();
    if offset.saturating_add(size) > disk_size {
        notes.push(format!(
            "{name}: ends at byte {} but the disk has only {disk_size} bytes",
            offset.saturating_add(size)
        ));
    }
    Arc::new(Window::new(disk.clone(), offset, size))
}
