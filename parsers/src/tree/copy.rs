//! Copy-out: files and trees from the restore tree to the host, with their
//! times and modes, never writing outside the destination.
//!
//! Names from the image are untrusted: `..`, `/`, NUL, control characters
//! and names too long for the host are renamed, and each rename is reported.
//! Files are created with `O_EXCL` (which never follows a symlink), and a
//! directory is only entered after checking that it is a real directory we
//! own, so a symlink in the image can never redirect a write.
//!
//! A recursive copy walks the tree on the calling thread (directories,
//! names, symlinks, hard links: everything whose order matters) and hands
//! each regular file to a bounded pool of worker threads, so that reading
//! the image, writing and the per-file system calls of many small files
//! overlap. A directory's mode and times are applied after every worker
//! has finished, deepest first, so that no later write inside it changes
//! its times and a read-only mode never blocks its own contents.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

use super::{Node, RestoreTree};
use crate::fs::{FileType, Stat, Timespec};

/// How to copy.
#[derive(Default)]
pub struct CopyOptions<'a> {
    /// Copy directories and everything below them.
    pub recursive: bool,
    /// Replace what already exists at the destination.
    pub force: bool,
    /// Called with the number of bytes just written (from worker threads).
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Threads copying files in a recursive copy; 0 picks one per CPU
    /// (at least 2, at most 8), 1 copies on the calling thread only.
    pub threads: usize,
}

/// What a copy did, and what it could not do.
#[derive(Default, Debug)]
pub struct CopyReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// (image path, name written) for every name that had to change.
    pub renamed: Vec<(String, String)>,
    /// (image path, why) for what was deliberately not copied.
    pub skipped: Vec<(String, String)>,
    /// (image path, error) for every failure.
    pub failed: Vec<(String, String)>,
    /// Node -> first host path, to recreate hard links.
    links: HashMap<Node, PathBuf>,
}

/// Copies `node` (at image path `src_path`) to exactly `dest`.
pub fn copy_out(
    tree: &RestoreTree,
    node: Node,
    src_path: &str,
    dest: &Path,
    opts: &CopyOptions<'_>,
    report: &mut CopyReport,
) {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
        n => n,
    };
    if !opts.recursive || threads < 2 {
        let mut walk = Walk::default();
        copy_one(tree, node, src_path, dest, opts, report, &mut walk);
        return;
    }
    // A few jobs per worker queued at most: the walk stays just ahead.
    let (tx, rx) = sync_channel::<FileJob>(threads * 4);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = &rx;
                scope.spawn(move || {
                    let mut done = CopyReport::default();
                    let mut buf = Vec::new();
                    loop {
                        // Held while waiting: the others wait for the lock
                        // instead of the channel, which is the same.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { break };
                        job.run(tree, opts, &mut done, &mut buf);
                    }
                    done
                })
            })
            .collect();
        let mut walk = Walk {
            files: Some(tx),
            dirs: Vec::new(),
        };
        copy_one(tree, node, src_path, dest, opts, report, &mut walk);
        drop(walk.files.take());
        for w in workers {
            match w.join() {
                Ok(done) => {
                    report.files += done.files;
                    report.bytes += done.bytes;
                    report.skipped.extend(done.skipped);
                    report.failed.extend(done.failed);
                }
                Err(_) => report.failed.push((
                    src_path.to_string(),
                    "internal error in a copy thread".into(),
                )),
            }
        }
        // Recorded after their contents: deepest first.
        for (src, dir, st) in walk.dirs {
            if let Err(e) = set_meta(&dir, &st, true) {
                report.failed.push((src, e.to_string()));
            }
        }
    });
}

/// How the walk of one `copy_out` hands work on.
#[derive(Default)]
struct Walk {
    /// Where regular files go to be copied by a worker; `None`: here.
    files: Option<SyncSender<FileJob>>,
    /// (image path, host path, metadata) of directories whose mode and
    /// times wait for the workers, in the order their walks finished.
    dirs: Vec<(String, PathBuf, Stat)>,
}

/// One regular file for a worker; `dest` has been prepared.
struct FileJob {
    node: Node,
    src_path: String,
    dest: PathBuf,
    st: Stat,
}

