//! The Windows-like disk (generated image `win-gpt`: a FAT32 ESP, an MSR,
//! C: on NTFS with a fragmented `$MFT`, compressed folders, sparse files,
//! streams, reparse-point symlinks and junctions, hard links, and a
//! recovery volume), as VMDK and VHDX, through the command line: every
//! volume copied out matches the reference readers' manifests (ntfs-3g;
//! mtools for the ESP), and single files, streams and links read as they
//! should. The library and the mount check the same manifests in
//! tests/generated.rs, tests/containers.rs and tests/mount_manifests.rs.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::*;
use serde_json::Value;

/// The disk as a VMDK (monolithic sparse) and a dynamic VHDX.
fn images(dir: &Path) -> Vec<PathBuf> {
    CONTAINERS
        .iter()
        .filter(|(file, ..)| matches!(*file, "disk.sparse.vmdk" | "disk.dynamic.vhdx"))
        .map(|(file, fmt, opts)| container(dir, file, fmt, opts))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

#[test]
fn windows_disk_through_the_cli() {
    let Some(dir) = generated("win-gpt") else {
        return;
    };
    let imgs = images(&dir);
    assert_eq!(imgs.len(), 2);
    for img in &imgs {
        let i = s(img);
        // Every volume with a manifest, copied out whole.
        for vol in manifest_volumes(&dir) {
            let tmp = scratch_dir();
            let dest = tmp.path().join("out");
            ok(&["cp", "-r", i, &format!("/{vol}"), s(&dest)]);
            assert_copy_matches(
                &format!("cp -r {i}:{vol}"),
                &dest,
                &dir.join("manifest").join(format!("{vol}.jsonl")),
            );
        }

        // The table as Windows made it: what each volume is.
        let v: Value = serde_json::from_slice(&ok(&["info", i, "--json"])).unwrap();
        let vols = v["volumes"].as_array().expect("volumes");
        let kinds: Vec<(&str, &str)> = vols
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or(""),
                    v["filesystem"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [("p1", "vfat"), ("p2", "-"), ("p3", "ntfs"), ("p4", "ntfs")],
            "{v}"
        );

        let names: Vec<&str> = vols
            .iter()
            .map(|v| v["type_name"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            names,
            [
                "EFI system",
                "Microsoft reserved",
                "basic data",
                "Windows recovery"
            ]
        );
        // The text table: each row's columns start under their heading.
        let text = String::from_utf8(ok(&["info", i])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.starts_with("VOLUME"))
            .expect("table heading");
        for (row, ty, fs) in [
            (1, "EFI system", "vfat"),
            (2, "Microsoft reserved", "-"),
            (3, "basic data", "ntfs"),
        ] {
            let l = lines[head + row];
            assert_eq!(l.find(ty), lines[head].find("TYPE"), "{text}");
            assert_eq!(
                l[lines[head].find(" FS ").unwrap() + 1..].split(' ').next(),
                Some(fs),
                "{text}"
            );
        }

        let c = load_manifest(&dir.join("manifest/p3.jsonl"));
        // Compressed, sparse and hard-linked files, read one by one.
        for path in [
            "/Windows/Logs/CBS/CBS.log",
            "/Windows/Logs/CBS/mixed_units.bin",
            "/Windows/Logs/CBS/CbsPersist_20200913.cab",
            "/Users/alice/Documents/Archive 2019/invoice_005.csv",
            "/pagefile.sys",
            "/hiberfil.sys",
            "/Windows/System32/notepad.exe",
        ] {
            let bytes = ok(&["cat", i, &format!("/p3{path}")]);
            assert_eq!(
                Some(sha256_hex(&bytes).as_str()),
                c[path]["sha256"].as_str(),
                "{i}:{path}"
            );
        }
        assert_eq!(
            c["/Windows/notepad.exe"]["link_group"],
            c["/Windows/System32/notepad.exe"]["link_group"]
        );
        // A Zone.Identifier stream, as PATH:stream.
        let zone = base64::engine::general_purpose::STANDARD
            .decode(
                c["/Users/alice/Downloads/setup.exe"]["xattrs"]["user.Zone.Identifier"]
                    .as_str()
                    .expect("stream in the manifest"),
            )
            .unwrap();
        assert!(zone.starts_with(b"[ZoneTransfer]\r\nZoneId=3"));
        assert_eq!(
            ok(&[
                "cat",
                i,
                "/p3/Users/alice/Downloads/setup.exe:Zone.Identifier"
            ]),
            zone
        );
        // Junctions list as links to where they point inside the volume.
        let ls = String::from_utf8(ok(&["ls", "--json", i, "/p3/Users"])).unwrap();
        let all_users: Value = ls
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
            .find(|e| e["path"] == "/p3/Users/All Users")
            .unwrap_or_else(|| panic!("no All Users in {ls}"));
        assert_eq!(all_users["type"], "symlink", "{all_users}");
        assert_eq!(all_users["target"], "../ProgramData", "{all_users}");
        // The ESP's boot loader, through the FAT32 reader.
        let e = load_manifest(&dir.join("manifest/p1.jsonl"));
        let boot = ok(&["cat", i, "/p1/EFI/Microsoft/Boot/bootmgfw.efi"]);
        assert_eq!(
            Some(sha256_hex(&boot).as_str()),
            e["/EFI/Microsoft/Boot/bootmgfw.efi"]["sha256"].as_str()
        );
    }
}
