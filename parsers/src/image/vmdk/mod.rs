//! VMware VMDK (Virtual Disk Format 5.0): a text descriptor naming extents
//! (FLAT, ZERO, VMFS, hosted SPARSE and streamOptimized, VMFSSPARSE, SESPARSE),
//! or a sparse extent with the descriptor embedded.
//!
//! Found by content: a sparse extent starts with `KDMV`; a standalone
//! descriptor is a small text file starting with `# Disk DescriptorFile` or
//! carrying `createType`. Extent files are resolved relative to the
//! descriptor's folder exactly as named and opened read-only.
//!
//! Delta disks (a `parentCID` other than `ffffffff`) are layers over the
//! parent their `parentFileNameHint` names: unallocated grains (grain
//! table entry 0) read from the parent, zero grains as zeros, and the
//! parent's `CID` must equal the delta's `parentCID` (see
//! [`crate::image::chain`]).

mod cowd;
mod descriptor;
mod extent;
mod grain;
mod sesparse;
mod sparse_header;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::cache::ChunkCache;
use crate::readat::FileSource;
use crate::{Error, ReadAt, Result, Source};

use super::chain::{Ident, Layer, LayerConcat, Opened, ParentLink, Whole};
use super::{Image, ImageFacts};
use descriptor::{Access, Descriptor, ExtentKind, MAX_DESCRIPTOR_BYTES};
use extent::{FlatExtent, ZeroExtent};
use grain::SparseExtent;
use sparse_header::{SparseHeader, GD_AT_END, MAGIC};

/// Layer name in errors.
pub(crate) const LAYER: &str = "vmdk";

/// Most extent lines listed one by one in `info`.
const LISTED_EXTENTS: usize = 16;

/// Whether a file starting with `head` (at least its first 512 bytes, when
/// the file has them) of `file_size` bytes is a VMDK this module opens.
pub fn probe(head: &[u8], file_size: u64) -> bool {
    head.starts_with(MAGIC)
        || head.starts_with(cowd::MAGIC)
        || (file_size <= MAX_DESCRIPTOR_BYTES as u64 && descriptor::looks_like_descriptor(head))
}

/// What one sparse extent contributes to `info`.
#[derive(Default)]
struct Facts {
    grain_bytes: Option<u64>,
    allocated: Option<u64>,
    compressed: bool,
    notes: Vec<String>,
}

/// Opens the VMDK whose descriptor or sparse extent is `file`, read from
/// `path` (extents are resolved against its folder).
pub(crate) fn open(path: &Path, file: Source) -> Result<Opened> {
    let mut head = [0u8; 512];
    let got = read_head(&*file, &mut head)?;
    let name = path.display().to_string();
    let (image, layer, desc) = if head.starts_with(MAGIC) {
        let base = path
            .file_name()
            .map_or_else(|| name.clone(), |f| f.to_string_lossy().into_owned());
        let (image, ext, desc) = open_monolithic(file, &base).map_err(|e| e.context(&*name))?;
        (image, ext as Arc<dyn Layer>, desc)
    } else if head.starts_with(cowd::MAGIC) {
        return Err(Error::unsupported(
            LAYER,
            "a lone VMFSSPARSE (COWD) extent: open its descriptor",
        )
        .context(name));
    } else if descriptor::looks_like_descriptor(&head[..got]) {
        let (image, parts, desc) = open_descriptor(path, file).map_err(|e| e.context(&*name))?;
        (image, parts as Arc<dyn Layer>, Some(desc))
    } else {
        return Err(
            Error::corrupt(LAYER, 0, "neither a VMDK descriptor nor a sparse extent").context(name),
        );
    };
    let Some(d) = desc else {
        return Ok(Opened::from(image));
    };
    let ident = d.cid.as_deref().map(|c| Ident::new("CID", c));
    let delta = if d.has_parent() {
        let cid = d.parent_cid.as_deref().unwrap_or("");
        let hint = d.parent_hint.clone().ok_or_else(|| {
            Error::corrupt(
                LAYER,
                0,
                format!("delta disk (parentCID {cid}) without a parentFileNameHint"),
            )
            .context(&*name)
        })?;
        Some((
            layer,
            ParentLink {
                written: format!("{hint} (parentCID {cid})"),
                names: vec![hint],
                expect: Some(Ident::new("CID", cid)),
                also: None,
                raw: false,
            },
        ))
    } else {
        None
    };
    Ok(Opened {
        image,
        delta,
        ident,
    })
}

