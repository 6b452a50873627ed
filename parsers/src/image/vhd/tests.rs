//! VHD reader tests: images made by qemu-img and by a small test-only
//! writer, compared byte for byte with what qemu-img itself reads.
//!
//! Helpers here are shared with the VHDX tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::{self, Image};
use crate::ReadAt;

/// Seeded xorshift64: deterministic test data and choices.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Whether `tool` runs; when it does not, fail under CI (a missing tool must
/// not silently pass there) and skip otherwise.
pub(crate) fn have(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool).arg(arg).output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required when CI is set"
        );
        eprintln!("skipping: {tool} not installed");
    }
    ok
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw disk of `size` bytes with data runs, unwritten holes and written
/// zero runs of varied, sector-aligned lengths, from `seed`.
pub(crate) fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let len = ((1 + rng.below(6 << 11)) as usize * 512).min(size - pos);
        if rng.below(3) == 0 {
            for chunk in v[pos..pos + len].chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
        }
        pos += len;
    }
    v
}

/// Writes `data` to `dir/name`.
pub(crate) fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// What qemu-img reads from `image` (format `fmt`), as raw bytes.
pub(crate) fn qemu_raw(dir: &Path, image: &Path, fmt: &str) -> Vec<u8> {
    let out = dir.join("qemu-out.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", fmt, "-O", "raw"])
        .arg(image)
        .arg(&out));
    std::fs::read(out).unwrap()
}

/// Reads the whole disk in odd-sized pieces.
pub(crate) fn read_all(disk: &dyn ReadAt) -> Vec<u8> {
    let mut v = vec![0u8; disk.size() as usize];
    let step = (3 << 20) + 4097;
    let mut at = 0;
    while at < v.len() {
        let n = step.min(v.len() - at);
        disk.read_exact_at(at as u64, &mut v[at..at + n]).unwrap();
        at += n;
    }
    v
}

/// Random unaligned reads, many across block boundaries, equal `want`.
pub(crate) fn random_reads(disk: &dyn ReadAt, want: &[u8], block: u64, seed: u64) {
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; (3 * block) as usize + 1];
    for _ in 0..300 {
        let off = if rng.below(2) == 0 {
            // Near a block boundary.
            let b = rng.below(want.len() as u64 / block + 1) * block;
            b.saturating_sub(rng.below(4096)).min(want.len() as u64)
        } else {
            rng.below(want.len() as u64)
        };
        let len = (rng.below(buf.len() as u64) as usize).min(want.len() - off as usize);
        disk.read_exact_at(off, &mut buf[..len]).unwrap();
        assert!(
            buf[..len] == want[off as usize..off as usize + len],
            "read {len} at {off}"
        );
    }
}

pub(crate) fn detail(img: &Image, key: &str) -> String {
    img.facts
        .get(key)
        .unwrap_or_else(|| panic!("no fact {key}"))
}

/// A pattern disk of `len` bytes (from `seed`) that qemu-img converted to
/// its format `fmt` with `opts`, opened by us as `ours` and read whole,
/// byte for byte as qemu reads it back; the image and qemu's bytes.
pub(crate) fn qemu_converted(
    dir: &Path,
    len: usize,
    seed: u64,
    fmt: &str,
    opts: &str,
    ours: &str,
) -> (Image, Vec<u8>) {
    let raw = write(dir, "in.raw", &pattern(len, seed));
    let out = dir.join(format!("t.{ours}"));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt, "-o", opts])
        .arg(&raw)
        .arg(&out));
    let want = qemu_raw(dir, &out, fmt);
    let img = image::open(&out).unwrap();
    assert_eq!(img.format, ours);
    assert_eq!(img.disk.size(), want.len() as u64);
    assert!(read_all(&*img.disk) == want);
    (img, want)
}

fn qemu_case(opts: &str, seed: u64) {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, want) = qemu_converted(dir.path(), (37 << 20) + 512 * 3, seed, "vpc", opts, "vhd");
    let block = if opts.contains("fixed") {
        assert_eq!(detail(&img, "subformat"), "fixed");
        2 << 20
    } else {
        assert_eq!(detail(&img, "subformat"), "dynamic");
        detail(&img, "block_size").parse().unwrap()
    };
    random_reads(&*img.disk, &want, block, seed);
}

#[test]
fn qemu_dynamic() {
    qemu_case("subformat=dynamic", 1);
}

#[test]
fn qemu_dynamic_force_size() {
    qemu_case("subformat=dynamic,force_size=on", 2);
}

