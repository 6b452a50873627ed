//! Shared test support: generated images, reference manifests, and a walk of
//! the restore tree in the manifest's terms.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use base64::Engine;
use restorefs_parsers::fs::FileType;
use restorefs_parsers::tree::{Node, RestoreTree};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn realimage(name: &str) -> PathBuf {
    repo().join("testimages/real").join(name)
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Path of generated image `name` (`testimages/cache/NAME`), generating it
/// first if the cache is missing or stale. `None` (with a loud message) only
/// outside CI when this machine cannot generate images; in CI a missing tool
/// is a failure.
pub fn generated(name: &str) -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = repo().join("testimages/cache");
    let dir = out.join(name);
    if !is_root() {
        if in_ci() {
            panic!("generating test images needs root (CI runs as root)");
        }
        if dir.join("stamp").exists() {
            return Some(dir);
        }
        eprintln!("SKIPPED: generating {name} needs root; run the tests as root");
        return None;
    }
    let status = Command::new(repo().join("scripts/gen-testimages"))
        .arg("--out")
        .arg(&out)
        .arg(name)
        .status()
        .expect("run scripts/gen-testimages");
    assert!(status.success(), "scripts/gen-testimages {name} failed");
    assert!(
        dir.join("stamp").exists(),
        "{name}: generator left no stamp"
    );
    Some(dir)
}

/// Reads a JSON-lines manifest keyed by path.
pub fn load_manifest(path: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l}: {e}", path.display()));
            let p = v["path"].as_str().expect("path field").to_string();
            (p, v)
        })
        .collect()
}

fn ns(t: restorefs_parsers::fs::Timespec) -> i64 {
    t.secs * 1_000_000_000 + i64::from(t.nanos)
}

/// Walks the tree below `top` (a volume root) and builds manifest entries
/// with the same fields and rules as scripts/testimages/manifest.py.
pub fn walk(tree: &RestoreTree, top: Node) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<Node, Vec<String>> = HashMap::new();
    let mut stack = vec![("/".to_string(), top)];
    while let Some((path, node)) = stack.pop() {
        let st = tree
            .stat(node)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"));
        let mut v = json!({
            "path": path,
            "type": st.kind.name(),
            "mode": st.mode,
            "uid": st.uid,
            "gid": st.gid,
            "nlink": st.nlink,
            "mtime_ns": ns(st.mtime),
        });
        match st.kind {
            FileType::File => {
                v["size"] = json!(st.size);
                v["sha256"] = json!(sha256_of(tree, node, st.size, &path));
            }
            FileType::Symlink => {
                let t = tree
                    .read_link(node)
                    .unwrap_or_else(|e| panic!("readlink {path}: {e}"));
                v["size"] = json!(st.size);
                v["target"] = json!(t.to_string_lossy());
            }
            FileType::Dir => {
                let entries = tree
                    .read_dir(node)
                    .unwrap_or_else(|e| panic!("read_dir {path}: {e}"));
                for e in entries {
                    let child = format!(
                        "{}/{}",
                        path.trim_end_matches('/'),
                        e.name.to_string_lossy()
                    );
                    stack.push((child, e.node));
                }
            }
            _ => {}
        }
        if st.kind != FileType::Dir && st.nlink > 1 {
            groups.entry(node).or_default().push(path.clone());
        }
        let xattrs = tree
            .xattrs(node)
            .unwrap_or_else(|e| panic!("xattrs {path}: {e}"));
        if !xattrs.is_empty() {
            let map: serde_json::Map<String, Value> = xattrs
                .into_iter()
                .map(|(k, val)| {
                    (
                        k.to_string_lossy().into_owned(),
                        json!(base64::engine::general_purpose::STANDARD.encode(val)),
                    )
                })
                .collect();
            v["xattrs"] = Value::Object(map);
        }
        out.insert(path, v);
    }
    for paths in groups.values() {
        let first = paths.iter().min().cloned().unwrap_or_default();
        for p in paths {
            if let Some(v) = out.get_mut(p) {
                v["link_group"] = json!(first);
            }
        }
    }
    out
}

pub fn sha256_of(tree: &RestoreTree, node: Node, size: u64, path: &str) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let want = (size - off).min(buf.len() as u64) as usize;
        let n = tree
            .read(node, off, &mut buf[..want])
            .unwrap_or_else(|e| panic!("read {path} at {off}: {e}"));
        assert!(n > 0, "{path}: short read at {off} of {size}");
        h.update(&buf[..n]);
        off += n as u64;
    }
    hex(&h.finalize())
}

