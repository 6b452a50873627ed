//! Restore points kept as chains: a full base plus deltas (VMware delta
//! disks, VHD/VHDX differencing disks, qcow2 backing files).
//!
//! Design: each format's open reads only its own file and, for a delta,
//! hands back a [`Layer`] (its reader, which also says which ranges it
//! holds) and a [`ParentLink`] (how it names its parent and the id the
//! parent must carry). The resolver here finds and opens the parent
//! (and its parents, through the same content-based dispatch), checks ids,
//! and stacks the two with [`Overlay`]: a range the child holds (data or
//! explicit zeros) reads from the child, any other from the parent, and
//! past the parent's end as zeros. The grain/block/cluster granularity
//! stays inside each format's `holds` (VHD/VHDX per sector through the
//! bitmap, qcow2 per cluster or subcluster, VMDK per grain).
//!
//! Chains are bounded ([`MAX_DEPTH`]) and cycles are caught by file
//! identity (device and inode), so hostile links cannot loop.
//!
//! Files are found and opened only through a [`Locator`], so a chain
//! resolves from a host folder, a URL or memory alike.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::readat::clamp_len;
use crate::{Error, ReadAt, Result, Source};

use super::locate::{FileId, Locator};
use super::Image;

#[cfg(test)]
mod tests;

/// Most layers one chain may have (base included).
pub const MAX_DEPTH: usize = 256;

/// How [`super::open_with`] treats parent links.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Parent files given by the user, newest link first: `parents[0]` is
    /// the opened file's parent, `parents[1]` that parent's parent, ...
    /// Each replaces the link written in the child.
    pub parents: Vec<PathBuf>,
    /// Open a chain whose ids disagree, with a warning instead of an error.
    pub ignore_link_check: bool,
}

/// A delta's own reader: its bytes, and which of them it holds.
pub trait Layer: ReadAt {
    /// Whether this layer holds the bytes at `offset` (data or explicit
    /// zeros) rather than leaving them to its parent, and for how many
    /// bytes from `offset` that answer holds (1..=`max`, for `max` > 0).
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)>;
}

/// An id a child names its parent by: VMDK CID, VHD unique id, VHDX data
/// write GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// What kind of id (`CID`, `unique id`, `data write GUID`); only ids of
    /// one kind are compared.
    pub kind: &'static str,
    /// Lowercase, without braces.
    pub value: String,
}

impl Ident {
    pub fn new(kind: &'static str, value: &str) -> Ident {
        let value = value
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .to_ascii_lowercase();
        // Writers differ on zero padding of the 32-bit hex CID.
        let value = match u32::from_str_radix(&value, 16) {
            Ok(n) if kind == "CID" => format!("{n:08x}"),
            _ => value,
        };
        Ident { kind, value }
    }
}

/// How a delta names its parent.
#[derive(Debug, Clone)]
pub struct ParentLink {
    /// The link as the file writes it, for `info`.
    pub written: String,
    /// Paths to try, in order, as written (relative ones are taken from the
    /// child's folder; Windows separators are accepted).
    pub names: Vec<String>,
    /// The id the parent must carry, if the format records one.
    pub expect: Option<Ident>,
    /// Another id the parent may carry instead (VHDX `parent_linkage2`).
    pub also: Option<Ident>,
    /// Open the parent as raw bytes rather than by content (qcow2's
    /// `backing_fmt=raw`: a raw disk may start with anything).
    pub raw: bool,
}

/// What a format's open hands the resolver.
pub struct Opened {
    pub image: Image,
    /// For a delta: its layer and how it names its parent.
    pub delta: Option<(Arc<dyn Layer>, ParentLink)>,
    /// The id children of this image link to.
    pub ident: Option<Ident>,
}

impl From<Image> for Opened {
    fn from(image: Image) -> Opened {
        Opened {
            image,
            delta: None,
            ident: None,
        }
    }
}

impl std::ops::Deref for Opened {
    type Target = Image;
    fn deref(&self) -> &Image {
        &self.image
    }
}

