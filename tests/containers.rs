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

fn check_all(name: &str) {
    let Some(dir) = generated(name) else {
        return;
    };
    for (file, fmt, opts) in CONTAINERS {
        let img = container(&dir, file, fmt, opts);
        let tree = check_image_manifests(&dir, &img);
        assert_same_disk(&tree, &img);
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
