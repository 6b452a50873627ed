//! What `info` says of a container: one typed report, the same fields for
//! every format, so a script reading `info --json` meets one schema.
//!
//! Common facts have their own fields; what only one format has goes in
//! [`ImageFacts::numbers`] (snake_case names, numbers only) or
//! [`ImageFacts::labels`] (snake_case names, text such as ids and
//! creator names). Sizes are always bytes, never strings with units.

use super::Image;

/// Facts a container's open records about its own file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The variant of the format (`dynamic`, `differencing`,
    /// `monolithicSparse`, `v3`), when the format has variants.
    pub subformat: Option<String>,
    /// Bytes of the virtual disk that the file holds data for, when the
    /// format says (`None`: not counted).
    pub allocated_bytes: Option<u64>,
    /// The allocation unit: VHD/VHDX block, qcow2 cluster, VMDK grain.
    pub block_size: Option<u64>,
    /// Bytes the decoded-chunk cache may hold for this image.
    pub cache_budget: Option<u64>,
    /// Format-specific numbers (`logical_sector_size`, `version`, ...).
    pub numbers: Vec<(&'static str, u64)>,
    /// Format-specific text (`disk_id`, `creator`, `compression`, ...).
    pub labels: Vec<(&'static str, String)>,
}

/// The whole report of one restore point's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// `raw`, `vmdk`, `vhd`, `vhdx`, `qcow2`.
    pub format: &'static str,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Bytes the image's files take on the host (the chain's, for a delta).
    pub file_bytes: u64,
    pub facts: ImageFacts,
    /// Warnings (recovered damage, a parent of another size).
    pub notes: Vec<String>,
}

impl Image {
    /// This image's report.
    pub fn report(&self) -> ImageReport {
        ImageReport {
            format: self.format,
            virtual_size: crate::ReadAt::size(&*self.disk),
            file_bytes: self.file_bytes,
            facts: self.facts.clone(),
            notes: self.notes.clone(),
        }
    }
}

#[cfg(test)]
impl ImageFacts {
    /// Fact `key` as text (numbers in decimal), for tests: the common
    /// fields by their `--json` names, then numbers, then labels.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let num = |v: Option<u64>| v.map(|n| n.to_string());
        match key {
            "subformat" => self.subformat.clone(),
            "allocated_bytes" => num(self.allocated_bytes),
            "block_size" => num(self.block_size),
            "cache_budget" => num(self.cache_budget),
            _ => self
                .numbers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .or_else(|| {
                    self.labels
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.clone())
                }),
        }
    }
}