fn read_head(file: &dyn ReadAt, head: &mut [u8; 512]) -> Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match file.read_at(got as u64, &mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io(LAYER, got as u64, e)),
        }
    }
    Ok(got)
}

/// Reads the header of the sparse extent in `file` and opens it with `size`
/// bytes (or its capacity when `None`), scanning its tables within `budget`.
fn open_sparse(
    file: Source,
    size: Option<u64>,
    budget: &mut u64,
) -> Result<(SparseExtent, Facts, SparseHeader)> {
    let mut sector = [0u8; 512];
    file.read_exact_at(0, &mut sector)
        .map_err(|e| Error::io(LAYER, 0, e))?;
    let h = SparseHeader::parse(&sector, 0)?;
    let mut notes = Vec::new();
    let effective = if h.gd_offset == GD_AT_END {
        stream::read_footer(&*file)
    } else {
        Ok(h.clone())
    };
    let opened = effective.and_then(|eff| {
        if eff.gd_offset == GD_AT_END || eff.gd_offset == 0 {
            return Err(Error::corrupt(LAYER, 56, "no grain directory location"));
        }
        let size = size.unwrap_or(eff.capacity * 512);
        SparseExtent::open(file.clone(), eff, size)
    });
    let ext = match opened {
        Ok(x) => x,
        // A stream cut short loses its directory and footer, but each grain
        // carries its own address: walk the markers instead.
        Err(e) if h.markers() => {
            let (grains, why, complete) = stream::walk_markers(&*file, &h);
            // Streams are written in disk order, so a cut stream lost only
            // the grains after the last one found; those must not read as
            // zeros.
            let lost_from = if complete {
                None
            } else {
                Some(grains.keys().max().map_or(0, |g| g + 1))
            };
            notes.push(format!(
                "grain directory unusable ({e}); {} grain(s) found by walking the stream markers, stopped by: {why}{}",
                grains.len(),
                match lost_from {
                    Some(g) => format!("; reads from byte {} on fail", g * h.grain_bytes()),
                    None => String::new(),
                }
            ));
            let size = size.unwrap_or(h.capacity * 512);
            SparseExtent::open_rebuilt(file, h.clone(), size, &grains, lost_from)
        }
        Err(e) => return Err(e),
    };
    let scan = ext.scan(budget);
    let eff = ext.header().clone();
    let size = ext.size();
    let mut facts = Facts {
        grain_bytes: Some(eff.grain_bytes()),
        compressed: eff.compressed(),
        notes,
        ..Facts::default()
    };
    if size > eff.capacity * 512 {
        facts.notes.push(format!(
            "the descriptor gives the extent {size} bytes, its header {}; reads past the header's capacity fail",
            eff.capacity * 512
        ));
    }
    facts.allocated = scan
        .allocated_grains
        .map(|g| g.saturating_mul(ext.header().grain_bytes()));
    facts.notes.extend(scan.notes);
    Ok((ext, facts, h))
}

