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

/// Runs the test-only generator (testdata/make_vhdx.py) on `raw`.
fn generate(raw: &std::path::Path, out: &std::path::Path, args: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/image/vhdx/testdata/make_vhdx.py"
    );
    run(Command::new("python3")
        .arg(script)
        .arg(raw)
        .arg(out)
        .args(args));
}

/// (media size, bytes per sector) as libvhdi's vhdiinfo reads them.
fn vhdiinfo(path: &std::path::Path) -> (u64, u64) {
    let out = run(Command::new("vhdiinfo").arg(path));
    let field = |name: &str| -> u64 {
        let line = out.lines().find(|l| l.contains(name)).unwrap();
        // "Media size : 20 MiB (20983808 bytes)", "Bytes per sector : 512 bytes"
        let inside = line.rsplit(['(', ':']).next().unwrap();
        inside.split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("Media size"), field("Bytes per sector"))
}

#[test]
fn generated_4k_logical_sectors() {
    if !have("python3", "--version") || !have("vhdiinfo", "-V") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let want = pattern((21 << 20) + 4096 * 3, 21);
    let raw = write(dir.path(), "in.raw", &want);
    let path = dir.path().join("g.vhdx");
    generate(&raw, &path, &["--logical", "4096", "--physical", "4096"]);
    let img = image::open(&path).unwrap();
    assert_eq!(detail(&img, "logical_sector"), "4096");
    assert_eq!(detail(&img, "physical_sector"), "4096");
    assert_eq!(detail(&img, "block_size"), (1u64 << 20).to_string());
    assert_eq!(vhdiinfo(&path), (want.len() as u64, 4096));
    assert!(read_all(&*img.disk) == want);
    random_reads(&*img.disk, &want, 1 << 20, 21);
}

#[test]
fn generated_sector_bitmap_entries_are_skipped() {
    if !have("python3", "--version") || !have("vhdiinfo", "-V") {
        return;
    }
    // 256 MiB blocks with 512-byte sectors: a sector bitmap entry follows
    // every 16 payload entries, so blocks 16+ sit one entry further on.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("sparse.raw");
    let size = (5u64 << 30) + 512 * 7;
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    let mut rng = crate::image::vhd::tests::Rng(5);
    let spots = [0u64, (16 << 28) - 3000, (17 << 28) + 5, size - 1000];
    for &at in &spots {
        let data: Vec<u8> = (0..1000).map(|_| rng.next() as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, at).unwrap();
    }
    drop(f);
    let path = dir.path().join("g.vhdx");
    generate(&raw, &path, &["--block", "256"]);
    assert_eq!(vhdiinfo(&path), (size, 512));
    let img = image::open(&path).unwrap();
    assert_eq!(img.disk.size(), size);
    assert_eq!(detail(&img, "allocated"), (4u64 << 28).to_string());
    let raw = crate::readat::FileSource::open(&raw).unwrap();
    let (mut a, mut b) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    for &at in &spots {
        let at = at.saturating_sub(20000).min(size - a.len() as u64);
        img.disk.read_exact_at(at, &mut a).unwrap();
        raw.read_exact_at(at, &mut b).unwrap();
        assert!(a == b, "at {at}");
    }
}

#[test]
fn differencing_disk_names_its_parent() {
    if !have("python3", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = write(dir.path(), "in.raw", &pattern(4 << 20, 3));
    let path = dir.path().join("child.vhdx");
    generate(&raw, &path, &["--parent", "..\\base.vhdx"]);
    let e = image::open(&path).err().unwrap();
    assert!(matches!(e.root(), crate::Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("relative_path=..\\base.vhdx"), "{e}");
}
