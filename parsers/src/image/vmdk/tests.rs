//! VMDK tests: real third-party images, qemu-img made images of every
//! subformat compared byte for byte with qemu's own raw conversion, a
//! cross-check with libvmdk's `vmdkinfo`, and hostile input.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::readat::MemSource;

/// A seeded xorshift64* generator: deterministic cases without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Whether `tool` runs; a missing tool fails under CI instead of skipping.
fn have(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool).arg(arg).output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed and CI is set"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw disk of `size` bytes: random data, holes never written, written
/// zero runs and data at unaligned places, from `seed`.
fn pattern_raw(path: &Path, size: u64, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(seed);
    let unit = 48 * 1024u64; // not a grain multiple: runs straddle grains
    let mut at = 0;
    while at < size {
        let n = unit.min(size - at);
        match rng.below(8) {
            0..=2 => {}
            3 => f.write_all_at(&vec![0u8; n as usize], at).unwrap(),
            4 => {
                let off = rng.below(n);
                let len = rng.below(n - off) + 1;
                let d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                f.write_all_at(&d, at + off).unwrap();
            }
            _ => {
                let d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                f.write_all_at(&d, at).unwrap();
            }
        }
        at += n;
    }
}

fn read_all(disk: &dyn ReadAt) -> Vec<u8> {
    let mut v = vec![0u8; disk.size() as usize];
    disk.read_exact_at(0, &mut v).unwrap();
    v
}

fn random_reads(disk: &dyn ReadAt, reference: &[u8], seed: u64, count: usize) {
    assert_eq!(disk.size(), reference.len() as u64);
    let mut rng = Rng(seed);
    let size = reference.len() as u64;
    for _ in 0..count {
        let off = rng.below(size);
        let len = (rng.below(200_000) + 1).min(size - off) as usize;
        let mut buf = vec![0xAAu8; len];
        disk.read_exact_at(off, &mut buf).unwrap();
        assert!(
            buf[..] == reference[off as usize..off as usize + len],
            "read of {len} at {off} differs"
        );
    }
}

fn to_vmdk(raw: &Path, out: &Path, opts: &str) {
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", "vmdk"]);
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    run(c.arg(raw).arg(out));
}

fn qemu_raw(vmdk: &Path, out: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(vmdk)
        .arg(out));
}

fn detail(img: &Image, key: &str) -> Option<String> {
    img.facts.get(key)
}

