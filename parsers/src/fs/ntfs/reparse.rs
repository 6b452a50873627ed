//! Symbolic links as they appear on NTFS: reparse points (Windows symlinks
//! and junctions) and the Interix system files ntfs-3g writes for `ln -s`,
//! `mkfifo` and `mknod`.

/// Windows symbolic link.
pub(crate) const TAG_SYMLINK: u32 = 0xA000_000C;
/// Junction (mount point), shown as a symlink like ntfs-3g does.
pub(crate) const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `SYMLINK_FLAG_RELATIVE` in a symlink reparse buffer.
const SYMLINK_RELATIVE: u32 = 1;

/// The drive letter taken to be this volume's.
const OWN_DRIVE: u8 = b'C';

/// The largest reparse buffer NTFS allows.
pub(crate) const MAX_REPARSE: u64 = 16 * 1024;

/// The reparse tag of a reparse buffer.
pub(crate) fn tag(data: &[u8]) -> Option<u32> {
    u32_at(data, 0)
}

/// What a reparse tag we cannot read through stands for, to say why a
/// read fails.
pub(crate) fn tag_meaning(tag: u32) -> Option<&'static str> {
    Some(match tag {
        0x8000_0013 => "Windows Data Deduplication: the data is in the volume's chunk store",
        0x8000_0017 => "WOF system compression",
        0x8000_0018 => "Windows Container Isolation: the data is in a container layer",
        0x8000_001B => "app execution alias",
        0xA000_001D => "WSL symbolic link",
        0x8000_0023 => "WSL socket",
        0x8000_0024 => "WSL FIFO",
        0x8000_0025 => "WSL character device",
        0x8000_0026 => "WSL block device",
        0xC000_0004 | 0x8000_0006 => "HSM: the data is in remote storage",
        // Cloud files (OneDrive and others): 0x9000x01A, the x a sub-tag.
        t if t & 0xFFFF_0FFF == 0x9000_001A => {
            "cloud files placeholder: the data may exist only online"
        }
        _ => return None,
    })
}

/// A reparse point's link target, still to be placed relative to the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Relative to the link's directory (already with `/`).
    Relative(String),
    /// From the volume root (drive letter and `\??\` removed, with `/`).
    FromRoot(String),
    /// Not on this volume (another drive, a UNC path, a volume GUID).
    Foreign(String),
}

/// Parses a symlink or junction reparse buffer.
pub(crate) fn link_target(data: &[u8]) -> Option<Target> {
    let tag = tag(data)?;
    // Both layouts start with substitute/print offset and length after the
    // 8-byte reparse header; symlinks add 4 bytes of flags.
    let (path_base, relative) = match tag {
        TAG_SYMLINK => (20usize, u32_at(data, 16)? & SYMLINK_RELATIVE != 0),
        TAG_MOUNT_POINT => (16usize, false),
        _ => return None,
    };
    let sub_off = usize::from(u16_at(data, 8)?);
    let sub_len = usize::from(u16_at(data, 10)?);
    let print_off = usize::from(u16_at(data, 12)?);
    let print_len = usize::from(u16_at(data, 14)?);
    let name = |off: usize, len: usize| -> Option<String> {
        let bytes =
            data.get(path_base.checked_add(off)?..path_base.checked_add(off)?.checked_add(len)?)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    let sub = name(sub_off, sub_len).filter(|s| !s.is_empty());
    let raw = match sub {
        Some(s) => s,
        None => name(print_off, print_len)?,
    };
    if relative {
        return Some(Target::Relative(raw.replace('\\', "/")));
    }
    // Absolute: "\??\C:\dir\file" (or print name "C:\dir\file").
    let stripped = raw.strip_prefix("\\??\\").unwrap_or(&raw);
    let b = stripped.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        let rest = stripped[2..].trim_start_matches('\\').replace('\\', "/");
        // Which letter this volume had is not on it; C: is the usual one
        // (and ntfs-3g's assumption). Other letters are other volumes: an
        // absolute path naming the letter dangles visibly instead of
        // landing on a file of this volume.
        if b[0].eq_ignore_ascii_case(&OWN_DRIVE) {
            return Some(Target::FromRoot(rest));
        }
        return Some(Target::Foreign(format!(
            "/{}:/{rest}",
            char::from(b[0].to_ascii_uppercase())
        )));
    }
    // "\\??\\UNC\\server\\share\\..." is a network path: show it as //server/share/...
    if let Some(unc) = stripped
        .strip_prefix("UNC\\")
        .or_else(|| stripped.strip_prefix("\\\\"))
    {
        return Some(Target::Foreign(format!("//{}", unc.replace('\\', "/"))));
    }
    // "\\dir\\file": from the root of the link's own drive.
    if let Some(rest) = stripped.strip_prefix('\\') {
        return Some(Target::FromRoot(rest.replace('\\', "/")));
    }
    // A volume GUID path ("Volume{...}\\dir") or anything else: absolute,
    // so it never resolves relative to the link.
    let other = stripped.replace('\\', "/");
    Some(Target::Foreign(if other.starts_with('/') {
        other
    } else {
        format!("/{other}")
    }))
}

