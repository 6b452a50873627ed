//! Tests on images made here with mkfs.xfs, filled through the kernel and
//! compared with the kernel's own view of them (mounted read-only), plus a
//! mutation test and feature refusal.
//!
//! Needs root, loop devices, XFS in the kernel, xfsprogs and python3; a
//! missing tool skips, except under CI where it fails.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::XfsFs;
use crate::fs::{FileSystem, FileType, NodeId};
use crate::readat::FileSource;
use crate::testutil::{run, TempDir, XorShift};
use crate::{Error, ReadAt, Source};

const POPULATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/fs/xfs/testdata/populate.py"
);

/// A loop mount, unmounted on drop (on every path, panics included);
/// `-o loop` sets autoclear, so the loop device goes with the mount.
struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .arg("-t")
            .arg("xfs")
            .arg("-o")
            .arg(format!("loop,{opts}"))
            .arg(img)
            .arg(dir));
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a panic mid-walk may leave a handle): detach lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Whether the test can run: root and every tool; a missing one fails
/// the test under CI.
fn have_tools() -> bool {
    let mut missing = Vec::new();
    for tool in ["mkfs.xfs", "xfs_io", "xfs_db", "python3", "mount", "umount"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing.push(tool.to_string());
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required under CI: {}", missing.join(", "));
    }
    eprintln!("skipping: missing {}", missing.join(", "));
    false
}

/// A ~300 MiB sparse image made with `mkfs.xfs args`, filled by the
/// generator (`small` for fewer entries) through a kernel mount.
fn make_image(tmp: &TempDir, name: &str, args: &[&str], small: bool) -> PathBuf {
    let img = tmp.0.join(format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    run(Command::new("mkfs.xfs")
        // As fstests: lets mkfs make logs smaller than it would support.
        .envs([
            ("TEST_DIR", "/tmp"),
            ("TEST_DEV", "/dev/null"),
            ("QA_CHECK_FS", "1"),
        ])
        .args(["-q", "-f", "-L", "restorefs"])
        .args(args)
        .arg(&img));
    let m = Mount::new(&img, &tmp.0.join(format!("{name}.mnt")), "rw");
    run(Command::new("python3")
        .arg(POPULATE)
        .arg(&m.0)
        .arg(if small { "small" } else { "full" }));
    drop(m);
    img
}

fn open(img: &Path) -> XfsFs {
    let src: Source = Arc::new(FileSource::open(img).unwrap());
    XfsFs::open(src).unwrap()
}

/// Everything compared about one path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    ino: u64,
    kind: FileType,
    size: u64,
    /// SHA-1 of the contents (files) or the target (symlinks).
    digest: String,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u64,
    times_ns: [i128; 3],
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn ns(secs: i64, nanos: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nanos)
}

fn sha1(b: &[u8]) -> String {
    sha1_smol::Sha1::from(b).digest().to_string()
}

/// Reads a whole file with our reader, in odd-sized chunks so that runs
/// start and end inside blocks.
fn read_all(fs: &dyn FileSystem, node: NodeId, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    let mut done = 0;
    while done < v.len() {
        let end = (done + 1_000_003).min(v.len());
        let n = fs.read(node, done as u64, &mut v[done..end]).unwrap();
        assert!(n > 0);
        done += n;
    }
    assert_eq!(fs.read(node, size, &mut [0u8; 16]).unwrap(), 0);
    v
}

fn walk_ours(fs: &XfsFs) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(e.name.as_bytes());
            assert_eq!(fs.lookup(dir, &e.name).unwrap(), Some(e.node));
            let st = fs.stat(e.node).unwrap();
            assert_eq!(st.kind, e.kind, "{}", String::from_utf8_lossy(&p));
            let digest = match e.kind {
                FileType::File => sha1(&read_all(fs, e.node, st.size)),
                FileType::Symlink => sha1(fs.read_link(e.node).unwrap().as_bytes()),
                FileType::Dir => {
                    stack.push((p.clone(), e.node));
                    String::new()
                }
                _ => String::new(),
            };
            let mut xattrs: Vec<_> = fs
                .xattrs(e.node)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v))
                .collect();
            xattrs.sort();
            let t = |t: crate::fs::Timespec| ns(t.secs, i64::from(t.nanos));
            out.insert(
                p,
                Seen {
                    ino: e.node,
                    kind: e.kind,
                    size: st.size,
                    digest,
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                    nlink: st.nlink,
                    rdev: st.rdev,
                    times_ns: [t(st.atime), t(st.mtime), t(st.ctime)],
                    xattrs,
                },
            );
        }
    }
    out
}