fn sha1_of(disk: &dyn ReadAt) -> String {
    let mut h = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < disk.size() {
        let n = (disk.size() - at).min(buf.len() as u64) as usize;
        disk.read_exact_at(at, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.digest().to_string().to_uppercase()
}

#[test]
fn real_monolithic_sparse() {
    let img = crate::image::open(&crate::testutil::real_image("monolithicSparse.vmdk")).unwrap();
    assert_eq!(img.format, "vmdk");
    assert_eq!(img.disk.size(), 10 << 20);
    assert_eq!(
        detail(&img, "subformat").as_deref(),
        Some("monolithicSparse")
    );
    assert_eq!(detail(&img, "cid").as_deref(), Some("00000000"));
    assert_eq!(detail(&img, "block_size").as_deref(), Some("65536"));
    assert_eq!(detail(&img, "compression").as_deref(), Some("none"));
    assert_eq!(detail(&img, "allocated_bytes").as_deref(), Some("3407872"));
    assert_eq!(
        detail(&img, "extents").as_deref(),
        Some("SPARSE monolithicSparse.vmdk (10485760 bytes)")
    );
    assert!(detail(&img, "cache_budget").is_some());
    assert!(img.notes.is_empty(), "{:?}", img.notes);
    assert_eq!(
        sha1_of(&*img.disk),
        "DD2FADE471D68658B2EBBFF7474F5D0A99DA8989"
    );
}

#[test]
fn real_stream_with_markers() {
    let img = crate::image::open(&crate::testutil::real_image(
        "streamOptimizedWithMarkers.vmdk",
    ))
    .unwrap();
    assert_eq!(
        detail(&img, "subformat").as_deref(),
        Some("streamOptimized")
    );
    assert_eq!(detail(&img, "compression").as_deref(), Some("deflate"));
    assert_eq!(
        sha1_of(&*img.disk),
        "B6FD01DD1B93B3589E6D76F7507AF55C589EF69D"
    );
}

#[test]
fn real_compressed_stream() {
    let img =
        crate::image::open(&crate::testutil::real_image("compressed_stream_opt.vmdk")).unwrap();
    assert_eq!(img.disk.size(), 65536);
    let mut b = [0u8; 16];
    img.disk.read_exact_at(0, &mut b).unwrap();
    let want: Vec<u8> = (0..16).collect();
    assert_eq!(b[..], want[..]);
}

/// Every subformat and option qemu-img writes reads back as qemu reads it.
#[test]
fn qemu_subformats_match_qemu_raw() {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    // Not a grain multiple, so the last grain is partial.
    let size = 5 * 1024 * 1024 + 3 * 512;
    pattern_raw(&raw, size, 0x5eed_1234);
    let original = std::fs::read(&raw).unwrap();
    let cases = [
        ("monolithicSparse", "subformat=monolithicSparse"),
        ("monolithicFlat", "subformat=monolithicFlat"),
        ("twoGbMaxExtentSparse", "subformat=twoGbMaxExtentSparse"),
        ("twoGbMaxExtentFlat", "subformat=twoGbMaxExtentFlat"),
        ("streamOptimized", "subformat=streamOptimized"),
        ("monolithicSparse", "compat6=on"),
        ("monolithicSparse", "adapter_type=lsilogic"),
        ("monolithicSparse", "zeroed_grain=on"),
        (
            "streamOptimized",
            "subformat=streamOptimized,adapter_type=buslogic",
        ),
        (
            "monolithicFlat",
            "subformat=monolithicFlat,adapter_type=legacyESX",
        ),
    ];
    for (i, (create_type, opts)) in cases.iter().enumerate() {
        // Extent files sit in their own folder under a name unlike the
        // descriptor's, to prove names come from the descriptor.
        let sub = dir.path().join(format!("case{i}"));
        std::fs::create_dir(&sub).unwrap();
        let vmdk = sub.join("disk image.vmdk");
        to_vmdk(&raw, &vmdk, opts);
        let back = sub.join("back.raw");
        qemu_raw(&vmdk, &back);
        let want = std::fs::read(&back).unwrap();
        assert_eq!(want, original, "{opts}: qemu round trip");
        let img = crate::image::open(&vmdk).unwrap_or_else(|e| panic!("{opts}: {e}"));
        assert_eq!(img.format, "vmdk");
        assert_eq!(
            detail(&img, "subformat").as_deref(),
            Some(*create_type),
            "{opts}"
        );
        let allocated: u64 = img
            .facts
            .allocated_bytes
            .unwrap_or_else(|| panic!("{opts}: allocated in {:?}", img.facts));
        assert!(
            allocated > 0 && allocated <= size + 65536,
            "{opts}: {allocated}"
        );
        let got = read_all(&*img.disk);
        assert!(got == want, "{opts}: virtual disk differs from qemu's");
        random_reads(&*img.disk, &want, 0x1000 + i as u64, 300);
    }
}

/// A disk over 2 GiB split by qemu into 2 GiB extents, read across the split.
#[test]
fn two_gb_split_extents() {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let size: u64 = (2 << 30) + (64 << 20) + 4096;
    let f = File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(77);
    for at in [0u64, (2 << 30) - 100_000, size - 300_000] {
        let d: Vec<u8> = (0..200_000).map(|_| rng.next() as u8).collect();
        f.write_all_at(&d, at).unwrap();
    }
    drop(f);
    for (i, fmt) in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"]
        .iter()
        .enumerate()
    {
        let vmdk = dir.path().join(format!("big{i}.vmdk"));
        to_vmdk(&raw, &vmdk, &format!("subformat={fmt}"));
        let back = dir.path().join(format!("back{i}.raw"));
        qemu_raw(&vmdk, &back);
        let img = crate::image::open(&vmdk).unwrap();
        assert_eq!(img.disk.size(), size);
        assert!(detail(&img, "extents").unwrap().contains("; "), "{fmt}");
        let back = crate::readat::FileSource::open(&back).unwrap();
        let mut a = vec![0u8; 8 << 20];
        let mut b = vec![0u8; 8 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(a.len() as u64) as usize;
            img.disk.read_exact_at(at, &mut a[..n]).unwrap();
            back.read_exact_at(at, &mut b[..n]).unwrap();
            assert!(a[..n] == b[..n], "{fmt}: differs in 8 MiB at {at}");
            at += n as u64;
        }
        // Unaligned reads across the extent boundary.
        let mut rng = Rng(99 + i as u64);
        for _ in 0..200 {
            let off = (2u64 << 30) - 150_000 + rng.below(200_000);
            let len = rng.below(150_000) as usize + 1;
            img.disk.read_exact_at(off, &mut a[..len]).unwrap();
            back.read_exact_at(off, &mut b[..len]).unwrap();
            assert!(a[..len] == b[..len], "{fmt}: read of {len} at {off}");
        }
    }
}

/// libvmdk, an independent reader, agrees on size and content id.
#[test]
fn vmdkinfo_agrees() {
    if !have("qemu-img", "--version") || !have("vmdkinfo", "-V") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    pattern_raw(&raw, 3 << 20, 3);
    for fmt in ["monolithicSparse", "streamOptimized", "twoGbMaxExtentFlat"] {
        let vmdk = dir.path().join(format!("{fmt}.vmdk"));
        to_vmdk(&raw, &vmdk, &format!("subformat={fmt}"));
        let info = run(Command::new("vmdkinfo").arg(&vmdk));
        let img = crate::image::open(&vmdk).unwrap();
        let media = info
            .lines()
            .find(|l| l.contains("Media size"))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok())
            .expect("vmdkinfo media size");
        assert_eq!(media, img.disk.size(), "{fmt}");
        let cid = info
            .lines()
            .find(|l| l.contains("Content identifier") && !l.contains("Parent"))
            .and_then(|l| l.split("0x").nth(1))
            .map(|s| s.trim().to_string())
            .expect("vmdkinfo content id");
        let ours = detail(&img, "cid").unwrap();
        assert_eq!(
            u32::from_str_radix(&cid, 16).unwrap(),
            u32::from_str_radix(&ours, 16).unwrap(),
            "{fmt}"
        );
        assert_eq!(read_all(&*img.disk), std::fs::read(&raw).unwrap());
    }
}

/// A qemu monolithicSparse image in memory, with its header.
fn qemu_sparse(size: u64, opts: &str) -> Option<Vec<u8>> {
    if !have("qemu-img", "--version") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    pattern_raw(&raw, size, 11);
    // Every grain allocated, so every table entry is a real sector.
    let d: Vec<u8> = (0..size).map(|i| (i / 512) as u8 | 1).collect();
    std::fs::write(&raw, &d).unwrap();
    let vmdk = dir.path().join("s.vmdk");
    to_vmdk(&raw, &vmdk, opts);
    Some(std::fs::read(&vmdk).unwrap())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Byte offset of grain table entry `g` in the primary (or redundant) table.
fn gte_at(img: &[u8], g: usize, redundant: bool) -> usize {
    let gd = le64(img, if redundant { 48 } else { 56 }) as usize * 512;
    le32(img, gd) as usize * 512 + g * 4
}

#[test]
fn entry_past_end_fails_only_that_grain() {
    let Some(mut img) = qemu_sparse(1 << 20, "") else {
        return;
    };
    let reference: Vec<u8> = (0..1u64 << 20).map(|i| (i / 512) as u8 | 1).collect();
    let at = gte_at(&img, 3, false);
    img[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let disk = open(Path::new("/nonexistent/x.vmdk"), Arc::new(MemSource(img)))
        .unwrap()
        .image
        .disk;
    let g = 65536usize;
    let mut buf = vec![0u8; g];
    let err = disk.read_exact_at(3 * g as u64, &mut buf).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&(0x7fff_fff0u64 * 512).to_string()),
        "error names the offset: {msg}"
    );
    for k in [2usize, 4] {
        disk.read_exact_at((k * g) as u64, &mut buf).unwrap();
        assert!(buf[..] == reference[k * g..(k + 1) * g]);
    }
    // A read spanning grains 2..5 returns grain 2 and stops at the bad one.
    let mut big = vec![0u8; 3 * g];
    assert_eq!(disk.read_at(2 * g as u64, &mut big).unwrap(), g);
}

#[test]
fn redundant_table_disagreeing_uses_primary() {
    let Some(mut img) = qemu_sparse(1 << 20, "") else {
        return;
    };
    let reference: Vec<u8> = (0..1u64 << 20).map(|i| (i / 512) as u8 | 1).collect();
    let at = gte_at(&img, 5, true);
    assert_ne!(at, gte_at(&img, 5, false));
    img[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    img[72] = 1; // uncleanShutdown
    let opened = open(Path::new("x.vmdk"), Arc::new(MemSource(img))).unwrap();
    let notes = opened.notes.join("\n");
    assert!(notes.contains("disagree"), "{notes}");
    assert!(notes.contains("uncleanShutdown"), "{notes}");
    assert!(read_all(&*opened.disk) == reference);
    assert_eq!(
        detail(&opened, "allocated_bytes").as_deref(),
        Some("1048576")
    );
}

#[test]
fn delta_disk_without_its_parent_names_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d-flat.vmdk"), vec![7u8; 4096]).unwrap();
    let desc = dir.path().join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=12345678\n\
         createType=\"monolithicFlat\"\nparentFileNameHint=\"base disk.vmdk\"\n\
         RW 8 FLAT \"d-flat.vmdk\" 0\n",
    )
    .unwrap();
    let err = crate::image::open(&desc).err().expect("must refuse");
    assert!(matches!(err.root(), Error::Chain(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("base disk.vmdk") && msg.contains("d.vmdk"),
        "{msg}"
    );
}

/// vmfs / vmfsThin descriptors (VMFS extents), FLAT with an offset and ZERO
/// extents, written by hand as ESX would.
#[test]
fn vmfs_flat_offset_and_zero_extents() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let a: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.path().join("a-flat.vmdk"), &a).unwrap();
    for ct in ["vmfs", "vmfsThin"] {
        let desc = dir.path().join(format!("{ct}.vmdk"));
        std::fs::write(
            &desc,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                 createType=\"{ct}\"\n\n# Extent description\nRW 16 VMFS \"a-flat.vmdk\"\n\
                 RW 3 ZERO\nRDONLY 4 FLAT \"a-flat.vmdk\" 10\n"
            ),
        )
        .unwrap();
        let img = crate::image::open(&desc).unwrap();
        let mut want = a.clone();
        want.extend_from_slice(&[0u8; 3 * 512]);
        want.extend_from_slice(&a[10 * 512..14 * 512]);
        assert!(read_all(&*img.disk) == want, "{ct}");
        assert_eq!(detail(&img, "subformat").as_deref(), Some(ct));
        // qemu skips RDONLY and ZERO extents and knows no vmfsThin, so
        // compare with it on RW extents of a vmfs disk.
        if ct == "vmfs" && have("qemu-img", "--version") {
            let rw = dir.path().join(format!("{ct}-rw.vmdk"));
            std::fs::write(
                &rw,
                format!(
                    "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                     createType=\"{ct}\"\nRW 16 VMFS \"a-flat.vmdk\"\n\
                     RW 4 FLAT \"a-flat.vmdk\" 10\n"
                ),
            )
            .unwrap();
            let back = dir.path().join(format!("{ct}.raw"));
            qemu_raw(&rw, &back);
            let ours = read_all(&*crate::image::open(&rw).unwrap().disk);
            assert!(
                std::fs::read(&back).unwrap() == ours,
                "{ct}: qemu reads it so"
            );
        }
        random_reads(&*img.disk, &want, 9, 100);
    }
    // A flat extent longer than its file: the read past the file fails.
    let desc = dir.path().join("short.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 32 FLAT \"a-flat.vmdk\" 0\n",
    )
    .unwrap();
    let img = crate::image::open(&desc).unwrap();
    let mut buf = vec![0u8; 512];
    img.disk.read_exact_at(0, &mut buf).unwrap();
    assert!(img.disk.read_exact_at(20 * 512, &mut buf).is_err());
    // Extents are files named by the descriptor, relative to its folder:
    // a folder, a device or a missing name is refused.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::copy(dir.path().join("a-flat.vmdk"), dir.path().join("up.bin")).unwrap();
    for (name, ok) in [
        ("sub/../up.bin", true),
        (".", false),
        ("..", false),
        ("/dev/zero", false),
        ("missing.vmdk", false),
    ] {
        let desc = dir.path().join("sub").join("named.vmdk");
        let name = name.replace("sub/", "../sub/");
        std::fs::write(
            &desc,
            format!(
                "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 16 FLAT \"{name}\" 0\n"
            ),
        )
        .unwrap();
        let r = crate::image::open(&desc);
        assert_eq!(r.is_ok(), ok, "{name}");
        if let Ok(img) = r {
            assert!(read_all(&*img.disk) == a);
        }
    }
}