/// What an Interix system file stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Interix {
    Symlink(String),
    Fifo,
    Socket,
    Char(u64, u64),
    Block(u64, u64),
}

/// Longest Interix symlink data we look at (magic + 4096 UTF-16 units).
pub(crate) const MAX_INTERIX: u64 = 8 + 2 * 4096;

/// Classifies the data of a file with the SYSTEM attribute, the way
/// ntfs-3g does: empty is a FIFO, one byte a socket, else by magic.
pub(crate) fn interix(data: &[u8]) -> Option<Interix> {
    match data.len() {
        0 => return Some(Interix::Fifo),
        1 => return Some(Interix::Socket),
        _ => {}
    }
    let magic = data.get(..8)?;
    if magic == b"IntxLNK\x01" {
        let units: Vec<u16> = data[8..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let s = String::from_utf16_lossy(&units);
        return Some(Interix::Symlink(s.trim_end_matches('\0').to_string()));
    }
    if data.len() == 24 {
        let major = u64_at(data, 8)?;
        let minor = u64_at(data, 16)?;
        if magic == b"IntxCHR\0" {
            return Some(Interix::Char(major, minor));
        }
        if magic == b"IntxBLK\0" {
            return Some(Interix::Block(major, minor));
        }
    }
    None
}

/// glibc's `makedev`.
pub(crate) fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[cfg(test)]
fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[cfg(test)]
/// A symlink (`flags` given) or junction reparse buffer, for tests.
pub(crate) fn buffer(tag: u32, flags: Option<u32>, sub: &str, print: &str) -> Vec<u8> {
    let (s, p) = (utf16(sub), utf16(print));
    let mut body = Vec::new();
    body.extend((0u16).to_le_bytes());
    body.extend((s.len() as u16).to_le_bytes());
    body.extend((s.len() as u16).to_le_bytes());
    body.extend((p.len() as u16).to_le_bytes());
    if let Some(f) = flags {
        body.extend(f.to_le_bytes());
    }
    body.extend(&s);
    body.extend(&p);
    let mut out = Vec::new();
    out.extend(tag.to_le_bytes());
    out.extend((body.len() as u16).to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_junctions() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let rel = buffer(TAG_SYMLINK, Some(1), "..\\a\\b", "..\\a\\b");
        assert_eq!(link_target(&rel), Some(Target::Relative("../a/b".into())));
        let abs = buffer(TAG_SYMLINK, Some(0), "\\??\\C:\\x\\y", "C:\\x\\y");
        assert_eq!(link_target(&abs), Some(Target::FromRoot("x/y".into())));
        let junction = buffer(TAG_MOUNT_POINT, None, "\\??\\c:\\dir", "c:\\dir");
        assert_eq!(link_target(&junction), Some(Target::FromRoot("dir".into())));
        let other = buffer(TAG_MOUNT_POINT, None, "\\??\\d:\\dir\\x", "d:\\dir\\x");
        assert_eq!(
            link_target(&other),
            Some(Target::Foreign("/D:/dir/x".into()))
        );
        let unc = buffer(TAG_SYMLINK, Some(0), "\\??\\UNC\\srv\\share", "");
        assert_eq!(
            link_target(&unc),
            Some(Target::Foreign("//srv/share".into()))
        );
        let rooted = buffer(TAG_SYMLINK, Some(0), "\\dir\\f", "");
        assert_eq!(link_target(&rooted), Some(Target::FromRoot("dir/f".into())));
        let guid = buffer(TAG_MOUNT_POINT, None, "\\??\\Volume{1-2}\\d", "");
        assert_eq!(
            link_target(&guid),
            Some(Target::Foreign("/Volume{1-2}/d".into()))
        );
        // Truncated or foreign buffers give None, never a panic.
        for n in 0..rel.len() {
            let _ = link_target(&rel[..n]);
        }
        assert_eq!(link_target(&0x8000_0013u32.to_le_bytes()), None);
        assert!(tag_meaning(0x9000_601A)
            .ok_or("no meaning")?
            .contains("cloud"));
        assert!(tag_meaning(0x8000_0013)
            .ok_or("no meaning")?
            .contains("Dedup"));
        assert_eq!(tag_meaning(0x1234), None);
        Ok(())
    }

    #[test]
    fn interix_files() {
        let mut lnk = b"IntxLNK\x01".to_vec();
        lnk.extend(utf16("../f"));
        assert_eq!(interix(&lnk), Some(Interix::Symlink("../f".into())));
        assert_eq!(interix(b""), Some(Interix::Fifo));
        assert_eq!(interix(b"x"), Some(Interix::Socket));
        assert_eq!(interix(b"plain text"), None);
        assert_eq!(makedev(8, 1), 0x801);
    }
}
