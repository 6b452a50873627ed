//! The adapter against a third-party image, against ntfs-3g on images made
//! here, and against mutated images (no panic, no hang).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::readat::{FileSource, MemSource};

/// A third-party image of `testimages/real/` (always in the repository).
fn real(name: &str) -> Option<PathBuf> {
    Some(crate::testutil::real_image(name))
}

fn resolve(fs: &dyn FileSystem, path: &str) -> Result<NodeId> {
    let mut node = fs.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        node = fs
            .lookup(node, OsStr::new(part))?
            .ok_or_else(|| Error::NotFound(path.into()))?;
    }
    Ok(node)
}

/// Reads a whole file in odd-sized chunks, to cross run boundaries.
fn read_all(fs: &dyn FileSystem, node: NodeId) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_537];
    loop {
        let n = fs.read(node, out.len() as u64, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn testfs1_exact() {
    let Some(p) = real("testfs1") else {
        return;
    };
    let src: Source = Arc::new(MemSource(std::fs::read(p).unwrap()));
    let fs = open(src).unwrap();
    let info = fs.info();
    assert_eq!(info.kind, "ntfs");
    assert_eq!(info.label.as_deref(), Some("mylabel"));
    assert_eq!(info.total_bytes, 2 * 1024 * 1024 - 512);
    assert!(info.free_bytes > 0 && info.free_bytes < info.total_bytes);

    let get = |path: &str| {
        let n = resolve(&fs, path).unwrap();
        (fs.stat(n).unwrap(), read_all(&fs, n).unwrap())
    };
    let (st, data) = get("/empty-file");
    assert_eq!((st.kind, st.size, data.len()), (FileType::File, 0, 0));
    let (st, data) = get("/file-with-12345");
    assert_eq!((st.size, data.as_slice()), (5, &b"12345"[..]));
    let (st, data) = get("/1000-bytes-file");
    assert_eq!(st.size, 1000);
    assert_eq!(data, b"12345".repeat(200));
    let (st, data) = get("/sparse-file");
    assert_eq!(st.size, 500_005);
    assert_eq!(data.len(), 500_005);
    assert_eq!(&data[..5], b"12345");
    assert_eq!(&data[500_000..], b"11111");
    assert!(data[5..500_000].iter().all(|&b| b == 0));
    assert_eq!(st.mode, 0o644);

    // Case-insensitive lookup through $UpCase.
    assert_eq!(
        resolve(&fs, "/FILE-WITH-12345").unwrap(),
        resolve(&fs, "/file-with-12345").unwrap()
    );
    assert!(fs.lookup(fs.root(), OsStr::new("nope")).unwrap().is_none());
    // Metafiles are hidden, in listings and lookups.
    assert!(fs.lookup(fs.root(), OsStr::new("$MFT")).unwrap().is_none());

    let root: Vec<String> = fs
        .read_dir(fs.root())
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    let mut root = root;
    root.sort();
    assert_eq!(
        root,
        [
            "1000-bytes-file",
            "empty-file",
            "file-with-12345",
            "many_subdirs",
            "sparse-file"
        ]
    );

    let many = resolve(&fs, "/many_subdirs").unwrap();
    assert_eq!(fs.stat(many).unwrap().kind, FileType::Dir);
    assert_eq!(fs.stat(many).unwrap().mode, 0o755);
    assert_eq!(fs.stat(many).unwrap().nlink, 1);
    let entries = fs.read_dir(many).unwrap();
    let mut got: Vec<u32> = entries
        .iter()
        .map(|e| e.name.to_str().unwrap().parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=512).collect::<Vec<_>>());
    assert!(entries.iter().all(|e| e.kind == FileType::Dir));
    for i in [1, 77, 256, 512] {
        let n = fs
            .lookup(many, OsStr::new(&i.to_string()))
            .unwrap()
            .unwrap();
        assert!(entries.iter().any(|e| e.node == n));
    }
    assert!(matches!(
        fs.read(many, 0, &mut [0; 4]),
        Err(Error::IsADirectory(_))
    ));
}

#[test]
fn shared_between_threads() {
    let Some(p) = real("testfs1") else {
        return;
    };
    let src: Source = Arc::new(FileSource::open(&p).unwrap());
    let fs = Arc::new(open(src).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let n = resolve(&*fs, "/1000-bytes-file").unwrap();
                    assert_eq!(read_all(&*fs, n).unwrap(), b"12345".repeat(200));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Deterministic xorshift64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Walks everything reachable, reading all data, with bounds so a
/// corrupt image that lists a directory inside itself still ends.
fn walk_all(fs: &dyn FileSystem) {
    let mut todo = vec![(fs.root(), 0usize)];
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Some((dir, depth)) = todo.pop() {
        if depth > 16 || !seen.insert(dir) || seen.len() > 4000 {
            continue;
        }
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries {
            let _ = fs.lookup(dir, &e.name);
            let _ = fs.xattrs(e.node);
            match fs.stat(e.node) {
                Ok(st) if st.kind == FileType::Dir => todo.push((e.node, depth + 1)),
                Ok(st) if st.kind == FileType::Symlink => {
                    let _ = fs.read_link(e.node);
                }
                Ok(_) => {
                    let mut off = 0u64;
                    while off < 4 << 20 {
                        match fs.read(e.node, off, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => off += n as u64,
                        }
                    }
                }
                Err(_) => {}
            }
        }
    }
    let _ = fs.info();
}

#[test]
fn mutations_do_not_panic_or_hang() {
    // NTFS_FUZZ_IMAGE mutates another (small) image by hand.
    let p = match std::env::var_os("NTFS_FUZZ_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => match real("testfs1") {
            Some(p) => p,
            None => return,
        },
    };
    let image = std::fs::read(p).unwrap();
    let boot = ::ntfs::Ntfs::new(&mut std::io::Cursor::new(&image)).unwrap();
    let mft = boot.mft_position().value().unwrap().get() as usize;
    let rec = boot.file_record_size() as usize;
    let indx: Vec<usize> = (0..image.len())
        .step_by(512)
        .filter(|&o| image.get(o..o + 4) == Some(b"INDX"))
        .collect();
    assert!(!indx.is_empty());
    // NTFS_FUZZ_ROUNDS / NTFS_FUZZ_SEED run longer or other searches by hand.
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mut rng = Rng(env("NTFS_FUZZ_SEED", 0x9E37_79B9_7F4A_7C15) | 1);
    let start = std::time::Instant::now();
    for round in 0..env("NTFS_FUZZ_ROUNDS", 300) {
        let mut img = image.clone();
        let (base, len) = match round % 3 {
            0 => (0, 512),
            1 => (mft + rng.below(40) as usize * rec, rec),
            _ => (indx[rng.below(indx.len() as u64) as usize], 4096),
        };
        for _ in 0..1 + rng.below(8) {
            let at = base + rng.below(len as u64) as usize;
            if let Some(b) = img.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        let src: Source = Arc::new(MemSource(img));
        if let Ok(fs) = open(src) {
            walk_all(&fs);
        }
    }
    // Generous: the point is to catch loops, not to time the walk.
    assert!(start.elapsed().as_secs() < 600);
}

// ---- Comparison with ntfs-3g on images made here ----

/// Runs a shell script; panics with its output on failure.
fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory with a mount point; unmounts and removes itself.
struct Scratch {
    dir: PathBuf,
    mnt: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("restorefs-ntfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        Scratch {
            mnt: dir.join("mnt"),
            dir,
        }
    }
    fn image(&self) -> PathBuf {
        self.dir.join("ntfs.img")
    }
    fn unmount(&self) {
        for _ in 0..50 {
            let ok = Command::new("fusermount")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
                || Command::new("umount")
                    .arg(&self.mnt)
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
            if ok || !is_mounted(&self.mnt) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            self.unmount();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_mounted(p: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let p = p.to_string_lossy();
    m.lines().any(|l| l.split(' ').nth(1) == Some(&*p))
}

/// Whether ntfs-3g, mkntfs and FUSE are usable; under CI they must be.
fn have_tools() -> bool {
    let tools = [
        "ntfs-3g",
        "mkntfs",
        "setfattr",
        "getfattr",
        "fusermount",
        "losetup",
        "gzip",
        "python3",
    ];
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    let fuse = Path::new("/dev/fuse").exists();
    if missing.is_empty() && fuse {
        return true;
    }
    let why = format!("missing tools {missing:?} or /dev/fuse ({fuse})");
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set)");
    }
    eprintln!("skipping: {why}");
    false
}

const REFERENCE_OPTS: &str = "ro,uid=0,gid=0,fmask=0133,dmask=0022,streams_interface=xattr";

fn make_image(s: &Scratch, populate: &str, mount_opts: &str) {
    make_image_sized(s, populate, mount_opts, 32);
}

fn make_image_sized(s: &Scratch, populate: &str, mount_opts: &str, mib: u32) {
    let img = s.image();
    sh(&format!(
        "truncate -s {mib}M '{i}' && mkntfs -F -Q -s 512 -c 4096 -L lbl '{i}' >/dev/null",
        i = img.display()
    ));
    sh(&format!(
        "ntfs-3g {mount_opts} '{}' '{}'",
        img.display(),
        s.mnt.display()
    ));
    let r = Command::new("sh")
        .arg("-ec")
        .arg(populate)
        .current_dir(&s.mnt)
        .output()
        .unwrap();
    s.unmount();
    assert!(
        r.status.success(),
        "populate failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    sh(&format!(
        "ntfs-3g -o {REFERENCE_OPTS} '{}' '{}'",
        img.display(),
        s.mnt.display()
    ));
}

/// One node as both readers must agree on it.
#[derive(Debug, PartialEq, Eq)]
struct Item {
    kind: FileType,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    atime: (i64, u32),
    ctime: (i64, u32),
    nlink: u32,
    rdev: u64,
    /// 512-byte blocks taken, as `st_blocks` counts them.
    blocks: u64,
    target: Option<OsString>,
    content: Option<Vec<u8>>,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

fn walk_ours(fs: &dyn FileSystem, skip_data: &dyn Fn(&str) -> bool) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(fs.root(), String::new())];
    while let Some((dir, path)) = todo.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let p = format!("{path}/{}", e.name.to_string_lossy());
            assert_eq!(fs.lookup(dir, &e.name).unwrap(), Some(e.node), "{p}");
            let st = fs
                .stat(e.node)
                .unwrap_or_else(|err| panic!("{p} (record {}): {err}", e.node));
            assert_eq!(st.kind, e.kind, "{p}: entry kind");
            let content = if st.kind == FileType::File && !skip_data(&p) {
                match read_all(fs, e.node) {
                    Ok(d) => Some(d),
                    Err(err) => panic!("{p}: {err}"),
                }
            } else {
                None
            };
            let target = (st.kind == FileType::Symlink).then(|| fs.read_link(e.node).unwrap());
            let mut xattrs = if matches!(st.kind, FileType::File | FileType::Dir) {
                fs.xattrs(e.node).unwrap()
            } else {
                Vec::new()
            };
            xattrs.sort();
            if st.kind == FileType::Dir {
                todo.push((e.node, p.clone()));
            }
            out.insert(
                p,
                Item {
                    kind: st.kind,
                    size: st.size,
                    mode: st.mode,
                    mtime: (st.mtime.secs, st.mtime.nanos),
                    atime: (st.atime.secs, st.atime.nanos),
                    ctime: (st.ctime.secs, st.ctime.nanos),
                    nlink: st.nlink,
                    rdev: st.rdev,
                    blocks: st.allocated.div_ceil(512),
                    target,
                    content,
                    xattrs,
                },
            );
        }
    }
    out
}

