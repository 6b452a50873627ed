//! The generated disks inside every container qemu-img writes: the virtual
//! disk must equal `qemu-img convert -O raw` byte for byte, and every volume
//! must match its reference manifest, unchanged from the raw disk.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use restorefs_parsers::tree::RestoreTree;
use restorefs_parsers::ReadAt;

/// Compares the tree's virtual disk with qemu-img's reading of the file.
fn assert_same_disk(tree: &RestoreTree, image: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("qemu.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    let want = std::fs::File::open(&raw).unwrap();
    let want_len = want.metadata().unwrap().len();
    assert_eq!(
        tree.image.disk.size(),
        want_len,
        "{}: virtual size",
        image.display()
    );
    let mut a = vec![0u8; 4 << 20];
    let mut b = vec![0u8; 4 << 20];
    let mut off = 0u64;
    use std::os::unix::fs::FileExt;
    while off < want_len {
        let n = (want_len - off).min(a.len() as u64) as usize;
        tree.image
            .disk
            .read_exact_at(off, &mut a[..n])
            .unwrap_or_else(|e| panic!("{}: read at {off}: {e}", image.display()));
        want.read_exact_at(&mut b[..n], off).unwrap();
        if a[..n] != b[..n] {
            let i = a[..n]
                .iter()
                .zip(&b[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{}: differs from qemu-img at byte {}",
                image.display(),
                off + i as u64
            );
        }
        off += n as u64;
    }
}

/// `info --json` of `image` has exactly the keys and types the README's
/// schema gives, whatever the container, and its facts agree with
/// `qemu-img info` (format, virtual size, cluster size, file bytes).
fn assert_info_schema(image: &Path, qemu_fmt: &str) {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(&ok(&["info", "--json", s(image)])).unwrap();
    let what = image.display();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let top = [
        "allocated_bytes",
        "block_size",
        "cache_budget",
        "chain",
        "file_bytes",
        "format",
        "image",
        "labels",
        "notes",
        "numbers",
        "partition_table",
        "subformat",
        "virtual_size",
        "volumes",
    ];
    assert_eq!(keys(&v), top, "{what}: top-level keys");
    let vol_keys = [
        "block_size",
        "error",
        "filesystem",
        "free_bytes",
        "kind",
        "label",
        "name",
        "number",
        "offset",
        "partition_guid",
        "partition_label",
        "path",
        "size",
        "state",
        "subvolumes",
        "total_bytes",
        "type",
        "type_name",
        "used_bytes",
        "uuid",
        "warnings",
    ];
    for vol in v["volumes"].as_array().unwrap() {
        assert_eq!(keys(vol), vol_keys, "{what}: volume keys");
        assert!(
            vol["size"].is_u64() && vol["warnings"].is_array(),
            "{what}: {vol}"
        );
    }
    for l in v["chain"].as_array().unwrap() {
        let want = ["check", "check_status", "file", "format", "link", "parent"];
        assert_eq!(keys(l), want, "{what}: chain keys");
    }
    let table = ["disk_guid", "from_backup", "notes", "scheme", "sector_size"];
    assert_eq!(keys(&v["partition_table"]), table, "{what}: table keys");
    for k in ["virtual_size", "file_bytes"] {
        assert!(v[k].is_u64(), "{what}: {k} = {}", v[k]);
    }
    for k in ["allocated_bytes", "block_size", "cache_budget"] {
        assert!(v[k].is_u64() || v[k].is_null(), "{what}: {k} = {}", v[k]);
    }
    assert!(v["subformat"].is_string() || v["subformat"].is_null());
    for (_, n) in v["numbers"].as_object().unwrap() {
        assert!(n.is_u64(), "{what}: numbers hold numbers only: {n}");
    }
    for (k, l) in v["labels"].as_object().unwrap() {
        assert!(l.is_string(), "{what}: labels hold text only: {l}");
        assert!(
            k.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{what}: {k}"
        );
    }
    // The facts qemu-img also reports.
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", qemu_fmt])
        .arg(image)
        .output()
        .expect("qemu-img info");
    assert!(out.status.success());
    let q: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = match qemu_fmt {
        "vpc" => "vhd",
        f => f,
    };
    assert_eq!(v["format"], ours, "{what}");
    assert_eq!(v["virtual_size"], q["virtual-size"], "{what}");
    assert_eq!(
        v["file_bytes"].as_u64(),
        Some(std::fs::metadata(image).unwrap().len()),
        "{what}"
    );
    if let Some(c) = q["cluster-size"].as_u64().filter(|_| qemu_fmt != "raw") {
        assert_eq!(v["block_size"].as_u64(), Some(c), "{what}: block size");
    }
}

fn check_all(name: &str) {
    let Some(dir) = generated(name) else {
        return;
    };
    assert_info_schema(&dir.join("disk.img"), "raw");
    for (file, fmt, opts) in CONTAINERS {
        let img = container(&dir, file, fmt, opts);
        let tree = check_image_manifests(&dir, &img);
        assert_same_disk(&tree, &img);
        assert_info_schema(&img, fmt);
    }
}

#[test]
fn gpt_ntfs_ext4_in_every_container() {
    check_all("gpt-ntfs-ext4");
}

#[test]
fn mbr_logical_in_every_container() {
    check_all("mbr-logical");
}

#[test]
fn win_gpt_in_every_container() {
    check_all("win-gpt");
}
