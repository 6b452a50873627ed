//! ext4 files with thousands of extents (a depth-2 extent tree) and an
//! ext3 file reaching through triple-indirect blocks, read through restorefs
//! and compared with the kernel's own reading of the same image.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use restorefs_parsers::tree::RestoreTree;
use sha2::{Digest, Sha256};

fn sh(script: &str) {
    let st = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .status()
        .expect("bash");
    assert!(st.success(), "failed: {script}");
}

fn root_ok() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    if !root {
        assert!(!in_ci(), "these tests need root (loop mounts)");
        eprintln!("SKIPPED: needs root");
    }
    root
}

/// Builds `img` with `mkfs`, lets `fill` write through a kernel mount, and
/// returns the kernel's sha256 of each named file, read back after a fresh
/// read-only mount.
fn build(img: &Path, mkfs: &str, fill: &str, files: &[&str]) -> Vec<String> {
    let mnt = img.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let (i, m) = (img.display(), mnt.display());
    sh(&format!(
        "truncate -s 256M {i}; {mkfs} {i} >/dev/null; mount -o loop {i} {m}; \
         cd {m}; ( {fill} ) || {{ cd /; umount {m}; exit 1; }}; cd /; umount {m}"
    ));
    sh(&format!("mount -o ro,loop {i} {m}"));
    let sums = files
        .iter()
        .map(|f| {
            let data = std::fs::read(mnt.join(f.trim_start_matches('/'))).expect("kernel read");
            hex(&Sha256::digest(&data))
        })
        .collect();
    sh(&format!("umount {m}"));
    sums
}

fn ours(img: &Path, files: &[&str]) -> Vec<String> {
    let tree = RestoreTree::open(img).expect("open");
    files
        .iter()
        .map(|f| {
            let node = tree.resolve(f).expect("resolve");
            let size = tree.stat(node).expect("stat").size;
            sha256_of(&tree, node, size, f)
        })
        .collect()
}

#[test]
fn ext4_file_with_thousands_of_extents() {
    if !root_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("ext4.img");
    // Every other 4 KiB block written: each written block is its own
    // extent, 3000 of them, more than one index level holds.
    let fill = "python3 -c \"
import os
f = os.open('many.bin', os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(3000):
    os.pwrite(f, bytes([i % 251]) * 4096, i * 8192)
os.close(f)
\"; filefrag many.bin | grep -q '3000 extents'";
    let files = ["/many.bin"];
    let want = build(&img, "mkfs.ext4 -q -b 4096", fill, &files);
    assert_eq!(ours(&img, &files), want);
}

#[test]
fn ext3_file_through_triple_indirect_blocks() {
    if !root_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("ext3.img");
    // 1 KiB blocks: 12 direct + 256 indirect + 65536 double-indirect blocks
    // end at about 64.3 MiB; a write at 80 MiB needs the triple-indirect
    // tree, with holes everywhere between.
    let fill = "printf start > sparse.bin; \
                dd if=/dev/urandom of=sparse.bin bs=1k seek=81920 count=300 conv=notrunc status=none; \
                dd if=/dev/urandom of=sparse.bin bs=1k seek=40000 count=20 conv=notrunc status=none";
    let files = ["/sparse.bin"];
    let want = build(&img, "mkfs.ext3 -q -b 1024", fill, &files);
    assert_eq!(ours(&img, &files), want);
}