fn clip(s: &str) -> String {
    if s.len() <= 400 {
        return s.to_string();
    }
    let mut end = 400;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// A scratch directory for copies out of an image: on tmpfs where there is
/// one, because it takes xattr values as large as NTFS streams (ext4 limits
/// a value to one block), so what a copy keeps is limited by the copy and
/// not by the host filesystem.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("restorefs-test.")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a walk with the reference manifest, every field of every entry,
/// and panics with the differences.
pub fn assert_matches(what: &str, got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>) {
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p).map(|g| known_part(g, w)) {
            None => diffs.push(format!("missing: {p}")),
            Some(g) if &g != w => diffs.push(format!(
                "differs: {p}\n   want {}\n    got {}",
                clip(&w.to_string()),
                clip(&g.to_string())
            )),
            _ => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("extra: {p}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} entries differ from the reference:\n{}",
        diffs.len(),
        want.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `got` cut to the fields a manifest entry says its reference knows (its
/// `known` list: mtools asserts no mode, owner or link count), or `got`
/// whole for an entry without that list.
pub fn known_part(got: &Value, want: &Value) -> Value {
    let Some(known) = want.get("known").and_then(Value::as_array) else {
        return got.clone();
    };
    let mut o = serde_json::Map::new();
    for f in known.iter().filter_map(Value::as_str) {
        if let Some(v) = got.get(f) {
            o.insert(f.to_string(), v.clone());
        }
    }
    o.insert("known".into(), Value::Array(known.clone()));
    Value::Object(o)
}

/// The volumes of a generated image that have a manifest (`manifest/VOL.jsonl`), sorted.
pub fn manifest_volumes(dir: &Path) -> Vec<String> {
    let mut vols: Vec<String> = std::fs::read_dir(dir.join("manifest"))
        .expect("manifest dir")
        .map(|e| {
            e.expect("entry")
                .path()
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("name")
                .to_string()
        })
        .collect();
    vols.sort();
    vols
}

/// The tree node of volume `vol`; `root` is the tree's root (a bare filesystem).
pub fn volume_node(tree: &RestoreTree, vol: &str) -> Node {
    if vol == "root" {
        tree.root()
    } else {
        tree.resolve(&format!("/{vol}"))
            .unwrap_or_else(|e| panic!("{vol}: {e}"))
    }
}

/// One volume of a generated image checked against its manifest.
pub fn check_volume_manifest(tree: &RestoreTree, dir: &Path, vol: &str, what: &str) {
    let want = load_manifest(&dir.join("manifest").join(format!("{vol}.jsonl")));
    let got = walk(tree, volume_node(tree, vol));
    assert_matches(&format!("{what}:{vol}"), &got, &want);
}

/// Every volume manifest of a generated image, checked against the tree.
pub fn check_image_manifests(dir: &Path, image: &Path) -> RestoreTree {
    let tree = RestoreTree::open(image).unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    let vols = manifest_volumes(dir);
    for vol in &vols {
        check_volume_manifest(&tree, dir, vol, &image.display().to_string());
    }
    assert!(!vols.is_empty(), "{}: no manifests", dir.display());
    tree
}

/// A host directory tree (a copy, or a mount) in manifest terms: the same
/// fields and rules as scripts/testimages/manifest.py.
pub fn host_walk(top: &Path) -> BTreeMap<String, Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = BTreeMap::new();
    // By (device, inode): Btrfs subvolumes are devices of their own whose
    // inode numbers repeat.
    let mut groups: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![(String::from("/"), top.to_path_buf())];
    while let Some((rel, p)) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "chardev"
        } else {
            "blockdev"
        };
        let mut v = json!({
            "path": rel,
            "type": kind,
            "mode": m.mode() & 0o7777,
            "uid": m.uid(),
            "gid": m.gid(),
            "nlink": m.nlink(),
            "mtime_ns": m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        });
        match kind {
            "dir" => {
                for e in std::fs::read_dir(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
                    let e = e.expect("dir entry");
                    let name = e.file_name().to_string_lossy().into_owned();
                    stack.push((format!("{}/{name}", rel.trim_end_matches('/')), e.path()));
                }
            }
            "symlink" => {
                let t = std::fs::read_link(&p).expect("readlink");
                v["size"] = json!(m.len());
                v["target"] = json!(t.to_string_lossy());
            }
            "file" => {
                let mut h = Sha256::new();
                let mut f =
                    std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                std::io::copy(&mut f, &mut h).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                v["size"] = json!(m.len());
                v["sha256"] = json!(hex(&h.finalize()));
            }
            _ => {}
        }
        if kind != "dir" && m.nlink() > 1 {
            groups
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        let xattrs = host_xattrs(&p);
        if !xattrs.is_empty() {
            v["xattrs"] = Value::Object(xattrs);
        }
        out.insert(rel, v);
    }
    for paths in groups.values() {
        let first = paths.iter().min().cloned().unwrap_or_default();
        for p in paths {
            if let Some(v) = out.get_mut(p) {
                v["link_group"] = json!(first);
            }
        }
    }
    out
}

/// `llistxattr`/`lgetxattr` of a host path, values base64 like manifest.py.
fn host_xattrs(p: &Path) -> serde_json::Map<String, Value> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let mut out = serde_json::Map::new();
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return out;
    };
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        if name.starts_with(b"security.selinux") {
            continue;
        }
        let Ok(cn) = CString::new(name) else { continue };
        let mut val = vec![0u8; 1 << 17];
        // SAFETY: valid C strings and buffer of the given length.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len < 0 {
            continue;
        }
        out.insert(
            String::from_utf8_lossy(name).into_owned(),
            json!(base64::engine::general_purpose::STANDARD.encode(&val[..len as usize])),
        );
    }
    out
}