/// Names and values of a path's xattrs, without following symlinks.
fn kernel_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 1 << 20];
    // SAFETY: the buffer is valid for its length; c is NUL-terminated.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "{path:?}: {}", io::Error::last_os_error());
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 1 << 17];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0, "{path:?}: {}", io::Error::last_os_error());
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

fn walk_kernel(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let full = root.join(&rel);
            let md = std::fs::symlink_metadata(&full).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_file() {
                FileType::File
            } else if ft.is_dir() {
                FileType::Dir
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_socket() {
                FileType::Socket
            } else if ft.is_char_device() {
                FileType::CharDevice
            } else {
                FileType::BlockDevice
            };
            let digest = match kind {
                FileType::File => sha1(&std::fs::read(&full).unwrap()),
                FileType::Symlink => {
                    sha1(std::fs::read_link(&full).unwrap().as_os_str().as_bytes())
                }
                FileType::Dir => {
                    stack.push(rel.clone());
                    String::new()
                }
                _ => String::new(),
            };
            let mut p = b"/".to_vec();
            p.extend_from_slice(rel.as_os_str().as_bytes());
            out.insert(
                p,
                Seen {
                    ino: md.ino(),
                    kind,
                    size: md.size(),
                    digest,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    nlink: md.nlink() as u32,
                    rdev: md.rdev(),
                    times_ns: [
                        ns(md.atime(), md.atime_nsec()),
                        ns(md.mtime(), md.mtime_nsec()),
                        ns(md.ctime(), md.ctime_nsec()),
                    ],
                    xattrs: kernel_xattrs(&full),
                },
            );
        }
    }
    out
}

/// Compares our walk with the kernel's, path by path.
fn compare(ours: &BTreeMap<Vec<u8>, Seen>, kernel: &BTreeMap<Vec<u8>, Seen>) {
    for (p, k) in kernel {
        let name = String::from_utf8_lossy(p);
        let o = ours
            .get(p)
            .unwrap_or_else(|| panic!("{name}: missing from ours"));
        assert_eq!(o, k, "{name}");
    }
    assert_eq!(ours.len(), kernel.len(), "extra entries in ours");
}

/// Value of `field` in `xfs_db -r -c 'sb 0' -c 'p field'`.
fn xfs_db_sb(img: &Path, field: &str) -> String {
    let out = run(Command::new("xfs_db")
        .arg("-r")
        .args(["-c", "sb 0", "-c", &format!("p {field}")])
        .arg(img));
    let s = String::from_utf8_lossy(&out);
    s.split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn check_image(tmp: &TempDir, name: &str, args: &[&str], block_size: u32) {
    let img = make_image(tmp, name, args, false);
    let fs = open(&img);
    let info = fs.info();
    assert_eq!(info.kind, "xfs");
    assert_eq!(info.label.as_deref(), Some("restorefs"));
    assert_eq!(info.block_size, block_size);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.uuid.as_deref(), Some(xfs_db_sb(&img, "uuid").as_str()));
    let bs = u64::from(block_size);
    assert_eq!(
        info.total_bytes,
        xfs_db_sb(&img, "dblocks").parse::<u64>().unwrap() * bs
    );
    assert_eq!(
        info.free_bytes,
        xfs_db_sb(&img, "fdblocks").parse::<u64>().unwrap() * bs
    );
    assert_eq!(
        info.total_nodes,
        xfs_db_sb(&img, "icount").parse::<u64>().unwrap()
    );

    // The probe finds it and the generic open works.
    let src: Source = Arc::new(FileSource::open(&img).unwrap());
    let kind = crate::fs::probe(&src).unwrap();
    assert_eq!(kind, crate::fs::FsKind::Xfs);
    assert!(crate::fs::open(kind, src).is_ok());

    // Many threads at once on one filesystem see the same as one.
    let ours = std::thread::scope(|s| {
        let walks: Vec<_> = (0..3).map(|_| s.spawn(|| walk_ours(&fs))).collect();
        let ours = walk_ours(&fs);
        for w in walks {
            assert!(w.join().unwrap() == ours, "threads disagree");
        }
        ours
    });
    let m = Mount::new(&img, &tmp.0.join(format!("{name}.ro")), "ro");
    let kernel = walk_kernel(&m.0);
    compare(&ours, &kernel);
    drop(m);

    // The generator's shapes really are there.
    let node = |p: &str| {
        let mut n = fs.root();
        for c in p.split('/') {
            n = fs.lookup(n, OsStr::new(c)).unwrap().unwrap();
        }
        fs.inode(n).unwrap()
    };
    use super::inode::Format;
    assert_eq!(node("tiny").format, Format::Local);
    assert_eq!(node("tiny/sub").format, Format::Local);
    assert_eq!(node("fragmented").format, Format::Btree);
    assert!(node("node").nextents > 1);
    assert_eq!(node("link-inline").format, Format::Local);
    assert_ne!(node("link-remote").format, Format::Local);
    assert_eq!(node("xa-short").aformat, Some(Format::Local));
    assert!(matches!(
        fs.all_xattrs(&node("xa-node")).map(|a| a.len()),
        Ok(n) if n > 100
    ));
    let stat = fs
        .stat(fs.lookup(fs.root(), OsStr::new("hard-a")).unwrap().unwrap())
        .unwrap();
    assert_eq!(stat.nlink, 3);
    assert!(stat.crtime.is_some());
}

