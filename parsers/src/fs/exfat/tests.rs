//! exFAT images made with mkfs.exfat and populated through an exfat-fuse
//! mount; the same image mounted read-only by exfat-fuse is the
//! reference, after `fsck.exfat -n` calls it clean. Plus a mutation test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::dir_entry::{self, ENTRY};
use super::ExfatFs;
use crate::fs::fat::tests::{
    compare, have, mutate, populate, read_all, resolve, run, walk_host, walk_ours, TempDir,
    XorShift,
};
use crate::fs::{FileSystem, FileType};
use crate::readat::{FileSource, MemSource};
use crate::Source;

/// Whether we can loop-mount (root only); under CI we must.
fn can_mount() -> bool {
    let tools = [
        "mkfs.exfat",
        "fsck.exfat",
        "mount.exfat-fuse",
        "losetup",
        "cp",
        "blkid",
    ]
    .iter()
    .all(|t| have(t));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && std::env::var_os("CI").is_some() {
        panic!("the exFAT tests need root under CI");
    }
    tools && root
}

/// An image attached to a loop device and mounted with exfat-fuse;
/// unmounted and detached on drop, also when a test fails.
struct Mount {
    dev: String,
    dir: PathBuf,
}

impl Mount {
    fn new(img: &Path, dir: &Path, ro: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut losetup = Command::new("losetup");
        if ro {
            losetup.arg("-r");
        }
        let dev = String::from_utf8(run(losetup.args(["-f", "--show"]).arg(img)))
            .unwrap()
            .trim()
            .to_string();
        let mut m = Command::new("mount.exfat-fuse");
        if ro {
            m.args(["-o", "ro"]);
        }
        let out = m.arg(&dev).arg(dir).output().unwrap();
        if !out.status.success() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
            panic!("mount.exfat-fuse: {}", String::from_utf8_lossy(&out.stderr));
        }
        Mount {
            dev,
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // exfat-fuse flushes on unmount; the image is only complete after.
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Makes an exFAT image of `mib` MiB with `cluster`-byte clusters and the
/// shared test tree, fragmenting `frag/big.bin`.
fn make_exfat(tmp: &TempDir, mib: u64, cluster: usize, big: usize, many: usize) -> PathBuf {
    let img = tmp.0.join("exfat.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.exfat")
        .args(["-L", "ExLabel", "-c", &cluster.to_string()])
        .arg(&img));
    let src = tmp.0.join("src");
    populate(&src, cluster, big, many);
    {
        let m = Mount::new(&img, &tmp.0.join("rw"), false);
        let mut cp = Command::new("cp");
        cp.arg("-r").arg("--preserve=timestamps");
        for e in std::fs::read_dir(&src).unwrap() {
            cp.arg(e.unwrap().path());
        }
        run(cp.arg(&m.dir));
        let frag = m.dir.join("frag");
        std::fs::create_dir_all(&frag).unwrap();
        let mut rng = XorShift(99);
        for n in 0..24 {
            std::fs::write(frag.join(format!("small{n:02}")), rng.bytes(cluster)).unwrap();
        }
        for n in (0..24).step_by(2) {
            std::fs::remove_file(frag.join(format!("small{n:02}"))).unwrap();
        }
        std::fs::write(frag.join("big.bin"), rng.bytes(cluster * 20 + 100)).unwrap();
    }
    let out = run(Command::new("fsck.exfat").arg("-n").arg(&img));
    assert!(
        String::from_utf8_lossy(&out).contains("clean"),
        "fsck.exfat"
    );
    img
}

fn open(img: &Path) -> ExfatFs {
    let src: Source = Arc::new(FileSource::open(img).unwrap());
    ExfatFs::open(src).unwrap()
}

fn check_image(tmp: &TempDir, img: &Path, cluster: u32) {
    let src: Source = Arc::new(FileSource::open(img).unwrap());
    assert_eq!(crate::fs::probe(&src), Some(crate::fs::FsKind::Exfat));
    let fs = open(img);
    let info = fs.info();
    assert_eq!(info.kind, "exfat");
    assert_eq!(info.label.as_deref(), Some("ExLabel"));
    let blkid = |tag: &str| {
        let out = run(Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag])
            .arg(img));
        String::from_utf8(out).unwrap().trim().to_string()
    };
    assert_eq!(info.uuid.as_deref(), Some(blkid("UUID").as_str()));
    assert_eq!(info.label.as_deref(), Some(blkid("LABEL").as_str()));
    assert_eq!(info.block_size, cluster);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let ours = walk_ours(&fs);
    let want = {
        let m = Mount::new(img, &tmp.0.join("ro"), true);
        let want = walk_host(&m.dir);
        // statvfs of the reference mount: the same free space.
        let st = rustix_free(&m.dir);
        assert_eq!(info.free_bytes, st, "free bytes");
        want
    };
    compare(&ours, &want, true);
    assert!(ours.len() > 40);
    for (p, alias) in [
        ("/lower.txt", "/LOWER.TXT"),
        ("/MixedCase.Txt", "/mixedcase.txt"),
        ("/Ünïcödé ñame – long.txt", "/üNÏCÖDÉ ÑAME – LONG.TXT"),
        (
            "/Nested/deeper/deepest/file.txt",
            "/nested/DEEPER/Deepest/FILE.TXT",
        ),
    ] {
        assert!(ours.contains_key(p), "{p} missing");
        assert!(resolve(&fs, alias).is_some(), "{alias}");
        assert_eq!(resolve(&fs, p), resolve(&fs, alias), "{alias}");
    }
    assert_eq!(resolve(&fs, "/nope"), None);
    let rw = fs.stat(resolve(&fs, "/UPPER.TXT").unwrap()).unwrap();
    assert_eq!((rw.mode, rw.nlink), (0o644, 1));
    let contiguous = ours
        .keys()
        .filter(|p| {
            let s = fs.set_at(resolve(&fs, p).unwrap()).unwrap();
            s.no_fat_chain && s.data_len > u64::from(cluster)
        })
        .count();
    assert!(contiguous > 0, "no NoFatChain stream exercised");
    // Entry sets that cross a cluster end (re-read by `set_at` on stat).
    let crossing = ours
        .keys()
        .filter(|p| {
            let off = resolve(&fs, p).unwrap() * ENTRY as u64;
            let mut first = [0u8; ENTRY];
            fs.read_raw(off, &mut first).unwrap();
            (off - fs.boot.heap_offset) % u64::from(cluster) + dir_entry::set_len(&first) as u64
                > u64::from(cluster)
        })
        .count();
    if cluster == 512 {
        assert!(crossing > 0, "no entry set crosses a cluster end");
    }
    let d = fs.stat(resolve(&fs, "/Nested").unwrap()).unwrap();
    assert_eq!((d.kind, d.mode), (FileType::Dir, 0o755));
    let big = fs.set_at(resolve(&fs, "/frag/big.bin").unwrap()).unwrap();
    let chain = fs
        .chain(big.first_cluster, big.valid_len, big.no_fat_chain)
        .unwrap();
    assert!(chain.runs.len() > 3, "not fragmented: {:?}", chain.runs);
}

