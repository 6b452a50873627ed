//! The text descriptor: `key=value` lines, extent lines and the disk
//! database (`ddb.*`), standalone or embedded in a sparse extent.

use crate::{Error, Result};

use super::LAYER;

/// Largest descriptor we parse. Real ones are a few hundred bytes; even a
/// twoGbMaxExtent disk of 64 TiB stays well under this.
pub const MAX_DESCRIPTOR_BYTES: usize = 4 << 20;
/// Most extents one descriptor may list (64 TiB in 2 GiB pieces is 32768).
const MAX_EXTENTS: usize = 65536;

/// How an extent may be accessed; NOACCESS extents hold no readable data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `RW`
    ReadWrite,
    /// `RDONLY`
    ReadOnly,
    /// `NOACCESS`
    Forbidden,
}

/// The kind of an extent, as the descriptor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Raw bytes in a file, from a sector offset.
    Flat,
    /// A hosted sparse extent (`KDMV` header).
    Sparse,
    /// Reads as zeros; no file.
    Zero,
    /// An ESX flat extent (`-flat.vmdk`).
    Vmfs,
    /// An ESX delta extent (`COWD` header).
    VmfsSparse,
    /// An ESX space-efficient sparse extent.
    SeSparse,
    /// A raw device mapping.
    VmfsRdm,
    /// A raw device mapping, physical mode.
    VmfsRaw,
}

impl ExtentKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FLAT" => ExtentKind::Flat,
            "SPARSE" => ExtentKind::Sparse,
            "ZERO" => ExtentKind::Zero,
            "VMFS" => ExtentKind::Vmfs,
            "VMFSSPARSE" => ExtentKind::VmfsSparse,
            "SESPARSE" => ExtentKind::SeSparse,
            "VMFSRDM" => ExtentKind::VmfsRdm,
            "VMFSRAW" => ExtentKind::VmfsRaw,
            _ => return None,
        })
    }

    /// The name used in the descriptor.
    pub fn name(self) -> &'static str {
        match self {
            ExtentKind::Flat => "FLAT",
            ExtentKind::Sparse => "SPARSE",
            ExtentKind::Zero => "ZERO",
            ExtentKind::Vmfs => "VMFS",
            ExtentKind::VmfsSparse => "VMFSSPARSE",
            ExtentKind::SeSparse => "SESPARSE",
            ExtentKind::VmfsRdm => "VMFSRDM",
            ExtentKind::VmfsRaw => "VMFSRAW",
        }
    }
}

/// One extent line: `RW 20480 SPARSE "disk.vmdk"` or
/// `RW 2048 FLAT "disk-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    /// Type.
    pub kind: ExtentKind,
    /// File name, relative to the descriptor's folder (none for ZERO).
    pub file: Option<String>,
    /// Start of the data in the file, in sectors (FLAT only).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    /// `createType`, e.g. `monolithicSparse`.
    pub create_type: String,
    /// Content id, as written (8 hex digits).
    pub cid: Option<String>,
    /// Parent content id; `ffffffff` means no parent.
    pub parent_cid: Option<String>,
    /// Where the parent was, for delta disks.
    pub parent_hint: Option<String>,
    /// Extents in disk order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.adapterType`, if present.
    pub adapter_type: Option<String>,
}

impl Descriptor {
    /// Total size of all extents in bytes, or `None` on overflow.
    pub fn total_bytes(&self) -> Option<u64> {
        self.extents.iter().try_fold(0u64, |acc, e| {
            e.sectors.checked_mul(512).and_then(|b| acc.checked_add(b))
        })
    }

    /// Whether the descriptor names a parent disk (a delta / snapshot).
    pub fn has_parent(&self) -> bool {
        match &self.parent_cid {
            Some(p) => !p.eq_ignore_ascii_case("ffffffff"),
            None => false,
        }
    }
}

/// Whether `head` (the start of a file) looks like a standalone descriptor.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    if head.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    // Other writers start with their own comment; a descriptor is always
    // text and always carries createType near the top.
    if head.contains(&0) {
        return false;
    }
    head.windows(b"createType".len())
        .any(|w| w == b"createType")
}