fn xattrs_of(p: &Path) -> Vec<(OsString, Vec<u8>)> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-h", "-d", "-m", "-", "-e", "hex"])
        .arg(p)
        .output()
        .unwrap();
    let mut v: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, hex)| {
            let hex = hex.trim_start_matches("0x");
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            (OsString::from(k), bytes)
        })
        .collect();
    v.sort();
    v
}

fn walk_mount(root: &Path, skip_data: &dyn Fn(&str) -> bool) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, path)) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = format!("{path}/{}", e.file_name().to_string_lossy());
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                FileType::Dir
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_socket() {
                FileType::Socket
            } else if ft.is_char_device() {
                FileType::CharDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                FileType::File
            };
            if kind == FileType::Dir {
                todo.push((e.path(), p.clone()));
            }
            out.insert(
                p.clone(),
                Item {
                    kind,
                    size: md.len(),
                    mode: md.mode() & 0o7777,
                    mtime: (md.mtime(), md.mtime_nsec() as u32),
                    atime: (md.atime(), md.atime_nsec() as u32),
                    ctime: (md.ctime(), md.ctime_nsec() as u32),
                    nlink: md.nlink() as u32,
                    rdev: md.rdev(),
                    blocks: md.blocks(),
                    target: (kind == FileType::Symlink)
                        .then(|| std::fs::read_link(e.path()).unwrap().into_os_string()),
                    content: (kind == FileType::File && !skip_data(&p))
                        .then(|| std::fs::read(e.path()).unwrap()),
                    xattrs: if kind == FileType::File || kind == FileType::Dir {
                        xattrs_of(&e.path())
                    } else {
                        Vec::new()
                    },
                },
            );
        }
    }
    out
}

