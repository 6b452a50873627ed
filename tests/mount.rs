//! `restorefs mount` end to end: real FUSE mounts of images built here.
//!
//! Needs /dev/fuse and fusermount3. Without them the tests print a loud
//! skip, or fail when `CI` is set so that a broken runner is noticed.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fuse_available;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_restorefs");
const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Unmounts on drop, whatever happened in the test.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
        }
        if mounted(&self.0) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether `dir` (absolute, as the tests build it) is a mount point; a
/// dead FUSE mount still counts, so this never stats `dir` itself.
fn mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

fn restorefs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    common::restorefs(args)
}

/// Mounts `image` on `dir` in the background and returns the guard.
fn mount(image: &Path, dir: &Path) -> Guard {
    let out = restorefs(&[&"mount", &image, &dir]);
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounted(dir), "mount returned before the mount was live");
    Guard(dir.to_path_buf())
}

fn unmount(dir: &Path) {
    let out = restorefs(&[&"umount", &dir]);
    assert!(
        out.status.success(),
        "umount {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes (not zombies) whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("restorefs") {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic bytes that differ at every offset and between seeds.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 24 MiB disk with a `label` (dos or gpt) table and two partitions
/// of patterned bytes no filesystem reader recognises. Returns the image
/// and each partition's bytes.
fn partitioned_disk(dir: &Path, label: &str) -> (PathBuf, Vec<Vec<u8>>) {
    let image = dir.join(format!("{label}.img"));
    File::create(&image).unwrap().set_len(24 * MIB).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&image)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk");
    writeln!(
        sfdisk.stdin.take().unwrap(),
        "label: {label}\nstart=2048, size=16384\nstart=18432, size=20480"
    )
    .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let f = File::options().write(true).open(&image).unwrap();
    let parts = [(2048u64, 16384u64), (18432, 20480)]
        .iter()
        .enumerate()
        .map(|(i, &(start, sectors))| {
            let data = pattern(i as u64 + 7, (sectors * 512) as usize);
            f.write_all_at(&data, start * 512).unwrap();
            data
        })
        .collect();
    (image, parts)
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn setup(label: &str) -> Option<(tempfile::TempDir, PathBuf, Vec<Vec<u8>>, PathBuf)> {
    if !fuse_available() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, parts) = partitioned_disk(tmp.path(), label);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    Some((tmp, image, parts, mnt))
}

#[test]
fn walk_partitioned_disks() {
    for label in ["dos", "gpt"] {
        let Some((_tmp, image, parts, mnt)) = setup(label) else {
            return;
        };
        let _g = mount(&image, &mnt);
        let names: Vec<String> = fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, ["p1.img", "p2.img"], "{label}");
        let root = fs::metadata(&mnt).unwrap();
        assert!(root.is_dir());
        assert_eq!(root.ino(), 1);
        for (i, want) in parts.iter().enumerate() {
            let p = mnt.join(format!("p{}.img", i + 1));
            let md = fs::metadata(&p).unwrap();
            assert!(md.is_file());
            assert_eq!(md.len(), want.len() as u64);
            assert_eq!(md.permissions().mode() & 0o7777, 0o444);
            assert_eq!(md.blocks() * 512, want.len() as u64);
            let got = fs::read(&p).unwrap();
            assert_eq!(sha256(&got), sha256(want), "{label} p{}", i + 1);
            // Past the end: nothing, not an error.
            let mut buf = [0u8; 16];
            let f = File::open(&p).unwrap();
            assert_eq!(f.read_at(&mut buf, want.len() as u64 + 10).unwrap(), 0);
            // Across the end: the tail only.
            assert_eq!(f.read_at(&mut buf, want.len() as u64 - 5).unwrap(), 5);
        }
        // statfs: the whole image for the synthetic root.
        let st = statvfs(&mnt);
        assert_eq!(st.f_blocks * st.f_frsize, 24 * MIB);
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
            .unwrap();
        assert!(line.starts_with("restorefs:"), "{line}");
        assert!(line.contains(" fuse.restorefs ro,"), "{line}");
        unmount(&mnt);
        assert!(!mounted(&mnt));
    }
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed statvfs is a valid out buffer; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st
    }
}

