use std::sync::Arc;

use crate::fs::{self, FileSystem, FsKind};
use crate::volume::Volume;
use crate::{ReadAt, Source};

/// What restorefs could make of a volume.
pub enum VolumeState {
    /// A filesystem restorefs reads.
    Fs(FsKind, Arc<dyn FileSystem>),
    /// A filesystem was recognised but would not open; shown as raw bytes.
    Failed(FsKind, String),
    /// An LVM2 physical volume: its logical volumes are volumes of their
    /// own; the PV itself is shown as raw bytes.
    LvmPv,
    /// Nothing restorefs reads; shown as raw bytes.
    Unknown,
}

/// A volume of the tree: the partition and what is on it.
pub struct TreeVolume {
    /// `p<N>`, or `root` for a bare filesystem.
    pub name: String,
    /// The partition entry; `None` for a bare filesystem.
    pub partition: Option<Volume>,
    pub source: Source,
    pub state: VolumeState,
}

impl TreeVolume {
    /// Volume `vol` of a table, whose filesystem `probe` found (probed
    /// once, by the tree).
    pub(super) fn open(vol: &Volume, probe: Option<FsKind>) -> TreeVolume {
        let mut tv = Self::from_source(vol.name.clone(), vol.source.clone(), probe);
        tv.partition = Some(vol.clone());
        tv
    }

    /// An LVM2 physical volume: raw bytes, never probed.
    pub(super) fn lvm_pv(vol: &Volume) -> TreeVolume {
        TreeVolume {
            name: vol.name.clone(),
            partition: Some(vol.clone()),
            source: vol.source.clone(),
            state: VolumeState::LvmPv,
        }
    }

    /// The whole disk as one volume `root`, holding `probe`'s filesystem.
    pub(super) fn whole_disk(disk: &Source, probe: Option<FsKind>) -> TreeVolume {
        Self::from_source("root".into(), disk.clone(), probe)
    }

    /// An MBR extended partition, which the tree does not show.
    pub fn is_container(&self) -> bool {
        self.partition.as_ref().is_some_and(|p| p.is_container())
    }

    /// Whether the volume is an LVM2 physical volume.
    pub fn is_lvm_pv(&self) -> bool {
        matches!(self.state, VolumeState::LvmPv)
    }

    fn from_source(name: String, source: Source, probe: Option<FsKind>) -> TreeVolume {
        let state = match probe {
            None => VolumeState::Unknown,
            Some(kind) => match fs::open(kind, source.clone()) {
                Ok(f) => VolumeState::Fs(kind, f),
                Err(e) => {
                    tracing::warn!("{name}: {kind:?} filesystem not readable: {e}");
                    VolumeState::Failed(kind, e.to_string())
                }
            },
        };
        TreeVolume {
            name,
            partition: None,
            source,
            state,
        }
    }

    /// The filesystem, if it opened.
    pub fn fs(&self) -> Option<&Arc<dyn FileSystem>> {
        match &self.state {
            VolumeState::Fs(_, f) => Some(f),
            _ => None,
        }
    }

    /// `p1 (ntfs)`, for error messages.
    pub fn describe(&self) -> String {
        match &self.state {
            VolumeState::Fs(kind, _) => format!("{} ({})", self.name, kind.name()),
            _ => self.name.clone(),
        }
    }

    /// Size of the volume in bytes.
    pub fn size(&self) -> u64 {
        self.source.size()
    }
}