fn compare(ours: &BTreeMap<String, Item>, reference: &BTreeMap<String, Item>) {
    let a: Vec<_> = ours.keys().collect();
    let b: Vec<_> = reference.keys().collect();
    assert_eq!(a, b, "names differ");
    for (path, r) in reference {
        let o = &ours[path];
        assert_eq!(
            (o.kind, o.size, o.mode, o.nlink, o.rdev, &o.target, &o.xattrs),
            (r.kind, r.size, r.mode, r.nlink, r.rdev, &r.target, &r.xattrs),
            "{path}"
        );
        assert_eq!(
            (o.mtime, o.atime, o.ctime),
            (r.mtime, r.atime, r.ctime),
            "{path}"
        );
        if o.kind == FileType::File {
            assert_eq!(o.blocks, r.blocks, "{path}: blocks");
        }
        assert!(o.content == r.content, "{path}: content differs");
    }
}

const POPULATE: &str = r#"
# First, on the empty volume: alternate appends leave manyA in hundreds of
# runs, more than its record holds (an attribute list).
i=0; while [ $i -lt 400 ]; do
  head -c 4096 /dev/urandom >> manyA
  head -c 4096 /dev/urandom >> manyB
  i=$((i+1))
done
mkdir -p a/b/c/d empty_dir
echo nested > a/b/c/d/deep.txt
printf 'unicode' > 'ünïcødé ファイル €.txt'
mkdir 'Ελληνικά'
echo greek > 'Ελληνικά/αρχείο'
long=$(printf 'L%.0s' $(seq 1 200))
echo long > "$long"
mkdir big
i=0; while [ $i -lt 2000 ]; do echo "$i" > "big/entry_$i"; i=$((i+1)); done
echo hardlinked > hl1
ln hl1 hl2
ln hl1 a/hl3
ln -s hl1 rel_link
ln -s ../hl1 a/rel_up
ln -s /etc/passwd abs_link
ln -s 'ünïcødé ファイル €.txt' uni_link
echo data > streams
setfattr -n user.foo -v bar streams
head -c 40000 /dev/urandom > /tmp/restorefs-xattr.$$
setfattr -n user.big -v 0x$(od -An -v -tx1 /tmp/restorefs-xattr.$$ | tr -d ' \n') streams
rm /tmp/restorefs-xattr.$$
: > empty
printf 12345 > small
head -c 3000000 /dev/urandom > plain_big
i=0; while [ $i -lt 40 ]; do
  head -c 131072 /dev/urandom >> fragA
  head -c 131072 /dev/urandom >> fragB
  i=$((i+1))
done
truncate -s 10M sparse
printf X | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
printf tail >> sparse
mkdir MixedCase
echo m > MixedCase/File.TXT
mkfifo fifo
mknod chr c 1 3
mknod blk b 7 0
python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('sock')"
mkdir posix
echo upper > posix/Case
echo lower > posix/case
echo only > posix/Single
"#;

#[test]
fn matches_ntfs3g() {
    if !have_tools() {
        return;
    }
    let s = Scratch::new("cmp");
    make_image(&s, POPULATE, "");
    let src: Source = Arc::new(FileSource::open(&s.image()).unwrap());
    let fs = open(src).unwrap();
    let none = |_: &str| false;
    let reference = walk_mount(&s.mnt, &none);
    let ours = walk_ours(&fs, &none);
    compare(&ours, &reference);
    assert!(ours.len() > 2000);
    assert_space(&fs, &s.mnt);

    // Lookups are case-insensitive, as on Windows.
    let a = resolve(&fs, "/MixedCase/File.TXT").unwrap();
    assert_eq!(resolve(&fs, "/mixedcase/file.txt").unwrap(), a);
    assert_eq!(
        resolve(&fs, "/ΕΛΛΗΝΙΚΆ/ΑΡΧΕΊΟ").unwrap(),
        resolve(&fs, "/Ελληνικά/αρχείο").unwrap()
    );
    // POSIX names that differ only by case are each found exactly; a
    // third spelling finds one of them.
    let upper = resolve(&fs, "/posix/Case").unwrap();
    let lower = resolve(&fs, "/posix/case").unwrap();
    assert_ne!(upper, lower);
    assert_eq!(read_all(&fs, upper).unwrap(), b"upper\n");
    assert_eq!(read_all(&fs, lower).unwrap(), b"lower\n");
    assert!([upper, lower].contains(&resolve(&fs, "/posix/CASE").unwrap()));
    assert_eq!(
        resolve(&fs, "/posix/SINGLE").unwrap(),
        resolve(&fs, "/posix/Single").unwrap()
    );
    // manyA's runs overflow its record: the comparison above covered a
    // value spread over an attribute list.
    let many = resolve(&fs, "/manyA").unwrap();
    let mut cur = fs.cursor();
    let file = fs.file(&mut cur, many).unwrap();
    assert!(file
        .attributes_raw()
        .any(|a| matches!(a.unwrap().ty(), Ok(NtfsAttributeType::AttributeList))));
    // Hard links are one node.
    assert_eq!(
        resolve(&fs, "/hl1").unwrap(),
        resolve(&fs, "/a/hl3").unwrap()
    );
    let info = fs.info();
    assert_eq!(info.label.as_deref(), Some("lbl"));
    assert_eq!(info.block_size, 4096);
    s.unmount();
}

