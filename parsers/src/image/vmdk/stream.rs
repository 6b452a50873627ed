//! streamOptimized pieces: the footer that holds the real grain directory
//! offset, metadata markers, and compressed grains (`lba`, `size`, zlib data).

use std::collections::HashMap;
use std::io::Read;

use crate::{Error, ReadAt, Result};

use super::sparse_header::SparseHeader;
use super::LAYER;

/// Marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Marker type: a grain table follows.
pub const MARKER_GT: u32 = 1;
/// Marker type: the grain directory follows.
pub const MARKER_GD: u32 = 2;
/// Marker type: the footer (a copy of the header) follows.
pub const MARKER_FOOTER: u32 = 3;

/// Bytes of a grain marker before the compressed data: `lba` u64, `size` u32.
const GRAIN_MARKER_BYTES: u64 = 12;

/// Reads the footer header of a stream whose header says `GD_AT_END`: the
/// last three sectors are a footer marker, the footer, and end-of-stream.
pub fn read_footer(file: &dyn ReadAt) -> Result<SparseHeader> {
    let size = file.size();
    let at = size
        .checked_sub(1024)
        .ok_or_else(|| Error::corrupt(LAYER, size, "stream too short for a footer"))?;
    let mut sector = [0u8; 512];
    file.read_exact_at(at, &mut sector)
        .map_err(|e| Error::io(LAYER, at, e))?;
    let footer = SparseHeader::parse(&sector, at).map_err(|e| {
        e.context("the header says the grain directory is at the end, but there is no footer")
    })?;
    // The marker before the footer is a check only: some writers omit it.
    if let Some(m_at) = at.checked_sub(512) {
        let mut m = [0u8; 512];
        if file.read_exact_at(m_at, &mut m).is_ok() {
            let (_, size, kind) = marker(&m);
            if size == 0 && kind != MARKER_FOOTER {
                tracing::debug!("vmdk: no footer marker at {m_at}");
            }
        }
    }
    Ok(footer)
}

/// Decodes a marker sector: `(value, size, type)`; `type` is meaningful
/// only when `size` is 0 (a metadata marker rather than a grain).
pub fn marker(b: &[u8; 512]) -> (u64, u32, u32) {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[0..8]);
    let mut s = [0u8; 4];
    s.copy_from_slice(&b[8..12]);
    let mut t = [0u8; 4];
    t.copy_from_slice(&b[12..16]);
    (
        u64::from_le_bytes(v),
        u32::from_le_bytes(s),
        u32::from_le_bytes(t),
    )
}

/// Reads and inflates the compressed grain at file byte `at` holding grain
/// number `grain` of the extent.
///
/// The result is always exactly one grain; a short stream is zero-filled only
/// where the grain reaches past the extent's capacity.
pub fn read_compressed_grain(
    file: &dyn ReadAt,
    h: &SparseHeader,
    at: u64,
    grain: u64,
) -> Result<Vec<u8>> {
    let grain_bytes = h.grain_bytes();
    // Deflate never grows data by more than a few bytes per 16 KiB block, so
    // a bigger size field is damage, not data; bounding it bounds the buffer.
    let max_compressed = grain_bytes + grain_bytes / 8 + 1024;
    let (data_at, len) = if h.markers() {
        let mut m = [0u8; GRAIN_MARKER_BYTES as usize];
        file.read_exact_at(at, &mut m)
            .map_err(|e| past_end(file, at, e))?;
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&m[0..8]);
        let lba = u64::from_le_bytes(lba);
        let mut size = [0u8; 4];
        size.copy_from_slice(&m[8..12]);
        let size = u64::from(u32::from_le_bytes(size));
        if lba != grain * h.grain_sectors {
            return Err(Error::corrupt(
                LAYER,
                at,
                format!(
                    "grain marker says sector {lba}, the grain table says {}",
                    grain * h.grain_sectors
                ),
            ));
        }
        if size == 0 || size > max_compressed {
            return Err(Error::corrupt(
                LAYER,
                at,
                format!("compressed grain of {size} bytes"),
            ));
        }
        (at + GRAIN_MARKER_BYTES, size)
    } else {
        // Without markers the length is not stored: read what a grain can
        // take at most and let the zlib stream end itself.
        let left = file.size().saturating_sub(at);
        (at, max_compressed.min(left))
    };
    let mut comp = vec![0u8; len as usize];
    file.read_exact_at(data_at, &mut comp)
        .map_err(|e| past_end(file, data_at, e))?;
    let mut out = Vec::with_capacity(grain_bytes as usize);
    flate2::read::ZlibDecoder::new(&comp[..])
        .take(grain_bytes + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(LAYER, at, format!("compressed grain: {e}")))?;
    let grain_end = (grain + 1).saturating_mul(h.grain_sectors);
    let needed = if grain_end > h.capacity {
        // The last grain may stop at the capacity.
        (h.capacity.saturating_sub(grain * h.grain_sectors)) * 512
    } else {
        grain_bytes
    };
    if (out.len() as u64) < needed || out.len() as u64 > grain_bytes {
        return Err(Error::corrupt(
            LAYER,
            at,
            format!(
                "compressed grain inflates to {} bytes, expected {grain_bytes}",
                out.len()
            ),
        ));
    }
    out.resize(grain_bytes as usize, 0);
    Ok(out)
}

/// Turns a short read into an error that names where the data should be.
pub fn past_end(file: &dyn ReadAt, at: u64, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt(
            LAYER,
            at,
            format!(
                "grain data past the end of the file ({} bytes)",
                file.size()
            ),
        )
    } else {
        Error::io(LAYER, at, e)
    }
}

/// Finds every grain of a stream by walking its markers from the end of the
/// header's overhead, for a stream whose directory or footer is lost.
/// Returns grain number -> sector of its marker, what stopped the walk, and
/// whether that was the end-of-stream marker (the map is then complete).
pub fn walk_markers(file: &dyn ReadAt, h: &SparseHeader) -> (HashMap<u64, u32>, String, bool) {
    let mut grains = HashMap::new();
    let max_compressed = h.grain_bytes() + h.grain_bytes() / 8 + 1024;
    let end = file.size() / 512;
    let mut pos = h.overhead.max(1);
    let mut sector = [0u8; 512];
    let why = loop {
        if pos >= end {
            break format!("the file ends at sector {end} without an end-of-stream marker");
        }
        if let Err(e) = file.read_exact_at(pos * 512, &mut sector) {
            break format!("read error at offset {}: {e}", pos * 512);
        }
        let (val, size, kind) = marker(&sector);
        if size > 0 {
            if u64::from(size) > max_compressed {
                break format!("implausible grain marker at offset {}", pos * 512);
            }
            // Later copies of a grain replace earlier ones, as a reader of
            // the stream in order would see them.
            if val % h.grain_sectors == 0 && val < h.capacity {
                if let Ok(s) = u32::try_from(pos) {
                    grains.insert(val / h.grain_sectors, s);
                }
            }
            pos += (GRAIN_MARKER_BYTES + u64::from(size)).div_ceil(512);
            continue;
        }
        match kind {
            MARKER_EOS => return (grains, "end-of-stream marker".into(), true),
            MARKER_GT | MARKER_GD | MARKER_FOOTER => {
                pos = pos.saturating_add(1).saturating_add(val)
            }
            other => break format!("unknown marker type {other} at offset {}", pos * 512),
        }
    };
    (grains, why, false)
}
