//! qcow2 against qemu: images made by `qemu-img convert` / `qemu-io` from a
//! seeded disk must read exactly as `qemu-img convert -O raw` reads them,
//! and hostile images must fail cleanly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::readat::MemSource;
use crate::testutil::TempDir;

/// Counts the largest single allocation made on threads that ask for it,
/// so the mutation test can assert hostile sizes never reach `vec!`.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn note(size: usize) {
    if TRACK.try_with(|t| t.get()).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Whether qemu-img and qemu-io are here; without them the test is
/// skipped, except under CI where it must fail.
fn have_qemu() -> bool {
    let ok = ["qemu-img", "qemu-io"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-img/qemu-io missing (install qemu-utils)"
        );
        eprintln!("skipped: qemu-img/qemu-io not installed");
    }
    ok
}

fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// xorshift64*: a tiny seeded generator, so every run is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes a sparse raw disk of `size` bytes: random data, compressible
/// text, explicit zero runs and holes, in runs of random unaligned length.
fn make_raw(path: &Path, size: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(seed);
    let mut at = 0u64;
    while at < size {
        let len = (1 + rng.below(300 << 10)).min(size - at);
        let buf: Vec<u8> = match rng.below(4) {
            0 => (0..len).map(|_| rng.next() as u8).collect(),
            1 => (0..len)
                .map(|i| b"restorefs qcow2 "[(i % 16) as usize])
                .collect(),
            2 => vec![0; len as usize],
            _ => Vec::new(), // a hole
        };
        f.write_all_at(&buf, at).unwrap();
        at += len;
    }
}

/// What qemu reads as the virtual disk of `img`.
fn qemu_raw(dir: &TempDir, img: &Path) -> Vec<u8> {
    let out = dir.join("qemu-view.raw");
    run("qemu-img", &["convert", "-O", "raw", p(img), p(&out)]);
    std::fs::read(&out).unwrap()
}

/// Reads the whole of `disk` in odd-sized chunks that cross clusters.
fn read_all(disk: &dyn ReadAt) -> Vec<u8> {
    let mut out = vec![0u8; disk.size() as usize];
    for (i, chunk) in out.chunks_mut(1_000_003).enumerate() {
        disk.read_exact_at(i as u64 * 1_000_003, chunk).unwrap();
    }
    out
}

/// Opens `img` through `image::open` (detection by content) and checks
/// every byte against qemu.
fn assert_same_as_qemu(dir: &TempDir, img: &Path) -> Image {
    let image = crate::image::open(img).unwrap();
    assert_eq!(image.format, "qcow2");
    let want = qemu_raw(dir, img);
    assert_eq!(image.disk.size(), want.len() as u64);
    let got = read_all(&*image.disk);
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{}: first difference at guest offset {i}", img.display());
    }
    image
}

fn detail(image: &Image, key: &str) -> String {
    image
        .facts
        .get(key)
        .unwrap_or_else(|| panic!("no fact {key}"))
}

const SIZE: u64 = 6 * 1024 * 1024 + 3 * 512;

