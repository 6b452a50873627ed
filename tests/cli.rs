//! The command line, end to end, on generated and real images.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn raw_is_the_disk_and_volume_bytes() {
    let img = realimage("disk2.img");
    let disk = std::fs::read(&img).unwrap();
    assert_eq!(ok(&["raw", s(&img)]), disk);
    // p6 is a logical partition at LBA 8, 2 sectors.
    assert_eq!(ok(&["raw", s(&img), "p6"]), &disk[8 * 512..10 * 512]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p7.raw");
    ok(&["raw", s(&img), "p7", "-o", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), &disk[11 * 512..14 * 512]);
    // No overwrite without --force.
    assert!(!restorefs(&["raw", s(&img), "p7", "-o", s(&out)])
        .status
        .success());
    ok(&["raw", s(&img), "p5", "-o", s(&out), "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), &disk[6 * 512..7 * 512]);
}

#[test]
fn info_json_lists_volumes() {
    let img = realimage("disk2.img");
    let v: Value = serde_json::from_slice(&ok(&["info", s(&img), "--json"])).unwrap();
    assert_eq!(v["format"], "raw");
    assert_eq!(v["partition_table"]["scheme"], "mbr");
    let names: Vec<_> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["p1", "p2", "p5", "p6", "p7", "p8", "p9"]);
    assert_eq!(v["volumes"][1]["filesystem"], "extended");
}

#[test]
fn errors_name_the_image_and_never_panic() {
    let out = restorefs(&["ls", "/nonexistent/disk.img"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/disk.img"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let img = realimage("disk2.img");
    let out = restorefs(&["cat", s(&img), "/p9/nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disk2.img"));
}

#[test]
fn info_reports_backup_gpt() {
    let Some(dir) = generated("gpt-damaged-primary") else {
        return;
    };
    let img = dir.join("disk.img");
    let v: Value = serde_json::from_slice(&ok(&["info", s(&img), "--json"])).unwrap();
    assert_eq!(v["partition_table"]["from_backup"], true);
    let text = String::from_utf8(ok(&["info", s(&img)])).unwrap();
    assert!(text.contains("backup"), "{text}");
}

/// `cp -r` of whole volumes reproduces every file, link and time.
#[test]
fn cp_r_whole_volumes_reproduce_the_manifest() {
    for name in ["gpt-ntfs-ext4", "mbr-logical"] {
        let Some(dir) = generated(name) else {
            return;
        };
        let img = dir.join("disk.img");
        for ent in std::fs::read_dir(dir.join("manifest")).unwrap() {
            let mpath = ent.unwrap().path();
            let vol = mpath.file_stem().unwrap().to_str().unwrap().to_string();
            let tmp = scratch_dir();
            let dest = tmp.path().join("out");
            ok(&["cp", "-r", s(&img), &format!("/{vol}"), s(&dest)]);
            assert_copy_matches(&format!("cp -r {name}:{vol}"), &dest, &mpath);
        }
    }
}

#[test]
fn cp_refuses_to_overwrite_without_force() {
    let Some(dir) = generated("bare-ext4") else {
        return;
    };
    let img = dir.join("disk.img");
    let want = load_manifest(&dir.join("manifest/root.jsonl"));
    let (path, entry) = want
        .iter()
        .find(|(_, v)| v["type"] == "file" && v["size"].as_u64() > Some(10_000))
        .expect("a file");
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f");
    std::fs::write(&dest, b"keep me").unwrap();
    let out = restorefs(&["cp", s(&img), path, s(&dest)]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    ok(&["cp", "--force", s(&img), path, s(&dest)]);
    let got = host_walk(&dest);
    assert_eq!(got["/"]["sha256"], entry["sha256"]);
    assert_eq!(got["/"]["mtime_ns"], entry["mtime_ns"]);
    // And `cat` gives the same bytes.
    let bytes = ok(&["cat", s(&img), path]);
    assert_eq!(bytes, std::fs::read(&dest).unwrap());
}

/// `PATH:stream` reads an NTFS alternate data stream in `cat` and `cp`,
/// and, through its xattr, a `user.*` attribute on ext.
#[test]
fn cat_and_cp_read_alternate_data_streams() {
    use base64::Engine;
    let Some(dir) = generated("gpt-ntfs-ext4") else {
        return;
    };
    let img = dir.join("disk.img");
    let want = load_manifest(&dir.join("manifest/p1.jsonl"));
    let xattr = |path: &str, name: &str| {
        let b64 = want[path]["xattrs"][name]
            .as_str()
            .expect("xattr in manifest");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let zone = xattr("/xattr/downloaded.exe", "user.Zone.Identifier");
    assert_eq!(zone, b"[ZoneTransfer]\r\nZoneId=3\r\n");
    let i = s(&img);
    assert_eq!(
        ok(&["cat", i, "/p1/xattr/downloaded.exe:Zone.Identifier"]),
        zone
    );
    // Windows' full spelling, and stream names without case.
    assert_eq!(
        ok(&["cat", i, "/p1/xattr/downloaded.exe:Zone.Identifier:$DATA"]),
        zone
    );
    assert_eq!(
        ok(&["cat", i, "/p1/xattr/downloaded.exe:zone.identifier"]),
        zone
    );
    // A non-resident stream (60000 bytes), and an empty one.
    let big = xattr("/xattr/big_stream.txt", "user.big");
    assert_eq!(big.len(), 60000);
    assert_eq!(ok(&["cat", i, "/p1/xattr/big_stream.txt:big"]), big);
    assert!(ok(&["cat", i, "/p1/xattr/empty_value.txt:empty"]).is_empty());
    // The file itself is unchanged by the syntax.
    let exe = ok(&["cat", i, "/p1/xattr/downloaded.exe"]);
    assert_eq!(exe.len(), 3000);

    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("zone");
    ok(&[
        "cp",
        i,
        "/p1/xattr/downloaded.exe:Zone.Identifier",
        s(&dest),
    ]);
    assert_eq!(std::fs::read(&dest).unwrap(), zone);
    ok(&["cp", i, "/p1/xattr/big_stream.txt:big", s(tmp.path())]);
    assert_eq!(
        std::fs::read(tmp.path().join("big_stream.txt:big")).unwrap(),
        big
    );

    // A missing stream is an error naming the path, for both.
    let out = restorefs(&["cat", i, "/p1/xattr/downloaded.exe:nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("downloaded.exe:nope"), "{err}");
    let out = restorefs(&["cp", i, "/p1/xattr/downloaded.exe:nope", s(&dest)]);
    assert!(!out.status.success());

    // On ext the same syntax reaches `user.*` xattrs.
    let ext = load_manifest(&dir.join("manifest/p2.jsonl"));
    let b64 = ext["/xattr/tagged.txt"]["xattrs"]["user.comment"]
        .as_str()
        .unwrap();
    let comment = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(ok(&["cat", i, "/p2/xattr/tagged.txt:comment"]), comment);
}

/// Files whose data is elsewhere (deduplicated, cloud-only) are listed by
/// `ls -l` with why, and `cat` fails naming the reparse tag.
#[test]
fn ls_reports_unreadable_ntfs_files() {
    let tools = ["mkntfs", "ntfs-3g", "setfattr", "fusermount"];
    let have = |t: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !tools.iter().all(|t| have(t)) || !Path::new("/dev/fuse").exists() {
        assert!(!in_ci(), "ntfs tools or /dev/fuse missing (CI is set)");
        eprintln!("SKIPPED: ntfs tools or /dev/fuse missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("ntfs.img");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "truncate -s 16M {i} && mkntfs -F -Q {i} >/dev/null && ntfs-3g {i} {m} && \
         echo d > {m}/dedup && \
         setfattr -n system.ntfs_reparse_data -v 0x130000800400000001020304 {m}/dedup && \
         echo c > {m}/cloud && \
         setfattr -n system.ntfs_reparse_data -v 0x1a1000900400000001020304 {m}/cloud && \
         echo plain > {m}/plain; fusermount -u {m}",
        i = s(&img),
        m = s(&mnt)
    );
    let out = Command::new("sh").arg("-ec").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(ok(&["ls", "-l", s(&img), "/"])).unwrap();
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name) || l.contains(&format!(" {name}  [")))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
            .to_string()
    };
    assert!(
        line("dedup").contains("[reparse point with tag 0x80000013 (Windows Data Deduplication"),
        "{listing}"
    );
    assert!(
        line("cloud").contains("cloud files placeholder"),
        "{listing}"
    );
    assert!(!line("plain").contains('['), "{listing}");
    let json = String::from_utf8(ok(&["ls", "--json", s(&img), "/"])).unwrap();
    assert!(json.contains("\"note\""), "{json}");
    let out = restorefs(&["cat", s(&img), "/dedup"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0x80000013"), "{err}");
    assert_eq!(ok(&["cat", s(&img), "/plain"]), b"plain\n");
}

/// Commands that read a volume say first, on stderr, what may make it
/// differ from its newest state: here a truncated copy of a disk.
#[test]
fn reading_commands_repeat_the_volume_warnings() {
    let Some(dir) = generated("bare-ext4") else {
        return;
    };
    let tmp = scratch_dir();
    let img = tmp.path().join("truncated.img");
    std::fs::copy(dir.join("disk.img"), &img).unwrap();
    let full = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(full - (4 << 20))
        .unwrap();
    let want = format!("restorefs: warning: /: image is {} bytes", full - (4 << 20));
    let copy = tmp.path().join("README.txt");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut commands = vec![
        vec!["cat", s(&img), "/README.txt"],
        vec!["ls", s(&img), "/"],
        vec!["cp", s(&img), "/README.txt", s(&copy)],
    ];
    if fuse_available() {
        commands.push(vec!["mount", s(&img), s(&mnt)]);
    }
    for args in commands {
        let out = restorefs(&args);
        if args[0] == "mount" {
            ok(&["umount", s(&mnt)]);
        }
        assert!(out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // The untruncated disk: no warning.
    let out = restorefs(&["cat", s(&dir.join("disk.img")), "/README.txt"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
