//! Btrfs guests (issue 18): volumes made here with mkfs.btrfs, filled
//! through the kernel (`tests/data/btrfs_populate.sh`: subvolumes,
//! snapper-like snapshots, zlib/LZO/zstd, holes, preallocation, reflinks,
//! a >4 GiB sparse file, links, devices, xattrs, ACLs) and compared, entry
//! by entry in the manifest's terms, with the kernel's read-only mount
//! (`subvolid=5`): bare, and as partition 1 of a GPT disk, through the
//! restore tree, and through the FUSE mount. The subvolume list is checked against `btrfs subvolume
//! list` and `get-default`.
//!
//! Needs root, loop devices, Btrfs in the kernel, btrfs-progs, sgdisk,
//! attr, acl and python3; a missing one skips, except under CI where it
//! fails.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use restorefs_parsers::tree::RestoreTree;
use serde_json::{json, Value};

const POPULATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/btrfs_populate.sh");
/// The inode the kernel gives a nested subvolume's stub in a snapshot.
const STUB_INO: u64 = 2;

fn have_tools() -> bool {
    let mut missing = Vec::new();
    for tool in [
        "mkfs.btrfs",
        "btrfs",
        "sgdisk",
        "setfattr",
        "setfacl",
        "python3",
        "mount",
    ] {
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
    let has_btrfs = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|s| s.lines().any(|l| l.trim_end().ends_with("btrfs")));
    if !has_btrfs {
        // Loading the module is what mount does anyway.
        let _ = Command::new("modprobe").arg("btrfs").status();
    }
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("required under CI: {}", missing.join(", "));
    }
    eprintln!("SKIPPED: missing {}", missing.join(", "));
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "btrfs", "-o", &format!("loop,{opts}")])
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
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Sizes of the generated volume and of the disk holding it.
const FS_BYTES: u64 = 1 << 30;
const PART_START: u64 = 1 << 20;

/// What one generated volume looked like to the kernel.
struct Reference {
    img: PathBuf,
    manifest: BTreeMap<String, Value>,
    /// (id, generation, path) from `btrfs subvolume list`.
    subvols: Vec<(u64, u64, String)>,
    default: u64,
    read_only: Vec<String>,
}

fn make_volume(dir: &Path, name: &str, mkfs: &[&str]) -> Reference {
    let img = dir.join(format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(FS_BYTES)
        .unwrap();
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-f", "-L", "restorefs"])
        .args(mkfs)
        .arg(&img));
    let m = Mount::new(&img, &dir.join(format!("{name}.rw")), "rw,subvolid=5");
    run(Command::new("bash").arg(POPULATE).arg(&m.0));
    drop(m);
    // An independent reader passes the volume and sees the shapes the
    // generator meant to make.
    run(Command::new("btrfs")
        .args(["check", "--readonly"])
        .arg(&img));
    let dump = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-tree"])
        .arg(&img));
    for shape in [
        "extent compression 1 (zlib)",
        "extent compression 2 (lzo)",
        "extent compression 3 (zstd)",
        "type 2 (prealloc)",
        "type 0 (inline)",
        "ram_bytes 2904 compression 2 (lzo)",
        "ram_bytes 2904 compression 3 (zstd)",
        "ram_bytes 2904 compression 1 (zlib)",
        "DIR_INDEX",
        "XATTR_ITEM",
    ] {
        assert!(dump.contains(shape), "{name}: no {shape} in dump-tree");
    }
    if mkfs.contains(&"^no-holes") {
        assert!(
            dump.contains("extent data disk byte 0 nr 0"),
            "{name}: no hole extent"
        );
    }

    let m = Mount::new(&img, &dir.join(format!("{name}.ro")), "ro,subvolid=5");
    let mut manifest = host_walk(&m.0);
    // The kernel makes up a stub's times when it shows it: compare the
    // rest.
    for (path, v) in manifest.iter_mut() {
        let host = m.0.join(path.trim_start_matches('/'));
        if std::fs::symlink_metadata(&host).unwrap().ino() == STUB_INO && v["type"] == "dir" {
            let known = ["path", "type", "mode", "uid", "gid", "nlink"];
            let mut o = serde_json::Map::new();
            for k in known {
                o.insert(k.into(), v[k].clone());
            }
            o.insert("known".into(), json!(known));
            *v = Value::Object(o);
        }
    }
    let mut subvols = Vec::new();
    for line in run(Command::new("btrfs").args(["subvolume", "list"]).arg(&m.0)).lines() {
        // ID 256 gen 20 top level 5 path @
        let w: Vec<&str> = line.split_whitespace().collect();
        subvols.push((
            w[1].parse().unwrap(),
            w[3].parse().unwrap(),
            w[8..].join(" "),
        ));
    }
    let def = run(Command::new("btrfs")
        .args(["subvolume", "get-default"])
        .arg(&m.0));
    let default = def.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut read_only = Vec::new();
    for (_, _, p) in &subvols {
        let ro = run(Command::new("btrfs")
            .args(["property", "get", "-ts"])
            .arg(m.0.join(p))
            .arg("ro"));
        if ro.trim() == "ro=true" {
            read_only.push(p.clone());
        }
    }
    drop(m);
    Reference {
        img,
        manifest,
        subvols,
        default,
        read_only,
    }
}

