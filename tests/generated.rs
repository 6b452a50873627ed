//! Generated disks (scripts/gen-testimages) read through the restore tree
//! and compared with the reference readers' manifests: every field of every
//! entry of every volume, plus the partition layout an independent reader saw.

mod common;

use std::path::Path;

use common::*;
use restorefs_parsers::tree::{RestoreTree, VolumeState};
use restorefs_parsers::volume::Scheme;
use serde_json::Value;

/// The tree's volumes agree with layout.json (from sfdisk -J and blkid).
fn check_layout(dir: &Path, tree: &RestoreTree) {
    let text = std::fs::read_to_string(dir.join("layout.json")).expect("layout.json");
    let layout: Value = serde_json::from_str(&text).expect("layout.json parses");
    let table = layout["table"].as_str().expect("table");
    assert_eq!(tree.table.scheme.name(), table, "partition table kind");
    if table == "none" {
        return;
    }
    let sector = layout["sector_size"].as_u64().unwrap_or(512);
    let want = layout["volumes"].as_array().expect("volumes");
    assert_eq!(tree.volumes.len(), want.len(), "volume count");
    for (w, got) in want.iter().zip(&tree.volumes) {
        let name = w["name"].as_str().expect("name");
        assert_eq!(got.name, name);
        let p = got.partition.as_ref().expect("partition");
        assert_eq!(
            p.offset,
            w["start_lba"].as_u64().expect("start") * sector,
            "{name} start"
        );
        assert_eq!(
            p.size,
            w["sectors"].as_u64().expect("sectors") * sector,
            "{name} size"
        );
        assert_eq!(
            p.type_id.to_lowercase(),
            w["type"].as_str().expect("type").to_lowercase(),
            "{name} type"
        );
        match (w["fs"].as_str(), &got.state) {
            (Some("extended"), _) => assert!(got.is_container(), "{name} extended"),
            (
                Some(fs @ ("ntfs" | "ext2" | "ext3" | "ext4" | "vfat" | "exfat")),
                VolumeState::Fs(_, f),
            ) => {
                let info = f.info();
                assert_eq!(info.kind, fs, "{name} filesystem");
                if let Some(label) = w["label"].as_str() {
                    assert_eq!(info.label.as_deref(), Some(label), "{name} label");
                }
            }
            (Some("ntfs" | "ext2" | "ext3" | "ext4" | "vfat" | "exfat"), _) => {
                panic!("{name}: filesystem not opened")
            }
            // What restorefs does not read yet is offered as raw bytes.
            (_, state) => assert!(!matches!(state, VolumeState::Fs(..)), "{name}"),
        }
    }
}

fn check(name: &str) -> Option<RestoreTree> {
    let dir = generated(name)?;
    let tree = check_image_manifests(&dir, &dir.join("disk.img"));
    check_layout(&dir, &tree);
    Some(tree)
}

#[test]
fn gpt_ntfs_ext4() {
    check("gpt-ntfs-ext4");
}

#[test]
fn mbr_logical_ext2_ext3_ext4() {
    check("mbr-logical");
}

#[test]
fn bare_ext4() {
    if let Some(tree) = check("bare-ext4") {
        assert!(tree.bare);
    }
}

#[test]
fn gpt_damaged_primary() {
    if let Some(tree) = check("gpt-damaged-primary") {
        assert!(
            matches!(
                tree.table.scheme,
                Scheme::Gpt {
                    from_backup: true,
                    ..
                }
            ),
            "the backup header must have been used"
        );
    }
}

#[test]
fn demo_restore_point() {
    let dir = repo().join("testimages/demo");
    let tree = check_image_manifests(&dir, &dir.join("demo.img"));
    assert_eq!(tree.volumes.len(), 2);
}

#[test]
fn win_gpt() {
    check("win-gpt");
}