/// Files ntfs-3g compressed (its `compression` option, in a directory
/// with the compressed attribute): units that compress, units that do not
/// (stored), sparse units, a short tail, a file grown by appends, all
/// against ntfs-3g's view byte for byte.
#[test]
fn compressed_files_match_ntfs3g() {
    if !have_tools() {
        return;
    }
    let s = Scratch::new("lznt1");
    let populate = r#"
mkdir comp
setfattr -h -v 0x00000800 -n system.ntfs_attrib_be comp
yes restorefs | head -c 200000 > comp/text
head -c 300000 /dev/urandom > comp/random
# Compressible, incompressible and sparse units in one file.
{ yes abcdefgh | head -c 65536; head -c 65536 /dev/urandom; yes 0123 | head -c 100000; } > comp/mixed
dd if=/dev/urandom of=comp/mixed bs=65536 seek=6 count=1 conv=notrunc status=none
truncate -s 1000000 comp/mixed
printf tail >> comp/mixed
truncate -s 5M comp/sparse
printf X | dd of=comp/sparse bs=1 seek=3000000 conv=notrunc status=none
printf small > comp/small
yes 'a short line' | head -c 5000 > comp/short
i=0; while [ $i -lt 50 ]; do seq $i 3000 >> comp/grown; head -c 3000 /dev/urandom >> comp/grown; i=$((i+1)); done
echo plain > plain
"#;
    make_image(&s, populate, "-o compression");
    let src: Source = Arc::new(FileSource::open(&s.image()).unwrap());
    let fs = open(src).unwrap();
    let none = |_: &str| false;
    compare(&walk_ours(&fs, &none), &walk_mount(&s.mnt, &none));
    // The comparison covered compressed values, not stored ones.
    let mut cur = fs.cursor();
    for name in ["text", "mixed", "sparse", "grown"] {
        let node = resolve(&fs, &format!("/comp/{name}")).unwrap();
        let file = fs.file(&mut cur, node).unwrap();
        let v = fs
            .values(&mut cur, &file, NtfsAttributeType::Data, Some(""))
            .unwrap();
        assert!(
            matches!(v[0].value, Value::Ok(Stream::Compressed(_))),
            "{name}: {:?}",
            v[0].value
        );
        // Compressible data takes less room than its size.
        let st = fs.stat(node).unwrap();
        if name != "grown" {
            assert!(st.allocated < st.size, "{name}: {st:?}");
        }
    }
    // Reads at odd offsets across unit boundaries.
    let node = resolve(&fs, "/comp/mixed").unwrap();
    let whole = std::fs::read(s.mnt.join("comp/mixed")).unwrap();
    for (off, len) in [
        (65_530u64, 20usize),
        (131_071, 3),
        (999_990, 100),
        (1, 70_000),
    ] {
        let mut buf = vec![0u8; len];
        let n = fs.read(node, off, &mut buf).unwrap();
        let end = (off as usize + len).min(whole.len());
        assert_eq!(&buf[..n], &whole[off as usize..end], "at {off}");
    }
    s.unmount();
}

/// Lexically resolves `.` and `..` in an absolute path.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

#[test]
fn reparse_links_match_ntfs3g() {
    use super::reparse::{buffer, TAG_MOUNT_POINT, TAG_SYMLINK};
    if !have_tools() {
        return;
    }
    let hex = |b: Vec<u8>| {
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("0x{h}")
    };
    let sym = |t: &str, rel: bool| hex(buffer(TAG_SYMLINK, Some(rel as u32), t, t));
    // (path, is a directory, reparse buffer)
    let links: Vec<(&str, bool, String)> = vec![
        ("d1/sub/rel", false, sym("..\\..\\dir1\\target.txt", true)),
        ("x/relup", false, sym("..\\DIR1\\Target.TXT", true)),
        ("x/dangling", false, sym("..\\gone\\file.txt", true)),
        ("x/dangling_dir", true, sym("..\\gone", true)),
        (
            "d1/sub/abs",
            false,
            sym("\\??\\C:\\dir1\\target.txt", false),
        ),
        ("absroot", false, sym("\\??\\C:\\DIR1\\TARGET.TXT", false)),
        ("x/ddrive", false, sym("\\??\\D:\\dir1\\target.txt", false)),
        (
            "x/ejunc",
            true,
            hex(buffer(TAG_MOUNT_POINT, None, "\\??\\E:\\dir1", "E:\\dir1")),
        ),
        (
            "junc",
            true,
            hex(buffer(TAG_MOUNT_POINT, None, "\\??\\C:\\dir1", "C:\\dir1")),
        ),
        (
            "d1/sub/junc2",
            true,
            hex(buffer(
                TAG_MOUNT_POINT,
                None,
                "\\??\\C:\\dir1\\",
                "C:\\dir1\\",
            )),
        ),
        ("other", false, "0x130000800400000061626364".into()),
    ];
    let mut populate = String::from("mkdir -p dir1 d1/sub x\necho t > dir1/target.txt\n");
    for (path, dir, value) in &links {
        populate += &format!(
            "{} {path}\nsetfattr -n system.ntfs_reparse_data -v {value} {path}\n",
            if *dir { "mkdir" } else { "touch" }
        );
    }
    let s = Scratch::new("reparse");
    make_image(&s, &populate, "");
    let fs = open(Arc::new(FileSource::open(&s.image()).unwrap()) as Source).unwrap();
    let mnt = s.mnt.to_string_lossy().into_owned();
    for (path, _, _) in &links[..links.len() - 1] {
        let node = resolve(&fs, path).unwrap();
        let st = fs.stat(node).unwrap();
        assert_eq!(
            (st.kind, st.mode, st.nlink),
            (FileType::Symlink, 0o777, 1),
            "{path}"
        );
        let ours = fs.read_link(node).unwrap().into_string().unwrap();
        assert_eq!(st.size, ours.len() as u64, "{path}");
        // Other drive letters are other volumes: ntfs-3g takes them for
        // its own, we leave them dangling, naming the drive.
        match *path {
            "x/ddrive" => {
                assert_eq!(ours, "/D:/dir1/target.txt");
                continue;
            }
            "x/ejunc" => {
                assert_eq!(ours, "/E:/dir1");
                continue;
            }
            // ntfs-3g cannot place a relative link whose target is
            // missing: it shows the text "unsupported reparse tag ...".
            "x/dangling" | "x/dangling_dir" => {
                let theirs = std::fs::read_link(s.mnt.join(path)).unwrap();
                assert!(
                    theirs
                        .to_string_lossy()
                        .starts_with("unsupported reparse tag"),
                    "{theirs:?}"
                );
                let want = if *path == "x/dangling" {
                    "../gone/file.txt"
                } else {
                    "../gone"
                };
                assert_eq!(ours, want);
                continue;
            }
            _ => {}
        }
        let theirs = std::fs::read_link(s.mnt.join(path)).unwrap();
        let theirs = theirs.to_str().unwrap();
        match theirs.strip_prefix(&mnt) {
            // Absolute targets: ntfs-3g puts its mount point before them,
            // ours climb to the root; both must name the same file.
            Some(inside) => {
                let parent = Path::new(path).parent().unwrap().to_str().unwrap();
                let ours_abs = normalize(&format!("/{parent}/{ours}"));
                assert_eq!(ours_abs, normalize(inside), "{path}: {ours} vs {theirs}");
                assert!(!ours.starts_with('/'), "{path}: {ours}");
            }
            None => assert_eq!(ours, theirs, "{path}"),
        }
    }
    // Tags we do not know are files that refuse to be read (ntfs-3g shows a
    // dangling symlink there).
    let other = resolve(&fs, "/other").unwrap();
    assert_eq!(fs.stat(other).unwrap().kind, FileType::File);
    let err = fs.read(other, 0, &mut [0u8; 16]).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("0x80000013"), "{err}");
    s.unmount();
}

/// Detaches a loop device, even if a test fails (with a mount still on it
/// the kernel frees it at unmount).
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

