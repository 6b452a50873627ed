//! Copy-out of an image whose names are hostile: `cp -r` must write only
//! inside its destination, report every renamed item, create symlinks as
//! symlinks, and keep items whose names collide.
//!
//! The image is a real ext4 (mkfs.ext4 -d) whose directory entries are then
//! byte-patched to names no host filesystem would let us create: `/` and
//! control characters inside a name, and two entries named the same.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// Sets the name of the one directory entry called `old` to `new` (no
/// longer than `old`): name_len and name bytes, in place.
fn rename_entry(img: &mut [u8], old: &[u8], new: &[u8]) {
    assert!(new.len() <= old.len());
    // An entry is inode(4) rec_len(2) name_len(1) file_type(1) name.
    let hits: Vec<usize> = (8..img.len() - old.len())
        .filter(|&i| &img[i..i + old.len()] == old && usize::from(img[i - 2]) == old.len())
        .collect();
    assert_eq!(hits.len(), 1, "entry {:?}", String::from_utf8_lossy(old));
    let at = hits[0];
    img[at - 2] = new.len() as u8;
    img[at..at + new.len()].copy_from_slice(new);
}

fn mkfs(tree: &Path, img: &Path) -> bool {
    // No metadata_csum: the patched directory blocks keep no valid checksum.
    let st = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "1024",
            "-O",
            "^metadata_csum,^has_journal",
        ])
        .args(["-E", "root_owner=0:0", "-d"])
        .arg(tree)
        .arg(img)
        .arg("1M")
        .status();
    match st {
        Ok(s) => s.success(),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "mkfs.ext4: {e} (apt-get install e2fsprogs)"
            );
            eprintln!("SKIPPED: mkfs.ext4: {e}");
            false
        }
    }
}

#[test]
fn hostile_names_stay_inside_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    // What a symlink in the image points at; nothing may appear there.
    let outside = base.join("outside");
    fs::create_dir(&outside).unwrap();
    let tmp_x_existed = Path::new("/tmp/x").exists();

    let tree = base.join("tree");
    fs::create_dir_all(tree.join("escapf")).unwrap();
    for (name, body) in [
        ("AAdotdotAA", "dotdot"),
        ("slash_here", "slash"),
        ("a_b", "plain a_b"),
        ("ctrl_here", "ctrl"),
        ("Case", "upper"),
        ("case", "lower"),
        ("escapf/pwned.txt", "pwned"),
    ] {
        fs::write(tree.join(name), body).unwrap();
    }
    symlink("/etc/passwd", tree.join("abs_link")).unwrap();
    symlink("../../../../tmp/x", tree.join("rel_link")).unwrap();
    symlink(&outside, tree.join("escape")).unwrap();

    let img = base.join("hostile.ext4");
    if !mkfs(&tree, &img) {
        return;
    }
    let mut bytes = fs::read(&img).unwrap();
    rename_entry(&mut bytes, b"AAdotdotAA", b"../../etc");
    rename_entry(&mut bytes, b"slash_here", b"a/b");
    rename_entry(&mut bytes, b"ctrl_here", b"ct\nrl\x01");
    // A directory named like the symlink to `outside`: whichever comes
    // second must not be written through the first.
    rename_entry(&mut bytes, b"escapf", b"escape");
    fs::write(&img, &bytes).unwrap();

    let dest = base.join("dest");
    let sentinel = base.join("sentinel");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&sentinel).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_restorefs"))
        .args(["cp", "-r"])
        .arg(&img)
        .arg("/")
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cp failed:\n{stderr}");

    // Nothing outside DEST.
    let mut beside: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["dest", "hostile.ext4", "outside", "sentinel", "tree"]
    );
    assert_eq!(fs::read_dir(&sentinel).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(Path::new("/tmp/x").exists(), tmp_x_existed);

    let root = dest.join("root");
    let read = |n: &str| fs::read_to_string(root.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    // Renamed, reported, content intact.
    assert_eq!(read(".._.._etc"), "dotdot");
    assert!(
        stderr.contains("renamed /../../etc -> .._.._etc"),
        "{stderr}"
    );
    assert_eq!(read("ct_rl_"), "ctrl");
    assert!(stderr.contains("-> ct_rl_"), "{stderr}");
    // `a/b` made safe is `a_b`, which the image also has: both arrive.
    let mut abs = [read("a_b"), read("a_b~1")];
    abs.sort();
    assert_eq!(abs, ["plain a_b", "slash"]);
    assert!(stderr.contains("renamed /a/b -> a_b"), "{stderr}");
    // Names differing in case both arrive (on a case-sensitive host as is).
    assert_eq!(read("Case"), "upper");
    assert_eq!(read("case"), "lower");
    // Symlinks are links, never followed.
    assert_eq!(
        fs::read_link(root.join("abs_link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(root.join("rel_link")).unwrap(),
        Path::new("../../../../tmp/x")
    );
    // The symlink and the directory both named `escape`: one keeps the
    // name, the other is renamed; the file went into the real directory.
    let link = ["escape", "escape~1"]
        .into_iter()
        .find(|n| fs::symlink_metadata(root.join(n)).unwrap().is_symlink())
        .expect("the escape symlink");
    assert_eq!(fs::read_link(root.join(link)).unwrap(), outside);
    let dir = if link == "escape" {
        "escape~1"
    } else {
        "escape"
    };
    assert_eq!(read(&format!("{dir}/pwned.txt")), "pwned");
    assert!(stderr.contains("renamed /escape -> escape~1"), "{stderr}");
}