/// One file of a chain, for `info`.
#[derive(Debug, Clone)]
pub struct ChainLayer {
    pub file: PathBuf,
    pub format: &'static str,
    /// The parent link as written in the file, if it has one.
    pub link: Option<String>,
    /// The parent file opened for it.
    pub parent: Option<PathBuf>,
    /// How the parent's id compared with the one the link expects.
    pub check: LinkCheck,
}

/// The result of checking a delta's parent against the id its link
/// expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCheck {
    /// No parent: a base or a lone image.
    NoParent,
    /// The parent carries the expected id.
    Ok { kind: &'static str, value: String },
    /// The ids differ and `--ignore-link-check` opened it anyway.
    FailedIgnored {
        kind: &'static str,
        expected: String,
        found: String,
    },
    /// The child records no id, or the parent carries none of its kind.
    NotChecked { why: String },
}

impl LinkCheck {
    /// A mismatch the user let through: the disk may be inconsistent.
    pub fn failed(&self) -> bool {
        matches!(self, LinkCheck::FailedIgnored { .. })
    }

    /// `ok`, `failed_ignored`, `not_checked`, `no_parent`: the `--json` status.
    pub fn status(&self) -> &'static str {
        match self {
            LinkCheck::NoParent => "no_parent",
            LinkCheck::Ok { .. } => "ok",
            LinkCheck::FailedIgnored { .. } => "failed_ignored",
            LinkCheck::NotChecked { .. } => "not_checked",
        }
    }
}

impl std::fmt::Display for LinkCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkCheck::NoParent => Ok(()),
            LinkCheck::Ok { kind, value } => write!(f, "ok ({kind} {value})"),
            LinkCheck::FailedIgnored {
                kind,
                expected,
                found,
            } => write!(f, "FAILED, ignored ({kind} {expected} != {found})"),
            LinkCheck::NotChecked { why } => write!(f, "not checked ({why})"),
        }
    }
}

/// Reads a delta over its parent.
pub struct Overlay {
    child: Arc<dyn Layer>,
    parent: Source,
}

impl Overlay {
    pub fn new(child: Arc<dyn Layer>, parent: Source) -> Overlay {
        Overlay { child, parent }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let (held, n) = self.child.holds(pos, rest.len() as u64)?;
            // A format answering 0 would loop forever; take at least a byte.
            let n = usize::try_from(n.max(1))
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            if held {
                self.child
                    .read_exact_at(pos, head)
                    .map_err(|e| Error::io("chain", pos, e))?;
            } else {
                // A parent smaller than the child reads as zeros past its end.
                let have = clamp_len(self.parent.size(), pos, n);
                let (from_parent, zeros) = head.split_at_mut(have);
                self.parent
                    .read_exact_at(pos, from_parent)
                    .map_err(|e| Error::io("chain", pos, e))?;
                zeros.fill(0);
            }
            pos += n as u64;
            rest = tail;
        }
        Ok(())
    }
}

impl ReadAt for Overlay {
    fn size(&self) -> u64 {
        self.child.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.child.size(), offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        self.read(offset, &mut buf[..len])
            .map_err(io::Error::other)?;
        Ok(len)
    }
}

/// Layers laid end to end (a VMDK's extents), answering `holds` per part.
pub struct LayerConcat {
    parts: Vec<(u64, Arc<dyn Layer>)>,
    size: u64,
}

impl LayerConcat {
    pub fn new(parts: Vec<Arc<dyn Layer>>) -> LayerConcat {
        let mut size = 0u64;
        let parts = parts
            .into_iter()
            .map(|p| {
                let start = size;
                size = size.saturating_add(p.size());
                (start, p)
            })
            .collect();
        LayerConcat { parts, size }
    }

    /// The part holding `offset` and the offset within it.
    fn part(&self, offset: u64) -> Option<(&Arc<dyn Layer>, u64)> {
        let idx = self
            .parts
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)?;
        let (start, part) = self.parts.get(idx)?;
        Some((part, offset - start))
    }
}

impl ReadAt for LayerConcat {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.size, offset, buf.len());
        let Some((part, within)) = self.part(offset).filter(|_| len > 0) else {
            return Ok(0);
        };
        let avail = clamp_len(part.size(), within, len);
        if avail == 0 {
            return Ok(0);
        }
        part.read_at(within, &mut buf[..avail])
    }
}

