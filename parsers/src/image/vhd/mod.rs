//! VHD (Virtual PC / Hyper-V generation 1) disks: fixed and dynamic.
//!
//! A fixed VHD is the raw disk followed by a 512-byte footer. A dynamic VHD
//! starts with a copy of the footer, then a dynamic header pointing at the
//! block allocation table (BAT); each allocated block is a sector bitmap
//! followed by the block's data. A differencing disk is a chain layer (see
//! [`crate::image::chain`]): its parent is found through the parent
//! locators (W2ru, W2ku, MacX) or the parent name, checked by unique id, and
//! read for every sector the child's bitmaps leave unset.

// `% n == 0` rather than `is_multiple_of`: the workspace supports Rust 1.85.
#![allow(clippy::manual_is_multiple_of)]

mod bat;
pub(crate) mod blocks;
mod differencing;
mod dynamic_header;
mod footer;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;
use std::sync::Arc;

use bat::Bat;
use blocks::BlockDisk;
use dynamic_header::{DynamicHeader, ParentLocator, HEADER_SIZE};
use footer::{DiskType, Footer, FOOTER_SIZE};

use super::chain::{Ident, Layer, Opened, ParentLink};
use super::{Image, ImageFacts};
use crate::cache::ChunkCache;
use crate::readat::Window;
use crate::{Error, ReadAt, Result, Source};
use differencing::Differencing;

#[cfg(test)]
pub(crate) use footer::checksum as footer_checksum;

/// Largest parent locator path read, in bytes: paths are at most a few KiB.
const MAX_LOCATOR_BYTES: u32 = 64 << 10;

fn read_vec(file: &dyn ReadAt, at: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(at, &mut buf)
        .map_err(|e| Error::io("vhd", at, e))?;
    Ok(buf)
}

/// The footer in the last 512 bytes, if it parses.
fn tail_footer(file: &dyn ReadAt) -> Result<Footer> {
    let size = file.size();
    let at = size
        .checked_sub(FOOTER_SIZE as u64)
        .ok_or_else(|| Error::corrupt("vhd", 0, "file smaller than a footer"))?;
    Footer::parse(&read_vec(file, at, FOOTER_SIZE)?, at)
}

/// Whether `file` is a fixed VHD: a valid fixed-disk footer at the end whose
/// size accounts for every other byte, so a raw disk that merely ends with
/// such bytes is not taken for one.
fn is_fixed(file: &dyn ReadAt) -> bool {
    tail_footer(file).is_ok_and(|f| {
        f.disk_type == DiskType::Fixed && Some(f.current_size) == file.size().checked_sub(512)
    })
}

/// Whether the footer bytes at `at` (checksum not required) have the cookie
/// and point at a dynamic header.
fn points_at_dynamic_header(file: &dyn ReadAt, at: u64) -> bool {
    let mut f = [0u8; 24];
    if file.read_exact_at(at, &mut f).is_err() || !Footer::has_cookie(&f) {
        return false;
    }
    let data_offset = footer::be64(&f, 16);
    let mut cookie = [0u8; 8];
    file.read_exact_at(data_offset, &mut cookie).is_ok() && &cookie == dynamic_header::COOKIE
}

/// Whether `file` holds a VHD (fixed, dynamic or differencing), by content.
pub fn probe(file: &dyn ReadAt) -> bool {
    is_fixed(file)
        || points_at_dynamic_header(file, 0)
        || file
            .size()
            .checked_sub(FOOTER_SIZE as u64)
            .is_some_and(|at| points_at_dynamic_header(file, at))
}

