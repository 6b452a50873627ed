//! VHDX reader tests: qemu-img images, the Windows-made log image, a 4 KiB
//! sector image and damaged input.

use std::process::Command;

use crate::image::vhd::tests::{
    detail, have, pattern, qemu_converted, random_reads, read_all, run, write,
};
use crate::image::{self};
use crate::ReadAt;

fn qemu_case(opts: &str, seed: u64) {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, want) = qemu_converted(dir.path(), (70 << 20) + 512 * 5, seed, "vhdx", opts, "vhdx");
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
    assert_eq!(detail(&img, "logical_sector_size"), "512");
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
    let gz = crate::testutil::real_image("vhdx-log-replay.vhdx.gz");
    let bytes = Command::new("gzip").arg("-dc").arg(gz).output().unwrap();
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
    assert_eq!(detail(&img, "logical_sector_size"), "4096");
    assert_eq!(detail(&img, "physical_sector_size"), "4096");
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
    assert_eq!(detail(&img, "allocated_bytes"), (4u64 << 28).to_string());
    let raw = crate::readat::FileSource::open(&raw).unwrap();
    let (mut a, mut b) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    for &at in &spots {
        let at = at.saturating_sub(20000).min(size - a.len() as u64);
        img.disk.read_exact_at(at, &mut a).unwrap();
        raw.read_exact_at(at, &mut b).unwrap();
        assert!(a == b, "at {at}");
    }
}

/// An image with a few bytes changed and maybe cut short, without copying it.
struct Mutated {
    base: std::sync::Arc<Vec<u8>>,
    len: u64,
    patches: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Mutated {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = crate::readat::clamp_len(self.len, offset, buf.len());
        if n == 0 {
            return Ok(0);
        }
        let (s, e) = (offset as usize, offset as usize + n);
        buf[..n].copy_from_slice(&self.base[s..e]);
        for (at, bytes) in &self.patches {
            for (i, &b) in bytes.iter().enumerate() {
                let p = *at as usize + i;
                if (s..e).contains(&p) {
                    buf[p - s] = b;
                }
            }
        }
        Ok(n)
    }
}

/// Opens `src` as image::open would, then reads a bounded sample of it:
/// the point is no panic, no hang, and bounded allocation.
fn open_and_read(src: crate::Source, rng: &mut crate::image::vhd::tests::Rng) {
    let path = std::path::Path::new("mutated");
    let img = if super::probe(&*src) {
        super::open(path, src)
    } else if crate::image::vhd::probe(&*src) {
        crate::image::vhd::open(path, src)
    } else {
        return;
    };
    let Ok(img) = img else { return };
    let size = img.disk.size();
    let mut buf = vec![0u8; 256 << 10];
    let _ = img.disk.read_at(0, &mut buf);
    for _ in 0..8 {
        let at = rng.below(size);
        let n = rng.below(buf.len() as u64) as usize;
        let _ = img.disk.read_at(at, &mut buf[..n]);
    }
}

/// Spots worth damaging in an image: (start, length, checksummed structure
/// to re-seal after the change, as (start, length, checksum field, kind)).
type Spot = (u64, u64, Option<(u64, usize, usize, u8)>);

fn mutate_all(image: Vec<u8>, spots: &[Spot], cases: usize, seed: u64) {
    let base = std::sync::Arc::new(image);
    let mut rng = crate::image::vhd::tests::Rng(seed);
    for case in 0..cases {
        let mut m = Mutated {
            base: base.clone(),
            len: base.len() as u64,
            patches: Vec::new(),
        };
        if case % 10 == 9 {
            m.len = rng.below(base.len() as u64);
        }
        let &(start, len, seal) = &spots[rng.below(spots.len() as u64) as usize];
        let flips = 1 + rng.below(4);
        let mut changed: Vec<(u64, u8)> = (0..flips)
            .map(|_| {
                let at = (start + rng.below(len)).min(base.len() as u64 - 1);
                let v = match rng.below(3) {
                    0 => base[at as usize] ^ (1 << rng.below(8)),
                    1 => 0xFF,
                    _ => rng.next() as u8,
                };
                (at, v)
            })
            .collect();
        match seal {
            // Re-seal half the time, so parsing past the checksum is tried.
            Some((s, l, field, kind)) if rng.below(2) == 0 => {
                let mut block = base[s as usize..s as usize + l].to_vec();
                for (at, v) in changed.drain(..) {
                    if (s..s + l as u64).contains(&at) {
                        block[(at - s) as usize] = v;
                    }
                }
                reseal(&mut block, field, kind);
                m.patches.push((s, block));
            }
            _ => m
                .patches
                .extend(changed.into_iter().map(|(at, v)| (at, vec![v]))),
        }
        open_and_read(std::sync::Arc::new(m), &mut rng);
    }
}