#[test]
fn v5_default() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    check_image(&tmp, "v5", &[], 4096);
}

#[test]
fn v5_dir_block_8k_nrext64() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    // Also 64-bit extent counters in the inode.
    check_image(&tmp, "n8k", &["-n", "size=8192", "-i", "nrext64=1"], 4096);
}

#[test]
fn v5_block_1k_no_bigtime() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    // Also the old 32-bit timestamps (the kernel clamps what cannot fit).
    check_image(&tmp, "b1k", &["-b", "size=1024", "-m", "bigtime=0"], 1024);
}

/// A source with some bytes replaced, over a shared base image.
struct Patched {
    base: Source,
    patches: Vec<(u64, u8)>,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.base.read_at(offset, buf)?;
        for &(at, v) in &self.patches {
            if at >= offset && at < offset + n as u64 {
                buf[(at - offset) as usize] = v;
            }
        }
        Ok(n)
    }
}

/// Walks and reads everything it can, ignoring errors, with bounds so a
/// corrupt image cannot make the walk itself endless.
fn walk_tolerant(fs: &XfsFs) {
    let _ = fs.info();
    let mut seen = HashSet::new();
    let mut stack = vec![fs.root()];
    let mut buf = vec![0u8; 65536];
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir) || seen.len() > 50 {
            continue;
        }
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries.into_iter().take(300) {
            let _ = fs.lookup(dir, &e.name);
            let _ = fs.stat(e.node);
            let _ = fs.xattrs(e.node);
            let _ = fs.read_link(e.node);
            match e.kind {
                FileType::Dir => stack.push(e.node),
                _ => {
                    let mut off = 0;
                    while off < (1 << 18) {
                        match fs.read(e.node, off, &mut buf) {
                            Ok(n) if n > 0 => off += n as u64,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

/// Byte ranges of the metadata worth corrupting in `fs`: superblock,
/// AG headers, the root inode chunk, and the first blocks of directories
/// and of an attribute tree.
fn metadata_regions(fs: &XfsFs) -> Vec<(u64, u64)> {
    let bs = u64::from(fs.sb.block_size);
    let mut regions = vec![(0, 512), (512, 1536)];
    let root = fs.sb.inode_offset(fs.root()).unwrap();
    regions.push((root, 64 * u64::from(fs.sb.inode_size)));
    for (name, fork) in [
        ("block", super::Fork::Data),
        ("leaf", super::Fork::Data),
        ("node", super::Fork::Data),
        ("xa-node", super::Fork::Attr),
        ("fragmented", super::Fork::Data),
    ] {
        let n = fs.lookup(fs.root(), OsStr::new(name)).unwrap().unwrap();
        let ino = fs.inode(n).unwrap();
        regions.push((fs.sb.inode_offset(n).unwrap(), u64::from(fs.sb.inode_size)));
        let exts = fs.extents_of(&ino, fork).unwrap();
        for e in exts.iter().take(4) {
            regions.push((e.disk * bs, (e.len * bs).min(65536)));
        }
    }
    regions
}

#[test]
fn mutations_do_not_panic() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = make_image(&tmp, "mut", &[], true);
    let base: Source = Arc::new(FileSource::open(&img).unwrap());
    let regions = metadata_regions(&XfsFs::open(base.clone()).unwrap());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut opened = 0;
    for _ in 0..300 {
        let mut patches = Vec::new();
        for _ in 0..1 + rng.next() % 8 {
            let (start, len) = regions[(rng.next() % regions.len() as u64) as usize];
            let at = start + rng.next() % len;
            let mut b = [0u8];
            base.read_exact_at(at, &mut b).unwrap();
            patches.push((at, b[0] ^ (1 << (rng.next() % 8))));
        }
        let src = Arc::new(Patched {
            base: base.clone(),
            patches,
        });
        if let Ok(fs) = XfsFs::open(src) {
            opened += 1;
            walk_tolerant(&fs);
        }
    }
    // Most flips land outside what open checks; the walk must have run.
    assert!(opened > 100, "only {opened} mutated images opened");
}

/// `open` of the image at `img` with superblock byte `at` or-ed with `bit`.
fn open_with_bit(img: &Path, at: u64, bit: u8) -> crate::Result<XfsFs> {
    let base: Source = Arc::new(FileSource::open(img).unwrap());
    let mut b = [0u8];
    base.read_exact_at(at, &mut b).unwrap();
    XfsFs::open(Arc::new(Patched {
        base,
        patches: vec![(at, b[0] | bit)],
    }))
}

#[test]
fn refuses_needsrepair_and_unknown_features() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = tmp.0.join("f.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&img));
    assert!(open_with_bit(&img, 0, 0).is_ok());
    // features_incompat is big-endian at 216: needsrepair is bit 4, bit
    // 20 is unknown.
    let e = open_with_bit(&img, 219, 0x10).err().unwrap();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("needsrepair"), "{e}");
    let e = open_with_bit(&img, 217, 0x10).err().unwrap();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("unknown incompatible"), "{e}");

    // The same through xfs_db, which also fixes the checksum.
    let features = xfs_db_sb(&img, "features_incompat");
    let v = u32::from_str_radix(features.trim_start_matches("0x"), 16).unwrap();
    run(Command::new("xfs_db")
        .arg("-x")
        .args([
            "-c",
            "sb 0",
            "-c",
            &format!("write -d features_incompat {}", v | 0x10),
        ])
        .arg(&img));
    let src: Source = Arc::new(FileSource::open(&img).unwrap());
    let e = XfsFs::open(src).err().unwrap();
    assert!(e.to_string().contains("needsrepair"), "{e}");
}

const CRASH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/fs/xfs/testdata/crash.py");

/// The cycle number of the log's first block: 2 or more once the log
/// has wrapped.
fn log_cycle(img: &Path) -> u32 {
    let fs = open_norecovery(img);
    let bs = u64::from(fs.sb.block_size);
    let start = fs.sb.linear_block(fs.sb.log_start).unwrap() * bs;
    let mut b = [0u8; 8];
    fs.src.read_exact_at(start, &mut b).unwrap();
    let word = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    if word(0) == 0xfeed_babe {
        word(4)
    } else {
        word(0)
    }
}

fn open_norecovery(img: &Path) -> XfsFs {
    open(img)
}

/// An image made with `mkfs.xfs args`, changed through a mount with
/// `opts` (with
/// `sync`, a sync between two rounds of changes) and shut down with the log forced and
/// nothing more written home, as xfstests simulates a crash.
fn crashed_image(
    tmp: &TempDir,
    name: &str,
    args: &[&str],
    opts: &str,
    churn: usize,
    sync: bool,
) -> PathBuf {
    let img = make_image(tmp, name, args, true);
    let m = Mount::new(&img, &tmp.0.join(format!("{name}.rw")), opts);
    for _ in 0..churn {
        run(Command::new("python3").arg(CRASH).arg(&m.0).arg("churn"));
    }
    run(Command::new("python3").arg(CRASH).arg(&m.0).arg("1"));
    if sync {
        run(&mut Command::new("sync"));
    }
    run(Command::new("python3").arg(CRASH).arg(&m.0).arg("2"));
    run(Command::new("xfs_io")
        .arg("-x")
        .args(["-c", "shutdown -f"])
        .arg(&m.0));
    drop(m);
    img
}

/// A sparse copy of `img`, for the kernel to recover.
fn copy_image(img: &Path, to: &Path) {
    run(Command::new("cp").arg("--sparse=always").arg(img).arg(to));
}

fn file_sha1(p: &Path) -> String {
    sha1(&std::fs::read(p).unwrap())
}

/// What the kernel sees in a copy of `img` mounted with `opts`.
fn kernel_view(tmp: &TempDir, img: &Path, name: &str, opts: &str) -> BTreeMap<Vec<u8>, Seen> {
    let copy = tmp.0.join(format!("{name}.img"));
    copy_image(img, &copy);
    let m = Mount::new(&copy, &tmp.0.join(format!("{name}.mnt")), opts);
    let seen = walk_kernel(&m.0);
    drop(m);
    let _ = std::fs::remove_file(&copy);
    seen
}

/// Ours on the crashed image equals the kernel's recovery of a copy;
/// the log held transactions, and the image is not written.
fn check_replay(tmp: &TempDir, img: &Path, name: &str) -> Vec<String> {
    let before = file_sha1(img);
    let fs = open(img);
    let w = fs.info().warnings;
    let replayed = w
        .iter()
        .find_map(|w| w.strip_prefix("log replayed in memory ("))
        .unwrap_or_else(|| panic!("{w:?}"));
    let n: usize = replayed.split(' ').next().unwrap().parse().unwrap();
    assert!(n > 0, "{w:?}");
    let ours = walk_ours(&fs);
    assert_eq!(file_sha1(img), before, "the image was written");
    // noatime: the walk must not change what it compares.
    let recovered = kernel_view(tmp, img, &format!("{name}-rec"), "rw,noatime");
    compare(&ours, &recovered);
    same_inode_bytes(tmp, img, &fs, &ours, name);
    w
}

/// Block level: every inode the walk reaches is byte for byte what the
/// kernel's recovery wrote (a copy mounted and unmounted untouched).
fn same_inode_bytes(
    tmp: &TempDir,
    img: &Path,
    fs: &XfsFs,
    ours: &BTreeMap<Vec<u8>, Seen>,
    name: &str,
) {
    let copy = tmp.0.join(format!("{name}-blk.img"));
    copy_image(img, &copy);
    drop(Mount::new(
        &copy,
        &tmp.0.join(format!("{name}-blk.mnt")),
        "rw,noatime",
    ));
    let kernel: Source = Arc::new(FileSource::open(&copy).unwrap());
    let isize = usize::from(fs.sb.inode_size);
    let mut differ = Vec::new();
    for (path, seen) in ours {
        let off = fs.sb.inode_offset(seen.ino).unwrap();
        let (mut a, mut b) = (vec![0u8; isize], vec![0u8; isize]);
        fs.read_raw(off, &mut a).unwrap();
        kernel.read_exact_at(off, &mut b).unwrap();
        if a != b {
            differ.push(String::from_utf8_lossy(path).into_owned());
        }
    }
    let _ = std::fs::remove_file(&copy);
    assert!(
        differ.is_empty(),
        "{} inodes differ: {differ:?}",
        differ.len()
    );
}

/// Records of up to 256 KiB (`logbsize`): extended headers.
#[test]
fn dirty_log_replayed_as_the_kernel_does() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = crashed_image(&tmp, "dirty", &[], "rw,logbsize=256k", 0, true);
    let (_, _, recs) = log_records(&img);
    assert!(
        recs.windows(2).any(|w| w[1] > w[0] + 66),
        "no record over 32 KiB: {recs:?}"
    );
    check_replay(&tmp, &img, "dirty");
}

#[test]
fn dirty_log_replayed_after_wrapping() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    // The smallest log mkfs makes here (5.3 MiB), wrapped by churn.
    let img = crashed_image(
        &tmp,
        "wrap",
        &["-l", "size=1368b"],
        "rw,logbsize=256k",
        3,
        true,
    );
    let cycle = log_cycle(&img);
    assert!(cycle >= 2, "log did not wrap (cycle {cycle})");
    check_replay(&tmp, &img, "wrap");
}