/// A sparse extent file opened on its own: monolithicSparse or
/// streamOptimized with the descriptor inside, or one piece of a split disk.
fn open_monolithic(
    file: Source,
    name: &str,
) -> Result<(Image, Arc<SparseExtent>, Option<Descriptor>)> {
    let file_bytes = file.size();
    let mut budget = grain::SCAN_BUDGET;
    let (ext, facts, h) = open_sparse(file.clone(), None, &mut budget)?;
    let mut notes = facts.notes.clone();
    let desc = if h.descriptor_offset != 0 && h.descriptor_sectors != 0 {
        let at = h.descriptor_offset.saturating_mul(512);
        let len = h.descriptor_sectors.saturating_mul(512);
        if len > MAX_DESCRIPTOR_BYTES as u64 {
            return Err(Error::corrupt(
                LAYER,
                at,
                format!("embedded descriptor of {len} bytes is implausibly large"),
            ));
        }
        let mut text = vec![0u8; len as usize];
        file.read_exact_at(at, &mut text)
            .map_err(|e| Error::io(LAYER, at, e))?;
        Some(descriptor::parse(&text, at)?)
    } else {
        notes.push(
            "sparse extent without an embedded descriptor (one extent of a split disk?): read on its own; \
             if it is a snapshot delta, its unallocated grains are the parent's and read as zeros here"
                .into(),
        );
        None
    };
    if let Some(d) = &desc {
        // The file is its own (only) extent whatever name the descriptor
        // gives it: files get renamed, descriptors do not follow.
        match d.extents.as_slice() {
            [e] if e.kind == ExtentKind::Sparse => {
                if e.sectors != h.capacity && e.sectors != ext.header().capacity {
                    notes.push(format!(
                        "the embedded descriptor gives {} sectors, the header {}; the header is used",
                        e.sectors,
                        ext.header().capacity
                    ));
                }
            }
            all => notes.push(format!(
                "the embedded descriptor lists {} extent(s); only this file is read",
                all.len()
            )),
        }
    }
    let size = ext.size();
    let mut facts = facts.report(desc.as_ref());
    facts
        .labels
        .push(("extents", format!("SPARSE {name} ({size} bytes)")));
    let ext = Arc::new(ext);
    let image = Image {
        disk: ext.clone(),
        format: "vmdk",
        file_bytes,
        facts,
        notes,
        chain: Vec::new(),
        parent: None,
        ident: None,
    };
    Ok((image, ext, desc))
}