#[test]
fn converted_images_match_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("convert");
    let raw = dir.join("disk.raw");
    make_raw(&raw, SIZE, 0x5eed_0001);
    let cases: &[(&[&str], &str)] = &[
        (&[], "compat=0.10,cluster_size=512"),
        (&[], "compat=0.10,cluster_size=65536"),
        (&[], "compat=1.1,cluster_size=512"),
        (&[], "compat=1.1,cluster_size=4096"),
        (&[], "compat=1.1,cluster_size=65536"),
        (&[], "compat=1.1,cluster_size=2M"),
        (&["-c"], "compat=0.10,cluster_size=4096"),
        (
            &["-c"],
            "compat=1.1,cluster_size=65536,compression_type=zlib",
        ),
        (&["-c"], "compat=1.1,cluster_size=512,compression_type=zstd"),
        (
            &["-c"],
            "compat=1.1,cluster_size=65536,compression_type=zstd",
        ),
        (&["-c"], "compat=1.1,cluster_size=2M,compression_type=zstd"),
        (&[], "compat=1.1,cluster_size=65536,extended_l2=on"),
        (&[], "compat=1.1,cluster_size=2M,extended_l2=on"),
        (
            &["-c"],
            "cluster_size=131072,extended_l2=on,compression_type=zstd",
        ),
    ];
    for (i, (flags, opts)) in cases.iter().enumerate() {
        // Named .img: detection must go by content.
        let img = dir.join(&format!("case{i}.img"));
        let mut args = vec!["convert", "-O", "qcow2"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", opts, p(&raw), p(&img)]);
        run("qemu-img", &args);
        let image = assert_same_as_qemu(&dir, &img);
        let want_version = if opts.contains("0.10") { "2" } else { "3" };
        assert!(
            detail(&image, "version").starts_with(want_version),
            "{opts}"
        );
        let zstd = opts.contains("zstd");
        assert_eq!(
            detail(&image, "compression"),
            if zstd { "zstd" } else { "zlib" }
        );
        let ext = opts.contains("extended_l2=on");
        assert_eq!(detail(&image, "extended_l2"), if ext { "1" } else { "0" });
        // The pattern itself, not only qemu's view of it.
        let got = read_all(&*image.disk);
        assert!(got == std::fs::read(&raw).unwrap(), "{opts}");
        if flags.contains(&"-c") {
            let out = Command::new("qemu-img")
                .args(["map", "--output=json", p(&img)])
                .output()
                .unwrap();
            let map = String::from_utf8_lossy(&out.stdout);
            assert!(
                map.contains("\"compressed\": true"),
                "{opts}: nothing compressed"
            );
        }
    }
}

/// Images changed in place by qemu-io: zero writes (zero clusters and
/// zero subclusters), unmapping zero writes, discards, and new data.
#[test]
fn zero_writes_and_discards_match_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("qemu-io");
    let raw = dir.join("disk.raw");
    make_raw(&raw, SIZE, 0x5eed_0002);
    let variants = [
        "compat=1.1,cluster_size=4096",
        "compat=1.1,cluster_size=65536",
        "compat=0.10,cluster_size=65536",
        "compat=1.1,cluster_size=65536,extended_l2=on",
        "compat=1.1,cluster_size=2M,extended_l2=on",
    ];
    for opts in variants {
        let img = dir.join("modified.qcow2");
        run(
            "qemu-img",
            &["convert", "-O", "qcow2", "-o", opts, p(&raw), p(&img)],
        );
        for cmd in [
            "write -z 12800 200704",
            "write -z -u 1048576 1048576",
            "discard 2621440 393216",
            "write -P 0x5a 3000320 70144",
            "write -z 4194304 4608",
            "discard 5242880 1024",
            "write -P 0xa5 6290944 2048",
        ] {
            run("qemu-io", &["-f", "qcow2", "-c", cmd, p(&img)]);
        }
        assert_same_as_qemu(&dir, &img);
    }
}

/// Random reads at unaligned offsets and lengths agree with qemu's view.
#[test]
fn random_reads_agree() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("random");
    let raw = dir.join("disk.raw");
    make_raw(&raw, SIZE, 0x5eed_0003);
    for (flags, opts) in [
        (&[][..], "compat=1.1,cluster_size=512"),
        (&["-c"][..], "compat=1.1,cluster_size=4096"),
        (&[][..], "compat=1.1,cluster_size=65536,extended_l2=on"),
    ] {
        let img = dir.join("random.qcow2");
        let mut args = vec!["convert", "-O", "qcow2"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", opts, p(&raw), p(&img)]);
        run("qemu-img", &args);
        run(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -z 65536 300032", p(&img)],
        );
        let want = qemu_raw(&dir, &img);
        let image = crate::image::open(&img).unwrap();
        let mut rng = Rng(0x5eed_0004);
        let mut buf = vec![0u8; 300_000];
        for _ in 0..2000 {
            let off = rng.below(SIZE + 1000);
            let max = if rng.below(4) == 0 { 300_000 } else { 5000 };
            let len = 1 + rng.below(max) as usize;
            let n = image.disk.read_at(off, &mut buf[..len]).unwrap();
            let start = (off as usize).min(want.len());
            let end = (start + len).min(want.len());
            assert_eq!(n, end - start, "{opts}: read {len} at {off}");
            assert!(buf[..n] == want[start..end], "{opts}: read {len} at {off}");
        }
    }
}