/// Where the log of `img` is (byte offset, basic blocks) and its records
/// from tail to head (log block numbers), as our recovery finds them.
fn log_records(img: &Path) -> (u64, u64, Vec<u64>) {
    let src: Source = Arc::new(FileSource::open(img).unwrap());
    let mut raw = vec![0u8; 512];
    src.read_exact_at(0, &mut raw).unwrap();
    let sb = super::superblock::Superblock::parse(&raw).unwrap();
    let bs = u64::from(sb.block_size);
    let start = sb.linear_block(sb.log_start).unwrap() * bs;
    let len = u64::from(sb.log_blocks) * bs / 512;
    let read = |off: u64, buf: &mut [u8]| -> crate::Result<()> {
        src.read_exact_at(off, buf)
            .map_err(|e| Error::io("xfs", off, e))
    };
    let dev = super::log::records::LogDev {
        start,
        len,
        v2: true,
        v5: true,
        uuid: sb.uuid,
        logbsize: 32768,
        read: &read,
    };
    let span = dev.span().unwrap().unwrap();
    (start, len, dev.headers(span.head, span.tail).unwrap())
}

/// A copy of `img` with the byte at `at` flipped.
fn damaged_copy(img: &Path, to: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    copy_image(img, to);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(to)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

/// The kernel's view of a copy of `img` mounted (recovering) read-write,
/// or `None` if it refuses to mount it.
fn try_kernel_recovery(tmp: &TempDir, img: &Path, name: &str) -> Option<BTreeMap<Vec<u8>, Seen>> {
    let copy = tmp.0.join(format!("{name}.img"));
    copy_image(img, &copy);
    let dir = tmp.0.join(format!("{name}.mnt"));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "xfs", "-o", "loop,rw,noatime"])
        .arg(&copy)
        .arg(&dir)
        .output()
        .unwrap()
        .status
        .success();
    if !ok {
        let _ = std::fs::remove_file(&copy);
        return None;
    }
    let m = Mount(dir);
    let seen = walk_kernel(&m.0);
    drop(m);
    let _ = std::fs::remove_file(&copy);
    Some(seen)
}

