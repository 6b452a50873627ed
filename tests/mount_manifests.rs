//! Every generated disk, raw and in every container, mounted with
//! `restorefs mount` and walked with the standard library: every entry of
//! every volume must match the reference manifest, field for field.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

fn mount(image: &Path, dir: &Path) -> Mounted {
    let out = Command::new(env!("CARGO_BIN_EXE_restorefs"))
        .arg("mount")
        .arg(image)
        .arg(dir)
        .output()
        .expect("run restorefs mount");
    assert!(
        out.status.success(),
        "mount {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Mounted(dir.to_path_buf())
}

fn check_mounted(dir: &Path, image: &Path, rsync: bool) {
    let tmp = scratch_dir();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _m = mount(image, &mnt);
    for ent in std::fs::read_dir(dir.join("manifest")).unwrap() {
        let path = ent.unwrap().path();
        let vol = path.file_stem().unwrap().to_str().unwrap().to_string();
        let top = if vol == "root" {
            mnt.clone()
        } else {
            mnt.join(&vol)
        };
        let got = host_walk(&top);
        let want = load_manifest(&path);
        assert_matches(&format!("mount of {}:{vol}", image.display()), &got, &want);
        if rsync {
            // What users do with a mount: rsync it out, keeping hard links,
            // POSIX ACLs and xattrs.
            let out = tmp.path().join(format!("rsync-{vol}"));
            let st = Command::new("rsync")
                .arg("-aHAX")
                .arg(format!("{}/", top.display()))
                .arg(&out)
                .status()
                .expect("rsync (apt-get install rsync)");
            assert!(st.success(), "rsync -aHAX of {vol}");
            assert_copy_matches(&format!("rsync of {}:{vol}", image.display()), &out, &path);
        }
    }
}

fn check(name: &str) {
    if !fuse_available() {
        return;
    }
    let Some(dir) = generated(name) else { return };
    check_mounted(&dir, &dir.join("disk.img"), true);
    for (file, fmt, opts) in CONTAINERS {
        check_mounted(&dir, &container(&dir, file, fmt, opts), false);
    }
}

#[test]
fn gpt_ntfs_ext4_mounted() {
    check("gpt-ntfs-ext4");
}

#[test]
fn mbr_logical_mounted() {
    check("mbr-logical");
}

#[test]
fn bare_ext4_mounted() {
    check("bare-ext4");
}

#[test]
fn gpt_damaged_primary_mounted() {
    check("gpt-damaged-primary");
}

#[test]
fn demo_mounted() {
    if !fuse_available() {
        return;
    }
    let dir = repo().join("testimages/demo");
    check_mounted(&dir, &dir.join("demo.img"), true);
}

#[test]
fn win_gpt_mounted() {
    check("win-gpt");
}