/// A standalone text descriptor and the extent files it names.
fn open_descriptor(path: &Path, file: Source) -> Result<(Image, Arc<LayerConcat>, Descriptor)> {
    let len = file.size();
    if len > MAX_DESCRIPTOR_BYTES as u64 {
        return Err(Error::corrupt(
            LAYER,
            0,
            format!("descriptor file of {len} bytes is implausibly large"),
        ));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(0, &mut text)
        .map_err(|e| Error::io(LAYER, 0, e))?;
    let d = descriptor::parse(&text, 0)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file_bytes = len;
    let mut facts = Facts {
        allocated: Some(0),
        ..Facts::default()
    };
    let mut budget = grain::SCAN_BUDGET;
    let mut parts: Vec<Arc<dyn Layer>> = Vec::with_capacity(d.extents.len());
    // One open file per name, however often the descriptor repeats it.
    let mut files: HashMap<&str, Source> = HashMap::new();
    let mut listed = Vec::new();
    for (i, e) in d.extents.iter().enumerate() {
        let bytes = e.sectors * 512; // parse() checked the sum fits.
        if i < LISTED_EXTENTS {
            listed.push(format!(
                "{} {} ({bytes} bytes)",
                e.kind.name(),
                e.file.as_deref().unwrap_or("-")
            ));
        }
        if e.access == Access::Forbidden {
            return Err(Error::unsupported(
                LAYER,
                format!("extent {i} is NOACCESS: its data is not in this disk"),
            ));
        }
        // Flat data is all allocated; sparse extents add what their scan
        // found, or make the total unknown.
        if matches!(e.kind, ExtentKind::Flat | ExtentKind::Vmfs) {
            facts.allocated = facts.allocated.map(|a| a.saturating_add(bytes));
        } else if e.kind != ExtentKind::Sparse && e.kind != ExtentKind::Zero {
            facts.allocated = None;
        }
        if e.kind == ExtentKind::Zero {
            parts.push(Arc::new(Whole(Arc::new(ZeroExtent(bytes)))));
            continue;
        }
        let fname = e.file.as_deref().unwrap_or("");
        let src = match files.get(fname) {
            Some(s) => s.clone(),
            None => {
                let s = open_extent_file(dir, fname)?;
                file_bytes = file_bytes.saturating_add(s.size());
                files.insert(fname, s.clone());
                s
            }
        };
        let ctx = || format!("extent {i} ({fname})");
        match e.kind {
            ExtentKind::Flat | ExtentKind::Vmfs => {
                let start = e.offset.checked_mul(512).ok_or_else(|| {
                    Error::corrupt(LAYER, 0, format!("extent {i}: offset overflows"))
                })?;
                parts.push(Arc::new(Whole(Arc::new(FlatExtent::new(
                    src, start, bytes,
                )))));
            }
            ExtentKind::Sparse => {
                let (ext, f, _) =
                    open_sparse(src, Some(bytes), &mut budget).map_err(|e| e.context(ctx()))?;
                facts.grain_bytes = facts.grain_bytes.or(f.grain_bytes);
                facts.compressed |= f.compressed;
                facts.allocated = match (facts.allocated, f.allocated) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    _ => None,
                };
                facts
                    .notes
                    .extend(f.notes.into_iter().map(|n| format!("{}: {n}", ctx())));
                parts.push(Arc::new(ext));
            }
            ExtentKind::VmfsSparse => {
                parts.push(cowd::open(src, bytes).map_err(|e| e.context(ctx()))?);
            }
            ExtentKind::SeSparse => {
                parts.push(sesparse::open(src, bytes).map_err(|e| e.context(ctx()))?);
            }
            other => {
                return Err(Error::unsupported(
                    LAYER,
                    format!("{} extents ({})", other.name(), ctx()),
                ))
            }
        }
    }
    if d.extents.len() > LISTED_EXTENTS {
        listed.push(format!("... {} in all", d.extents.len()));
    }
    let mut report = facts.report(Some(&d));
    report.labels.push(("extents", listed.join("; ")));
    let parts = Arc::new(LayerConcat::new(parts));
    let image = Image {
        disk: parts.clone(),
        format: "vmdk",
        file_bytes,
        facts: report,
        notes: facts.notes,
        chain: Vec::new(),
        parent: None,
        ident: None,
    };
    Ok((image, parts, d))
}

/// Opens the extent file `name` exactly as the descriptor names it, relative
/// to the descriptor's folder, read-only; it must be a regular file.
fn open_extent_file(dir: &Path, name: &str) -> Result<Source> {
    let p = dir.join(name);
    let meta = std::fs::metadata(&p).map_err(|_| Error::NotFound(p.display().to_string()))?;
    if !meta.is_file() {
        return Err(Error::corrupt(
            LAYER,
            0,
            format!("extent {} is not a regular file", p.display()),
        ));
    }
    let f = FileSource::open(&p)
        .map_err(|e| Error::io(LAYER, 0, e).context(p.display().to_string()))?;
    Ok(Arc::new(f))
}

impl Facts {
    /// The report's facts: the descriptor's create type as the subformat,
    /// its CID and adapter type as labels.
    fn report(&self, d: Option<&Descriptor>) -> ImageFacts {
        let mut labels = Vec::new();
        if let Some(cid) = d.and_then(|d| d.cid.clone()) {
            labels.push(("cid", cid));
        }
        if let Some(a) = d.and_then(|d| d.adapter_type.clone()) {
            labels.push(("adapter_type", a));
        }
        if self.grain_bytes.is_some() {
            let c = if self.compressed { "deflate" } else { "none" };
            labels.push(("compression", c.to_string()));
        }
        ImageFacts {
            subformat: d.map(|d| d.create_type.clone()),
            allocated_bytes: self.allocated,
            block_size: self.grain_bytes,
            cache_budget: Some(ChunkCache::global().stats().budget as u64),
            numbers: Vec::new(),
            labels,
        }
    }
}