#[test]
fn qemu_fixed() {
    qemu_case("subformat=fixed", 3);
}

#[test]
fn qemu_fixed_force_size() {
    qemu_case("subformat=fixed,force_size=on", 4);
}

/// A dynamic (or differencing) VHD of `data` with `block`-byte blocks, made
/// as the specification lays it out; blocks of zeros are left unallocated.
pub(crate) fn build_vhd(data: &[u8], block: u32, disk_type: u32) -> Vec<u8> {
    use super::footer::checksum;
    let blocks = data.len().div_ceil(block as usize);
    let mut footer = vec![0u8; 512];
    footer[..8].copy_from_slice(b"conectix");
    footer[8..12].copy_from_slice(&2u32.to_be_bytes());
    footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    // "win ": qemu then sizes the disk from current_size, as we do.
    footer[28..32].copy_from_slice(b"win ");
    footer[40..48].copy_from_slice(&(data.len() as u64).to_be_bytes());
    footer[48..56].copy_from_slice(&(data.len() as u64).to_be_bytes());
    footer[56..60].copy_from_slice(&0xFFFF_10FFu32.to_be_bytes());
    footer[60..64].copy_from_slice(&disk_type.to_be_bytes());
    let c = checksum(&footer, 64);
    footer[64..68].copy_from_slice(&c.to_be_bytes());

    let bat_at = 1536usize;
    let bat_len = (blocks * 4).div_ceil(512) * 512;
    let locator_at = bat_at + bat_len;
    let mut file = footer.clone();
    file.resize(locator_at + 512, 0);
    let mut h = vec![0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&(bat_at as u64).to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&(blocks as u32).to_be_bytes());
    h[32..36].copy_from_slice(&block.to_be_bytes());
    for (i, c) in "base.vhd".encode_utf16().enumerate() {
        h[64 + 2 * i..66 + 2 * i].copy_from_slice(&c.to_be_bytes());
    }
    let path: Vec<u8> = ".\\base.vhd"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    h[576..580].copy_from_slice(b"W2ru");
    h[580..584].copy_from_slice(&1u32.to_be_bytes());
    h[584..588].copy_from_slice(&(path.len() as u32).to_be_bytes());
    h[592..600].copy_from_slice(&(locator_at as u64).to_be_bytes());
    file[locator_at..locator_at + path.len()].copy_from_slice(&path);
    let c = checksum(&h, 36);
    h[36..40].copy_from_slice(&c.to_be_bytes());
    file[512..1536].copy_from_slice(&h);
    let bitmap = ((block as usize / 512).div_ceil(8)).div_ceil(512) * 512;
    for (i, chunk) in data.chunks(block as usize).enumerate() {
        let entry = if chunk.iter().all(|&b| b == 0) {
            u32::MAX
        } else {
            let sector = (file.len() / 512) as u32;
            file.resize(file.len() + bitmap, 0xFF);
            file.extend_from_slice(chunk);
            file.resize(file.len() + (block as usize - chunk.len()), 0);
            sector
        };
        file[bat_at + 4 * i..bat_at + 4 * i + 4].copy_from_slice(&entry.to_be_bytes());
    }
    file.extend_from_slice(&footer);
    file
}

fn built_case(block: u32, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let want = pattern((41 << 20) + 512 * 3, seed);
    let path = write(dir.path(), "b.vhd", &build_vhd(&want, block, 3));
    let img = image::open(&path).unwrap();
    assert_eq!(detail(&img, "block_size"), block.to_string());
    assert_eq!(img.disk.size(), want.len() as u64);
    assert!(read_all(&*img.disk) == want);
    random_reads(&*img.disk, &want, u64::from(block), seed);
    if have("qemu-img", "--version") {
        assert!(qemu_raw(dir.path(), &path, "vpc") == want);
    }
    if have("vhdiinfo", "-V") {
        let out = run(Command::new("vhdiinfo").arg(&path));
        assert!(out.contains(&format!("({} bytes)", want.len())), "{out}");
    }
}

#[test]
fn built_512k_blocks() {
    built_case(512 << 10, 31);
}

#[test]
fn built_32m_blocks() {
    built_case(32 << 20, 32);
}

#[test]
fn damaged_primary_footer_falls_back_to_copy() {
    let dir = tempfile::tempdir().unwrap();
    let want = pattern(6 << 20, 9);
    let mut vhd = build_vhd(&want, 2 << 20, 3);
    let n = vhd.len();
    vhd[n - 512 + 48] ^= 0x40; // current size, so the checksum fails
    let path = write(dir.path(), "f.vhd", &vhd);
    let img = image::open(&path).unwrap();
    assert!(
        img.notes.iter().any(|n| n.contains("copy at offset 0")),
        "{:?}",
        img.notes
    );
    assert!(read_all(&*img.disk) == want);
}