fn check_subvolumes(tree: &RestoreTree, r: &Reference) {
    let fs = tree.volumes[0].fs().expect("btrfs read");
    let info = fs.info();
    assert_eq!(info.kind, "btrfs");
    assert_eq!(info.label.as_deref(), Some("restorefs"));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let got = fs.subvolumes().unwrap();
    let got_list: Vec<(u64, u64, String)> = got
        .iter()
        .map(|s| {
            let p = s
                .path
                .as_ref()
                .expect("linked")
                .to_string_lossy()
                .into_owned();
            (s.id, s.generation, p)
        })
        .collect();
    assert_eq!(got_list, r.subvols);
    let defaults: Vec<u64> = got.iter().filter(|s| s.default).map(|s| s.id).collect();
    assert_eq!(defaults, vec![r.default]);
    let ro: Vec<String> = got
        .iter()
        .filter(|s| s.read_only)
        .map(|s| s.path.as_ref().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ro, r.read_only);
    assert!(!ro.is_empty());
}

/// Inode numbers through the restore tree never collide across
/// subvolumes: every directory is a node of its own, but for the stubs
/// (inode 2 of their subvolume, empty, as the kernel shows them).
fn check_distinct_nodes(tree: &RestoreTree, top: restorefs_parsers::tree::Node) {
    let mut seen = std::collections::HashMap::new();
    let mut stack = vec![("/".to_string(), top)];
    while let Some((path, node)) = stack.pop() {
        let st = tree.stat(node).unwrap();
        let stub = matches!(node, restorefs_parsers::tree::Node::Fs(_, id) if id & 0xffff_ffff == STUB_INO);
        if stub {
            assert!(tree.read_dir(node).unwrap().is_empty(), "{path}");
        } else if st.kind == restorefs_parsers::fs::FileType::Dir {
            if let Some(prev) = seen.insert(node, path.clone()) {
                panic!("{path} and {prev} share a node");
            }
            for e in tree.read_dir(node).unwrap() {
                stack.push((
                    format!(
                        "{}/{}",
                        path.trim_end_matches('/'),
                        e.name.to_string_lossy()
                    ),
                    e.node,
                ));
            }
        }
    }
}

