//! VHDX reader tests: qemu-img images, the Windows-made log image, a 4 KiB
//! sector image and damaged input.

use std::process::Command;

use crate::image::vhd::tests::{
    detail, have, pattern, qemu_raw, random_reads, read_all, run, write,
};
use crate::image::{self};
use crate::ReadAt;

fn qemu_case(opts: &str, seed: u64) {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = write(dir.path(), "in.raw", &pattern((70 << 20) + 512 * 5, seed));
    let vhdx = dir.path().join("t.vhdx");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vhdx", "-o", opts])
        .arg(&raw)
        .arg(&vhdx));
    let want = qemu_raw(dir.path(), &vhdx, "vhdx");
    let img = image::open(&vhdx).unwrap();
    assert_eq!(img.format, "vhdx");
    assert_eq!(img.disk.size(), want.len() as u64);
    assert!(read_all(&*img.disk) == want);
    let block: u64 = detail(&img, "block_size").parse().unwrap();
    if let Some(b) = opts.split(',').find_map(|o| o.strip_prefix("block_size=")) {
        let mib: u64 = b.trim_end_matches('M').parse().unwrap();
        assert_eq!(block, mib << 20);
    }
    let sub = if opts.contains("fixed") {
        "fixed"
    } else {
        "dynamic"
    };
    assert_eq!(detail(&img, "subformat"), sub);
    assert_eq!(detail(&img, "logical_sector"), "512");
    random_reads(&*img.disk, &want, block, seed);
}

#[test]
fn qemu_dynamic_1m() {
    qemu_case("subformat=dynamic,block_size=1M,log_size=1M", 11);
}

#[test]
fn qemu_dynamic_8m() {
    qemu_case("subformat=dynamic,block_size=8M,log_size=1M", 12);
}

#[test]
fn qemu_dynamic_32m() {
    qemu_case("subformat=dynamic,block_size=32M,log_size=1M", 13);
}

#[test]
fn qemu_fixed_8m() {
    qemu_case("subformat=fixed,block_size=8M,log_size=1M", 14);
}

/// Unpacks the Windows-made image whose log must be replayed.
pub(crate) fn log_replay_image(dir: &std::path::Path) -> std::path::PathBuf {
    let gz = "/work/shared/realimages/vhdx-log-replay.vhdx.gz";
    let bytes = Command::new("gzip").args(["-dc", gz]).output().unwrap();
    assert!(bytes.status.success());
    write(dir, "log.vhdx", &bytes.stdout)
}

#[test]
fn windows_image_needs_log_replay() {
    if !have("gzip", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log_replay_image(dir.path());
    let img = image::open(&path).unwrap();
    assert_eq!(img.disk.size(), 1 << 30);
    assert!(
        img.notes.iter().any(|n| n.contains("replayed")),
        "{:?}",
        img.notes
    );
    let mut mbr = [0u8; 512];
    img.disk.read_exact_at(0, &mut mbr).unwrap();
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    let part = |i: usize| {
        let e = &mbr[446 + 16 * i..462 + 16 * i];
        (
            e[4],
            u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
            u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
        )
    };
    assert_eq!(part(0), (0x83, 2048, 204800));
    assert_eq!(part(1), (0x83, 206848, 409600));
    assert_eq!(part(2).0, 0);
    // Both partitions read.
    let mut buf = vec![0u8; 1 << 20];
    img.disk.read_exact_at(2048 * 512, &mut buf).unwrap();
    img.disk.read_exact_at(206848 * 512, &mut buf).unwrap();
}