/// Every file under `root`: relative path -> (mode, sha256 or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let content = if md.is_dir() {
                stack.push(p.clone());
                String::new()
            } else if md.file_type().is_symlink() {
                fs::read_link(&p).unwrap().to_string_lossy().into_owned()
            } else {
                sha256(&fs::read(&p).unwrap())
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (md.mode(), md.len(), content));
        }
    }
    out
}

#[test]
fn cp_and_tar_reproduce_the_content() {
    let Some((tmp, image, _parts, mnt)) = setup("gpt") else {
        return;
    };
    let _g = mount(&image, &mnt);
    let want = snapshot(&mnt);
    assert_eq!(want.len(), 2);

    let cp = tmp.path().join("cp");
    let st = Command::new("cp")
        .arg("-a")
        .arg(mnt.join("."))
        .arg(&cp)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(snapshot(&cp), want);

    let tar = tmp.path().join("tar");
    fs::create_dir(&tar).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -cf - . | tar -C '{}' -xpf -",
            mnt.display(),
            tar.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(snapshot(&tar), want);
}

fn erofs<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    }
}

#[test]
fn writes_fail_with_erofs() {
    let Some((_tmp, image, _parts, mnt)) = setup("dos") else {
        return;
    };
    let _g = mount(&image, &mnt);
    let p1 = mnt.join("p1.img");
    erofs("create", File::create(mnt.join("new")));
    erofs("open rw", File::options().read(true).write(true).open(&p1));
    erofs(
        "truncate",
        File::options().write(true).truncate(true).open(&p1),
    );
    erofs("mkdir", fs::create_dir(mnt.join("d")));
    erofs("unlink", fs::remove_file(&p1));
    erofs("rename", fs::rename(&p1, mnt.join("x")));
    erofs(
        "symlink",
        std::os::unix::fs::symlink("p1.img", mnt.join("l")),
    );
    erofs("hard link", fs::hard_link(&p1, mnt.join("h")));
    erofs(
        "chmod",
        fs::set_permissions(&p1, fs::Permissions::from_mode(0o644)),
    );
    let path = std::ffi::CString::new(p1.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a 1-byte value.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.x".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    erofs(
        "setxattr",
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        },
    );
    // Still intact and mounted.
    assert_eq!(fs::metadata(&p1).unwrap().len(), 8 * MIB);
}

#[test]
fn concurrent_random_reads() {
    let Some((_tmp, image, parts, mnt)) = setup("gpt") else {
        return;
    };
    let _g = mount(&image, &mnt);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (mnt, parts) = (&mnt, &parts);
            s.spawn(move || {
                let mut rng = pattern(t + 100, 8 * 300).into_iter();
                let mut next = || {
                    let b: Vec<u8> = rng.by_ref().take(8).collect();
                    u64::from_le_bytes(b.try_into().unwrap())
                };
                let files: Vec<File> = (1..=2)
                    .map(|i| File::open(mnt.join(format!("p{i}.img"))).unwrap())
                    .collect();
                for _ in 0..100 {
                    let i = (next() % 2) as usize;
                    let data = &parts[i];
                    let off = next() % data.len() as u64;
                    let len = (next() % (300 * 1024)) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let n = files[i].read_at(&mut buf, off).unwrap();
                    let end = (off as usize + len).min(data.len());
                    assert_eq!(n, end - off as usize, "short read at {off}");
                    assert!(buf[..n] == data[off as usize..end], "bytes at {off}");
                }
            });
        }
    });
}

