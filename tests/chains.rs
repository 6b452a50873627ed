//! Restore points as chains, end to end: a generated ext4 disk as point 1,
//! two later points changed through a kernel mount (with the reference
//! manifest of each taken from that mount), stored as qcow2 and VMDK
//! deltas by `qemu-img convert -B`. Each point must read byte for byte as
//! qemu reads it and walk as its manifest says, alone and through
//! `--all-points` in the CLI and in the FUSE mount.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use restorefs_parsers::image;
use restorefs_parsers::tree::RestoreTree;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_restorefs");

/// Whether `tool` runs; a missing tool fails under CI and skips otherwise.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok();
    if !ok {
        assert!(!in_ci(), "{tool} is required when CI is set");
        eprintln!("SKIPPED: {tool} not installed");
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn restorefs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(BIN);
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

/// Unmounts `dir` when dropped, so a failing test leaves no mount behind.
struct Unmount(PathBuf, &'static str);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(self.1).arg(&self.0).output();
    }
}

/// Copies `from` to `to`, loop-mounts it, lets `change` edit the mounted
/// tree, and returns the manifest of the result (from the kernel's view).
fn make_point(from: &Path, to: &Path, mnt: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    std::fs::copy(from, to).unwrap();
    std::fs::create_dir_all(mnt).unwrap();
    run(Command::new("mount").arg("-o").arg("loop").arg(to).arg(mnt));
    let guard = Unmount(mnt.to_path_buf(), "umount");
    change(mnt);
    let manifest = to.with_extension("jsonl");
    let out = run(Command::new("python3")
        .arg(repo().join("scripts/testimages/manifest.py"))
        .arg(mnt));
    std::fs::write(&manifest, &out.stdout).unwrap();
    drop(guard);
    manifest
}

fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
}

/// The three raw points and their manifests.
fn points(work: &Path, disk: &Path, want1: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mnt = work.join("mnt");
    let p2 = work.join("p2.raw");
    let m2 = make_point(disk, &p2, &mnt, |m| {
        std::fs::create_dir(m.join("chains")).unwrap();
        write(&m.join("chains/p2.txt"), b"written at point 2\n");
        write(&m.join("README.txt"), b"README rewritten at point 2\n");
        let big: Vec<u8> = (0..3u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
        write(&m.join("chains/big.bin"), &big);
        std::fs::remove_file(m.join("empty_file")).unwrap();
    });
    let p3 = work.join("p3.raw");
    let m3 = make_point(&p2, &p3, &mnt, |m| {
        write(&m.join("chains/p2.txt"), b"changed again at point 3\n");
        write(&m.join("chains/p3.txt"), b"new at point 3\n");
        std::fs::remove_file(m.join("chains/big.bin")).unwrap();
    });
    vec![
        (disk.to_path_buf(), want1.to_path_buf()),
        (p2, m2),
        (p3, m3),
    ]
}

/// Stores the raw points as a chain of `fmt` files: base, mid, top.
/// qemu-img writes qcow2 and VMDK chains; it cannot write VHD or VHDX
/// differencing disks, so those come from the spec-following test writers
/// (checked against libvhdi in the format tests).
fn store_chain(work: &Path, fmt: &str, raws: &[(PathBuf, PathBuf)]) -> Vec<PathBuf> {
    let names = ["base", "mid", "top"];
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, (raw, _)) in raws.iter().enumerate() {
        let out = work.join(format!("{}.{fmt}", names[i]));
        let mut cmd = match fmt {
            "vhd" | "vhdx" => {
                let script = repo().join(format!("parsers/src/image/{fmt}/testdata/make_{fmt}.py"));
                let mut c = Command::new("python3");
                c.current_dir(work).arg(script).arg(raw).arg(&out);
                if let Some(prev) = files.last() {
                    c.arg("--parent")
                        .arg(prev)
                        .arg("--parent-raw")
                        .arg(&raws[i - 1].0);
                }
                c
            }
            _ => {
                let mut c = Command::new("qemu-img");
                c.current_dir(work)
                    .args(["convert", "-f", "raw", "-O", fmt]);
                if let Some(prev) = files.last() {
                    // A relative name, as backup products write them.
                    let prev = prev.file_name().unwrap();
                    c.arg("-B").arg(prev).args(["-F", fmt]);
                }
                c.arg(raw).arg(&out);
                c
            }
        };
        run(&mut cmd);
        files.push(out);
    }
    files
}

fn manifest_of(path: &Path) -> BTreeMap<String, Value> {
    load_manifest(path)
}