/// A hand-built VMFSSPARSE (COWD) extent without a parent.
#[test]
fn cowd_extent() {
    let dir = tempfile::tempdir().unwrap();
    let (f, want) = build_cowd();
    std::fs::write(dir.path().join("d-delta.vmdk"), &f).unwrap();
    let desc = dir.path().join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
         createType=\"vmfsSparse\"\nRW 2048 VMFSSPARSE \"d-delta.vmdk\"\n",
    )
    .unwrap();
    let img = crate::image::open(&desc).unwrap();
    assert!(read_all(&*img.disk) == want);
    random_reads(&*img.disk, &want, 4, 100);
    if have("qemu-img", "--version") {
        let back = dir.path().join("cowd.raw");
        qemu_raw(&desc, &back);
        assert!(std::fs::read(&back).unwrap() == want, "qemu reads it so");
    }
}

/// Reads what it can of a disk that may be damaged: no panic, no hang.
fn read_through(disk: &dyn ReadAt, rng: &mut Rng) {
    let size = disk.size();
    let mut buf = vec![0u8; 256 * 1024];
    let mut ranges = vec![(0, size.min(4 << 20))];
    if size > 4 << 20 {
        ranges.push((size - (1 << 20), size));
        for _ in 0..8 {
            let s = rng.below(size);
            ranges.push((s, size.min(s + 300_000)));
        }
    }
    for (mut at, end) in ranges {
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            match disk.read_at(at, &mut buf[..n]) {
                Ok(0) => break,
                Ok(k) => at += k as u64,
                // Skip to the next 4 KiB: grains are at least a sector.
                Err(_) => at = (at / 4096 + 1) * 4096,
            }
        }
    }
}

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    match rng.below(6) {
        // The header.
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(512.min(v.len() as u64)) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        // A whole header field set to something extreme.
        1 => {
            let i = (rng.below(10) * 8 + 4) as usize;
            let val = match rng.below(3) {
                0 => u64::MAX,
                1 => 1 << rng.below(64),
                _ => 0,
            };
            if i + 8 <= v.len() {
                v[i..i + 8].copy_from_slice(&val.to_le_bytes());
            }
        }
        // Metadata (descriptor, directories, tables) near the start.
        2 => {
            let lim = (64 * 1024u64).min(v.len() as u64);
            for _ in 0..=rng.below(16) {
                let i = rng.below(lim) as usize;
                v[i] = rng.next() as u8;
            }
        }
        // Anywhere, including stream markers and the footer at the end.
        3 => {
            for _ in 0..=rng.below(16) {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.next() as u8;
            }
        }
        4 => {
            let end = v.len() as u64;
            let tail = end.saturating_sub(2048);
            let i = (tail + rng.below(end - tail)) as usize;
            v[i] = rng.next() as u8;
        }
        // Truncation.
        _ => v.truncate(rng.below(v.len() as u64 + 1) as usize),
    }
    v
}