impl FileJob {
    fn run(
        self,
        tree: &RestoreTree,
        opts: &CopyOptions<'_>,
        report: &mut CopyReport,
        buf: &mut Vec<u8>,
    ) {
        let r = copy_file(
            tree,
            self.node,
            &self.src_path,
            &self.dest,
            &self.st,
            opts,
            report,
            buf,
        );
        if let Err(e) = r {
            report.failed.push((self.src_path, e.to_string()));
        }
    }
}

fn copy_one(
    tree: &RestoreTree,
    node: Node,
    src_path: &str,
    dest: &Path,
    opts: &CopyOptions<'_>,
    report: &mut CopyReport,
    walk: &mut Walk,
) {
    if let Err(e) = copy_node(tree, node, src_path, dest, opts, report, walk) {
        report.failed.push((src_path.to_string(), e.to_string()));
    }
}

/// A regular file's bytes, extended attributes, mode and times.
#[allow(clippy::too_many_arguments)]
fn copy_file(
    tree: &RestoreTree,
    node: Node,
    src_path: &str,
    dest: &Path,
    st: &Stat,
    opts: &CopyOptions<'_>,
    report: &mut CopyReport,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let written = write_file(tree, node, None, st.size, dest, opts, buf)?;
    report.bytes += written;
    report.files += 1;
    copy_xattrs(tree, node, src_path, dest, report);
    set_meta(dest, st, true)
}

/// Copies `node`'s named data stream `stream` (at image path `src_path`,
/// `file:stream`) to exactly `dest` as a plain file with the file's mode
/// and times.
pub fn copy_stream_out(
    tree: &RestoreTree,
    node: Node,
    stream: &OsStr,
    src_path: &str,
    dest: &Path,
    opts: &CopyOptions<'_>,
    report: &mut CopyReport,
) {
    let result = (|| -> io::Result<()> {
        let st = tree.stat(node).map_err(to_io)?;
        let size = tree.data_len(node, Some(stream)).map_err(to_io)?;
        prepare(dest, opts.force, false)?;
        let written = write_file(tree, node, Some(stream), size, dest, opts, &mut Vec::new())?;
        report.bytes += written;
        report.files += 1;
        set_meta(dest, &st, true)
    })();
    if let Err(e) = result {
        report.failed.push((src_path.to_string(), e.to_string()));
    }
}

fn copy_node(
    tree: &RestoreTree,
    node: Node,
    src_path: &str,
    dest: &Path,
    opts: &CopyOptions<'_>,
    report: &mut CopyReport,
    walk: &mut Walk,
) -> io::Result<()> {
    let st = tree.stat(node).map_err(to_io)?;
    if st.kind != FileType::Dir {
        if let Some(first) = report.links.get(&node).cloned() {
            prepare(dest, opts.force, false)?;
            if fs::hard_link(&first, dest).is_ok() {
                return Ok(());
            }
        }
    }
    match st.kind {
        FileType::Dir => {
            if !opts.recursive {
                report
                    .skipped
                    .push((src_path.into(), "is a directory (use -r)".into()));
                return Ok(());
            }
            prepare(dest, opts.force, true)?;
            if !is_real_dir(dest) {
                fs::create_dir(dest)?;
            }
            report.dirs += 1;
            let entries = tree.read_dir(node).map_err(to_io)?;
            let mut used = Used::default();
            for e in entries {
                let (safe, renamed) = safe_name(&e.name);
                let (safe, renamed) = match used.take(dest, safe) {
                    Ok(s) => (s, renamed),
                    Err(s) => (s, true),
                };
                let child_src = format!(
                    "{}/{}",
                    src_path.trim_end_matches('/'),
                    e.name.to_string_lossy()
                );
                if renamed {
                    report
                        .renamed
                        .push((child_src.clone(), safe.to_string_lossy().into_owned()));
                }
                // Checked before every child: nothing may have replaced the
                // directory with a link since we made it.
                if !is_real_dir(dest) {
                    return Err(io::Error::other(format!(
                        "{} is no longer a directory",
                        dest.display()
                    )));
                }
                copy_one(
                    tree,
                    e.node,
                    &child_src,
                    &dest.join(&safe),
                    opts,
                    report,
                    walk,
                );
            }
            copy_xattrs(tree, node, src_path, dest, report);
            if walk.files.is_some() {
                walk.dirs
                    .push((src_path.to_string(), dest.to_path_buf(), st));
            } else {
                set_meta(dest, &st, true)?;
            }
        }
        FileType::File => {
            prepare(dest, opts.force, false)?;
            // Hard-linked files are copied here, in walk order, so that
            // the first copy exists before the walk links the next name.
            match &walk.files {
                Some(tx) if st.nlink <= 1 => {
                    let job = FileJob {
                        node,
                        src_path: src_path.to_string(),
                        dest: dest.to_path_buf(),
                        st,
                    };
                    // Fails only when every worker is gone (they panicked);
                    // then copy it here.
                    if let Err(back) = tx.send(job) {
                        let job = back.0;
                        let mut buf = Vec::new();
                        job.run(tree, opts, report, &mut buf);
                    }
                }
                _ => {
                    copy_file(
                        tree,
                        node,
                        src_path,
                        dest,
                        &st,
                        opts,
                        report,
                        &mut Vec::new(),
                    )?;
                    if st.nlink > 1 {
                        report.links.insert(node, dest.to_path_buf());
                    }
                }
            }
        }
        FileType::Symlink => {
            let target = tree.read_link(node).map_err(to_io)?;
            prepare(dest, opts.force, false)?;
            symlink(&target, dest)?;
            report.symlinks += 1;
            copy_xattrs(tree, node, src_path, dest, report);
            set_meta(dest, &st, false)?;
        }
        FileType::Fifo => {
            prepare(dest, opts.force, false)?;
            let c = cstr(dest)?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
            set_meta(dest, &st, true)?;
        }
        other => report
            .skipped
            .push((src_path.into(), format!("{} not copied", other.name()))),
    }
    Ok(())
}