/// (file name, qemu-img -O format, options)
pub const CONTAINERS: &[(&str, &str, &str)] = &[
    ("disk.sparse.vmdk", "vmdk", "subformat=monolithicSparse"),
    ("disk.stream.vmdk", "vmdk", "subformat=streamOptimized"),
    ("disk.dynamic.vhd", "vpc", "subformat=dynamic"),
    ("disk.dynamic.vhdx", "vhdx", "subformat=dynamic"),
    ("disk.qcow2", "qcow2", "compat=1.1"),
];

/// The container made from `dir/disk.img`, rebuilt when the disk is newer.
pub fn container(dir: &Path, file: &str, fmt: &str, opts: &str) -> PathBuf {
    // Tests of one binary run in parallel and may want the same container.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = dir.join("disk.img");
    let out = dir.join("containers").join(file);
    let fresh = match (std::fs::metadata(&src), std::fs::metadata(&out)) {
        (Ok(s), Ok(o)) => o.modified().ok() >= s.modified().ok(),
        _ => false,
    };
    if !fresh {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let tmp = out.with_extension("tmp");
        let st = Command::new("qemu-img")
            .args(["convert", "-O", fmt, "-o", opts])
            .arg(&src)
            .arg(&tmp)
            .status()
            .expect("qemu-img (apt-get install qemu-utils)");
        assert!(st.success(), "qemu-img convert -O {fmt} -o {opts}");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// A copy on the host (by `restorefs cp`, rsync, ...) against a manifest:
/// everything a copy can keep (type, size, content, target, mode, mtime,
/// hard-link groups, xattrs); owners and link counts are the host's.
pub fn assert_copy_matches(what: &str, dest: &Path, manifest: &Path) {
    let fields = [
        "type",
        "size",
        "sha256",
        "target",
        "mode",
        "mtime_ns",
        "link_group",
        "xattrs",
    ];
    let pick = |v: &Value| -> Value {
        let mut o = serde_json::Map::new();
        if let Some(known) = v.get("known") {
            o.insert("known".into(), known.clone());
        }
        for f in fields {
            // Directory sizes are the host's own business.
            if v.get(f).is_some() && !(f == "size" && v["type"] == "dir") {
                o.insert(f.to_string(), v[f].clone());
            }
        }
        Value::Object(o)
    };
    let want: BTreeMap<String, Value> = load_manifest(manifest)
        .into_iter()
        .map(|(k, v)| (k, pick(&v)))
        .collect();
    let got: BTreeMap<String, Value> = host_walk(dest)
        .into_iter()
        .map(|(k, v)| (k, pick(&v)))
        .collect();
    assert_matches(what, &got, &want);
}

/// Runs the restorefs binary with `args`.
pub fn restorefs<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restorefs"))
        .args(args)
        .output()
        .expect("run restorefs")
}

/// [`restorefs`] that must succeed; its stdout.
pub fn ok<S: AsRef<OsStr>>(args: &[S]) -> Vec<u8> {
    let out = restorefs(args);
    assert!(
        out.status.success(),
        "restorefs {:?} failed: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A path as the `&str` the CLI tests pass.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Whether `restorefs mount` can run here (/dev/fuse, fusermount3); under
/// CI their absence fails the test instead of skipping it.
pub fn fuse_available() -> bool {
    let missing: Vec<&str> = [
        (!Path::new("/dev/fuse").exists()).then_some("/dev/fuse"),
        Command::new("fusermount3")
            .arg("-V")
            .output()
            .map_or(true, |o| !o.status.success())
            .then_some("fusermount3"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("CI is set but {missing:?} missing: cannot test restorefs mount (apt-get install fuse3)");
    }
    eprintln!("\n*** SKIPPED: {missing:?} missing, restorefs mount not tested ***\n");
    false
}