/// Free bytes as the mounted reference reports them.
fn rustix_free(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C path and a statvfs to fill.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree as u64 * st.f_frsize as u64
}

#[test]
fn exfat_matches_exfat_fuse() {
    if !can_mount() {
        return;
    }
    let tmp = TempDir::new("exfat");
    let img = make_exfat(&tmp, 64, 4096, 5 << 20, 1000);
    check_image(&tmp, &img, 4096);
}

/// 512-byte clusters: entry sets cross cluster ends, in chained and in
/// contiguous directories.
#[test]
fn exfat_small_clusters() {
    if !can_mount() {
        return;
    }
    let tmp = TempDir::new("exfat512");
    let img = make_exfat(&tmp, 32, 512, 1 << 20, 1000);
    check_image(&tmp, &img, 512);
}

/// Bytes past the valid data length read as zeros; a damaged entry set
/// (checksum) hides the file.
#[test]
fn valid_data_length_and_set_checksum() {
    if !can_mount() {
        return;
    }
    let tmp = TempDir::new("exfatvdl");
    let img = make_exfat(&tmp, 16, 4096, 100 << 10, 10);
    let fs = open(&img);
    let node = resolve(&fs, "/big.bin").unwrap();
    let whole = read_all(&fs, node);
    let mut bytes = std::fs::read(&img).unwrap();
    drop(fs);
    let at = (node * ENTRY as u64) as usize;
    let len = dir_entry::set_len(&bytes[at..]);
    // Valid data length: 1000 bytes, read-only; fix the set checksum.
    bytes[at + 4] |= 0x01;
    bytes[at + ENTRY + 8..at + ENTRY + 16].copy_from_slice(&1000u64.to_le_bytes());
    let sum = dir_entry::set_checksum(&bytes[at..at + len]);
    bytes[at + 2..at + 4].copy_from_slice(&sum.to_le_bytes());
    let fs = ExfatFs::open(Arc::new(MemSource(bytes.clone()))).unwrap();
    let got = read_all(&fs, node);
    assert_eq!(got.len(), whole.len());
    assert_eq!(got[..1000], whole[..1000]);
    assert!(got[1000..].iter().all(|&b| b == 0));
    assert_eq!(fs.stat(node).unwrap().mode, 0o444);
    // A byte changed without the checksum: the set is refused.
    bytes[at + ENTRY + 9] ^= 0x40;
    let fs = ExfatFs::open(Arc::new(MemSource(bytes))).unwrap();
    assert_eq!(resolve(&fs, "/big.bin"), None);
    assert!(fs.stat(node).is_err());
}

#[test]
fn mutations_do_not_panic() {
    if !can_mount() {
        return;
    }
    for cluster in [4096usize, 512] {
        let tmp = TempDir::new("exfatmut");
        let img = make_exfat(&tmp, 8, cluster, 40 << 10, 40);
        let fs = open(&img);
        let cs = u64::from(fs.boot.cluster_size);
        let dir_of = |p: &str| {
            let s = fs.set_at(resolve(&fs, p).unwrap()).unwrap();
            (fs.boot.cluster_offset(s.first_cluster), cs)
        };
        let regions = [
            (0, 512),
            (fs.boot.fat_offset, fs.boot.fat_bytes.min(4096)),
            (fs.boot.cluster_offset(fs.boot.root_cluster), cs),
            dir_of("/Nested"),
            dir_of("/many"),
        ];
        let bytes = std::fs::read(&img).unwrap();
        mutate(bytes, &regions, 300, 0xDEAD_BEEF ^ cluster as u64, |src| {
            ExfatFs::open(src)
                .ok()
                .map(|f| Arc::new(f) as Arc<dyn FileSystem>)
        });
    }
}