/// Recomputes a checksum: kind 0 = VHDX CRC-32C, 1 = VHD one's complement.
fn reseal(block: &mut [u8], field: usize, kind: u8) {
    block[field..field + 4].fill(0);
    if kind == 0 {
        let c = crc32c::crc32c(block);
        block[field..field + 4].copy_from_slice(&c.to_le_bytes());
    } else {
        let c = crate::image::vhd::footer_checksum(block, field);
        block[field..field + 4].copy_from_slice(&c.to_be_bytes());
    }
}

#[test]
fn mutated_vhdx_never_panics_or_hangs() {
    if !have("gzip", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = std::fs::read(log_replay_image(dir.path())).unwrap();
    let log = 1u64 << 20;
    let spots: Vec<Spot> = vec![
        (0, 16, None),
        (64 << 10, 128, Some((64 << 10, 4096, 4, 0))),
        (128 << 10, 128, Some((128 << 10, 4096, 4, 0))),
        (192 << 10, 128, Some((192 << 10, 64 << 10, 4, 0))),
        (256 << 10, 128, Some((256 << 10, 64 << 10, 4, 0))),
        (2 << 20, 256, None),
        ((2 << 20) + (64 << 10), 64, None),
        (3 << 20, 4096, None),
        (log, 128, None),
        (log, 64 << 10, None),
    ];
    mutate_all(image, &spots, 2000, 77);
}

#[test]
fn mutated_vhd_never_panics_or_hangs() {
    let image = crate::image::vhd::tests::build_vhd(&pattern(9 << 20, 4), 512 << 10, 3);
    let end = image.len() as u64 - 512;
    let spots: Vec<Spot> = vec![
        (0, 96, Some((0, 512, 64, 1))),
        (end, 96, Some((end, 512, 64, 1))),
        (512, 64, Some((512, 1024, 36, 1))),
        (1536, 512, None),
    ];
    mutate_all(image, &spots, 1500, 78);
}

/// Writes the points as base.vhdx <- mid.avhdx <- top.avhdx (Hyper-V
/// checkpoints are .avhdx), with `extra` generator options.
fn vhdx_chain(
    dir: &std::path::Path,
    points: &[Vec<u8>; 3],
    extra: &[&str],
) -> [std::path::PathBuf; 3] {
    let raws: Vec<_> = points
        .iter()
        .enumerate()
        .map(|(i, p)| write(dir, &format!("p{}.raw", i + 1), p))
        .collect();
    let files = [
        dir.join("base.vhdx"),
        dir.join("mid.avhdx"),
        dir.join("top.avhdx"),
    ];
    generate(&raws[0], &files[0], extra);
    for i in 1..3 {
        let mut args = vec![
            "--parent",
            files[i - 1].to_str().unwrap(),
            "--parent-raw",
            raws[i - 1].to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        generate(&raws[i], &files[i], &args);
    }
    files
}

#[test]
fn differencing_chain_of_three() {
    if !have("python3", "--version") {
        return;
    }
    for (extra, seed_size) in [
        (&[][..], (9 << 20) + 512 * 3),
        (&["--logical", "4096", "--physical", "4096"][..], 9 << 20),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let points = crate::image::vhd::tests::three_points(seed_size, !extra.is_empty());
        let files = vhdx_chain(dir.path(), &points, extra);
        for (i, (file, want)) in files.iter().zip(&points).enumerate() {
            let img = image::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(img.chain.len(), i + 1);
            assert!(
                img.chain
                    .iter()
                    .all(|l| l.link.is_none()
                        || matches!(l.check, crate::image::LinkCheck::Ok { .. }))
            );
            assert!(read_all(&*img.disk) == *want, "point {} {extra:?}", i + 1);
            random_reads(&*img.disk, want, 1 << 20, i as u64);
        }
        // libvhdi follows the same locators and bitmaps on its own.
        let mnt = dir.path().join("mnt");
        if let Some(layers) = crate::image::vhd::tests::vhdimount_layers(&files[2], &mnt) {
            assert_eq!(layers.len(), 3);
            for (i, p) in points.iter().enumerate() {
                assert!(layers.contains(p), "vhdimount: point {} {extra:?}", i + 1);
            }
        }
    }
}

#[test]
fn differencing_zero_block_reads_zeros() {
    if !have("python3", "--version") {
        return;
    }
    // A child that zeroes a whole block gets a ZERO entry, which reads as
    // zeros, not as the parent (libvhdi 20210425 reads the parent there,
    // so it is no reference for this case).
    let dir = tempfile::tempdir().unwrap();
    let p1 = pattern(4 << 20, 9)
        .iter()
        .map(|b| b | 1)
        .collect::<Vec<u8>>();
    let mut p2 = p1.clone();
    p2[1 << 20..2 << 20].fill(0);
    p2[3 << 20..(3 << 20) + 512].fill(7);
    let p3 = p2.clone();
    let files = vhdx_chain(dir.path(), &[p1, p2.clone(), p3], &[]);
    let img = image::open(&files[1]).unwrap();
    assert!(read_all(&*img.disk) == p2);
}

#[test]
fn differencing_locators_and_link_errors() {
    if !have("python3", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let points = crate::image::vhd::tests::three_points(3 << 20, false);
    let r1 = write(d, "p1.raw", &points[0]);
    let r2 = write(d, "p2.raw", &points[1]);
    let base = d.join("base.vhdx");
    generate(&r1, &base, &[]);
    let child = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec![
            "--parent",
            base.to_str().unwrap(),
            "--parent-raw",
            r1.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        generate(&r2, &out, &args);
        out
    };
    // Each path alone finds the parent; the absolute and volume paths are
    // from another machine and are found by file name.
    for loc in ["relative_path", "absolute_win32_path", "volume_path"] {
        let c = child(&format!("{loc}.avhdx"), &["--locators", loc]);
        let img = image::open(&c).unwrap_or_else(|e| panic!("{loc}: {e}"));
        assert!(read_all(&*img.disk) == points[1], "{loc}");
    }
    // parent_linkage naming another disk's data write GUID.
    let wrong = child(
        "wrong.avhdx",
        &["--linkage", "01234567-89ab-cdef-0123-456789abcdef"],
    );
    let e = image::open(&wrong).err().unwrap();
    assert!(matches!(e.root(), crate::Error::Chain(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("data write GUID") && msg.contains("wrong.avhdx") && msg.contains("base.vhdx"),
        "{msg}"
    );
    let img = image::open_with(
        &wrong,
        &image::OpenOptions {
            parents: Vec::new(),
            ignore_link_check: true,
        },
    )
    .unwrap();
    assert!(img.chain[0].check.failed());
    assert!(read_all(&*img.disk) == points[1]);
    // A renamed parent: both files are named; --parent opens it.
    let ok = child("ok.avhdx", &[]);
    let renamed = d.join("renamed.vhdx");
    std::fs::rename(&base, &renamed).unwrap();
    let msg = image::open(&ok).err().unwrap().to_string();
    assert!(
        msg.contains("ok.avhdx") && msg.contains("base.vhdx"),
        "{msg}"
    );
    let opts = image::OpenOptions {
        parents: vec![renamed],
        ignore_link_check: false,
    };
    assert!(read_all(&*image::open_with(&ok, &opts).unwrap().disk) == points[1]);
    // A cycle: a child named as its own parent.
    let selfish = d.join("self.avhdx");
    std::fs::copy(&ok, &selfish).unwrap();
    let opts = image::OpenOptions {
        parents: vec![selfish.clone()],
        ignore_link_check: true,
    };
    let msg = image::open_with(&selfish, &opts).err().unwrap().to_string();
    assert!(msg.contains("cycle"), "{msg}");
}
