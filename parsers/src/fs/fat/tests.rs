//! FAT12/16/32 images made here with mkfs.fat and populated with mtools;
//! mtools (`mcopy -m` back out, `mdir`) is the reference, `fsck.fat -n`
//! must call each image clean first. Plus a mutation test.
//!
//! The helpers are shared with the exFAT tests.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::FatFs;
use crate::fs::{FileSystem, FileType, NodeId};
use crate::readat::{FileSource, ReadAt};
pub(crate) use crate::testutil::{have, TempDir, XorShift};
use crate::Source;

/// Runs `cmd` with mtools' settings (UTF-8 names, UTC times, no geometry
/// check); panics on failure.
pub(crate) fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The test tree: nested dirs, long and Unicode names, 8.3 names in each
/// case style, sizes around sector and cluster edges, a big file and a
/// directory of `many` entries.
pub(crate) fn populate(dir: &Path, cluster: usize, big: usize, many: usize) {
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    let w = |p: &str, data: &[u8]| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("Nested/deeper/deepest/file.txt", b"deep\n");
    w("Nested/sibling.dat", &rng.bytes(700));
    w("Ünïcödé ñame – long.txt", b"unicode\n");
    w("日本語のファイル名.bin", &rng.bytes(3000));
    w("emoji 😀 surrogate.txt", b"astral\n");
    w("MixedCase.Txt", b"mixed\n");
    w("lower.txt", b"lower\n");
    w("lowbase.TXT", b"lowbase\n");
    w("UPBASE.txt", b"upext\n");
    w("UPPER.TXT", b"upper\n");
    w(
        "a very long file name that needs several entries.text",
        b"long\n",
    );
    w("empty", b"");
    for n in [1, 511, 512, 513, cluster - 1, cluster, cluster + 1] {
        w(&format!("sizes/s{n}"), &rng.bytes(n));
    }
    w("big.bin", &rng.bytes(big));
    std::fs::create_dir_all(dir.join("emptydir")).unwrap();
    for i in 0..many {
        let data = if i % 100 == 0 {
            vec![b'x'; i / 100 + 1]
        } else {
            Vec::new()
        };
        w(&format!("many/entry number {i:04}.txt"), &data);
    }
}

/// What a walk sees at one path.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Seen {
    pub kind: FileType,
    pub size: u64,
    pub sha1: String,
    pub mtime: i64,
}

pub(crate) fn read_all(fs: &dyn FileSystem, node: NodeId) -> Vec<u8> {
    let size = fs.stat(node).unwrap().size;
    let mut v = vec![0u8; size as usize];
    let mut done = 0;
    while done < v.len() {
        // Odd chunk sizes start and end reads inside clusters.
        let end = (done + 70_001).min(v.len());
        let n = fs.read(node, done as u64, &mut v[done..end]).unwrap();
        assert!(n > 0);
        done += n;
    }
    assert_eq!(fs.read(node, size, &mut [0u8; 16]).unwrap(), 0);
    v
}

/// Every path under the root with what we see there.
pub(crate) fn walk_ours(fs: &dyn FileSystem) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let name = e.name.to_str().unwrap().to_string();
            assert!(name != "." && name != ".." && !name.is_empty());
            let p = format!("{path}/{name}");
            assert_eq!(fs.lookup(dir, &e.name).unwrap(), Some(e.node), "{p}");
            let st = fs.stat(e.node).unwrap();
            assert_eq!(st.kind, e.kind, "{p}");
            assert_eq!(st.node, e.node);
            let (size, sha1) = if e.kind == FileType::Dir {
                stack.push((p.clone(), e.node));
                (0, String::new())
            } else {
                let data = read_all(fs, e.node);
                (st.size, sha1_smol::Sha1::from(&data).digest().to_string())
            };
            let prev = out.insert(
                p.clone(),
                Seen {
                    kind: e.kind,
                    size,
                    sha1,
                    mtime: st.mtime.secs,
                },
            );
            assert!(prev.is_none(), "{p} listed twice");
        }
    }
    out
}

/// The same walk over a directory on the host (the reference copy).
pub(crate) fn walk_host(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((path, dir)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_str().unwrap().to_string();
            let p = format!("{path}/{name}");
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let seen = if md.is_dir() {
                stack.push((p.clone(), e.path()));
                Seen {
                    kind: FileType::Dir,
                    size: 0,
                    sha1: String::new(),
                    mtime: md.mtime(),
                }
            } else {
                let data = std::fs::read(e.path()).unwrap();
                Seen {
                    kind: FileType::File,
                    size: md.len(),
                    sha1: sha1_smol::Sha1::from(&data).digest().to_string(),
                    mtime: md.mtime(),
                }
            };
            out.insert(p, seen);
        }
    }
    out
}