impl Layer for LayerConcat {
    fn holds(&self, offset: u64, max: u64) -> Result<(bool, u64)> {
        match self.part(offset) {
            Some((part, within)) if within < part.size() => {
                part.holds(within, max.min(part.size() - within))
            }
            // Past the end: nothing to hold, the overlay clamps anyway.
            _ => Ok((true, max)),
        }
    }
}

/// A layer holding every byte: flat and zero extents.
pub struct Whole(pub Source);

impl ReadAt for Whole {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(offset, buf)
    }
}

impl Layer for Whole {
    fn holds(&self, _offset: u64, max: u64) -> Result<(bool, u64)> {
        Ok((true, max))
    }
}

fn chain_err(what: String) -> Error {
    Error::Chain(what)
}

/// Finds the file a link names: each name as written (relative to the
/// child's folder), then by its file name in the child's folder, as when
/// the chain was copied off the machine (`C:\VMs\base.vmdk`,
/// `/vmfs/volumes/ds/vm/base.vmdk`). Returns the paths tried on failure.
fn resolve(
    loc: &dyn Locator,
    child: &Path,
    link: &ParentLink,
) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let mut tried: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !tried.contains(&p) {
            tried.push(p);
        }
    };
    for name in &link.names {
        let windows_abs = name.starts_with("\\\\")
            || name.as_bytes().get(1) == Some(&b':')
            || name.starts_with('\\');
        if !windows_abs {
            let unix = name.replace('\\', "/");
            // Drop `.` components so `info` shows `dir/base.vhd`, not
            // `dir/./base.vhd`.
            let rel: PathBuf = Path::new(&unix)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            push(loc.beside(child, &rel));
        }
    }
    for name in &link.names {
        if let Some(base) = name.rsplit(['/', '\\']).next().filter(|b| !b.is_empty()) {
            push(loc.beside(child, Path::new(base)));
        }
    }
    for p in &tried {
        if loc.exists(p) {
            return Ok(p.clone());
        }
    }
    Err(tried)
}

/// One opened file of a chain, before it is stacked on its parent.
struct Pending {
    path: PathBuf,
    image: Image,
    /// The delta's layer, link and the parent file found for it.
    delta: Option<(Arc<dyn Layer>, ParentLink, PathBuf)>,
}

/// Opens `path` and, for a delta, its parents (see the module docs): first
/// every file from the newest down (a loop, so a long chain does not
/// deepen the stack), then each delta stacked on the point below it.
pub(super) fn open_chain(loc: &dyn Locator, path: &Path, opts: &OpenOptions) -> Result<Image> {
    let mut seen: Vec<FileId> = Vec::new();
    let mut files: Vec<Pending> = Vec::new();
    let mut next = Some((path.to_path_buf(), false));
    while let Some((path, raw)) = next.take() {
        let opened = super::open_one(loc, &path, raw).map_err(|e| match files.last() {
            Some(child) => e.context(format!("parent of {}", loc.name(&child.path).display())),
            None => e,
        })?;
        seen.push(loc.identity(&path));
        let Opened {
            mut image,
            delta,
            ident,
        } = opened;
        image.ident = ident;
        let delta = match delta {
            None => None,
            Some((layer, link)) => {
                let parent = find_parent(loc, &path, &link, opts, files.len(), &seen)?;
                next = Some((parent.clone(), link.raw));
                Some((layer, link, parent))
            }
        };
        files.push(Pending { path, image, delta });
    }
    // Stack from the base up: each point is its delta over the point below.
    let mut below: Option<Image> = None;
    while let Some(Pending { path, image, delta }) = files.pop() {
        let point = match (delta, below.take()) {
            (Some((layer, link, parent_path)), Some(parent)) => stack(
                loc.name(&path),
                image,
                layer,
                link,
                loc.name(&parent_path),
                parent,
                opts,
            )?,
            (_, _) => {
                let mut image = image;
                image.chain = vec![ChainLayer {
                    file: loc.name(&path),
                    format: image.format,
                    link: None,
                    parent: None,
                    check: LinkCheck::NoParent,
                }];
                image
            }
        };
        below = Some(point);
    }
    below.ok_or_else(|| chain_err(format!("{}: nothing opened", loc.name(path).display())))
}