/// Damaged records: a torn last record is cut off as the kernel cuts
/// it; a bad record before the last ones in flight makes the kernel
/// refuse the log, and us read without it. Never a panic.
#[test]
fn damaged_log_matches_kernel() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = crashed_image(&tmp, "torn", &["-l", "size=1368b"], "rw", 1, true);
    let (start, len, recs) = log_records(&img);
    assert!(recs.len() > 10, "only {} records", recs.len());
    // A byte in the body of the last record, then of one before the
    // last eight.
    let body = |blk: u64| start + ((blk + 1) % len) * 512 + 100;
    let n = recs.len();
    for (what, at) in [
        ("last", body(recs[n - 1])),
        // Saved cycle words in the last header.
        ("last-header", start + recs[n - 1] * 512 + 100),
        // Within the last eight: the log ends there, the last record too.
        ("second-last", body(recs[n - 2])),
        ("middle", body(recs[n - 10])),
    ] {
        let bad = tmp.0.join(format!("torn-{what}.img"));
        damaged_copy(&img, &bad, at);
        let fs = open(&bad);
        let w = fs.info().warnings;
        match try_kernel_recovery(&tmp, &bad, &format!("torn-{what}-k")) {
            Some(kernel) => {
                assert!(w.iter().any(|w| w.contains("torn write")), "{what}: {w:?}");
                compare(&walk_ours(&fs), &kernel);
            }
            None => {
                assert!(
                    w.iter().any(|w| w.starts_with("log not replayed")),
                    "{what}: {w:?}"
                );
                // Unrecovered metadata may be inconsistent: no panic.
                walk_tolerant(&fs);
            }
        }
        eprintln!("{what}: {w:?}");
        std::fs::remove_file(&bad).unwrap();
    }
}