#[test]
fn huge_sparse_image_opens_instantly() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("huge");
    let img = dir.join("huge.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&img), "2T"]);
    let t = Instant::now();
    let image = crate::image::open(&img).unwrap();
    let mut buf = vec![0xffu8; 1 << 20];
    image.disk.read_exact_at(3 << 39, &mut buf).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(image.disk.size(), 2 << 40);
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(detail(&image, "allocated_bytes"), "0");
}

fn unsupported(img: &Path) -> String {
    match crate::image::open(img) {
        Ok(_) => panic!("{} opened", img.display()),
        Err(e) => {
            assert!(
                matches!(e.root(), Error::Unsupported { layer: "qcow2", .. }),
                "{e}"
            );
            e.to_string()
        }
    }
}

#[test]
fn refuses_what_it_cannot_read() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("refuse");
    let base = dir.join("base.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&base), "1M"]);
    run("qemu-io", &["-c", "write -P 0x11 0 64k", p(&base)]);
    let over = dir.join("overlay.img");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            p(&base),
            "-F",
            "qcow2",
            p(&over),
        ],
    );
    // A backing file is read as a chain (see image::chain's tests).
    let chain = crate::image::open(&over).unwrap().chain;
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].file, base);

    let data = dir.join("external.qcow2");
    let data_file = dir.join("external.data");
    let opt = format!("data_file={}", p(&data_file));
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-o", &opt, p(&data), "1M"],
    );
    let msg = unsupported(&data);
    assert!(msg.contains("external data file"), "{msg}");

    let enc = dir.join("encrypted.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "--object",
            "secret,id=sec0,data=hunter2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0",
            p(&enc),
            "1M",
        ],
    );
    let msg = unsupported(&enc);
    assert!(msg.contains("encrypted"), "{msg}");
}

/// Sets bits in the incompatible feature field of a version 3 image.
fn with_incompat(img: &[u8], bits: u64) -> Vec<u8> {
    let mut v = img.to_vec();
    let old = u64::from_be_bytes(v[72..80].try_into().unwrap());
    v[72..80].copy_from_slice(&(old | bits).to_be_bytes());
    v
}

fn open_mem(bytes: Vec<u8>) -> Result<(Qcow2Disk, Vec<String>)> {
    Qcow2Disk::new(Path::new("mem.qcow2"), Arc::new(MemSource(bytes)))
}

#[test]
fn feature_bits() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("features");
    let raw = dir.join("disk.raw");
    make_raw(&raw, 1 << 20, 0x5eed_0005);
    let img = dir.join("f.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&img)]);
    let bytes = std::fs::read(&img).unwrap();
    let want = std::fs::read(&raw).unwrap();

    let (disk, notes) = open_mem(with_incompat(&bytes, 1)).unwrap();
    assert!(notes.iter().any(|n| n.contains("dirty")), "{notes:?}");
    assert!(read_all(&disk) == want);
    let (disk, notes) = open_mem(with_incompat(&bytes, 2)).unwrap();
    assert!(notes.iter().any(|n| n.contains("corrupt")), "{notes:?}");
    assert!(read_all(&disk) == want);
    match open_mem(with_incompat(&bytes, 1 << 9)) {
        Err(e) => assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains("bit 9"),
            "{e}"
        ),
        Ok(_) => panic!("unknown incompatible bit accepted"),
    }
}

/// Host offset of the first L2 table and the file's bytes.
fn first_l2(bytes: &[u8]) -> u64 {
    let l1_off = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let e = u64::from_be_bytes(bytes[l1_off..l1_off + 8].try_into().unwrap());
    e & 0x00ff_ffff_ffff_fe00
}