#[test]
fn bat_entry_past_end_fails_only_that_block() {
    let dir = tempfile::tempdir().unwrap();
    let want = pattern(8 << 20, 10);
    let mut vhd = build_vhd(&want, 2 << 20, 3);
    // Point block 1 far past the end of the file.
    vhd[1536 + 4..1536 + 8].copy_from_slice(&0x0100_0000u32.to_be_bytes());
    let path = write(dir.path(), "p.vhd", &vhd);
    let img = image::open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = img
        .disk
        .read_exact_at(2 << 20, &mut buf)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("image offset {}", 0x0100_0000u64 * 512 + 512)),
        "{e}"
    );
    for at in [0u64, 4 << 20, 6 << 20] {
        if want[at as usize..at as usize + 4096]
            .iter()
            .any(|&b| b != 0)
            || at == 0
        {
            img.disk.read_exact_at(at, &mut buf).unwrap();
            assert!(buf[..] == want[at as usize..at as usize + 4096]);
        }
    }
}

#[test]
fn raw_disk_ending_in_a_footer_is_not_a_fixed_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = vec![0u8; 1 << 20];
    // A valid fixed-disk footer whose size does not account for the file.
    let footer = super::footer::tests::sample(2, 4096);
    raw[(1 << 20) - 512..].copy_from_slice(&footer);
    let path = write(dir.path(), "r.img", &raw);
    assert_eq!(image::open(&path).unwrap().format, "raw");
    let mut fixed = vec![7u8; 4096];
    fixed.extend_from_slice(&footer);
    let path = write(dir.path(), "f.vhd", &fixed);
    let img = image::open(&path).unwrap();
    assert_eq!((img.format, img.disk.size()), ("vhd", 4096));
}

/// Runs the spec-following test writer testdata/make_vhd.py.
fn make_vhd(raw: &Path, out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/image/vhd/testdata/make_vhd.py");
    run(Command::new("python3")
        .arg(script)
        .arg(raw)
        .arg(out)
        .args(args));
}

/// Three restore points of one disk: later points rewrite single sectors
/// and sector runs (or, `aligned`, only whole 4 KiB pages), zero data, and
/// write over holes.
pub(crate) fn three_points(size: usize, aligned: bool) -> [Vec<u8>; 3] {
    let p1 = pattern(size, 77);
    let mut rng = Rng(78);
    let mut next = |prev: &Vec<u8>, fill: u8| {
        let mut v = prev.clone();
        for i in 0..40 {
            let unit = if aligned { 4096 } else { 512 };
            let at = rng.below((size / unit) as u64) as usize * unit;
            let len =
                ((1 + rng.below(if aligned { 3 } else { 11 })) as usize * unit).min(size - at);
            let byte = if i % 5 == 0 {
                0
            } else {
                fill.wrapping_add(i as u8)
            };
            v[at..at + len].fill(byte);
        }
        v
    };
    let p2 = next(&p1, 0x20);
    let p3 = next(&p2, 0x30);
    [p1, p2, p3]
}

/// What vhdimount (libvhdi, an independent reader that follows parent
/// locators) shows of `image` and each of its parents, top layer last.
pub(crate) fn vhdimount_layers(image: &Path, mnt: &Path) -> Option<Vec<Vec<u8>>> {
    if !have("vhdimount", "-V") || !Path::new("/dev/fuse").exists() {
        return None;
    }
    std::fs::create_dir_all(mnt).unwrap();
    run(Command::new("vhdimount").arg(image).arg(mnt));
    let mut layers = Vec::new();
    for i in 1.. {
        match std::fs::read(mnt.join(format!("vhdi{i}"))) {
            Ok(v) => layers.push(v),
            Err(_) => break,
        }
    }
    let _ = Command::new("fusermount3").arg("-u").arg(mnt).output();
    Some(layers)
}

/// Writes the three points as base.vhd <- mid.vhd <- top.vhd.
fn vhd_chain(dir: &Path, points: &[Vec<u8>; 3], block: &str) -> [PathBuf; 3] {
    let raws: Vec<PathBuf> = points
        .iter()
        .enumerate()
        .map(|(i, p)| write(dir, &format!("p{}.raw", i + 1), p))
        .collect();
    let files = [
        dir.join("base.vhd"),
        dir.join("mid.vhd"),
        dir.join("top.vhd"),
    ];
    make_vhd(&raws[0], &files[0], &["--block", block]);
    for i in 1..3 {
        make_vhd(
            &raws[i],
            &files[i],
            &[
                "--block",
                block,
                "--parent",
                files[i - 1].to_str().unwrap(),
                "--parent-raw",
                raws[i - 1].to_str().unwrap(),
            ],
        );
    }
    files
}