fn mutate_text(base: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let i = rng.below(lines.len() as u64) as usize;
    match rng.below(7) {
        0 => {
            lines.remove(i);
        }
        1 => {
            lines[i] = lines[i]
                .split(' ')
                .map(|w| {
                    if w.bytes().all(|b| b.is_ascii_digit()) && !w.is_empty() {
                        [
                            "18446744073709551615",
                            "4294967296",
                            "0",
                            "99999999999999999999",
                        ][rng.below(4) as usize]
                            .to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        2 => lines.push(
            [
                "RW 8 FLAT \"../../etc/passwd\" 0",
                "RW 8 SPARSE \"/etc/passwd\"",
                "RW 8 FLAT \"/dev/zero\" 0",
                "RW 8 FLAT \".\" 0",
                "RW 1 VMFS \"\"",
                "RW 1 SESPARSE \"x\"",
            ][rng.below(6) as usize]
                .into(),
        ),
        3 => lines[i] = lines[i].replace('"', ""),
        4 => lines.insert(i, "parentCID=0badf00d".into()),
        5 => {
            let mut b = lines[i].clone().into_bytes();
            if !b.is_empty() {
                let k = rng.below(b.len() as u64) as usize;
                b[k] = rng.next() as u8;
            }
            lines[i] = String::from_utf8_lossy(&b).into_owned();
        }
        _ => lines.push(lines[i].clone()),
    }
    lines.join("\n")
}

/// Thousands of damaged images: opening and reading never panics, hangs or
/// allocates without bound.
#[test]
fn hostile_input() {
    let mut bases: Vec<Vec<u8>> = Vec::new();
    for f in [
        "monolithicSparse.vmdk",
        "streamOptimizedWithMarkers.vmdk",
        "compressed_stream_opt.vmdk",
    ] {
        bases.push(std::fs::read(crate::testutil::real_image(f)).unwrap());
    }
    // Footer and marker-walk paths.
    bases.push(real_stream_at_end());
    let dir = tempfile::tempdir().unwrap();
    if have("qemu-img", "--version") {
        let raw = dir.path().join("src.raw");
        pattern_raw(&raw, 512 * 1024, 8);
        for fmt in ["monolithicSparse", "streamOptimized"] {
            let vmdk = dir.path().join(format!("{fmt}.vmdk"));
            to_vmdk(&raw, &vmdk, &format!("subformat={fmt}"));
            bases.push(std::fs::read(&vmdk).unwrap());
        }
        to_vmdk(
            &raw,
            &dir.path().join("flat.vmdk"),
            "subformat=monolithicFlat",
        );
        to_vmdk(
            &raw,
            &dir.path().join("split.vmdk"),
            "subformat=twoGbMaxExtentSparse",
        );
    }
    let mut rng = Rng(0xdead_beef);
    // COWD and SESPARSE extents have no descriptor inside: open them as
    // extents directly.
    let extents = [build_cowd().0, build_sesparse().0];
    for case in 0..600 {
        let v = mutate(&extents[case % 2], &mut rng);
        let size = if case % 2 == 0 {
            2048 * 512
        } else {
            40960 * 512
        };
        let src: Source = Arc::new(MemSource(v));
        let opened = if case % 2 == 0 {
            cowd::open(src, size)
        } else {
            sesparse::open(src, size)
        };
        if let Ok(disk) = opened {
            read_through(&*disk, &mut rng);
        }
    }
    let fake = PathBuf::from("/nonexistent/m.vmdk");
    let mut opened = 0;
    for case in 0..3000 {
        let base = &bases[case % bases.len()];
        let v = mutate(base, &mut rng);
        if let Ok(img) = open(&fake, Arc::new(MemSource(v))) {
            read_through(&*img.disk, &mut rng);
            opened += 1;
        }
    }
    // Most damage leaves the image openable: the reads are exercised.
    assert!(opened > 1000, "only {opened} of 3000 opened");
    // Descriptor text, with the extent files beside it left intact.
    let texts: Vec<String> = ["flat.vmdk", "split.vmdk"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.path().join(f)).ok())
        .collect();
    let desc = dir.path().join("mutated.vmdk");
    for case in 0..(texts.len() * 600) {
        let mut t = texts[case % texts.len()].clone();
        for _ in 0..=rng.below(3) {
            t = mutate_text(&t, &mut rng);
        }
        std::fs::write(&desc, &t).unwrap();
        let file: Source = Arc::new(crate::readat::FileSource::open(&desc).unwrap());
        if let Ok(img) = open(&desc, file) {
            read_through(&*img.disk, &mut rng);
            opened += 1;
        }
    }
    eprintln!("{opened} damaged images opened");
}

/// The real stream, with its header's directory offset set to GD_AT_END.
fn real_stream_at_end() -> Vec<u8> {
    let mut v = std::fs::read(crate::testutil::real_image(
        "streamOptimizedWithMarkers.vmdk",
    ))
    .unwrap();
    v[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    v
}

#[test]
fn gd_at_end_is_read_from_the_footer() {
    let img = open(
        Path::new("s.vmdk"),
        Arc::new(MemSource(real_stream_at_end())),
    )
    .unwrap();
    assert!(img.notes.is_empty(), "{:?}", img.notes);
    assert_eq!(
        sha1_of(&*img.disk),
        "B6FD01DD1B93B3589E6D76F7507AF55C589EF69D"
    );
}

#[test]
fn stream_without_footer_is_walked() {
    let full = open(
        Path::new("s.vmdk"),
        Arc::new(MemSource(
            std::fs::read(crate::testutil::real_image(
                "streamOptimizedWithMarkers.vmdk",
            ))
            .unwrap(),
        )),
    )
    .unwrap();
    let reference = read_all(&*full.disk);
    // Footer gone, end-of-stream marker still there: every grain is found.
    let mut v = real_stream_at_end();
    let n = v.len();
    v[n - 1024..n - 512].fill(0xEE);
    let img = open(Path::new("s.vmdk"), Arc::new(MemSource(v))).unwrap();
    assert!(img.notes.join(" ").contains("walking"), "{:?}", img.notes);
    assert!(read_all(&*img.disk) == reference);
    // Cut in the middle: what was before the cut reads right, what was
    // after fails instead of reading as zeros.
    let mut v = real_stream_at_end();
    v.truncate(1000 * 512);
    let img = open(Path::new("s.vmdk"), Arc::new(MemSource(v))).unwrap();
    let mut ok = 0u64;
    let mut failed = 0u64;
    let mut buf = vec![0u8; 65536];
    for at in (0..img.disk.size()).step_by(65536) {
        match img.disk.read_exact_at(at, &mut buf) {
            Ok(()) => {
                assert!(buf[..] == reference[at as usize..at as usize + 65536]);
                assert_eq!(failed, 0, "reads after a lost grain must fail");
                ok += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} {failed}");
}

/// Grain table entries of 1 (zeroed grains) written by qemu's zeroed_grain.
#[test]
fn zeroed_grain_entries_read_as_zeros() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vmdk = dir.path().join("z.vmdk");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on"])
        .arg(&vmdk)
        .arg("1M"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            "vmdk",
            "-c",
            "write -P 0x55 0 256k",
            "-c",
            "write -z 64k 64k",
        ])
        .arg(&vmdk));
    let img = std::fs::read(&vmdk).unwrap();
    assert_eq!(le32(&img, gte_at(&img, 1, false)), 1, "qemu wrote GTE 1");
    let back = dir.path().join("back.raw");
    qemu_raw(&vmdk, &back);
    let disk = crate::image::open(&vmdk).unwrap().disk;
    assert!(read_all(&*disk) == std::fs::read(&back).unwrap());
}

/// A hand-built SESPARSE extent without a parent: allocated grains (with
/// grain numbers past 4095 to exercise the split encoding), zeroed and
/// unmapped grains.
#[test]
fn sesparse_extent() {
    let dir = tempfile::tempdir().unwrap();
    let (f, want) = build_sesparse();
    std::fs::write(dir.path().join("d-sesparse.vmdk"), &f).unwrap();
    let desc = dir.path().join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
         createType=\"seSparse\"\nRW 40960 SESPARSE \"d-sesparse.vmdk\"\n",
    )
    .unwrap();
    let img = crate::image::open(&desc).unwrap();
    assert!(read_all(&*img.disk) == want);
    random_reads(&*img.disk, &want, 44, 100);
    if have("qemu-img", "--version") {
        let back = dir.path().join("se.raw");
        qemu_raw(&desc, &back);
        assert!(std::fs::read(&back).unwrap() == want, "qemu reads it so");
    }
}

/// A COWD extent (2048 sectors, 4 KiB grains) and the disk it holds.
fn build_cowd() -> (Vec<u8>, Vec<u8>) {
    let (capacity, grain) = (2048u32, 8u32);
    let mut f = vec![0u8; 2048];
    f[0..4].copy_from_slice(b"COWD");
    for (at, v) in [
        (4, 1u32),
        (8, 3),
        (12, capacity),
        (16, grain),
        (20, 4),
        (24, 1),
    ] {
        f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    // GD at sector 4 (one table at sector 5), the table, then grains.
    f.resize(5 * 512, 0);
    f[4 * 512..4 * 512 + 4].copy_from_slice(&5u32.to_le_bytes());
    let mut gt = vec![0u8; 4096 * 4];
    let mut want = vec![0u8; capacity as usize * 512];
    let mut next: u32 = 5 + 32;
    let mut grains = Vec::new();
    let mut rng = Rng(21);
    for g in [0usize, 1, 7, 100, 255] {
        gt[g * 4..g * 4 + 4].copy_from_slice(&next.to_le_bytes());
        let d: Vec<u8> = (0..grain as usize * 512)
            .map(|_| rng.next() as u8)
            .collect();
        want[g * 4096..(g + 1) * 4096].copy_from_slice(&d);
        grains.extend_from_slice(&d);
        next += grain;
    }
    f.extend_from_slice(&gt);
    f.extend_from_slice(&grains);
    (f, want)
}

/// A SESPARSE extent (40960 sectors) and the disk it holds.
fn build_sesparse() -> (Vec<u8>, Vec<u8>) {
    let capacity = 40960u64; // 20 MiB: 5120 grains, two grain tables
    let (gd, tables, grains) = (2u64, 3u64, 3 + 2 * 64);
    let mut f = vec![0u8; grains as usize * 512];
    let words = [
        (0, 0xcafe_babe),
        (1, 0x0000_0002_0000_0001),
        (2, capacity),
        (3, 8),
        (4, 64),
        (10, 1),
        (11, 1),
        (16, gd),
        (17, 1),
        (18, tables),
        (19, 128),
        (24, grains),
    ];
    for (i, v) in words {
        f[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    f[512..520].copy_from_slice(&0xcafe_cafeu64.to_le_bytes());
    // Directory: table 1 first, then table 0, to check the indirection.
    let gd_at = gd as usize * 512;
    f[gd_at..gd_at + 8].copy_from_slice(&(0x1000_0000_0000_0001u64).to_le_bytes());
    f[gd_at + 8..gd_at + 16].copy_from_slice(&(0x1000_0000_0000_0000u64).to_le_bytes());
    let table = |t: u64| ((tables + (1 - t) * 64) * 512) as usize;
    let mut want = vec![0u8; capacity as usize * 512];
    let mut rng = Rng(33);
    let mut data = Vec::new();
    let mut cluster = 0u64;
    // Clusters are laid out so some grain numbers exceed 4095 too.
    for g in [0u64, 1, 2, 9, 4095, 4096, 4097, 5119] {
        let e = 0x3000_0000_0000_0000u64 | ((cluster & 0xfff) << 48) | (cluster >> 12);
        let at = table(g / 4096) + (g % 4096) as usize * 8;
        f[at..at + 8].copy_from_slice(&e.to_le_bytes());
        let d: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        want[g as usize * 4096..(g as usize + 1) * 4096].copy_from_slice(&d);
        data.extend_from_slice(&d);
        cluster += 1;
        if g == 9 {
            // Pad clusters so later grains have numbers above 4095.
            let pad = 4100 - cluster;
            data.extend(std::iter::repeat_n(0xEEu8, pad as usize * 4096));
            cluster = 4100;
        }
    }
    for (g, kind) in [(3u64, 1u64), (4, 2)] {
        let at = table(0) + g as usize * 8;
        f[at..at + 8].copy_from_slice(&(kind << 60).to_le_bytes());
    }
    f.extend_from_slice(&data);
    (f, want)
}

/// A source that counts the reads made of it.
struct Counting(MemSource, std::sync::atomic::AtomicUsize);

impl ReadAt for Counting {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.read_at(offset, buf)
    }
}

/// Contiguous grains are one positional read; an inflated grain is read and
/// inflated once, then served from the cache.
#[test]
fn reads_coalesce_and_grains_are_cached() {
    use std::sync::atomic::Ordering;
    let Some(img) = qemu_sparse(1 << 20, "") else {
        return;
    };
    let src = Arc::new(Counting(MemSource(img), 0.into()));
    let disk = open(Path::new("c.vmdk"), src.clone()).unwrap().image.disk;
    let mut buf = vec![0u8; 1 << 20];
    disk.read_exact_at(0, &mut buf).unwrap(); // loads the table if evicted
    src.1.store(0, Ordering::Relaxed);
    disk.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(src.1.load(Ordering::Relaxed), 1, "one read for 16 grains");

    let stream = std::fs::read(crate::testutil::real_image("compressed_stream_opt.vmdk")).unwrap();
    let src = Arc::new(Counting(MemSource(stream), 0.into()));
    let disk = open(Path::new("s.vmdk"), src.clone()).unwrap().image.disk;
    let mut b = [0u8; 100];
    disk.read_exact_at(10, &mut b).unwrap();
    src.1.store(0, Ordering::Relaxed);
    for at in [0u64, 5000, 60000] {
        disk.read_exact_at(at, &mut b).unwrap();
    }
    assert_eq!(src.1.load(Ordering::Relaxed), 0, "served from the cache");
}

/// VMFSSPARSE and SESPARSE deltas over a flat base named by an absolute
/// ESX path (found by file name next to the delta): allocated grains from
/// the delta, zeroed and unmapped SESPARSE grains as zeros, the rest from
/// the base.
#[test]
fn vmfs_sparse_and_sesparse_deltas() {
    /// createType, extent kind, builder, allocated and zeroed grains.
    type Case = (
        &'static str,
        &'static str,
        Builder,
        &'static [u64],
        &'static [u64],
    );
    type Builder = fn() -> (Vec<u8>, Vec<u8>);
    let cases: [Case; 2] = [
        (
            "vmfsSparse",
            "VMFSSPARSE",
            build_cowd,
            &[0, 1, 7, 100, 255],
            &[],
        ),
        (
            "seSparse",
            "SESPARSE",
            build_sesparse,
            &[0, 1, 2, 9, 4095, 4096, 4097, 5119],
            &[3, 4],
        ),
    ];
    for (create, kind, build, allocated, zeroed) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (f, delta) = build();
        let sectors = delta.len() / 512;
        let mut rng = Rng(99);
        let base: Vec<u8> = (0..delta.len()).map(|_| rng.next() as u8 | 1).collect();
        std::fs::write(dir.path().join("base-flat.vmdk"), &base).unwrap();
        std::fs::write(
            dir.path().join("base.vmdk"),
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=0badcafe\nparentCID=ffffffff\n\
                 createType=\"monolithicFlat\"\nRW {sectors} FLAT \"base-flat.vmdk\" 0\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("d-delta.vmdk"), &f).unwrap();
        let desc = dir.path().join("d.vmdk");
        std::fs::write(
            &desc,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=00000002\nparentCID=0BADCAFE\n\
                 createType=\"{create}\"\n\
                 parentFileNameHint=\"/vmfs/volumes/ds1/vm/base.vmdk\"\n\
                 RW {sectors} {kind} \"d-delta.vmdk\"\n"
            ),
        )
        .unwrap();
        let mut want = base.clone();
        for &g in allocated.iter().chain(zeroed) {
            let r = g as usize * 4096..(g as usize + 1) * 4096;
            want[r.clone()].copy_from_slice(&delta[r]);
        }
        let img = crate::image::open(&desc).unwrap_or_else(|e| panic!("{create}: {e}"));
        assert_eq!(img.chain.len(), 2);
        assert!(
            matches!(img.chain[0].check, crate::image::LinkCheck::Ok { .. }),
            "{}",
            img.chain[0].check
        );
        assert!(read_all(&*img.disk) == want, "{create}");
        random_reads(&*img.disk, &want, 4, 55);
    }
}
