//! The qcow2 header (spec: "Header") and its extensions ("Header
//! extensions"), parsed from the first cluster of the file.
//!
//! All fields are big-endian. Version 2 stops after `snapshots_offset` (72
//! bytes); version 3 adds the feature bitmaps, `refcount_order` and
//! `header_length`, and optionally `compression_type` at byte 104.

use crate::{Error, Result};

use super::LAYER;

/// "QFI\xfb", the first four bytes of every qcow2 file.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Size of a version 2 header, where header extensions start.
pub(super) const V2_HEADER_LEN: usize = 72;
/// Smallest version 3 header.
pub(super) const V3_HEADER_LEN: usize = 104;

/// The smallest and largest cluster_bits qemu creates or opens.
pub(super) const MIN_CLUSTER_BITS: u32 = 9;
pub(super) const MAX_CLUSTER_BITS: u32 = 21;

/// Incompatible feature bits (spec: "incompatible_features").
pub(super) const INCOMPAT_DIRTY: u64 = 1 << 0;
pub(super) const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub(super) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub(super) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub(super) const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types (spec: "Header extensions").
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// How compressed clusters are encoded (header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (no zlib header), 4 KiB window.
    Zlib,
    /// Zstandard frames.
    Zstd,
}

impl CompressionType {
    /// The name qemu-img uses for it.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// The fixed part of the header, with version 2 images given the values
/// the spec says version 3 fields default to.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub header_length: u32,
    pub compression_type: CompressionType,
}

/// What the header extensions say that matters to a reader.
#[derive(Debug, Default, Clone)]
pub(super) struct Extensions {
    /// Format of the backing file ("qcow2", "raw"), if named.
    pub backing_format: Option<String>,
    /// Names of feature bits, as (type, bit, name); type 0 is incompatible.
    pub feature_names: Vec<(u8, u8, String)>,
    /// Name of the external data file.
    pub data_file: Option<String>,
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| Error::corrupt(LAYER, at as u64, "header is truncated"))
}

fn be64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::corrupt(LAYER, at as u64, "header is truncated"))
}

impl Header {
    /// Parses the fixed header from the file's first bytes (at least 104
    /// for version 3, 72 for version 2).
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.get(0..4) != Some(&MAGIC[..]) {
            return Err(Error::corrupt(LAYER, 0, "no QFI\\xfb magic"));
        }
        let version = be32(b, 4)?;
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                LAYER,
                format!("version {version} (only 2 and 3 are read)"),
            ));
        }
        let cluster_bits = be32(b, 20)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                LAYER,
                20,
                format!(
                    "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8)?,
            backing_file_size: be32(b, 16)?,
            cluster_bits,
            size: be64(b, 24)?,
            crypt_method: be32(b, 32)?,
            l1_size: be32(b, 36)?,
            l1_table_offset: be64(b, 40)?,
            nb_snapshots: be32(b, 60)?,
            incompatible: 0,
            header_length: V2_HEADER_LEN as u32,
            compression_type: CompressionType::Zlib,
        };
        if version == 3 {
            h.incompatible = be64(b, 72)?;
            h.header_length = be32(b, 100)?;
            if (h.header_length as usize) < V3_HEADER_LEN || h.header_length > h.cluster_size32() {
                return Err(Error::corrupt(
                    LAYER,
                    100,
                    format!("header_length {} out of range", h.header_length),
                ));
            }
            // The field exists only in longer headers; shorter ones are zlib.
            if h.header_length as usize > V3_HEADER_LEN {
                let kind = *b
                    .get(V3_HEADER_LEN)
                    .ok_or_else(|| Error::corrupt(LAYER, 104, "header is truncated"))?;
                h.compression_type = match kind {
                    0 => CompressionType::Zlib,
                    1 => CompressionType::Zstd,
                    n => return Err(Error::unsupported(LAYER, format!("compression type {n}"))),
                };
            }
            let says_zlib = h.compression_type == CompressionType::Zlib;
            if says_zlib == (h.incompatible & INCOMPAT_COMPRESSION != 0) {
                return Err(Error::corrupt(
                    LAYER,
                    72,
                    "compression type bit disagrees with the compression_type field",
                ));
            }
        }
        Ok(h)
    }

    fn cluster_size32(&self) -> u32 {
        1 << self.cluster_bits
    }

    /// Where header extensions start.
    pub fn extensions_start(&self) -> usize {
        if self.version == 2 {
            V2_HEADER_LEN
        } else {
            self.header_length as usize
        }
    }

    /// Incompatible feature bits this reader does not know.
    pub fn unknown_incompatible(&self) -> u64 {
        self.incompatible & !INCOMPAT_KNOWN
    }

    /// Whether L2 entries are 128-bit with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
}

impl Extensions {
    /// Parses the extension list starting at `start` in `b` (the first
    /// cluster, or the whole file if shorter). A list that runs off the
    /// end is corrupt; unknown extensions are skipped, as the spec says.
    pub fn parse(b: &[u8], start: usize) -> Result<Extensions> {
        let mut ext = Extensions::default();
        let mut at = start;
        loop {
            // A header with no room for an end marker simply has no
            // extensions (qemu stops at the cluster end too).
            if at + 8 > b.len() {
                return Ok(ext);
            }
            let kind = be32(b, at)?;
            let len = be32(b, at + 4)? as usize;
            let data_at = at + 8;
            if kind == EXT_END {
                return Ok(ext);
            }
            let data = b.get(data_at..data_at.saturating_add(len)).ok_or_else(|| {
                Error::corrupt(
                    LAYER,
                    at as u64,
                    format!(
                        "header extension {kind:#x} of {len} bytes runs past the first cluster"
                    ),
                )
            })?;
            match kind {
                EXT_BACKING_FORMAT => {
                    ext.backing_format = Some(String::from_utf8_lossy(data).into_owned())
                }
                EXT_DATA_FILE => ext.data_file = Some(String::from_utf8_lossy(data).into_owned()),
                EXT_FEATURE_NAMES => {
                    // 48-byte entries: type, bit number, 46-byte name.
                    for e in data.chunks_exact(48) {
                        if let [kind, bit, name @ ..] = e {
                            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                            let name = String::from_utf8_lossy(name.get(..end).unwrap_or_default());
                            ext.feature_names.push((*kind, *bit, name.into_owned()));
                        }
                    }
                }
                _ => {}
            }
            // Extension data is padded to a multiple of 8.
            at = data_at + len.div_ceil(8) * 8;
        }
    }

    /// The name the image gives incompatible feature `bit`, if any.
    pub fn incompatible_name(&self, bit: u32) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|(t, b, _)| *t == 0 && u32::from(*b) == bit)
            .map(|(_, _, n)| n.as_str())
    }
}
