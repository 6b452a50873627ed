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
    pub(super) fn open(vol: &Volume) -> TreeVolume {
        // A PV holds LVs, not a filesystem: shown raw, never probed.
        if vol.container || vol.lvm_pv {
            return TreeVolume {
                name: vol.name.clone(),
                partition: Some(vol.clone()),
                source: vol.source.clone(),
                state: VolumeState::Unknown,
            };
        }
        let mut tv = Self::from_source(vol.name.clone(), vol.source.clone());
        tv.partition = Some(vol.clone());
        tv
    }

    pub(super) fn whole_disk(disk: &Source) -> TreeVolume {
        Self::from_source("root".into(), disk.clone())
    }

    /// An MBR extended partition, which the tree does not show.
    pub fn is_container(&self) -> bool {
        self.partition.as_ref().is_some_and(|p| p.container)
    }

    fn from_source(name: String, source: Source) -> TreeVolume {
        let state = match fs::probe(&source) {
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
            VolumeState::Fs(_, f) => format!("{} ({})", self.name, f.info().kind),
            _ => self.name.clone(),
        }
    }

    /// Size of the volume in bytes.
    pub fn size(&self) -> u64 {
        self.source.size()
    }
}