/// Copies extended attributes (NTFS streams arrive as `user.*`). A host
/// that refuses one (no xattr support, `trusted.*` without root) is noted,
/// not a failure: the file's bytes are what was asked for.
fn copy_xattrs(
    tree: &RestoreTree,
    node: Node,
    src_path: &str,
    dest: &Path,
    report: &mut CopyReport,
) {
    let xattrs = match tree.xattrs(node) {
        Ok(x) => x,
        Err(e) => {
            report
                .failed
                .push((src_path.to_string(), format!("extended attributes: {e}")));
            return;
        }
    };
    let Ok(path) = cstr(dest) else { return };
    for (name, value) in xattrs {
        let Ok(cname) = CString::new(name.as_bytes()) else {
            continue;
        };
        // SAFETY: valid C strings and a buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            report.skipped.push((
                src_path.to_string(),
                format!(
                    "extended attribute {}: {}",
                    name.to_string_lossy(),
                    io::Error::last_os_error()
                ),
            ));
        }
    }
}

/// Makes room for `dest`: refuses an existing entry unless `force`, then
/// removes it (keeping an existing real directory when one is wanted).
fn prepare(dest: &Path, force: bool, want_dir: bool) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !force {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists (use --force to replace)", dest.display()),
        ));
    }
    if meta.is_dir() {
        if want_dir {
            return Ok(());
        }
        fs::remove_dir_all(dest)
    } else {
        fs::remove_file(dest)
    }
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

const CHUNK: usize = 1 << 20;

/// Writes a file's bytes (or its stream's), leaving all-zero chunks as
/// holes.
fn write_file(
    tree: &RestoreTree,
    node: Node,
    stream: Option<&OsStr>,
    size: u64,
    dest: &Path,
    opts: &CopyOptions<'_>,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut out = OpenOptions::new().write(true).create_new(true).open(dest)?;
    // Reused from file to file, grown to what the largest needed: a fresh
    // zeroed 1 MiB per file costs more than a small file's copy.
    let len = size.min(CHUNK as u64) as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(CHUNK as u64) as usize;
        let n = tree
            .read_data(node, stream, off, &mut buf[..want])
            .map_err(to_io)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends at {off} of {size} bytes"),
            ));
        }
        let chunk = &buf[..n];
        if chunk.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(chunk)?;
        }
        off += n as u64;
        if let Some(p) = opts.progress {
            p(n as u64);
        }
    }
    out.set_len(off)?;
    finish(out)?;
    Ok(off)
}