/// Random damage anywhere in the live log: open and walk never panic
/// or hang.
#[test]
fn log_mutations_do_not_panic() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = crashed_image(&tmp, "logmut", &[], "rw,logbsize=256k", 0, true);
    let (start, len, recs) = log_records(&img);
    let base: Source = Arc::new(FileSource::open(&img).unwrap());
    let first = recs[0];
    let span = (recs.last().unwrap() + len - first) % len + 64;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let (mut replayed, mut crc_refused) = (0, 0);
    for round in 0..300 {
        let mut patches = Vec::new();
        if round % 2 == 0 {
            for _ in 0..1 + rng.next() % 4 {
                let blk = (first + rng.next() % span) % len;
                let at = start + blk * 512 + rng.next() % 512;
                let mut b = [0u8];
                base.read_exact_at(at, &mut b).unwrap();
                patches.push((at, b[0] ^ (1 << (rng.next() % 8))));
            }
        } else {
            // Damage inside a record with its CRC made good again, so the
            // replay itself gets hostile operations and items.
            let rec = recs[(rng.next() % recs.len() as u64) as usize];
            patches = recrc_damage(&base, start, len, rec, &mut rng);
        }
        let src = Arc::new(Patched {
            base: base.clone(),
            patches,
        });
        if let Ok(fs) = XfsFs::open(src) {
            if fs
                .info()
                .warnings
                .iter()
                .any(|w| w.starts_with("log replayed"))
            {
                replayed += 1;
            }
            if round % 2 == 1 && fs.info().warnings.iter().any(|w| w.contains("CRC")) {
                crc_refused += 1;
            }
            walk_tolerant(&fs);
        }
    }
    assert!(replayed > 20, "only {replayed} damaged logs replayed");
    // Recomputed CRCs pass: the damage reached the replay itself.
    assert_eq!(crc_refused, 0);
}

/// 8 KiB directory blocks over 4 KiB blocks (buffers logged in
/// segments), 64-bit extent counters, old timestamps.
#[test]
fn dirty_log_replayed_dir_8k_nrext64_no_bigtime() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let args = ["-n", "size=8192", "-i", "nrext64=1", "-m", "bigtime=0"];
    let img = crashed_image(&tmp, "dirty8k", &args, "rw", 0, true);
    check_replay(&tmp, &img, "dirty8k");
}