/// `restorefs raw` of `img` equals `qemu-img convert -O raw` of it, or the
/// raw disk the point was made from where qemu cannot read the format.
fn assert_raw_same(img: &Path, point_raw: &Path) {
    let got = img.with_extension("got.raw");
    let want = img.with_extension("want.raw");
    let out = restorefs(&[&"raw", &img, &"-o", &got, &"--force"]);
    assert!(
        out.status.success(),
        "raw {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let ext = img.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "vhd" || ext == "vhdx" {
        std::fs::copy(point_raw, &want).unwrap();
    } else {
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(img)
            .arg(&want));
    }
    let (a, b) = (std::fs::read(&got).unwrap(), std::fs::read(&want).unwrap());
    assert_eq!(a.len(), b.len(), "{}", img.display());
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{}: first difference at byte {i}", img.display());
    }
    let _ = std::fs::remove_file(got);
    let _ = std::fs::remove_file(want);
}

fn chain_case(fmt: &str) {
    if !have("qemu-img") || !have("python3") || !have("mount") {
        return;
    }
    let Some(dir) = generated("bare-ext4") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let raws = points(
        work.path(),
        &dir.join("disk.img"),
        &dir.join("manifest/root.jsonl"),
    );
    let files = store_chain(work.path(), fmt, &raws);

    for (k, (file, (point_raw, manifest))) in files.iter().zip(&raws).enumerate() {
        assert_raw_same(file, point_raw);
        let img = image::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(img.chain.len(), k + 1);
        let tree = RestoreTree::from_image(img).unwrap();
        let got = walk(&tree, tree.root());
        assert_matches(&file.display().to_string(), &got, &manifest_of(manifest));
    }

    // Every point at once, through the library.
    let top = files.last().unwrap();
    let all = RestoreTree::open_points(top, &image::OpenOptions::default()).unwrap();
    let names: Vec<String> = all.points.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["@1-base", "@2-mid", "@3-top"]);
    for (p, (_, manifest)) in all.points.iter().zip(&raws) {
        let got = walk(&all, p.root);
        assert_matches(&p.name, &got, &manifest_of(manifest));
    }

    // And through the CLI: the root lists the points, a path prefix picks one.
    let out = restorefs(&[&"ls", &"--all-points", &top]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "@1-base\n@2-mid\n@3-top\n"
    );
    let out = restorefs(&[&"ls", &"--all-points", &top, &"/@2-mid/chains"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "big.bin\np2.txt\n");
    for (point, want) in [
        ("@2-mid", "written at point 2\n"),
        ("@3-top", "changed again at point 3\n"),
    ] {
        let out = restorefs(&[
            &"cat",
            &"--all-points",
            &top,
            &format!("/{point}/chains/p2.txt"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    let out = restorefs(&[&"cat", &"--all-points", &top, &"/@1-base/chains/p2.txt"]);
    assert!(!out.status.success());
    let dest = work.path().join("copied");
    let out = restorefs(&[
        &"cp",
        &"--all-points",
        &top,
        &"/@2-mid/chains/big.bin",
        &dest,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 3 << 20);

    // info shows the chain, each link checked where the format has ids.
    let out = restorefs(&[&"info", &top]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chain:") && text.contains("mid") && text.contains("base"),
        "{text}"
    );
    if fmt == "vmdk" {
        assert_eq!(text.matches(": ok (CID").count(), 2, "{text}");
    }
    let out = restorefs(&[&"info", &"--all-points", &"--json", &top]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["points"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["chain"].as_array().map(Vec::len), Some(3));

    mount_case(work.path(), top, &raws);
}

/// `mount --all-points`: each point directory walks as its manifest.
fn mount_case(work: &Path, top: &Path, raws: &[(PathBuf, PathBuf)]) {
    if !Path::new("/dev/fuse").exists() || Command::new("fusermount3").arg("-V").output().is_err() {
        assert!(!in_ci(), "CI is set but FUSE is missing");
        eprintln!("SKIPPED: FUSE missing, mount --all-points not tested");
        return;
    }
    let mnt = work.join("fuse");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = restorefs(&[&"mount", &"--all-points", &top, &mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _guard = Unmount(mnt.clone(), "fusermount3");
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["@1-base", "@2-mid", "@3-top"]);
    for (name, (_, manifest)) in names.iter().zip(raws) {
        let out = run(Command::new("python3")
            .arg(repo().join("scripts/testimages/manifest.py"))
            .arg(mnt.join(name)));
        let got: BTreeMap<String, Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["path"].as_str().unwrap().to_string(), v)
            })
            .collect();
        assert_matches(&format!("mount {name}"), &got, &manifest_of(manifest));
    }
    let out = restorefs(&[&"umount", &mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qcow2_chain_of_three_points() {
    chain_case("qcow2");
}

#[test]
fn vhd_chain_of_three_points() {
    chain_case("vhd");
}

#[test]
fn vhdx_chain_of_three_points() {
    chain_case("vhdx");
}

#[test]
fn vmdk_chain_of_three_points() {
    chain_case("vmdk");
}

/// A VMDK chain of small blank disks, made with relative links.
fn small_vmdk_chain(dir: &Path) -> [PathBuf; 3] {
    let names = ["base.vmdk", "mid.vmdk", "top.vmdk"];
    run(Command::new("qemu-img")
        .current_dir(dir)
        .args(["create", "-f", "vmdk", names[0], "4M"]));
    for i in 1..3 {
        run(Command::new("qemu-img").current_dir(dir).args([
            "create",
            "-f",
            "vmdk",
            "-b",
            names[i - 1],
            "-F",
            "vmdk",
            names[i],
        ]));
    }
    names.map(|n| dir.join(n))
}

#[test]
fn cli_chain_errors_name_both_files() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [base, mid, top] = small_vmdk_chain(dir.path());
    let out = restorefs(&[&"info", &top]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chain:"), "{text}");
    assert_eq!(text.matches(": ok (CID").count(), 2, "{text}");

    // Missing parent: the error names it and the file that refers to it.
    let moved = dir.path().join("moved.vmdk");
    std::fs::rename(&base, &moved).unwrap();
    let out = restorefs(&[&"ls", &top]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("base.vmdk") && err.contains("mid.vmdk"),
        "{err}"
    );
    // --parent (repeatable, newest link first) points at it.
    let out = restorefs(&[&"info", &top, &"--parent", &mid, &"--parent", &moved]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved.vmdk"));

    // Another disk in the parent's place: CID mismatch, unless ignored.
    run(Command::new("qemu-img").current_dir(dir.path()).args([
        "create",
        "-f",
        "vmdk",
        "base.vmdk",
        "4M",
    ]));
    let out = restorefs(&[&"info", &top]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CID") && err.contains("base.vmdk") && err.contains("--ignore-link-check"),
        "{err}"
    );
    let out = restorefs(&[&"ls", &"--ignore-link-check", &top]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains("mid.vmdk"), "{err}");
}

#[test]
fn chains_longer_than_the_limit_are_refused() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = image::chain::MAX_DEPTH + 1;
    run(Command::new("qemu-img")
        .current_dir(dir.path())
        .args(["create", "-f", "qcow2", "0.qcow2", "1M"]));
    for i in 1..n {
        // -u: write the link without opening the (long) chain below.
        run(Command::new("qemu-img").current_dir(dir.path()).args([
            "create",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &format!("{}.qcow2", i - 1),
            "-F",
            "qcow2",
            &format!("{i}.qcow2"),
            "1M",
        ]));
    }
    let top = dir.path().join(format!("{}.qcow2", n - 1));
    let e = image::open(&top).err().expect("must refuse");
    assert!(e.to_string().contains("longer than"), "{e}");
    // One layer fewer opens.
    let ok = dir.path().join(format!("{}.qcow2", n - 2));
    assert_eq!(image::open(&ok).unwrap().chain.len(), n - 1);
}

/// A partitioned disk: each point directory holds that point's volumes.
#[test]
fn all_points_of_a_partitioned_disk() {
    if !have("qemu-img") {
        return;
    }
    let Some(dir) = generated("gpt-ntfs-ext4") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    run(Command::new("qemu-img")
        .current_dir(w)
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(dir.join("disk.img"))
        .arg("base.qcow2"));
    // A point that changed nothing: every cluster comes from the base.
    run(Command::new("qemu-img").current_dir(w).args([
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "delta.qcow2",
    ]));
    let top = w.join("delta.qcow2");
    let out = restorefs(&[&"ls", &"--all-points", &top, &"/@2-delta"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let base = restorefs(&[&"ls", &dir.join("disk.img")]);
    assert_eq!(listing, String::from_utf8_lossy(&base.stdout));
    let tree = RestoreTree::open_points(&top, &image::OpenOptions::default()).unwrap();
    for ent in std::fs::read_dir(dir.join("manifest")).unwrap() {
        let path = ent.unwrap().path();
        let vol = path.file_stem().unwrap().to_string_lossy().into_owned();
        for point in ["@1-base", "@2-delta"] {
            let node = tree.resolve(&format!("/{point}/{vol}")).unwrap();
            let got = walk(&tree, node);
            assert_matches(&format!("{point}/{vol}"), &got, &manifest_of(&path));
        }
    }
}