#[test]
fn mount_unmount_lifecycle() {
    let Some((tmp, image, _parts, mnt)) = setup("dos") else {
        return;
    };
    let needle = mnt.to_string_lossy().into_owned();
    for i in 0..100 {
        let g = mount(&image, &mnt);
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 2, "round {i}");
        // Alternate both ways of unmounting.
        if i % 2 == 0 {
            unmount(&mnt);
        } else {
            let st = Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .status()
                .unwrap();
            assert!(st.success());
        }
        assert!(!mounted(&mnt), "round {i}");
        drop(g);
    }
    wait_until("mount daemons to exit", || {
        processes_with(&needle).is_empty()
    });

    // A second mount on a busy mountpoint fails clearly and leaves the
    // first one serving.
    let _g = mount(&image, &mnt);
    let out = restorefs(&[&"mount", &image, &mnt]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already a mount point"), "{err}");
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 2);
    unmount(&mnt);
    wait_until("mount daemon to exit", || {
        processes_with(&needle).is_empty()
    });

    // umount refuses what is not a restorefs mount.
    let out = restorefs(&[&"umount", &mnt]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"));
    let out = restorefs(&[&"umount", &"/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a restorefs mount"));

    // A daemon killed outright leaves a dead mount ("not connected"),
    // which umount still clears.
    let g = mount(&image, &mnt);
    let procs = processes_with(&needle);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let pid: i32 = procs[0].split(':').next().unwrap().parse().unwrap();
    // SAFETY: plain syscall on the daemon's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until("daemon to die", || processes_with(&needle).is_empty());
    let err = fs::read_dir(&mnt).unwrap_err();
    // The kernel answers ECONNABORTED while it tears the connection down
    // and ENOTCONN after; both say the server is gone.
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );
    unmount(&mnt);
    assert!(!mounted(&mnt));
    drop(g);

    // A missing image fails before daemonizing: no process, no mount.
    let out = restorefs(&[&"mount", &tmp.path().join("missing.img"), &mnt]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    assert!(!mounted(&mnt));
    assert!(processes_with(&needle).is_empty());

    // An image that is not a disk at all, and a mountpoint that is missing.
    let junk = tmp.path().join("junk.img");
    fs::write(&junk, b"").unwrap();
    let out = restorefs(&[&"mount", &junk, &tmp.path().join("nodir")]);
    assert!(!out.status.success());
    assert!(processes_with(&needle).is_empty());
}

#[test]
fn foreground_mode_stops_on_sigterm() {
    let Some((_tmp, image, parts, mnt)) = setup("gpt") else {
        return;
    };
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg("-f")
        .arg(&image)
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _g = Guard(mnt.clone());
    wait_until("foreground mount", || mounted(&mnt));
    assert_eq!(fs::read(mnt.join("p1.img")).unwrap(), parts[0]);
    // SAFETY: plain syscall on our child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!mounted(&mnt));
}

/// An ordinary user mounts through fusermount3. Run as root, in a private
/// mount namespace whose /dev/fuse is world-accessible (as udev makes it on
/// most systems; some VMs leave it 0600, which no user can mount with).
#[test]
fn ordinary_user_mounts_through_fusermount3() {
    let Some((tmp, image, parts, mnt)) = setup("dos") else {
        return;
    };
    let tools = ["unshare", "setpriv", "mknod"];
    if !is_root()
        || tools
            .iter()
            .any(|t| Command::new(t).arg("--help").output().is_err())
    {
        eprintln!("\n*** SKIPPED: needs root and {tools:?} to test as another user ***\n");
        return;
    }
    let nobody = 65534;
    for p in [tmp.path(), &image, &mnt] {
        std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).unwrap();
    }
    let dev = tmp.path().join("fuse");
    let script = format!(
        "set -e
         mknod '{dev}' c 10 229 && chmod 666 '{dev}' && mount --bind '{dev}' /dev/fuse
         setpriv --reuid={nobody} --regid={nobody} --clear-groups sh -c '
           set -e
           {bin} mount {img} {mnt}
           grep -q \"user_id={nobody}\" /proc/self/mountinfo
           sha256sum {mnt}/p1.img
           if touch {mnt}/x 2>/dev/null; then exit 3; fi
           {bin} umount {mnt}'",
        dev = dev.display(),
        bin = BIN,
        img = image.display(),
        mnt = mnt.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&sha256(&parts[0])), "{stdout}");
    wait_until("user daemon to exit", || {
        processes_with(&mnt.to_string_lossy()).is_empty()
    });
}