/// Compares two walks; `mtime` also compares times.
pub(crate) fn compare(ours: &BTreeMap<String, Seen>, want: &BTreeMap<String, Seen>, mtime: bool) {
    let a: Vec<_> = ours.keys().collect();
    let b: Vec<_> = want.keys().collect();
    assert_eq!(a, b, "path sets differ");
    for (p, w) in want {
        let o = &ours[p];
        assert_eq!((o.kind, o.size, &o.sha1), (w.kind, w.size, &w.sha1), "{p}");
        if mtime {
            assert_eq!(o.mtime, w.mtime, "{p} mtime");
        }
    }
}

pub(crate) fn resolve(fs: &dyn FileSystem, path: &str) -> Option<NodeId> {
    let mut node = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        node = fs.lookup(node, OsStr::new(c)).unwrap()?;
    }
    Some(node)
}

/// Source entries of `dir` as arguments (mcopy takes no glob here).
fn children(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

const FRAG_SMALL: usize = 24;
const FRAG_BIG_CLUSTERS: usize = 20;

/// Makes a FAT image of `mib` MiB with `bits`-bit FAT and `spc` sectors
/// per cluster, populated; also makes `frag/big.bin` fragmented by
/// copying small files, deleting every other one, then copying it.
fn make_fat(tmp: &TempDir, bits: u32, mib: u64, spc: u32, big: usize, many: usize) -> PathBuf {
    let img = tmp.0.join(format!("fat{bits}.img"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.fat")
        .args(["-F", &bits.to_string(), "-s", &spc.to_string()])
        .args(["-n", "TESTVOL", "-i", "5EED1234"])
        .arg(&img));
    let cluster = spc as usize * 512;
    let src = tmp.0.join("src");
    populate(&src, cluster, big, many);
    let i = img.to_str().unwrap();
    run(Command::new("mcopy")
        .args(["-s", "-m", "-i", i])
        .args(children(&src))
        .arg("::"));
    // Fragmentation: holes of one cluster each, then a file across them.
    let frag = tmp.0.join("frag");
    std::fs::create_dir_all(&frag).unwrap();
    run(Command::new("mmd").args(["-i", i, "::/frag"]));
    let mut rng = XorShift(77);
    for n in 0..FRAG_SMALL {
        let p = frag.join(format!("small{n:02}"));
        std::fs::write(&p, rng.bytes(cluster)).unwrap();
        run(Command::new("mcopy")
            .args(["-m", "-i", i])
            .arg(&p)
            .arg("::/frag/"));
    }
    for n in (0..FRAG_SMALL).step_by(2) {
        run(Command::new("mdel").args(["-i", i, &format!("::/frag/small{n:02}")]));
    }
    if bits == 32 {
        // mtools allocates from the FSInfo next-free hint, past the holes;
        // "unknown" (all ones) makes it search from the start.
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(512 + 492)).unwrap();
        f.write_all(&[0xFF; 4]).unwrap();
    }
    let p = frag.join("big.bin");
    std::fs::write(&p, rng.bytes(cluster * FRAG_BIG_CLUSTERS + 100)).unwrap();
    run(Command::new("mcopy")
        .args(["-m", "-i", i])
        .arg(&p)
        .arg("::/frag/"));
    run(Command::new("mattrib").args(["-i", i, "+r", "::/lower.txt"]));
    let fsck = run(Command::new("fsck.fat").arg("-n").arg(&img));
    let text = String::from_utf8_lossy(&fsck);
    assert!(
        !text.contains("differences") && !text.contains("Free cluster summary wrong"),
        "fsck.fat: {text}"
    );
    img
}

fn open(img: &Path) -> FatFs {
    let src: Source = Arc::new(FileSource::open(img).unwrap());
    FatFs::open(src).unwrap()
}

fn check_image(tmp: &TempDir, img: &Path, bits: u32, cluster: u32) {
    let fs = open(img);
    assert_eq!(fs.fat_type_name(), format!("FAT{bits}"));
    let info = fs.info();
    assert_eq!(info.kind, "vfat");
    assert_eq!(info.label.as_deref(), Some("TESTVOL"));
    assert_eq!(info.uuid.as_deref(), Some("5EED-1234"));
    assert_eq!(info.block_size, cluster);
    // mdir's closing line: "  4 155 392 bytes free".
    let i = img.to_str().unwrap();
    let mdir =
        String::from_utf8(run(Command::new("mdir").args(["-/", "-a", "-i", i, "::"]))).unwrap();
    let free_line = mdir.lines().find(|l| l.contains("bytes free")).unwrap();
    let free: u64 = free_line
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    assert_eq!(info.free_bytes, free, "free bytes");
    // mdir shows every long name.
    for name in [
        "Ünïcödé ñame – long.txt",
        "日本語のファイル名.bin",
        "MixedCase.Txt",
    ] {
        assert!(mdir.contains(name), "mdir lacks {name}");
    }

    let out = tmp.0.join(format!("out{bits}"));
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new("mcopy")
        .args(["-s", "-m", "-n", "-i", i, "::/"])
        .arg(&out));
    let ours = walk_ours(&fs);
    let want = walk_host(&out);
    compare(&ours, &want, true);
    assert!(ours.len() > 40);

    // Names as mtools showed them, and case-insensitive lookup.
    for (p, alias) in [
        ("/lower.txt", "/LOWER.TXT"),
        ("/lowbase.TXT", "/LowBase.txt"),
        ("/UPBASE.txt", "/upbase.TXT"),
        ("/MixedCase.Txt", "/MIXEDC~1.TXT"),
        ("/Ünïcödé ñame – long.txt", "/üNÏCÖDÉ ÑAME – LONG.TXT"),
        (
            "/Nested/deeper/deepest/file.txt",
            "/nested/DEEPER/Deepest/FILE.TXT",
        ),
    ] {
        assert!(ours.contains_key(p), "{p} missing");
        assert_eq!(resolve(&fs, p), resolve(&fs, alias), "{alias}");
        assert!(resolve(&fs, alias).is_some(), "{alias}");
    }
    assert_eq!(resolve(&fs, "/nope"), None);
    assert_eq!(resolve(&fs, "/.."), None);

    // Mode, times and the read-only attribute.
    let ro = fs.stat(resolve(&fs, "/lower.txt").unwrap()).unwrap();
    assert_eq!((ro.mode, ro.nlink, ro.uid), (0o444, 1, 0));
    let rw = fs.stat(resolve(&fs, "/UPPER.TXT").unwrap()).unwrap();
    assert_eq!(rw.mode, 0o644);
    assert_eq!(rw.mtime.secs % 2, 0);
    let crt = rw.crtime.unwrap();
    assert!(
        (crt.secs - rw.mtime.secs).abs() < 3600,
        "{crt:?} vs {:?}",
        rw.mtime
    );
    let root = fs.stat(fs.root()).unwrap();
    assert_eq!((root.kind, root.mode), (FileType::Dir, 0o755));
    assert!(fs.read(fs.root(), 0, &mut [0u8; 4]).is_err());

    // The fragmented file really is in pieces.
    let big = resolve(&fs, "/frag/big.bin").unwrap();
    let e = fs.entry(big).unwrap();
    let chain = fs
        .chain(
            e.first_cluster,
            u64::from(e.size).div_ceil(u64::from(cluster)),
        )
        .unwrap();
    assert!(chain.runs.len() > 3, "not fragmented: {:?}", chain.runs);
    assert_eq!(
        fs.read_dir(resolve(&fs, "/many").unwrap()).unwrap().len(),
        many_for(bits)
    );
}