/// Flips a few bytes in the body of the log record at block `rec` and
/// returns them with the record's CRC recomputed, as source patches.
fn recrc_damage(
    base: &Source,
    start: u64,
    len: u64,
    rec: u64,
    rng: &mut XorShift,
) -> Vec<(u64, u8)> {
    let at = |blk: u64| start + (blk % len) * 512;
    let read = |blk: u64, n: u64| {
        let mut v = vec![0u8; (n * 512) as usize];
        for i in 0..n {
            base.read_exact_at(at(blk + i), &mut v[(i * 512) as usize..][..512])
                .unwrap();
        }
        v
    };
    let h = read(rec, 1);
    let h_size = u32::from_be_bytes(h[320..324].try_into().unwrap());
    let hblks = u64::from(h_size.div_ceil(32768).max(1));
    let h_len = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let raw = read(rec, hblks);
    let bblks = u64::from(h_len).div_ceil(512);
    let mut data = read(rec + hblks, bblks);
    data.truncate(h_len as usize);
    let mut patches = Vec::new();
    for _ in 0..1 + rng.next() % 3 {
        // Not the cycle stamp at the start of each block.
        let i = (rng.next() % u64::from(h_len)) as usize;
        if i % 512 < 4 {
            continue;
        }
        data[i] ^= 1 << (rng.next() % 8);
        let blk = rec + hblks + i as u64 / 512;
        patches.push((at(blk) + i as u64 % 512, data[i]));
    }
    let crc = super::log::records::record_crc(&raw, &data, h_len, super::log::records::REC_SIZE);
    for (k, b) in crc.to_le_bytes().into_iter().enumerate() {
        patches.push((at(rec) + 32 + k as u64, b));
    }
    patches
}

#[test]
fn dirty_log_replayed_1k_blocks() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let img = crashed_image(&tmp, "dirty1k", &["-b", "size=1024"], "rw", 0, false);
    check_replay(&tmp, &img, "dirty1k");
}

/// Path in the image, type, content or target, mode, uid, gid, rdev.
type Expected = (String, FileType, Vec<u8>, u32, u32, u32, u64);

/// v4 (`-m crc=0`): this kernel may not mount it, so mkfs fills it from a
/// protofile and the source tree is the reference.
#[test]
fn v4_from_protofile() {
    if !have_tools() {
        return;
    }
    let tmp = TempDir::new("xfs");
    let src = tmp.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut expect: Vec<Expected> = Vec::new();
    for (i, size) in [0usize, 1, 4096, 5000, 300_000].into_iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        let p = src.join(format!("f{i}"));
        std::fs::write(&p, &data).unwrap();
        proto += &format!("f{i} ---64{i} {i} {} {}\n", i + 10, p.display());
        expect.push((
            format!("/f{i}"),
            FileType::File,
            data,
            0o640 + i as u32,
            i as u32,
            i as u32 + 10,
            0,
        ));
    }
    let long_target = "t".repeat(900);
    proto += &format!("short l--777 0 0 f1\nremote l--777 0 0 {long_target}\n");
    expect.push((
        "/short".into(),
        FileType::Symlink,
        b"f1".to_vec(),
        0o777,
        0,
        0,
        0,
    ));
    expect.push((
        "/remote".into(),
        FileType::Symlink,
        long_target.into_bytes(),
        0o777,
        0,
        0,
        0,
    ));
    proto += "chr c--620 0 5 4 1\nblk b--660 0 6 8 17\npipe p--600 1 1\n";
    expect.push((
        "/chr".into(),
        FileType::CharDevice,
        Vec::new(),
        0o620,
        0,
        5,
        (4 << 8) | 1,
    ));
    expect.push((
        "/blk".into(),
        FileType::BlockDevice,
        Vec::new(),
        0o660,
        0,
        6,
        (8 << 8) | 17,
    ));
    expect.push(("/pipe".into(), FileType::Fifo, Vec::new(), 0o600, 1, 1, 0));
    for (dir, n) in [("small", 3), ("big", 3000)] {
        proto += &format!("{dir} d-g755 0 0\n");
        expect.push((
            format!("/{dir}"),
            FileType::Dir,
            Vec::new(),
            0o2755,
            0,
            0,
            0,
        ));
        for i in 0..n {
            let name = format!("entry-{i:05}-{}", "z".repeat(i % 30));
            proto += &format!("{name} ---600 0 0 /dev/null\n");
            expect.push((
                format!("/{dir}/{name}"),
                FileType::File,
                Vec::new(),
                0o600,
                0,
                0,
                0,
            ));
        }
        proto += "$\n";
    }
    proto += "$\n";
    let pf = tmp.0.join("proto");
    std::fs::write(&pf, proto).unwrap();
    let img = tmp.0.join("v4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "crc=0", "-p"])
        .arg(&pf)
        .arg(&img));
    let fs = open(&img);
    assert!(!fs.sb.is_v5());
    assert!(fs.info().warnings.is_empty(), "{:?}", fs.info().warnings);
    let mut seen = 0;
    let mut stack = vec![(String::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let p = format!("{path}/{}", e.name.to_string_lossy());
            let (_, kind, data, mode, uid, gid, rdev) = expect
                .iter()
                .find(|x| x.0 == p)
                .unwrap_or_else(|| panic!("{p} unexpected"));
            let st = fs.stat(e.node).unwrap();
            assert_eq!(
                (e.kind, st.mode, st.uid, st.gid, st.rdev),
                (*kind, *mode, *uid, *gid, *rdev),
                "{p}"
            );
            match kind {
                FileType::File => assert_eq!(&read_all(&fs, e.node, st.size), data, "{p}"),
                FileType::Symlink => {
                    assert_eq!(fs.read_link(e.node).unwrap().as_bytes(), data, "{p}")
                }
                FileType::Dir => stack.push((p.clone(), e.node)),
                _ => {}
            }
            seen += 1;
        }
    }
    assert_eq!(seen, expect.len());
}