/// A source tree with every kind of node `mkfs.ext4 -d` copies.
fn ext4_source(src: &Path) {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(src.join("dir/sub/deeper")).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("small.txt"), b"hello restorefs\n").unwrap();
    fs::write(src.join("dir/big.bin"), pattern(1, 3 * MIB as usize + 123)).unwrap();
    fs::write(src.join("dir/sub/deeper/mid.bin"), pattern(2, 70_000)).unwrap();
    let sparse = File::create(src.join("sparse")).unwrap();
    sparse.write_all_at(b"tail", 5 * MIB).unwrap();
    symlink("small.txt", src.join("short-link")).unwrap();
    symlink("dir/".repeat(30) + "x", src.join("long-link")).unwrap();
    symlink("/nowhere", src.join("dir/abs-link")).unwrap();
    fs::hard_link(src.join("small.txt"), src.join("dir/hard")).unwrap();
    fs::hard_link(src.join("small.txt"), src.join("dir/sub/hard2")).unwrap();
    let fifo = std::ffi::CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    fs::set_permissions(src.join("small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("dir/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    for (i, name) in ["small.txt", "dir", "dir/big.bin"].iter().enumerate() {
        let _ = xattr_set(
            &src.join(name),
            "user.note",
            format!("value {i}").as_bytes(),
        );
    }
    let _ = xattr_set(&src.join("empty"), "user.big", &pattern(3, 1000));
    let t = std::time::UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    File::open(src.join("dir/big.bin"))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a value of the given length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// All xattrs of `p`, through the size-probe protocol both ways.
fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut out = BTreeMap::new();
    // SAFETY: probes with a null buffer, then reads into buffers of the
    // size just returned; all strings are NUL-terminated.
    unsafe {
        let n = libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0);
        assert!(n >= 0, "{}: {}", p.display(), io::Error::last_os_error());
        if n == 0 {
            return out;
        }
        let mut names = vec![0u8; n as usize];
        let n = libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len());
        assert_eq!(n as usize, names.len());
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let cname = std::ffi::CString::new(name).unwrap();
            let len = libc::lgetxattr(path.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0);
            assert!(len >= 0);
            let mut value = vec![0u8; len as usize];
            if len > 0 {
                // One byte short must be ERANGE.
                let short = libc::lgetxattr(
                    path.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    len as usize - 1,
                );
                assert_eq!(short, -1);
                assert_eq!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ERANGE)
                );
            }
            let got = libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            );
            assert_eq!(got, len);
            out.insert(name.to_vec(), value);
        }
    }
    out
}

/// What must agree between restorefs and the kernel for one path.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: (i64, i64),
    content: String,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Walks `root`: per path what was seen, and the hard-link groups.