#[test]
fn entry_past_end_fails_only_its_cluster() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("past-end");
    let raw = dir.join("disk.raw");
    make_raw(&raw, 1 << 20, 0x5eed_0006);
    // Fill the disk so every cluster is allocated.
    let full = dir.join("full.raw");
    std::fs::write(&full, vec![0x77u8; 1 << 20]).unwrap();
    let img = dir.join("e.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            p(&full),
            p(&img),
        ],
    );
    let mut bytes = std::fs::read(&img).unwrap();
    let l2 = first_l2(&bytes) as usize;
    // Entry 3 -> a cluster-aligned host offset far past the end.
    let bad = 0x4000_0000u64;
    bytes[l2 + 24..l2 + 32].copy_from_slice(&(bad | 1 << 63).to_be_bytes());
    let (disk, _) = open_mem(bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = disk.read_exact_at(3 * 4096 + 100, &mut buf).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("qcow2") && msg.contains(&format!("offset {}", bad + 100)),
        "{msg}"
    );
    for c in (0..256u64).filter(|&c| c != 3) {
        disk.read_exact_at(c * 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x77), "cluster {c}");
    }
}

/// A compressed cluster's last sector may lie past the end of the file:
/// the reader reads what exists. qemu pads its files, so stretch the
/// descriptor of the last compressed cluster to the largest sector count.
#[test]
fn compressed_cluster_running_past_end_of_file() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("overrun");
    let raw = dir.join("text.raw");
    std::fs::write(&raw, b"restorefs qcow2 ".repeat(1 << 16)).unwrap();
    for kind in ["zlib", "zstd"] {
        let img = dir.join("c.qcow2");
        let opts = format!("cluster_size=4096,compression_type={kind}");
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &opts,
                p(&raw),
                p(&img),
            ],
        );
        let mut bytes = std::fs::read(&img).unwrap();
        let l2 = first_l2(&bytes) as usize;
        // x = 62 - (12 - 8) = 58: offset in bits 0..58, 4 sector bits.
        let (at, host) = (0..256)
            .map(|i| {
                let at = l2 + i * 8;
                let e = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
                assert!(e & 1 << 62 != 0, "cluster {i} not compressed");
                (at, e & ((1 << 58) - 1))
            })
            .max_by_key(|&(_, host)| host)
            .unwrap();
        let stretched = 1u64 << 62 | 15 << 58 | host;
        bytes[at..at + 8].copy_from_slice(&stretched.to_be_bytes());
        let len = 16 * 512 - host % 512;
        assert!(host + len > bytes.len() as u64, "{kind}: not at the end");
        let (disk, _) = open_mem(bytes).unwrap();
        assert!(read_all(&disk) == std::fs::read(&raw).unwrap(), "{kind}");
    }
}

/// Counts positional reads, to check runs become single reads.
struct Counting(MemSource, AtomicUsize);

impl ReadAt for Counting {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.read_at(offset, buf)
    }
}

#[test]
fn contiguous_clusters_are_one_read() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("runs");
    let full = dir.join("full.raw");
    std::fs::write(&full, vec![0x77u8; 1 << 20]).unwrap();
    // qemu-img convert puts each L2 table before the clusters it maps;
    // zeroing first allocates every L2 table up front, so data then runs
    // on across tables (cut only by refcount blocks).
    let converted = dir.join("converted.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=512",
            p(&full),
            p(&converted),
        ],
    );
    let tables_first = dir.join("tables-first.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            p(&tables_first),
            "1M",
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -z 0 1M",
            "-c",
            "write -P 0x77 0 1M",
            p(&tables_first),
        ],
    );
    for (img, max_runs) in [(converted, 32), (tables_first, 31)] {
        let file = Arc::new(Counting(
            MemSource(std::fs::read(&img).unwrap()),
            AtomicUsize::new(0),
        ));
        let (disk, _) = Qcow2Disk::new(&img, file.clone()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        disk.read_exact_at(0, &mut buf).unwrap();
        let before = file.1.load(Ordering::Relaxed);
        disk.read_exact_at(0, &mut buf).unwrap();
        let reads = file.1.load(Ordering::Relaxed) - before;
        assert!(buf.iter().all(|&b| b == 0x77));
        // One read per host-contiguous run (2048 clusters, 32 L2 tables).
        let out = Command::new("qemu-img")
            .args(["map", "--output=json", p(&img)])
            .output()
            .unwrap();
        let runs = String::from_utf8_lossy(&out.stdout)
            .matches("\"data\": true")
            .count();
        assert!(runs <= max_runs, "{}: {runs} runs", img.display());
        assert_eq!(reads, runs, "{}", img.display());
    }
}