fn check(name: &str, mkfs: &[&str], fuse: bool) {
    if !have_tools() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("restorefs-btrfs.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let r = make_volume(tmp.path(), name, mkfs);
    assert!(r
        .manifest
        .contains_key("/@/.snapshots/1/snapshot/alice/zstd/numbers.txt"));
    assert!(r.manifest.contains_key("/@/home/alice/plain/big-sparse"));

    // Bare: the volume is the root.
    let tree = RestoreTree::open(&r.img).unwrap();
    assert!(tree.bare);
    assert_matches(
        &format!("{name} bare"),
        &walk(&tree, tree.root()),
        &r.manifest,
    );
    check_subvolumes(&tree, &r);
    check_distinct_nodes(&tree, tree.root());
    drop(tree);

    // Partition 1 of a GPT disk.
    let disk = tmp.path().join(format!("{name}-disk.img"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(FS_BYTES + PART_START + (1 << 20))
        .unwrap();
    run(Command::new("sgdisk")
        .args([
            "-n",
            &format!("1:2048:+{}K", FS_BYTES >> 10),
            "-t",
            "1:8300",
        ])
        .arg(&disk));
    run(Command::new("dd")
        .arg(format!("if={}", r.img.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    let tree = RestoreTree::open(&disk).unwrap();
    let p1 = volume_node(&tree, "p1");
    assert_matches(&format!("{name} in GPT"), &walk(&tree, p1), &r.manifest);
    drop(tree);

    // The same through the FUSE mount, walked with std::fs.
    if fuse && fuse_available() {
        let mnt = tmp.path().join("fuse");
        std::fs::create_dir(&mnt).unwrap();
        ok(&[&"mount" as &dyn AsRef<std::ffi::OsStr>, &disk, &mnt]);
        let guard = Mounted(mnt.clone());
        let got = host_walk(&mnt.join("p1"));
        assert_matches(&format!("{name} mounted"), &got, &r.manifest);
        ok(&[&"umount" as &dyn AsRef<std::ffi::OsStr>, &mnt]);
        drop(guard);
    }
}

/// Lazily unmounts a FUSE mount on drop, whatever happened in the test.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn btrfs_default_dup_metadata() {
    // mkfs's default on one device: DUP metadata, single data, no-holes.
    check("default", &["-m", "dup"], true);
}

#[test]
fn btrfs_explicit_holes_single_4k_nodes() {
    check(
        "holes",
        &["-O", "^no-holes", "-m", "single", "-n", "4096"],
        false,
    );
}

/// A copy taken while the volume was mounted, after an fsync and before
/// the next commit, holds an fsync log tree: the volume opens, read as of
/// its last commit, and `info` says the newest fsynced writes are not
/// shown.
#[test]
fn btrfs_fsync_log_tree_is_reported() {
    if !have_tools() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("restorefs-btrfs.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let img = tmp.path().join("log.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img));
    // A long commit interval keeps the log tree in place until the copy.
    let m = Mount::new(&img, &tmp.path().join("m"), "rw,commit=300");
    std::fs::write(m.0.join("committed"), b"before").unwrap();
    run(Command::new("sync").arg("-f").arg(m.0.join("committed")));
    run(Command::new("python3").arg("-c").arg(
        "import os,sys; f=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT); os.write(f, b'fsynced'); os.fsync(f)",
    ).arg(m.0.join("fsynced")));
    let copy = tmp.path().join("copy.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(&copy));
    drop(m);
    let dump = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-super"])
        .arg(&copy));
    let log_root = dump
        .lines()
        .find_map(|l| l.strip_prefix("log_root\t\t"))
        .unwrap_or("0")
        .trim()
        .to_string();
    if log_root == "0" {
        // The kernel committed before the copy: nothing to check.
        eprintln!("SKIPPED: the copy holds no log tree");
        return;
    }
    let tree = RestoreTree::open(&copy).unwrap();
    let fs = tree.volumes[0].fs().expect("btrfs read");
    let w = fs.info().warnings;
    assert!(w.iter().any(|w| w.contains("fsync log tree")), "{w:?}");
    let n = tree.resolve("/committed").unwrap();
    let mut b = [0u8; 16];
    let got = tree.read(n, 0, &mut b).unwrap();
    assert_eq!(&b[..got], b"before");
}

/// Two devices of one RAID1 filesystem: read from both images given
/// together (`BtrfsFs::open_devices`), with the kernel-written bytes;
/// one alone is an error naming the missing device's UUID.
#[test]
fn btrfs_raid1_two_devices() {
    use restorefs_parsers::fs::btrfs::BtrfsFs;
    use restorefs_parsers::fs::FileSystem;
    use restorefs_parsers::readat::FileSource;
    use restorefs_parsers::Source;
    use std::sync::Arc;
    if !have_tools() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("restorefs-btrfs.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    for p in [&a, &b] {
        std::fs::File::create(p)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
    }
    let losetup = |p: &Path| {
        run(Command::new("losetup").args(["-f", "--show"]).arg(p))
            .trim()
            .to_string()
    };
    let (la, lb) = (losetup(&a), losetup(&b));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let result = std::panic::catch_unwind(|| {
        run(Command::new("mkfs.btrfs").args(["-q", "-f", "-d", "raid1", "-m", "raid1", &la, &lb]));
        let mnt = tmp.path().join("m");
        std::fs::create_dir(&mnt).unwrap();
        run(Command::new("mount")
            .arg("-o")
            .arg(format!("device={lb}"))
            .arg(&la)
            .arg(&mnt));
        std::fs::write(mnt.join("data"), &data).unwrap();
        run(Command::new("umount").arg(&mnt));
    });
    run(Command::new("losetup").args(["-d", &la, &lb]));
    result.unwrap();
    let src = |p: &Path| -> Source { Arc::new(FileSource::open(p).unwrap()) };

    let fs = BtrfsFs::open_devices(vec![src(&b), src(&a)]).unwrap();
    let node = fs
        .lookup(fs.root(), std::ffi::OsStr::new("data"))
        .unwrap()
        .unwrap();
    let mut got = vec![0u8; data.len()];
    let mut done = 0;
    while done < got.len() {
        let n = fs.read(node, done as u64, &mut got[done..]).unwrap();
        assert!(n > 0);
        done += n;
    }
    assert!(got == data);

    let dump = run(Command::new("btrfs")
        .args(["inspect-internal", "dump-super"])
        .arg(&b));
    let uuid_b = dump
        .lines()
        .find_map(|l| l.strip_prefix("dev_item.uuid"))
        .unwrap()
        .trim()
        .to_string();
    let e = BtrfsFs::open(src(&a))
        .err()
        .expect("one device of two")
        .to_string();
    assert!(e.contains(&uuid_b), "{e}");
}