/// Parses descriptor text. `base` is its offset in the file, for errors.
pub fn parse(bytes: &[u8], base: u64) -> Result<Descriptor> {
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(Error::corrupt(
            LAYER,
            base,
            format!("descriptor of {} bytes is implausibly large", bytes.len()),
        ));
    }
    // An embedded descriptor is padded with NULs to its sector count.
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut d = Descriptor::default();
    let mut line_start = base;
    for raw in text.split('\n') {
        let here = line_start;
        line_start += raw.len() as u64 + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(ext) = parse_extent_line(line, here)? {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(Error::corrupt(LAYER, here, "too many extents"));
            }
            d.extents.push(ext);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            // Unknown non-key lines are ignored, as VMware does.
            continue;
        };
        let key = key.trim();
        let value = unquote(value.trim());
        match key {
            "createType" => d.create_type = value.to_string(),
            "CID" => d.cid = Some(value.to_string()),
            "parentCID" => d.parent_cid = Some(value.to_string()),
            "parentFileNameHint" => d.parent_hint = Some(value.to_string()),
            "ddb.adapterType" => d.adapter_type = Some(value.to_string()),
            _ => {}
        }
    }
    if d.extents.is_empty() {
        return Err(Error::corrupt(LAYER, base, "descriptor lists no extents"));
    }
    if d.total_bytes().is_none() {
        return Err(Error::corrupt(
            LAYER,
            base,
            "descriptor extents add up to more than 2^64 bytes",
        ));
    }
    Ok(d)
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`, or `None` if the line is not an
/// extent line at all.
fn parse_extent_line(line: &str, at: u64) -> Result<Option<ExtentLine>> {
    let (first, rest) = match line.split_once(char::is_whitespace) {
        Some(p) => p,
        None => return Ok(None),
    };
    let access = match first {
        "RW" => Access::ReadWrite,
        "RDONLY" => Access::ReadOnly,
        "NOACCESS" => Access::Forbidden,
        _ => return Ok(None),
    };
    let bad = |what: &str| Error::corrupt(LAYER, at, format!("extent line {line:?}: {what}"));
    let rest = rest.trim_start();
    let (size, rest) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("no type"))?;
    let sectors: u64 = size.parse().map_err(|_| bad("bad size"))?;
    let rest = rest.trim_start();
    let (kind, rest) = match rest.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim_start()),
        None => (rest, ""),
    };
    let kind = ExtentKind::parse(kind).ok_or_else(|| bad("unknown extent type"))?;
    let (file, rest) = if let Some(r) = rest.strip_prefix('"') {
        let close = r.find('"').ok_or_else(|| bad("unterminated file name"))?;
        (Some(r[..close].to_string()), r[close + 1..].trim())
    } else {
        (None, rest)
    };
    let offset = if rest.is_empty() {
        0
    } else {
        rest.split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .map_err(|_| bad("bad offset"))?
    };
    if kind != ExtentKind::Zero && file.as_deref().is_none_or(str::is_empty) {
        return Err(bad("no file name"));
    }
    Ok(Some(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_extents_and_keys() -> Result<()> {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentFlat\"\nRW 4192256 FLAT \"a b-f001.vmdk\" 0\nRDONLY 100 ZERO\n\
RW 8 FLAT \"x.vmdk\" 16\nddb.adapterType = \"ide\"\n";
        let d = parse(text, 0)?;
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(d.extents[1].kind, ExtentKind::Zero);
        assert_eq!(d.extents[2].offset, 16);
        assert!(!d.has_parent());
        assert_eq!(d.adapter_type.as_deref(), Some("ide"));
        assert!(looks_like_descriptor(text));
        Ok(())
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse(b"RW x FLAT \"a\"\n", 0).is_err());
        assert!(parse(b"RW 1 FLAT\n", 0).is_err());
        assert!(parse(b"RW 1 BOGUS \"a\"\n", 0).is_err());
        assert!(parse(b"createType=x\n", 0).is_err());
        let huge = b"RW 18446744073709551615 ZERO\nRW 1 ZERO\n";
        assert!(parse(huge, 0).is_err());
    }
}