fn many_for(bits: u32) -> usize {
    if bits == 12 {
        300
    } else {
        1000
    }
}

fn tools() -> bool {
    [
        "mkfs.fat", "fsck.fat", "mcopy", "mdir", "mmd", "mdel", "mattrib",
    ]
    .iter()
    .all(|t| have(t))
}

#[test]
fn fat12_matches_mtools() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fat12");
    let img = make_fat(&tmp, 12, 4, 4, 600 << 10, many_for(12));
    check_image(&tmp, &img, 12, 2048);
}

#[test]
fn fat16_matches_mtools() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fat16");
    let img = make_fat(&tmp, 16, 64, 4, 5 << 20, many_for(16));
    check_image(&tmp, &img, 16, 2048);
}

#[test]
fn fat32_matches_mtools() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fat32");
    let img = make_fat(&tmp, 32, 300, 8, 5 << 20, many_for(32));
    check_image(&tmp, &img, 32, 4096);
}

/// A chain cut short (end marker early): reads inside the kept clusters
/// work, reads past them fail; never garbage.
#[test]
fn short_chain_is_an_error() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fatshort");
    let img = make_fat(&tmp, 12, 4, 4, 64 << 10, 10);
    let fs = open(&img);
    let node = resolve(&fs, "/big.bin").unwrap();
    let e = fs.entry(node).unwrap();
    let whole = read_all(&fs, node);
    drop(fs);
    // End the chain after its first cluster (FAT12: 0xFFF).
    let mut bytes = std::fs::read(&img).unwrap();
    let bpb = super::bpb::Bpb::parse(&bytes).unwrap();
    let c = u64::from(e.first_cluster);
    let pos = (bpb.fat_offset + c + c / 2) as usize;
    if c & 1 == 1 {
        bytes[pos] |= 0xF0;
        bytes[pos + 1] = 0xFF;
    } else {
        bytes[pos] = 0xFF;
        bytes[pos + 1] |= 0x0F;
    }
    let fs = FatFs::open(Arc::new(crate::readat::MemSource(bytes.clone()))).unwrap();
    let mut buf = vec![0u8; 2048];
    assert_eq!(fs.read(node, 0, &mut buf).unwrap(), 2048);
    assert_eq!(buf, whole[..2048]);
    assert!(fs.read(node, 2048, &mut buf).is_err());
    assert!(fs.read(node, 1000, &mut buf).is_err());

    // A loop: the first cluster links to itself. Reads fail, and end.
    let set12 = |bytes: &mut [u8], c: u64, v: u16| {
        let pos = (bpb.fat_offset + c + c / 2) as usize;
        let old = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let new = if c & 1 == 1 {
            (old & 0x000F) | (v << 4)
        } else {
            (old & 0xF000) | (v & 0x0FFF)
        };
        bytes[pos..pos + 2].copy_from_slice(&new.to_le_bytes());
    };
    set12(&mut bytes, c, c as u16);
    let fs = FatFs::open(Arc::new(crate::readat::MemSource(bytes))).unwrap();
    assert!(fs.read(node, 0, &mut buf).is_err());
    assert!(fs.read(node, 4096, &mut buf).is_err());
}