fn finish(f: File) -> io::Result<()> {
    f.sync_data().or_else(|e| {
        // Some destinations (pipes' filesystems, FUSE) do not sync; that is
        // no reason to fail a copy.
        if e.kind() == io::ErrorKind::Unsupported {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// Applies mode and times (and never follows a symlink).
fn set_meta(dest: &Path, st: &Stat, with_mode: bool) -> io::Result<()> {
    if with_mode {
        fs::set_permissions(dest, fs::Permissions::from_mode(st.mode & 0o7777))?;
    }
    let c = cstr(dest)?;
    let times = [ts(st.atime), ts(st.mtime)];
    // SAFETY: valid path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ts(t: Timespec) -> libc::timespec {
    libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nanos as _,
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn to_io(e: crate::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The names written in one destination directory by this copy, so that
/// two image names that end up the same on the host (`a/b` and `a_b` once
/// made safe, duplicates in a damaged directory, `Case` and `case` on a
/// case-insensitive destination) both arrive instead of the second failing
/// or, with `--force`, replacing the first.
#[derive(Default)]
struct Used {
    exact: std::collections::HashSet<OsString>,
    folded: std::collections::HashSet<String>,
}

impl Used {
    /// Claims `name` in `dir`: `Ok(name)` if free, else `Err` with a new
    /// name (`name~N`) that is.
    fn take(&mut self, dir: &Path, name: OsString) -> Result<OsString, OsString> {
        let fold = |n: &OsStr| n.to_string_lossy().to_lowercase();
        // Taken: written by us under this name, or under one differing only
        // in case while the host shows it under this one (its filesystem
        // ignores case). A name found on the host but not written by us is
        // the user's business: --force replaces it, else the copy fails.
        let taken = |u: &Self, n: &OsStr| {
            u.exact.contains(n)
                || (u.folded.contains(&fold(n)) && fs::symlink_metadata(dir.join(n)).is_ok())
        };
        let result = if taken(self, &name) {
            let mut n = 1u32;
            loop {
                let suffix = format!("~{n}");
                let mut v = name.as_bytes().to_vec();
                let mut cut = v.len().min(NAME_MAX - suffix.len());
                while cut > 0 && cut < v.len() && (v[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                v.truncate(cut);
                v.extend_from_slice(suffix.as_bytes());
                let candidate = OsString::from_vec(v);
                if !taken(self, &candidate) && fs::symlink_metadata(dir.join(&candidate)).is_err() {
                    break Err(candidate);
                }
                n += 1;
            }
        } else {
            Ok(name)
        };
        let chosen = match &result {
            Ok(n) | Err(n) => n,
        };
        self.exact.insert(chosen.clone());
        self.folded.insert(fold(chosen));
        result
    }
}

/// Longest name most host filesystems take.
const NAME_MAX: usize = 255;

/// A name safe to create in a host directory, and whether it changed.
pub fn safe_name(name: &OsStr) -> (OsString, bool) {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." {
        let mut v = b"_".to_vec();
        v.extend_from_slice(bytes);
        return (OsString::from_vec(v), true);
    }
    let mut v: Vec<u8> = bytes
        .iter()
        .map(|&b| {
            if b == b'/' || b < 0x20 || b == 0x7f {
                b'_'
            } else {
                b
            }
        })
        .collect();
    if v.len() > NAME_MAX {
        // Keep a prefix that ends on a UTF-8 boundary and make the name
        // unique with a hash of the whole original.
        let hash = fnv1a(bytes);
        let suffix = format!("~{hash:016x}");
        let mut cut = NAME_MAX - suffix.len();
        while cut > 0 && (v[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        v.truncate(cut);
        v.extend_from_slice(suffix.as_bytes());
    }
    let changed = v != bytes;
    (OsString::from_vec(v), changed)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_renamed() {
        for bad in ["..", ".", "", "a/b", "x\0y", "tab\there", "../../etc"] {
            let (safe, changed) = safe_name(OsStr::new(bad));
            assert!(changed, "{bad:?}");
            let s = safe.as_bytes();
            assert!(!s.contains(&b'/') && !s.contains(&0) && s != b".." && s != b".");
        }
        let long = "é".repeat(200);
        let (safe, changed) = safe_name(OsStr::new(&long));
        assert!(changed && safe.len() <= NAME_MAX);
        assert!(std::str::from_utf8(safe.as_bytes()).is_ok());
        assert_eq!(
            safe_name(OsStr::new("ok name.txt")),
            ("ok name.txt".into(), false)
        );
    }
}