/// Opens a VHD already recognised by [`probe`].
pub(crate) fn open(path: &Path, file: Source) -> Result<Opened> {
    let file_bytes = file.size();
    if is_fixed(&*file) {
        let footer = tail_footer(&*file)?;
        let size = footer.current_size;
        let image = Image {
            disk: Arc::new(Window::new(file, 0, size)),
            format: "vhd",
            file_bytes,
            facts: facts(&footer, None, file_bytes - 512),
            notes: geometry_note(&footer).into_iter().collect(),
            chain: Vec::new(),
            parent: None,
            ident: None,
        };
        return Ok(Opened {
            image,
            delta: None,
            ident: Some(unique_id(&footer.unique_id)),
        });
    }
    let mut notes = Vec::new();
    // The footer at the end is the primary one; the copy at offset 0 exists
    // so a damaged end can be recovered from.
    let footer = match tail_footer(&*file) {
        Ok(f) => f,
        Err(primary) => {
            let copy = Footer::parse(&read_vec(&*file, 0, FOOTER_SIZE)?, 0).map_err(|_| {
                primary.context(format!("{}: no usable VHD footer", path.display()))
            })?;
            notes.push(
                "primary VHD footer at the end is damaged; using the copy at offset 0".into(),
            );
            copy
        }
    };
    if footer.disk_type == DiskType::Fixed {
        return Err(Error::corrupt(
            "vhd",
            0,
            "footer says fixed disk but its size does not match the file",
        ));
    }
    let header_at = footer.data_offset;
    if header_at.saturating_add(HEADER_SIZE as u64) > file_bytes {
        return Err(Error::corrupt(
            "vhd",
            16,
            format!("dynamic header offset {header_at} is beyond the file end"),
        ));
    }
    let header = DynamicHeader::parse(&read_vec(&*file, header_at, HEADER_SIZE)?, header_at)?;
    let table_end = u64::from(header.max_table_entries)
        .checked_mul(4)
        .and_then(|n| n.checked_add(header.table_offset));
    if table_end.is_none_or(|end| end > file_bytes) {
        return Err(Error::corrupt(
            "vhd",
            header_at + 16,
            format!(
                "BAT of {} entries at offset {} does not fit in the file ({file_bytes} bytes)",
                header.max_table_entries, header.table_offset
            ),
        ));
    }
    notes.extend(geometry_note(&footer));
    let block_size = u64::from(header.block_size);
    let size = footer.current_size;
    let needed = size.div_ceil(block_size);
    if needed > u64::from(header.max_table_entries) {
        notes.push(format!(
            "BAT has {} entries but the disk needs {needed}: reads past block {} fail",
            header.max_table_entries, header.max_table_entries
        ));
    }
    let bat = Bat::new(
        file.clone(),
        header.table_offset,
        header.max_table_entries,
        header.bitmap_size(),
    );
    let allocated = bat.allocated_blocks()? * block_size;
    let blocks = BlockDisk {
        file: file.clone(),
        map: bat,
        size,
        block_size,
    };
    let (disk, delta): (Source, _) = if footer.disk_type == DiskType::Differencing {
        let layer = Arc::new(Differencing {
            disk: blocks,
            bitmap_size: header.bitmap_size(),
            owner: ChunkCache::owner(),
        });
        let link = parent_link(&*file, &header);
        (layer.clone(), Some((layer as Arc<dyn Layer>, link)))
    } else {
        (Arc::new(blocks), None)
    };
    let image = Image {
        disk,
        format: "vhd",
        file_bytes,
        facts: facts(&footer, Some(block_size), allocated),
        notes,
        chain: Vec::new(),
        parent: None,
        ident: None,
    };
    Ok(Opened {
        image,
        delta,
        ident: Some(unique_id(&footer.unique_id)),
    })
}

/// A VHD unique id as children record it, in hex.
fn unique_id(id: &[u8; 16]) -> Ident {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ident::new("unique id", &hex)
}

fn facts(footer: &Footer, block_size: Option<u64>, allocated: u64) -> ImageFacts {
    ImageFacts {
        subformat: Some(footer.disk_type.name().to_string()),
        allocated_bytes: Some(allocated),
        block_size,
        cache_budget: Some(ChunkCache::global().stats().budget as u64),
        numbers: Vec::new(),
        labels: vec![(
            "creator",
            String::from_utf8_lossy(&footer.creator_app)
                .trim_end()
                .to_string(),
        )],
    }
}

/// Tells when the CHS geometry addresses less than `current_size`: other
/// tools (Virtual PC, and qemu for such images) may show a smaller disk.
fn geometry_note(footer: &Footer) -> Option<String> {
    let chs = footer.chs_size();
    (chs != 0 && chs < footer.current_size).then(|| {
        let (c, h, s) = footer.geometry;
        format!(
            "CHS geometry {c}/{h}/{s} addresses {chs} bytes, less than the footer's size {}; \
             reading the footer's size",
            footer.current_size
        )
    })
}

/// How a differencing disk names its parent: the locators in the order
/// they are most likely to work (relative, absolute Windows, Mac URL), then
/// the parent name in the header.
fn parent_link(file: &dyn ReadAt, header: &DynamicHeader) -> ParentLink {
    let mut names = Vec::new();
    let mut shown = Vec::new();
    for code in [b"W2ru", b"W2ku", b"MacX"] {
        for loc in header
            .parent_locators
            .iter()
            .filter(|l| &l.platform_code == code)
        {
            if let Some(p) = locator_path(file, loc) {
                shown.push(format!("{}: {p}", String::from_utf8_lossy(code)));
                names.push(p);
            }
        }
    }
    if !header.parent_name.is_empty() {
        names.push(header.parent_name.clone());
    }
    let id = unique_id(&header.parent_unique_id);
    ParentLink {
        written: format!(
            "\"{}\" ({}{}parent unique id {})",
            header.parent_name,
            shown.join(", "),
            if shown.is_empty() { "" } else { "; " },
            id.value
        ),
        names,
        expect: Some(id),
        also: None,
        raw: false,
    }
}

fn locator_path(file: &dyn ReadAt, loc: &ParentLocator) -> Option<String> {
    if loc.data_length > MAX_LOCATOR_BYTES {
        return None;
    }
    let bytes = read_vec(file, loc.data_offset, loc.data_length as usize).ok()?;
    Some(match &loc.platform_code {
        // Windows relative/absolute paths, UTF-16LE.
        b"W2ru" | b"W2ku" => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            String::from_utf16_lossy(&units)
        }
        // A file URL, UTF-8 (spec: "MacX").
        b"MacX" => {
            let url = String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_string();
            let path = url.strip_prefix("file://").unwrap_or(&url);
            let path = path.strip_prefix("localhost").unwrap_or(path);
            percent_decode(path)
        }
        _ => String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_string(),
    })
}

/// Decodes `%XX` escapes of a file URL; anything malformed stays as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