#[test]
fn differencing_chain_of_three() {
    if !have("python3", "--version") {
        return;
    }
    for (aligned, block) in [(true, "2097152"), (false, "524288")] {
        let dir = tempfile::tempdir().unwrap();
        let points = three_points((5 << 20) + 512 * 7, aligned);
        let files = vhd_chain(dir.path(), &points, block);
        for (i, (file, want)) in files.iter().zip(&points).enumerate() {
            let img = image::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(img.chain.len(), i + 1);
            assert!(
                img.chain
                    .iter()
                    .all(|l| l.link.is_none()
                        || matches!(l.check, crate::image::LinkCheck::Ok { .. }))
            );
            assert!(
                read_all(&*img.disk) == *want,
                "point {} (aligned {aligned})",
                i + 1
            );
            random_reads(&*img.disk, want, 512 << 10, i as u64);
        }
        // libvhdi 20210425 reads a partly set bitmap byte wrongly (every
        // sector after the first set one counts as set), so it is the
        // reference only where changes cover whole bitmap bytes.
        if aligned {
            if let Some(layers) = vhdimount_layers(&files[2], &dir.path().join("mnt")) {
                assert_eq!(layers.len(), 3);
                assert!(layers[0] == points[0], "vhdimount: base");
                assert!(layers.contains(&points[2]), "vhdimount: top");
                assert!(layers.contains(&points[1]), "vhdimount: mid");
            }
        }
    }
}

#[test]
fn differencing_locators_and_link_errors() {
    if !have("python3", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let points = three_points(2 << 20, false);
    let raws: Vec<PathBuf> = points
        .iter()
        .enumerate()
        .map(|(i, p)| write(d, &format!("p{}.raw", i + 1), p))
        .collect();
    let base = d.join("base.vhd");
    make_vhd(&raws[0], &base, &[]);
    let child = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec![
            "--parent",
            base.to_str().unwrap(),
            "--parent-raw",
            raws[0].to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        make_vhd(&raws[1], &out, &args);
        out
    };
    // Each locator alone finds the parent: W2ku by file name, as its
    // absolute path is from another machine.
    for loc in ["W2ru", "W2ku", "MacX", ""] {
        let c = child(&format!("only-{loc}.vhd"), &["--locators", loc]);
        let img = image::open(&c).unwrap_or_else(|e| panic!("{loc}: {e}"));
        assert!(read_all(&*img.disk) == points[1], "{loc}");
    }
    // A parent whose unique id differs (another disk, or one changed since).
    let wrong = child(
        "wrong.vhd",
        &["--parent-uid", "00112233445566778899aabbccddeeff"],
    );
    let e = image::open(&wrong).err().unwrap();
    assert!(matches!(e.root(), crate::Error::Chain(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("unique id") && msg.contains("wrong.vhd") && msg.contains("base.vhd"),
        "{msg}"
    );
    let opts = image::OpenOptions {
        parents: Vec::new(),
        ignore_link_check: true,
    };
    let img = image::open_with(&wrong, &opts).unwrap();
    assert!(
        img.notes.iter().any(|n| n.contains("link check ignored")),
        "{:?}",
        img.notes
    );
    // The parent moved away: both files are named.
    let ok = child("ok.vhd", &[]);
    let moved = d.join("elsewhere.vhd");
    std::fs::rename(&base, &moved).unwrap();
    let e = image::open(&ok).err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("ok.vhd") && msg.contains("base.vhd"), "{msg}");
    let img = image::open_with(
        &ok,
        &image::OpenOptions {
            parents: vec![moved.clone()],
            ignore_link_check: false,
        },
    )
    .unwrap();
    assert!(read_all(&*img.disk) == points[1]);
    // A truncated delta fails to open or to read, and never panics.
    std::fs::rename(&moved, &base).unwrap();
    let bytes = std::fs::read(&ok).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 512, 1024] {
        let t = write(d, "cut.vhd", &bytes[..cut]);
        if let Ok(img) = image::open(&t) {
            let mut buf = vec![0u8; img.disk.size() as usize];
            assert!(img.disk.read_exact_at(0, &mut buf).is_err() || buf == points[1]);
        }
    }
}