/// Many threads reading one filesystem at once see what one thread sees.
#[test]
fn concurrent_walks_agree() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fatthreads");
    let img = make_fat(&tmp, 16, 32, 1, 1 << 20, 200);
    let fs = open(&img);
    let want = walk_ours(&fs);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| walk_ours(&fs))).collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

/// The image with a few bytes flipped, without copying it per case.
struct Patched {
    base: Arc<Vec<u8>>,
    patches: Vec<(u64, u8)>,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.base.len());
        let n = buf.len().min(self.base.len() - start);
        buf[..n].copy_from_slice(&self.base[start..start + n]);
        for &(at, x) in &self.patches {
            if at >= offset && at < offset + n as u64 {
                buf[(at - offset) as usize] ^= x;
            }
        }
        Ok(n)
    }
}

/// Walks and reads everything it can, ignoring errors, bounded.
pub(crate) fn walk_tolerant(fs: &dyn FileSystem) {
    let _ = fs.info();
    let mut seen = HashSet::new();
    let mut stack = vec![fs.root()];
    let mut buf = vec![0u8; 65536];
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir) || seen.len() > 50 {
            continue;
        }
        let _ = fs.stat(dir);
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries {
            let _ = fs.lookup(dir, &e.name);
            let _ = fs.stat(e.node);
            let _ = fs.read_link(e.node);
            if e.kind == FileType::Dir {
                stack.push(e.node);
            } else {
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

/// Flips bits in `regions` of `base` `rounds` times and walks the result
/// with `open`; nothing may panic or hang.
pub(crate) fn mutate(
    base: Vec<u8>,
    regions: &[(u64, u64)],
    rounds: usize,
    seed: u64,
    open: impl Fn(Source) -> Option<Arc<dyn FileSystem>>,
) {
    let base = Arc::new(base);
    let mut rng = XorShift(seed);
    for _ in 0..rounds {
        let mut patches = Vec::new();
        for _ in 0..1 + rng.next() % 8 {
            let (start, len) = regions[(rng.next() % regions.len() as u64) as usize];
            patches.push((start + rng.next() % len.max(1), 1u8 << (rng.next() % 8)));
        }
        if let Some(fs) = open(Arc::new(Patched {
            base: base.clone(),
            patches,
        })) {
            walk_tolerant(&*fs);
        }
    }
}

#[test]
fn mutations_do_not_panic() {
    if !tools() {
        return;
    }
    for (bits, mib, spc) in [(12, 4, 4), (16, 16, 1), (32, 40, 1)] {
        let tmp = TempDir::new("fatmut");
        let img = make_fat(&tmp, bits, mib, spc, 40 << 10, 40);
        let bytes = std::fs::read(&img).unwrap();
        let bpb = super::bpb::Bpb::parse(&bytes).unwrap();
        let fs = open(&img);
        let dir_of = |p: &str| {
            let e = fs.entry(resolve(&fs, p).unwrap()).unwrap();
            (
                bpb.cluster_offset(e.first_cluster),
                u64::from(bpb.cluster_size),
            )
        };
        let root = if bits == 32 {
            (
                bpb.cluster_offset(bpb.root_cluster),
                u64::from(bpb.cluster_size),
            )
        } else {
            (bpb.root_offset, 1024)
        };
        let regions = [
            (0, 512),
            (bpb.fat_offset, bpb.fat_bytes.min(4096)),
            root,
            dir_of("/Nested"),
            dir_of("/many"),
        ];
        mutate(
            bytes,
            &regions,
            300,
            0x9E37_79B9_7F4A_7C15 ^ u64::from(bits),
            |src| {
                FatFs::open(src)
                    .ok()
                    .map(|f| Arc::new(f) as Arc<dyn FileSystem>)
            },
        );
    }
}

/// FAT is found by its BPB alone; an NTFS or exFAT signature wins.
#[test]
fn probe_finds_fat_after_ntfs_and_exfat() {
    use crate::fs::{probe, FsKind};
    use crate::readat::MemSource;
    if !have("mkfs.fat") {
        return;
    }
    let tmp = TempDir::new("fatprobe");
    for bits in [12u32, 16, 32] {
        let img = tmp.0.join(format!("p{bits}.img"));
        let f = std::fs::File::create(&img).unwrap();
        let (mib, spc) = match bits {
            12 => (4u64, "4"),
            16 => (8, "1"),
            _ => (40, "1"),
        };
        f.set_len(mib << 20).unwrap();
        drop(f);
        run(Command::new("mkfs.fat")
            .args(["-F", &bits.to_string(), "-s", spc])
            .arg(&img));
        let bytes = std::fs::read(&img).unwrap();
        let head = bytes[..1 << 16].to_vec();
        assert_eq!(
            probe(&(Arc::new(MemSource(head.clone())) as Source)),
            Some(FsKind::Fat)
        );
        // The type string is only a hint.
        let mut v = head.clone();
        let at = if bits == 32 { 82 } else { 54 };
        v[at..at + 8].copy_from_slice(b"XXXXXXXX");
        assert_eq!(
            probe(&(Arc::new(MemSource(v)) as Source)),
            Some(FsKind::Fat)
        );
        for (sig, kind) in [(b"NTFS    ", FsKind::Ntfs), (b"EXFAT   ", FsKind::Exfat)] {
            let mut v = head.clone();
            v[3..11].copy_from_slice(sig);
            assert_eq!(probe(&(Arc::new(MemSource(v)) as Source)), Some(kind));
        }
        // Not a FAT: bad sector size, no FATs, no jump.
        for (at, val) in [(11usize, 0x01u8), (16, 0), (0, 0)] {
            let mut v = head.clone();
            v[at] = val;
            assert_eq!(
                probe(&(Arc::new(MemSource(v)) as Source)),
                None,
                "byte {at}"
            );
        }
    }
}

/// 4096-byte sectors (4Kn disks): geometry comes from the BPB, not 512.
#[test]
fn fat16_4k_sectors() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("fat4k");
    let img = tmp.0.join("4k.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.fat")
        .args(["-S", "4096", "-s", "1", "-F", "16", "-n", "FOURK"])
        .arg(&img));
    let data = XorShift(5).bytes(50_000);
    let src = tmp.0.join("r.bin");
    std::fs::write(&src, &data).unwrap();
    let i = img.to_str().unwrap();
    run(Command::new("mcopy")
        .args(["-i", i])
        .arg(&src)
        .arg("::Long Name File.bin"));
    run(Command::new("fsck.fat").arg("-n").arg(&img));
    let fs = open(&img);
    assert_eq!(fs.fat_type_name(), "FAT16");
    assert_eq!(fs.info().block_size, 4096);
    assert_eq!(fs.info().label.as_deref(), Some("FOURK"));
    let node = resolve(&fs, "/long name file.BIN").unwrap();
    assert_eq!(read_all(&fs, node), data);
}