fn walk(root: &Path) -> (BTreeMap<PathBuf, Seen>, Vec<Vec<PathBuf>>) {
    let mut seen = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("lost+found") {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", String::new())
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                ("symlink", t.to_string_lossy().into_owned())
            } else if ft.is_file() {
                ("file", sha256(&fs::read(&p).unwrap()))
            } else {
                ("other", String::new())
            };
            by_ino.entry(md.ino()).or_default().push(rel.clone());
            seen.insert(
                rel,
                Seen {
                    kind,
                    size: md.len(),
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    nlink: md.nlink(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    content,
                    xattrs: xattrs(&p),
                },
            );
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_ino
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (seen, groups)
}

/// A real ext4 image made by mkfs.ext4 -d, bare and inside a GPT disk:
/// the FUSE walk must match a kernel loop mount of the same bytes.
#[test]
fn ext4_matches_the_kernel() {
    if !fuse_available() {
        return;
    }
    if !is_root() || Command::new("mkfs.ext4").arg("-V").output().is_err() {
        eprintln!("\n*** SKIPPED: needs root (loop mount) and mkfs.ext4 ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    ext4_source(&src);
    let image = tmp.path().join("ext4.img");
    File::create(&image).unwrap().set_len(32 * MIB).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-d"])
        .arg(&src)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let kernel = tmp.path().join("kernel");
    let fuse = tmp.path().join("fuse");
    fs::create_dir(&kernel).unwrap();
    fs::create_dir(&fuse).unwrap();
    let st = Command::new("mount")
        .arg("-o")
        .arg("ro,loop")
        .arg(&image)
        .arg(&kernel)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("\n*** SKIPPED: loop mount failed (no loop devices?) ***\n");
        return;
    }
    let _k = Guard(kernel.clone());
    let (want, want_links) = walk(&kernel);
    assert!(want.len() >= 12, "{want:#?}");
    assert_eq!(want_links.len(), 1);
    assert_eq!(want[Path::new("small.txt")].nlink, 3);
    assert!(
        !want[Path::new("small.txt")].xattrs.is_empty(),
        "mkfs.ext4 -d copied no xattrs"
    );

    // The bare filesystem: its root is the mount's root, inode 1.
    {
        let _g = mount(&image, &fuse);
        assert_eq!(fs::metadata(&fuse).unwrap().ino(), 1);
        let (got, links) = walk(&fuse);
        for (p, w) in &want {
            assert_eq!(got.get(p), Some(w), "{}", p.display());
        }
        assert_eq!(got.len(), want.len());
        assert_eq!(links, want_links);
        let st = statvfs(&fuse);
        let kst = statvfs(&kernel);
        // The kernel's total leaves out metadata overhead; free space and
        // the block size are the filesystem's own numbers.
        assert_eq!(st.f_blocks * st.f_frsize, 32 * MIB);
        assert_eq!(st.f_bsize, kst.f_bsize);
        assert_eq!(st.f_bfree, kst.f_bfree);
        assert_eq!(st.f_files, kst.f_files);
        // cp -a and tar out of the mount reproduce it (modes, times,
        // links; cp -a also xattrs).
        let cp = tmp.path().join("cp");
        let st = Command::new("cp")
            .arg("-a")
            .arg(fuse.join("."))
            .arg(&cp)
            .status()
            .unwrap();
        assert!(st.success());
        let (copied, copied_links) = walk(&cp);
        assert_eq!(copied, want);
        assert_eq!(copied_links, want_links);
        let tar = tmp.path().join("tar");
        fs::create_dir(&tar).unwrap();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C '{}' -cf - . | tar -C '{}' -xpf -",
                fuse.display(),
                tar.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        let (untarred, tar_links) = walk(&tar);
        assert_eq!(tar_links, want_links);
        for (p, w) in &want {
            let u = &untarred[p];
            assert_eq!(
                (u.kind, u.size, u.mode, u.mtime, &u.content),
                (w.kind, w.size, w.mode, w.mtime, &w.content),
                "tar: {}",
                p.display()
            );
        }
        unmount(&fuse);
    }

    corrupt_file_gives_eio(&tmp, &image, &fuse);

    // The same filesystem as partition 1 of a GPT disk: /p1.
    let fsbytes = fs::read(&image).unwrap();
    let disk2 = tmp.path().join("disk2.img");
    File::create(&disk2).unwrap().set_len(40 * MIB).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk2)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(
        sfdisk.stdin.take().unwrap(),
        "label: gpt\nstart=2048, size=65536"
    )
    .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    File::options()
        .write(true)
        .open(&disk2)
        .unwrap()
        .write_all_at(&fsbytes, 2048 * 512)
        .unwrap();
    let _g = mount(&disk2, &fuse);
    let (got, links) = walk(&fuse.join("p1"));
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "p1/{}", p.display());
    }
    assert_eq!(links, want_links);
    unmount(&fuse);
}