/// A disk formatted by Windows 10 with volume compression on: every name,
/// size, time and link count as ntfs-3g shows them, and every file's bytes,
/// the ones Windows compressed included.
#[test]
fn windows_image_matches_ntfs3g() {
    use crate::readat::Window;
    let Some(gz) = real("ntfs-ramslack.raw.gz") else {
        return;
    };
    if !have_tools() {
        return;
    }
    let s = Scratch::new("win");
    let raw = s.dir.join("disk.raw");
    sh(&format!(
        "gzip -dc '{}' > '{}'",
        gz.display(),
        raw.display()
    ));
    // The NTFS partition starts at LBA 128.
    let start = 128 * 512;
    let disk: Source = Arc::new(FileSource::open(&raw).unwrap());
    let len = disk.size() - start;
    let fs = open(Arc::new(Window::new(disk, start, len)) as Source).unwrap();

    // Its $LogFile is a restart page Windows wrote, clean (unmounted
    // cleanly); with the restart area's clean flag and client list
    // cleared, it reads as unclean.
    let mut head = vec![0u8; 8192];
    let n = fs.read(super::LOGFILE_RECORD, 0, &mut head).unwrap();
    assert_eq!(&head[..4], b"RSTR");
    assert_eq!(shutdown::log_state(&head[..n]), shutdown::LogState::Clean);
    assert!(fs.info().warnings.is_empty(), "{:?}", fs.info().warnings);
    for page in [0usize, 4096] {
        let area = page + usize::from(u16::from_le_bytes([head[page + 0x18], head[page + 0x19]]));
        head[area + 0x0C..area + 0x10].copy_from_slice(&[0; 4]);
    }
    assert_eq!(shutdown::log_state(&head[..n]), shutdown::LogState::Unclean);

    // Some files are compressed (the volume has compression on).
    let mut compressed = Vec::new();
    let mut todo = vec![(fs.root(), String::new())];
    let mut cur = fs.cursor();
    while let Some((dir, path)) = todo.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let p = format!("{path}/{}", e.name.to_string_lossy());
            match e.kind {
                FileType::Dir => todo.push((e.node, p)),
                FileType::File => {
                    let file = fs.file(&mut cur, e.node).unwrap();
                    let v = fs
                        .values(&mut cur, &file, NtfsAttributeType::Data, Some(""))
                        .unwrap();
                    if matches!(
                        v.first().map(|v| &v.value),
                        Some(Value::Ok(Stream::Compressed(_)))
                    ) {
                        compressed.push(p);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(compressed.contains(&"/1.txt".to_string()), "{compressed:?}");

    let out = Command::new("losetup")
        .args(["-f", "--show", "-r", "-o", &start.to_string()])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    sh(&format!(
        "ntfs-3g -o {REFERENCE_OPTS} {} '{}'",
        dev.0,
        s.mnt.display()
    ));
    let none = |_: &str| false;
    let reference = walk_mount(&s.mnt, &none);
    let ours = walk_ours(&fs, &none);
    assert!(ours.len() >= 7, "{:?}", ours.keys());
    compare(&ours, &reference);
    s.unmount();
}

/// Checks total and free bytes against the mount's statfs.
fn assert_space(fs: &NtfsFs, mnt: &Path) {
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %f %S"])
        .arg(mnt)
        .output()
        .unwrap();
    let v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let info = fs.info();
    assert_eq!(u64::from(info.block_size), v[2]);
    assert_eq!(info.total_bytes / v[2], v[0], "total clusters");
    assert_eq!(info.free_bytes, v[1] * v[2], "free bytes");
}

/// The third-party image, node by node, against ntfs-3g.
#[test]
fn testfs1_matches_ntfs3g() {
    let Some(p) = real("testfs1") else {
        return;
    };
    if !have_tools() {
        return;
    }
    let s = Scratch::new("testfs1");
    std::fs::copy(&p, s.image()).unwrap();
    sh(&format!(
        "ntfs-3g -o {REFERENCE_OPTS} '{}' '{}'",
        s.image().display(),
        s.mnt.display()
    ));
    let fs = open(Arc::new(FileSource::open(&s.image()).unwrap()) as Source).unwrap();
    let none = |_: &str| false;
    compare(&walk_ours(&fs, &none), &walk_mount(&s.mnt, &none));
    assert_space(&fs, &s.mnt);
    s.unmount();
}

/// Bytes between the valid data length and the data size read as zeros,
/// whatever the clusters hold: testfs1's 1000-byte file with its
/// initialized size lowered to 500 in the image.
#[test]
fn past_initialized_size_reads_zeros() {
    let Some(p) = real("testfs1") else {
        return;
    };
    let mut image = std::fs::read(p).unwrap();
    let field = {
        let fs = open(Arc::new(MemSource(image.clone())) as Source).unwrap();
        let node = resolve(&fs, "/1000-bytes-file").unwrap();
        let mut cur = fs.cursor();
        let file = fs.file(&mut cur, node).unwrap();
        let data = file
            .attributes_raw()
            .map(|a| a.unwrap())
            .find(|a| a.ty().ok() == Some(NtfsAttributeType::Data))
            .unwrap();
        assert!(!data.is_resident());
        data.position().value().unwrap().get() as usize + 0x38
    };
    // The field must not hold a sector's update-sequence bytes.
    assert!(field % 512 <= 510 - 8);
    assert_eq!(image[field..field + 8], 1000u64.to_le_bytes());
    image[field..field + 8].copy_from_slice(&500u64.to_le_bytes());
    let fs = open(Arc::new(MemSource(image)) as Source).unwrap();
    let node = resolve(&fs, "/1000-bytes-file").unwrap();
    assert_eq!(fs.stat(node).unwrap().size, 1000);
    let data = read_all(&fs, node).unwrap();
    assert_eq!(data.len(), 1000);
    assert_eq!(data[..500], b"12345".repeat(100)[..]);
    assert!(data[500..].iter().all(|&b| b == 0));
    // A read that starts past the valid length too.
    let mut buf = [0xffu8; 10];
    assert_eq!(fs.read(node, 995, &mut buf).unwrap(), 5);
    assert_eq!(buf[..5], [0; 5]);
}

/// `file:stream` in the tree: streams are found by name (case aside),
/// and a real name holding ':' wins.
#[test]
fn tree_resolves_streams() {
    use crate::tree::RestoreTree;
    if !have_tools() {
        return;
    }
    let s = Scratch::new("streams");
    let populate = r#"
echo data > f
setfattr -n user.Zone.Identifier -v '[ZoneTransfer]' f
echo colon > 'a:b'
echo a > a
setfattr -n user.b -v stream a
"#;
    make_image(&s, populate, "");
    let tree = RestoreTree::open(&s.image()).unwrap();
    let node = tree.resolve("/f").unwrap();
    let (n, stream) = tree.resolve_stream("/f:zone.identifier").unwrap();
    assert_eq!(n, node);
    let stream = stream.unwrap();
    let len = tree.data_len(n, Some(&stream)).unwrap();
    let mut buf = vec![0u8; 64];
    let got = tree.read_data(n, Some(&stream), 0, &mut buf).unwrap();
    assert_eq!((len, &buf[..got]), (14, &b"[ZoneTransfer]"[..]));
    assert!(tree.resolve_stream("/f:nope").is_err());
    assert!(tree.resolve_stream("/f:").is_err());
    // The name "a:b" exists: it wins over stream "b" of "a".
    let (n, stream) = tree.resolve_stream("/a:b").unwrap();
    assert_eq!((n, stream), (tree.resolve("/a:b").unwrap(), None));
    // Without a real name, the stream.
    let (n, stream) = tree.resolve_stream("/a:b:$DATA").unwrap();
    assert_eq!(
        (n, stream.as_deref()),
        (tree.resolve("/a").unwrap(), Some(OsStr::new("b")))
    );
    s.unmount();
}

fn hex(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("0x{h}")
}

/// A WOF reparse buffer: file provider, `algorithm`.
fn wof_reparse(algorithm: u32) -> Vec<u8> {
    let mut b = wof::TAG_WOF.to_le_bytes().to_vec();
    b.extend(16u16.to_le_bytes());
    b.extend(0u16.to_le_bytes());
    for v in [1u32, 2, 1, algorithm] {
        b.extend(v.to_le_bytes());
    }
    b
}

/// WOF files made the way Windows lays them out (a sparse unnamed value of
/// the real size, the `WofCompressedData` stream, the reparse point), with
/// ntfs-3g writing the pieces; an EFS-encrypted file made by setting the
/// flag in the image; dedup and cloud placeholders.
#[test]
fn wof_efs_and_placeholders() {
    if !have_tools() {
        return;
    }
    let packed = include_bytes!("testdata/am_delta.xhuff").to_vec();
    let plain = include_bytes!("testdata/am_delta.expected").to_vec();
    // XPRESS8K: a stored chunk, then Windows' chunk.
    let stored: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let xp = wof::tests::stream(&[stored.clone(), packed]);
    let mut xp_plain = stored;
    xp_plain.extend(&plain);
    let mut files: Vec<(&str, u64, Vec<u8>, Vec<u8>)> =
        vec![("xpress8k", xp_plain.len() as u64, xp, wof_reparse(2))];
    let mut populate = String::new();
    for (name, size, stream, rp) in &files {
        populate += &format!(
            "touch {name}\ntruncate -s {size} {name}\n\
             setfattr -n user.WofCompressedData -v {} {name}\n\
             setfattr -n system.ntfs_reparse_data -v {} {name}\n",
            hex(stream),
            hex(rp)
        );
    }
    let dedup = hex(&[0x13, 0, 0, 0x80, 4, 0, 0, 0, 1, 2, 3, 4]);
    let cloud = hex(&[0x1a, 0x10, 0, 0x90, 4, 0, 0, 0, 1, 2, 3, 4]);
    let wim = hex(&{
        let mut b = wof_reparse(0);
        b[12] = 1;
        b
    });
    populate += &format!(
        "echo d > dedup\nsetfattr -n system.ntfs_reparse_data -v {dedup} dedup\n\
         echo c > cloud\nsetfattr -n system.ntfs_reparse_data -v {cloud} cloud\n\
         echo w > wimboot\nsetfattr -n system.ntfs_reparse_data -v {wim} wimboot\n\
         head -c 5000 /dev/urandom > secret\n"
    );
    let s = Scratch::new("wof");
    make_image(&s, &populate, "");
    s.unmount();
    // EFS: set the encrypted flag on secret's $DATA in the image.
    let mut image = std::fs::read(s.image()).unwrap();
    let field = {
        let fs = open(Arc::new(MemSource(image.clone())) as Source).unwrap();
        let node = resolve(&fs, "/secret").unwrap();
        let mut cur = fs.cursor();
        let file = fs.file(&mut cur, node).unwrap();
        let data = file
            .attributes_raw()
            .map(|a| a.unwrap())
            .find(|a| a.ty().ok() == Some(NtfsAttributeType::Data))
            .unwrap();
        data.position().value().unwrap().get() as usize + 0x0C
    };
    assert!(field % 512 <= 508);
    // 0x4000 in the attribute flags: encrypted.
    image[field + 1] |= 0x40;
    let fs = open(Arc::new(MemSource(image)) as Source).unwrap();

    for (name, size, _, _) in &files {
        let node = resolve(&fs, name).unwrap();
        let st = fs.stat(node).unwrap();
        assert_eq!((st.kind, st.size), (FileType::File, *size), "{name}");
    }
    let node = resolve(&fs, "/xpress8k").unwrap();
    assert_eq!(read_all(&fs, node).unwrap(), xp_plain);
    files.clear();

    // The rest are listed with their sizes and refuse reads, saying why.
    let listed: Vec<String> = fs
        .read_dir(fs.root())
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    for (name, why) in [
        ("dedup", "Deduplication"),
        ("cloud", "cloud files"),
        ("wimboot", "WIM"),
        ("secret", "EFS-encrypted"),
    ] {
        assert!(listed.iter().any(|l| l == name), "{name} not listed");
        let node = resolve(&fs, name).unwrap();
        let st = fs.stat(node).unwrap();
        assert_eq!(st.kind, FileType::File, "{name}");
        let err = fs.read(node, 0, &mut [0u8; 16]).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{name}: {err}");
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
    assert_eq!(
        fs.stat(resolve(&fs, "/secret").unwrap()).unwrap().size,
        5000
    );
}

/// The stored bytes of the blob whose SHA-1 is `sha1` in a WIM file: for
/// a compressed blob, a chunk table and chunks laid out as WOF lays out
/// `WofCompressedData` (wimlib is an encoder independent of ours).
fn wim_blob(wim: &[u8], sha1: [u8; 20]) -> Vec<u8> {
    let u64_at = |o: usize| u64::from_le_bytes(wim[o..o + 8].try_into().unwrap());
    assert_eq!(&wim[..8], b"MSWIM\0\0\0");
    // The blob table's resource header sits at 48: 7 bytes of stored size,
    // 1 of flags, the offset, the original size.
    let (size, off) = (u64_at(48) & ((1 << 56) - 1), u64_at(56));
    let table = &wim[off as usize..(off + size) as usize];
    for e in table.chunks_exact(50) {
        if e[30..50] == sha1 {
            let stored = u64::from_le_bytes(e[..8].try_into().unwrap()) & ((1 << 56) - 1);
            let flags = e[7];
            assert!(flags & 0x04 != 0, "blob stored uncompressed");
            let at = u64::from_le_bytes(e[8..16].try_into().unwrap()) as usize;
            return wim[at..at + stored as usize].to_vec();
        }
    }
    panic!("blob not in the WIM");
}

/// WOF files in every algorithm, their streams made by wimlib (WIM
/// resources share WOF's chunk layout), read through the image: text,
/// x86 code (the LZX call translation), random data (stored chunks) and a
/// short last chunk.
#[test]
fn wof_from_wimlib_streams() {
    if !have_tools() {
        return;
    }
    if Command::new("wimcapture").arg("--help").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "wimcapture missing (CI is set)"
        );
        eprintln!("skipping: wimcapture (wimtools) missing");
        return;
    }
    let s = Scratch::new("wofwim");
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut plain = Vec::new();
    for i in 0..2500 {
        plain.extend(format!("line {i}: some text for the chunks\n").bytes());
    }
    let sh_bin = std::fs::read("/bin/sh").unwrap();
    plain.extend(&sh_bin[..sh_bin.len().min(30_000)]);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    plain.extend((0..20_000).map(|_| rng.next() as u8));
    plain.extend(b"the end".repeat(300));
    std::fs::write(src.join("f"), &plain).unwrap();
    let sha1 = sha1_smol::Sha1::from(&plain).digest().bytes();

    let mut populate = String::new();
    let algorithms = [
        ("lzx", 1u32, "LZX", 32768),
        ("xpress4k", 0, "XPRESS", 4096),
        ("xpress8k", 2, "XPRESS", 8192),
        ("xpress16k", 3, "XPRESS", 16384),
    ];
    for (name, id, method, chunk) in algorithms {
        let wim = s.dir.join(format!("{name}.wim"));
        sh(&format!(
            "wimcapture '{}' '{}' --compress={method} --chunk-size={chunk} >/dev/null",
            src.display(),
            wim.display()
        ));
        let blob = wim_blob(&std::fs::read(&wim).unwrap(), sha1);
        assert!(blob.len() < 64 * 1024, "{name}: {} bytes", blob.len());
        // The stream alone first.
        let alg = wof::parse_reparse(&wof_reparse(id)).unwrap();
        let w = wof::Wof::new(Stream::Resident(blob.clone()), plain.len() as u64, alg);
        let mut out = vec![0u8; plain.len()];
        assert_eq!(
            w.read(&MemSource(Vec::new()), 0, &mut out).unwrap(),
            plain.len()
        );
        assert!(out == plain, "{name}: stream decodes differently");
        let file = s.dir.join(format!("{name}.stream"));
        std::fs::write(&file, &blob).unwrap();
        populate += &format!(
            "touch {name}\ntruncate -s {} {name}\n\
             setfattr -n user.WofCompressedData -v 0x$(od -An -v -tx1 '{}' | tr -d ' \\n') {name}\n\
             setfattr -n system.ntfs_reparse_data -v {} {name}\n",
            plain.len(),
            file.display(),
            hex(&wof_reparse(id))
        );
    }
    make_image(&s, &populate, "");
    s.unmount();
    let fs = open(Arc::new(FileSource::open(&s.image()).unwrap()) as Source).unwrap();
    for (name, ..) in algorithms {
        let node = resolve(&fs, name).unwrap();
        let st = fs.stat(node).unwrap();
        assert_eq!(st.size, plain.len() as u64, "{name}");
        // Space taken is the compressed stream's.
        assert!(st.allocated > 0 && st.allocated < st.size, "{name}: {st:?}");
        assert!(read_all(&fs, node).unwrap() == plain, "{name}: differs");
        // Reads straddling chunk boundaries.
        let mut buf = [0u8; 100];
        assert_eq!(fs.read(node, 32_718, &mut buf).unwrap(), 100);
        assert_eq!(&buf[..], &plain[32_718..32_818], "{name}");
    }
}

/// An $MFT so fragmented that its runs need an attribute list (the disk
/// filled with 4 KiB files, every other one deleted, then thousands of
/// files made), compared with ntfs-3g; the records past the first piece
/// of the $MFT's runs are reached.
#[test]
fn fragmented_mft_with_attribute_list() {
    if !have_tools() {
        return;
    }
    let s = Scratch::new("mftlist");
    let populate = r#"
mkdir fill many
i=0; while head -c 4096 /dev/zero > fill/$i 2>/dev/null; do i=$((i+1)); done
j=0; while [ $j -lt $i ]; do rm -f fill/$j; j=$((j+2)); done
k=0; while [ $k -lt 6000 ] && echo $k > many/f$k 2>/dev/null; do k=$((k+1)); done
rm -rf fill
echo last > many/zz_last
"#;
    make_image_sized(&s, populate, "", 48);
    let fs = open(Arc::new(FileSource::open(&s.image()).unwrap()) as Source).unwrap();
    let mut cur = fs.cursor();
    let mft = fs.file(&mut cur, 0).unwrap();
    assert!(mft
        .attributes_raw()
        .any(|a| matches!(a.unwrap().ty(), Ok(NtfsAttributeType::AttributeList))));
    let none = |_: &str| false;
    let ours = walk_ours(&fs, &none);
    assert!(ours.len() > 4000, "{}", ours.len());
    compare(&ours, &walk_mount(&s.mnt, &none));
    let last = resolve(&fs, "/many/zz_last").unwrap();
    assert_eq!(read_all(&fs, last).unwrap(), b"last\n");
    // Its record lies past what record 0's own runs map: found only
    // through the whole $MFT.
    assert!(fs.split.is_virtual());
    let data = mft
        .attributes_raw()
        .map(|a| a.unwrap())
        .find(|a| a.ty().ok() == Some(NtfsAttributeType::Data))
        .unwrap();
    let raw = record::RawRecord::read(&mut cur, &mft, fs.ntfs.file_record_size()).unwrap();
    let mapped =
        (raw.header(&data).unwrap().highest_vcn().unwrap() + 1) * u64::from(fs.ntfs.cluster_size());
    assert!(
        last * u64::from(fs.ntfs.file_record_size()) >= mapped,
        "record {last} within the first {mapped} bytes"
    );
    s.unmount();
}

/// Damaged compressed data (LZNT1 units, WOF chunk tables and chunks) in
/// an image: reads fail or return bytes, never panic or hang.
#[test]
fn damaged_compressed_data_never_panics() {
    if !have_tools() {
        return;
    }
    let packed = include_bytes!("testdata/am_delta.xhuff").to_vec();
    let stored: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let xp = wof::tests::stream(&[stored, packed]);
    let populate = format!(
        "mkdir comp\nsetfattr -h -v 0x00000800 -n system.ntfs_attrib_be comp\n\
         yes restorefs | head -c 300000 > comp/text\n\
         {{ seq 1 20000; head -c 70000 /dev/urandom; seq 5 30000; }} > comp/mixed\n\
         touch wof\ntruncate -s {} wof\n\
         setfattr -n user.WofCompressedData -v {} wof\n\
         setfattr -n system.ntfs_reparse_data -v {} wof\n",
        8192 + 6948,
        hex(&xp),
        hex(&wof_reparse(2))
    );
    let s = Scratch::new("damage");
    make_image(&s, &populate, "");
    s.unmount();
    let image = std::fs::read(s.image()).unwrap();
    let extents: Vec<(u64, u64)> = {
        let fs = open(Arc::new(MemSource(image.clone())) as Source).unwrap();
        let mut cur = fs.cursor();
        let mut all = Vec::new();
        for (path, stream) in [
            ("/comp/text", ""),
            ("/comp/mixed", ""),
            ("/wof", wof::STREAM),
        ] {
            let node = resolve(&fs, path).unwrap();
            let file = fs.file(&mut cur, node).unwrap();
            let v = fs
                .values(&mut cur, &file, NtfsAttributeType::Data, Some(stream))
                .unwrap();
            let Value::Ok(st) = &v[0].value else {
                panic!("{path}: refused");
            };
            all.extend(st.extents());
        }
        all
    };
    assert!(!extents.is_empty());
    let mut rng = Rng(0xC0FF_EE12_3456_789B);
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..150 {
        let mut img = image.clone();
        for _ in 0..1 + rng.below(20) {
            let (pos, len) = extents[rng.below(extents.len() as u64) as usize];
            let at = (pos + rng.below(len)) as usize;
            if let Some(b) = img.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        let fs = open(Arc::new(MemSource(img)) as Source).unwrap();
        for path in ["/comp/text", "/comp/mixed", "/wof"] {
            let node = resolve(&fs, path).unwrap();
            let size = fs.stat(node).unwrap().size;
            let mut off = 0u64;
            while off < size {
                match fs.read(node, off, &mut buf) {
                    Ok(0) => panic!("{path}: read 0 at {off} of {size}"),
                    Ok(n) => off += n as u64,
                    // Skip the damaged unit or chunk and go on.
                    Err(_) => off += 4096,
                }
            }
        }
    }
    assert!(start.elapsed().as_secs() < 300);
}

/// Sets VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION, found from the
/// boot sector (record 3 lies in the $MFT's first run on a fresh volume),
/// in the $MFT and in its mirror $MFTMirr (records 0-3), which must agree.
fn set_dirty_flag(img: &Path) {
    sh(&format!(
        r#"python3 - '{}' <<'EOF'
import struct, sys
f = open(sys.argv[1], "r+b")
boot = f.read(512)
bps, spc = struct.unpack_from("<HB", boot, 0x0B)
cluster = bps * spc
cpr = struct.unpack_from("<b", boot, 0x40)[0]
rec = 1 << -cpr if cpr < 0 else cpr * cluster
for at in (0x30, 0x38):
    pos = struct.unpack_from("<Q", boot, at)[0] * cluster + 3 * rec
    f.seek(pos)
    r = bytearray(f.read(rec))
    off = struct.unpack_from("<H", r, 0x14)[0]
    while True:
        ty, ln = struct.unpack_from("<II", r, off)
        assert ty != 0xFFFFFFFF, "no $VOLUME_INFORMATION"
        if ty == 0x70:
            val = off + struct.unpack_from("<H", r, off + 0x14)[0]
            flags = struct.unpack_from("<H", r, val + 10)[0]
            struct.pack_into("<H", r, val + 10, flags | 1)
            break
        off += ln
    f.seek(pos)
    f.write(r)
EOF"#,
        img.display()
    ));
}

/// Runs ntfs-3g with `args`, again while it cannot open the image because
/// the ntfs-3g of a mount just unmounted has not exited yet.
fn ntfs3g(args: &[&std::ffi::OsStr]) -> std::process::Output {
    for _ in 0..100 {
        let out = Command::new("ntfs-3g").args(args).output().unwrap();
        if !String::from_utf8_lossy(&out.stderr).contains("Failed to open") {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("ntfs-3g {args:?}: image still busy");
}

/// A volume Windows did not shut down cleanly, or left hibernated, reads
/// as it is on disk with a warning saying the newest changes may be
/// missing; the references: `ntfsinfo -m` for the dirty flag, ntfs-3g's
/// refusal to mount a hibernated Windows. (A $LogFile as Windows writes
/// it is checked in `windows_image_matches_ntfs3g`.)
#[test]
fn unclean_shutdown_is_reported() {
    if !have_tools() {
        return;
    }
    let s = Scratch::new("shutdown");
    make_image(
        &s,
        "echo data > file.txt\nhead -c 8192 /dev/zero > hiberfil.sys\n",
        "",
    );
    s.unmount();
    let img = s.image();
    let warnings = || {
        let fs = open(Arc::new(FileSource::open(&img).unwrap()) as Source).unwrap();
        fs.info().warnings
    };
    assert_eq!(warnings(), Vec::<String>::new());

    set_dirty_flag(&img);
    // ntfsinfo refuses a dirty volume ("scheduled for check") unless
    // forced, then shows the flag.
    let out = Command::new("ntfsinfo")
        .args(["-f", "-m"])
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Volume Flags: 0x0001"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = warnings();
    assert!(w.len() == 1 && w[0].contains("marked dirty"), "{w:?}");

    // Hibernated: hiberfil.sys starting with "hibr" (written through
    // ntfs-3g, which then refuses to mount it read-write).
    let (i, m) = (img.as_os_str(), s.mnt.as_os_str());
    let rw = ntfs3g(&[OsStr::new("-o"), OsStr::new("force"), i, m]);
    assert!(
        rw.status.success(),
        "{}",
        String::from_utf8_lossy(&rw.stderr)
    );
    sh(&format!(
        "printf hibr | dd of='{}/hiberfil.sys' conv=notrunc status=none",
        s.mnt.display()
    ));
    s.unmount();
    // (ntfs-3g refuses it read-write, and falls back to read-only.)
    let again = ntfs3g(&[OsStr::new("-o"), OsStr::new("force"), i, m]);
    s.unmount();
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("Windows is hibernated"), "{why}");
    let w = warnings();
    assert!(w.iter().any(|w| w.contains("hibernated")), "{w:?}");
}