#[test]
fn timestamps_decode() {
    use super::inode::decode_time;
    use crate::fs::Timespec;
    // bigtime counts nanoseconds from 1901-12-13T20:45:52Z.
    let epoch = (1u64 << 31) * 1_000_000_000;
    assert_eq!(decode_time(epoch + 5, true), Timespec { secs: 0, nanos: 5 });
    assert_eq!(
        decode_time(0, true),
        Timespec {
            secs: -(1 << 31),
            nanos: 0
        }
    );
    // Old format: signed seconds, then nanoseconds.
    let raw = (u64::from((-2i32) as u32) << 32) | 7;
    assert_eq!(decode_time(raw, false), Timespec { secs: -2, nanos: 7 });
}

#[test]
fn extent_find_holes() {
    use super::bmap::{find, Extent};
    let e = |logical, len| Extent {
        logical,
        disk: 100,
        len,
        unwritten: false,
    };
    let list = [e(2, 3), e(10, 1)];
    assert_eq!(find(&list, 0), Err(0));
    assert_eq!(find(&list, 2), Ok(0));
    assert_eq!(find(&list, 4), Ok(0));
    assert_eq!(find(&list, 5), Err(1));
    assert_eq!(find(&list, 10), Ok(1));
    assert_eq!(find(&list, 11), Err(2));
}

/// A synthetic log of `n` basic blocks: cycle `new` before `head`, `old`
/// from it, and an unmount-like record header at `rec` with `ops` ops.
fn synthetic_log(n: usize, head: usize, new: u32, old: u32, rec: usize, ops: u32) -> Vec<u8> {
    let mut v = vec![0u8; n * 512];
    for b in 0..n {
        let c = if b < head { new } else { old };
        v[b * 512..b * 512 + 4].copy_from_slice(&c.to_be_bytes());
    }
    let h = &mut v[rec * 512..rec * 512 + 512];
    h[0..4].copy_from_slice(&0xfeed_babe_u32.to_be_bytes());
    h[4..8].copy_from_slice(&new.to_be_bytes());
    h[8..12].copy_from_slice(&2u32.to_be_bytes());
    h[40..44].copy_from_slice(&ops.to_be_bytes());
    h[320..324].copy_from_slice(&32768u32.to_be_bytes());
    // The op header's flags in the block after the header (which wraps).
    let d = (rec + 1) % n;
    v[d * 512 + 9] = 0x20;
    v
}

#[test]
fn log_head_search() {
    use super::log::{state, State};
    let check = |v: Vec<u8>| {
        let read = |off: u64, buf: &mut [u8]| -> crate::Result<()> {
            let s = v
                .get(off as usize..off as usize + buf.len())
                .ok_or_else(|| Error::corrupt("xfs", off, "past the end"))?;
            buf.copy_from_slice(s);
            Ok(())
        };
        state(0, (v.len() / 512) as u64, &read).unwrap()
    };
    // Wrapped: head in the middle, the record just before it.
    assert_eq!(check(synthetic_log(64, 20, 3, 2, 18, 1)), State::Clean);
    assert!(matches!(
        check(synthetic_log(64, 20, 3, 2, 18, 4)),
        State::Dirty(_)
    ));
    // Head at the very end; the record's data wraps to block 0.
    assert_eq!(check(synthetic_log(64, 64, 3, 2, 63, 1)), State::Clean);
    // First pass, unwritten blocks are cycle 0.
    assert_eq!(check(synthetic_log(64, 5, 1, 0, 3, 1)), State::Clean);
    // An older record (stale, of the previous pass) is never taken as the
    // last one: here none of the current pass exists.
    let mut v = synthetic_log(64, 20, 3, 2, 40, 1);
    v[40 * 512 + 4..40 * 512 + 8].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(check(v), State::Dirty(_)));
}