/// Breaks one file's extent tree in a copy of `image`: reading that file
/// fails with EIO, everything else still reads and the mount stays up.
fn corrupt_file_gives_eio(tmp: &tempfile::TempDir, image: &Path, fuse: &Path) {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg("imap /dir/sub/deeper/mid.bin")
        .arg(image)
        .output();
    let Ok(out) = out else {
        eprintln!("\n*** SKIPPED corruption check: no debugfs ***\n");
        return;
    };
    // "located at block 35, offset 0x0d00"
    let text = String::from_utf8_lossy(&out.stdout);
    let loc = text.split("located at block ").nth(1).unwrap();
    let block: u64 = loc.split(',').next().unwrap().trim().parse().unwrap();
    let offset = loc.split("offset 0x").nth(1).unwrap().trim();
    let offset = u64::from_str_radix(offset, 16).unwrap();
    let bad = tmp.path().join("bad.img");
    fs::copy(image, &bad).unwrap();
    // i_block, where the extent header starts, is at byte 40 of the inode.
    let at = block * 4096 + offset + 40;
    let f = File::options().write(true).open(&bad).unwrap();
    f.write_all_at(&[0u8; 12], at).unwrap();
    drop(f);
    let _g = mount(&bad, fuse);
    let err = fs::read(fuse.join("dir/sub/deeper/mid.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read(fuse.join("small.txt")).unwrap(),
        b"hello restorefs\n".to_vec()
    );
    assert!(fs::read_dir(fuse.join("dir")).unwrap().count() > 1);
    unmount(fuse);
}

/// Fills a fresh NTFS image through ntfs-3g (read-write, then unmounted).
const NTFS_POPULATE: &str = r#"
mkdir -p a/b/c empty_dir 'Ελληνικά' MixedCase
echo nested > a/b/c/deep.txt
printf 'unicode' > 'ünïcødé ファイル €.txt'
echo greek > 'Ελληνικά/αρχείο'
i=0; while [ $i -lt 300 ]; do echo "$i" > "a/entry_$i"; i=$((i+1)); done
echo hardlinked > hl1
ln hl1 hl2
ln hl1 a/hl3
ln -s hl1 rel_link
ln -s ../hl1 a/rel_up
echo data > streams
setfattr -n user.foo -v bar streams
: > empty
head -c 3000000 /dev/urandom > plain_big
truncate -s 6M sparse
printf tail >> sparse
echo m > MixedCase/File.TXT
"#;

/// An NTFS image made with mkntfs and filled through ntfs-3g: the FUSE
/// walk must match ntfs-3g's own read-only view of the same image (with
/// the options the NTFS reader's view is defined by).
#[test]
fn ntfs_matches_ntfs3g() {
    if !fuse_available() {
        return;
    }
    let tools = ["mkntfs", "ntfs-3g", "setfattr"];
    let have = |t: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !is_root() || !tools.iter().all(|t| have(t)) {
        eprintln!("\n*** SKIPPED: needs root and {tools:?} ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("ntfs.img");
    let reference = tmp.path().join("ntfs3g");
    let fuse = tmp.path().join("fuse");
    fs::create_dir(&reference).unwrap();
    fs::create_dir(&fuse).unwrap();
    let sh = |script: String| {
        let out = Command::new("sh").arg("-ec").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (img, refd) = (image.display(), reference.display());
    sh(format!(
        "truncate -s 32M '{img}' && mkntfs -F -Q -s 512 -c 4096 -L lbl '{img}' >/dev/null"
    ));
    {
        let _rw = Guard(reference.clone());
        sh(format!("ntfs-3g '{img}' '{refd}'"));
        sh(format!("cd '{refd}' && {NTFS_POPULATE}"));
        sh(format!("fusermount3 -u '{refd}'"));
    }
    sh(format!(
        "ntfs-3g -o ro,uid=0,gid=0,fmask=0133,dmask=0022,streams_interface=xattr '{img}' '{refd}'"
    ));
    let _r = Guard(reference.clone());
    let (want, want_links) = walk(&reference);
    assert!(want.len() > 300);
    assert_eq!(want_links.len(), 1, "{want_links:?}");

    let _g = mount(&image, &fuse);
    let (got, links) = walk(&fuse);
    let names = |m: &BTreeMap<PathBuf, Seen>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for (p, w) in &want {
        assert_eq!(&got[p], w, "{}", p.display());
    }
    assert_eq!(links, want_links);
    // Case-insensitive names, as on Windows, through the kernel too.
    assert_eq!(
        fs::read(fuse.join("mixedcase/file.txt")).unwrap(),
        b"m\n".to_vec()
    );
    unmount(&fuse);
}