#[test]
fn compressed_descriptor_fields() {
    let geo = Geometry {
        cluster_bits: 16,
        extended: false,
    };
    // x = 54: offset 0x12345 in bits 0..54, 3 extra sectors above.
    let word: u64 = 1 << 62 | 3 << 54 | 0x12345;
    let e = L2Entry::read(&word.to_be_bytes(), 0, geo).unwrap();
    assert_eq!(
        e.unit(0, geo, 0).unwrap(),
        Unit::Compressed(Compressed {
            host: 0x12345,
            len: 4 * 512 - 0x145,
        })
    );
}

#[test]
fn extended_l2_bitmaps() {
    let geo = Geometry {
        cluster_bits: 16,
        extended: true,
    };
    // Subcluster 0 allocated, 1 zero, 2 both (invalid), 3 neither.
    let bitmap: u64 = 0b101 | 0b110 << 32;
    let mut entry = 0x30000u64.to_be_bytes().to_vec();
    entry.extend_from_slice(&bitmap.to_be_bytes());
    let e = L2Entry::read(&entry, 0, geo).unwrap();
    assert_eq!(e.unit(0, geo, 0).unwrap(), Unit::Data(0x30000));
    assert_eq!(e.unit(1, geo, 0).unwrap(), Unit::Zero);
    assert!(e.unit(2, geo, 0).is_err());
    // Neither bit: the backing file's bytes.
    assert_eq!(e.unit(3, geo, 0).unwrap(), Unit::Unallocated);
    assert!(L2Entry::read(&entry, 1, geo).is_none());
}

#[test]
fn raw_deflate_with_padding() {
    use std::io::Write;
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&data).unwrap();
    let mut z = enc.finish().unwrap();
    z.extend_from_slice(&[0xAA; 300]);
    let out = compressed::decompress(CompressionType::Zlib, &z, 4096, 0).unwrap();
    assert_eq!(out, data);
    assert!(compressed::decompress(CompressionType::Zlib, &z[..z.len() / 3], 4096, 9).is_err());
    assert!(compressed::decompress(CompressionType::Zlib, &z, 8192, 9).is_err());
}

#[test]
fn zstd_with_padding() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13 % 253) as u8).collect();
    let mut z = zstd::bulk::compress(&data, 3).unwrap();
    z.extend_from_slice(&[0; 100]);
    let out = compressed::decompress(CompressionType::Zstd, &z, 4096, 0).unwrap();
    assert_eq!(out, data);
    assert!(compressed::decompress(CompressionType::Zstd, &z[..z.len() / 2], 4096, 9).is_err());
}