/// The parent file `link` (in `child`, at `depth` from the newest) names:
/// the user's `--parent` for that depth, or the link resolved; refuses
/// chains too long and cycles.
fn find_parent(
    loc: &dyn Locator,
    child: &Path,
    link: &ParentLink,
    opts: &OpenOptions,
    depth: usize,
    seen: &[FileId],
) -> Result<PathBuf> {
    let name = loc.name(child);
    let name = name.display();
    if depth + 1 >= MAX_DEPTH {
        return Err(chain_err(format!(
            "{name}: chain longer than {MAX_DEPTH} layers"
        )));
    }
    let parent = match opts.parents.get(depth) {
        Some(p) => p.clone(),
        None => resolve(loc, child, link).map_err(|tried| {
            let tried: Vec<String> = tried
                .iter()
                .map(|p| loc.name(p).display().to_string())
                .collect();
            chain_err(format!(
                "parent {} of {name} not found (looked for {}); give it with --parent FILE",
                link.written,
                tried.join(", ")
            ))
        })?,
    };
    if !loc.exists(&parent) {
        return Err(chain_err(format!(
            "parent {} of {name} not found; give it with --parent FILE",
            loc.name(&parent).display()
        )));
    }
    if seen.contains(&loc.identity(&parent)) {
        return Err(chain_err(format!(
            "cycle: {name} names {} as its parent, which is already in the chain",
            loc.name(&parent).display()
        )));
    }
    Ok(parent)
}

/// The point of delta `image` (its `layer`, read from `path`) over the
/// point `parent`, after checking the link.
fn stack(
    path: PathBuf,
    mut image: Image,
    layer: Arc<dyn Layer>,
    link: ParentLink,
    parent_path: PathBuf,
    parent: Image,
    opts: &OpenOptions,
) -> Result<Image> {
    let child = path.display();
    let check = match (&link.expect, &parent.ident) {
        (Some(want), Some(got)) if want.kind == got.kind => {
            if want.value == got.value || link.also.as_ref() == Some(got) {
                LinkCheck::Ok {
                    kind: want.kind,
                    value: want.value.clone(),
                }
            } else if opts.ignore_link_check {
                image.notes.push(format!(
                    "warning: link check ignored: {child} expects its parent's {} to be {}, \
                     {} has {}; the disk may be inconsistent",
                    want.kind,
                    want.value,
                    parent_path.display(),
                    got.value
                ));
                LinkCheck::FailedIgnored {
                    kind: want.kind,
                    expected: want.value.clone(),
                    found: got.value.clone(),
                }
            } else {
                return Err(chain_err(format!(
                    "{child} expects its parent's {} to be {}, but {} has {} \
                     (a different disk, or the parent changed since); \
                     --ignore-link-check opens it anyway",
                    want.kind,
                    want.value,
                    parent_path.display(),
                    got.value
                )));
            }
        }
        (Some(want), _) => LinkCheck::NotChecked {
            why: format!("the {} parent records no {}", parent.format, want.kind),
        },
        (None, _) => LinkCheck::NotChecked {
            why: "no id recorded".to_string(),
        },
    };
    if parent.disk.size() != image.disk.size() {
        image.notes.push(format!(
            "parent {} is {} bytes, the delta {}: {}",
            parent_path.display(),
            parent.disk.size(),
            image.disk.size(),
            if parent.disk.size() < image.disk.size() {
                "bytes past the parent's end read as zeros"
            } else {
                "the parent's bytes past the delta's size are not shown"
            }
        ));
    }
    image.disk = Arc::new(Overlay::new(layer, parent.disk.clone()));
    let mut chain = vec![ChainLayer {
        file: path.clone(),
        format: image.format,
        link: Some(link.written),
        parent: Some(parent_path),
        check,
    }];
    chain.extend(parent.chain.iter().cloned());
    image.chain = chain;
    image.file_bytes = image.file_bytes.saturating_add(parent.file_bytes);
    image.parent = Some(Box::new(parent));
    Ok(image)
}