/// Small images of every kind, for the mutation test.
fn mutation_bases(dir: &TempDir) -> Vec<Vec<u8>> {
    let raw = dir.join("disk.raw");
    make_raw(&raw, 1 << 20, 0x5eed_0007);
    let mut bases = Vec::new();
    for (flags, opts) in [
        (&["-c"][..], "compat=1.1,cluster_size=4096"),
        (
            &["-c"][..],
            "compat=1.1,cluster_size=4096,compression_type=zstd",
        ),
        (&[][..], "compat=0.10,cluster_size=512"),
        (&[][..], "compat=1.1,cluster_size=16384,extended_l2=on"),
    ] {
        let img = dir.join("base.qcow2");
        let mut args = vec!["convert", "-O", "qcow2"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", opts, p(&raw), p(&img)]);
        run("qemu-img", &args);
        run(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -z 8192 40960", p(&img)],
        );
        bases.push(std::fs::read(&img).unwrap());
    }
    bases
}

/// Offsets of metadata worth corrupting: header, L1, L2 tables, and the
/// compressed descriptors and data they point at.
fn targets(b: &[u8]) -> Vec<(usize, usize)> {
    let be64 = |at: usize| {
        b.get(at..at + 8)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
            .unwrap_or(0)
    };
    let cluster = 1usize << (be64(16) & 0xffff_ffff);
    let l1_off = be64(40) as usize;
    let l1_size = (be64(32) & 0xffff_ffff) as usize;
    let ext_l2 = be64(72) & (1 << 4) != 0;
    let mut t = vec![(0, 112), (l1_off, l1_size * 8)];
    for i in 0..l1_size {
        let l2 = (be64(l1_off + i * 8) & 0x00ff_ffff_ffff_fe00) as usize;
        if l2 == 0 {
            continue;
        }
        t.push((l2, cluster));
        let step = if ext_l2 { 16 } else { 8 };
        for j in (0..cluster).step_by(step) {
            let e = be64(l2 + j);
            if e & (1 << 62) != 0 {
                t.push((l2 + j, 8));
                let bits = be64(16) & 0xffff_ffff;
                let host = (e & ((1u64 << (62 - (bits - 8))) - 1)) as usize;
                t.push((host, 64));
            }
        }
    }
    t
}

fn mutate(rng: &mut Rng, base: &[u8], targets: &[(usize, usize)]) -> Vec<u8> {
    let mut v = base.to_vec();
    let put = |v: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        if let Some(s) = v.get_mut(at..at + bytes.len()) {
            s.copy_from_slice(bytes);
        }
    };
    match rng.below(8) {
        // Flip a few bytes in a metadata structure.
        0..=3 => {
            let (at, len) = targets[rng.below(targets.len() as u64) as usize];
            for _ in 0..1 + rng.below(4) {
                let i = at + rng.below(len as u64) as usize;
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        // A whole random word in a structure (offsets, descriptors).
        4 => {
            let (at, len) = targets[rng.below(targets.len() as u64) as usize];
            let i = at + (rng.below(len as u64) as usize & !7);
            put(&mut v, i, &rng.next().to_be_bytes());
        }
        // Truncation.
        5 => v.truncate(rng.below(v.len() as u64) as usize),
        // Huge or odd header sizes.
        6 => match rng.below(4) {
            0 => put(&mut v, 36, &(rng.next() as u32 | 1 << 31).to_be_bytes()),
            1 => put(&mut v, 20, &(rng.below(70) as u32).to_be_bytes()),
            2 => put(&mut v, 24, &(rng.next() >> rng.below(64)).to_be_bytes()),
            _ => put(&mut v, 100, &(rng.below(1 << 20) as u32).to_be_bytes()),
        },
        // Random bytes anywhere.
        _ => {
            let i = rng.below(v.len() as u64) as usize;
            put(&mut v, i, &rng.next().to_le_bytes());
        }
    }
    v
}

#[test]
fn hostile_images_fail_cleanly() {
    if !have_qemu() {
        return;
    }
    let dir = TempDir::new("mutate");
    let bases = mutation_bases(&dir);
    let targets: Vec<_> = bases.iter().map(|b| targets(b)).collect();
    let mut rng = Rng(0x5eed_0008);
    let mut buf = vec![0u8; 256 << 10];
    let (mut opened, mut failed_reads) = (0, 0);
    TRACK.with(|t| t.set(true));
    for case in 0..3000 {
        let which = case % bases.len();
        let bytes = mutate(&mut rng, &bases[which], &targets[which]);
        let file_len = bytes.len();
        let t = Instant::now();
        if let Ok((disk, _)) = open_mem(bytes) {
            opened += 1;
            let _ = disk.count_allocated();
            // Reading past what a file this small can map gains nothing;
            // past that point a hostile size only makes zeros.
            let end = disk.size().min(4 << 20);
            let mut at = 0;
            while at < end {
                if disk.read_at(at, &mut buf).is_err() {
                    failed_reads += 1;
                }
                at += buf.len() as u64;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "case {case} took {:?}",
            t.elapsed()
        );
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= (8 << 20).max(file_len * 2),
            "case {case}: allocated {largest} bytes at once"
        );
    }
    TRACK.with(|t| t.set(false));
    // The mutations must leave many images openable, or they test nothing.
    assert!(opened > 1000, "only {opened} opened");
    assert!(failed_reads > 50, "only {failed_reads} failed reads");
}
