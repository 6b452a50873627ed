//! Deterministic mutation test (no nightly, no cargo-fuzz): small images of
//! every format, each mutated thousands of times from a fixed seed (bit
//! flips, zeroed and 0xFF sectors, truncation, header fields and numbers in
//! text set to extremes) and opened and walked end to end through fuzz/src/lib.rs.
//! Each case runs under a time limit and a per-allocation cap; a panic, a
//! hang or an allocation over the cap fails with the case's seed.
//!
//! Reproduce one case: `MUTATION_CASE=<image>:<seed> cargo test --test
//! mutations` (add `MUTATION_DUMP=FILE` to write its mutated image). More cases per image: `MUTATIONS=N` (default 3000;
//! the 48 MiB generated disk gets a fifth); only some images:
//! `MUTATION_ONLY=<part of the name>`.

mod common;
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use restorefs_parsers::ReadAt;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest single allocation a case may make. The images are a few MiB; a
/// parser that asks for more trusted a size field it should have bounded.
const ALLOC_CAP: usize = 256 << 20;
/// Per-case limit; a walk of these images takes milliseconds.
const CASE_LIMIT: Duration = Duration::from_secs(20);

/// Seed of the running case and the size of the first allocation over the
/// cap it made (0: none), reported by the allocator without allocating.
static CASE_SEED: AtomicU64 = AtomicU64::new(0);
static OVER_CAP: AtomicUsize = AtomicUsize::new(0);

/// Refuses (returns null for) any allocation over `ALLOC_CAP`: code that
/// handles that (`try_reserve`) goes on and the test fails afterwards with
/// the seed; code that does not aborts, after the message written here.
struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            over_cap(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// Records and prints (with `write(2)`, no allocation) an allocation over
/// the cap, so the seed is known even if the process then aborts.
fn over_cap(size: usize) {
    let _ = OVER_CAP.compare_exchange(0, size, Ordering::SeqCst, Ordering::SeqCst);
    if CASE_SEED.load(Ordering::SeqCst) == u64::MAX {
        return;
    }
    let mut msg = [0u8; 128];
    let mut n = 0;
    for part in [
        b"\nmutations: allocation of ".as_slice(),
        &dec(size as u64),
        b" bytes over the cap in case seed ",
        &dec(CASE_SEED.load(Ordering::SeqCst)),
        b"\n",
    ] {
        for &b in part.iter().filter(|&&b| b != 0) {
            if n < msg.len() {
                msg[n] = b;
                n += 1;
            }
        }
    }
    // SAFETY: writes n initialised bytes to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), n) };
}

/// `v` in decimal, NUL-padded on the left, without allocating.
fn dec(mut v: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return out;
        }
    }
}

/// FNV-1a of `data`, below 2^48 so that adding a case number never wraps.
fn fnv1a(data: &[u8]) -> u64 {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h >> 16
}

/// xorshift64*: small, seedable, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
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

/// A header field: absolute offset, width in bytes, big-endian?
type Field = (u64, u8, bool);

/// One image under test and where its headers are.
struct Subject {
    name: String,
    data: Arc<Vec<u8>>,
    /// Cases to run: fewer for the big generated disk.
    cases: u64,
    fields: Vec<Field>,
    /// Re-seals checksums after a header field is changed, so the change
    /// reaches the code behind the checksum test.
    reseal: Option<fn(&mut Mutated)>,
}

fn be(list: &[(u64, u8)], base: u64) -> Vec<Field> {
    list.iter().map(|&(o, w)| (base + o, w, true)).collect()
}

fn le(list: &[(u64, u8)], base: u64) -> Vec<Field> {
    list.iter().map(|&(o, w)| (base + o, w, false)).collect()
}

const QCOW2: &[(u64, u8)] = &[
    (4, 4),   // version
    (8, 8),   // backing file offset
    (16, 4),  // backing file size
    (20, 4),  // cluster bits
    (24, 8),  // virtual size
    (32, 4),  // encryption
    (36, 4),  // L1 entries
    (40, 8),  // L1 offset
    (48, 8),  // refcount table offset
    (56, 4),  // refcount table clusters
    (60, 4),  // snapshots
    (64, 8),  // snapshots offset
    (72, 8),  // incompatible features
    (96, 4),  // refcount order
    (100, 4), // header length
    (104, 1), // compression type
];
const VHD_FOOTER: &[(u64, u8)] = &[(8, 4), (12, 4), (16, 8), (40, 8), (48, 8), (56, 4), (60, 4)];
const VHD_DYNAMIC: &[(u64, u8)] = &[(8, 8), (16, 8), (24, 4), (28, 4), (32, 4)];
const VMDK_SPARSE: &[(u64, u8)] = &[
    (4, 4),  // version
    (8, 4),  // flags
    (12, 8), // capacity
    (20, 8), // grain size
    (28, 8), // descriptor offset
    (36, 8), // descriptor size
    (44, 4), // GTEs per GT
    (48, 8), // redundant GD offset
    (56, 8), // GD offset
    (64, 8), // overhead
    (77, 2), // compression
];
const EXT_SB: &[(u64, u8)] = &[
    (0, 4),     // inodes
    (4, 4),     // blocks
    (20, 4),    // first data block
    (24, 4),    // log block size
    (28, 4),    // log cluster size
    (32, 4),    // blocks per group
    (40, 4),    // inodes per group
    (88, 2),    // inode size
    (96, 4),    // incompatible features
    (0x150, 4), // blocks hi
    (0xFE, 2),  // descriptor size
    (0x174, 1), // log groups per flex
];
const NTFS_BOOT: &[(u64, u8)] = &[
    (11, 2), // bytes per sector
    (13, 1), // sectors per cluster
    (40, 8), // total sectors
    (48, 8), // MFT cluster
    (56, 8), // MFT mirror cluster
    (64, 1), // clusters (or 2^-n) per MFT record
    (68, 1), // per index record
];
/// MBR partition entries: start LBA and length of each of the four.
fn mbr_fields(base: u64) -> Vec<Field> {
    (0..4)
        .flat_map(|i| {
            [
                (base + 446 + 16 * i + 8, 4, false),
                (base + 446 + 16 * i + 12, 4, false),
            ]
        })
        .collect()
}

/// VHD checksums (one's complement of the byte sum) of both footers and
/// the dynamic header.
fn reseal_vhd(d: &mut Mutated) {
    fn seal(d: &mut Mutated, at: u64, len: u64, field: u64) {
        if at.checked_add(len).is_none_or(|end| end > d.len) {
            return;
        }
        let sum: u32 = (at..at + len)
            .filter(|&i| !(at + field..at + field + 4).contains(&i))
            .map(|i| u32::from(d.get(i)))
            .sum();
        for (i, b) in (!sum).to_be_bytes().into_iter().enumerate() {
            d.set(at + field + i as u64, b);
        }
    }
    if d.len >= 512 {
        let foot = d.len - 512;
        seal(d, foot, 512, 64);
        seal(d, 0, 512, 64);
        let header = (0..8).fold(0u64, |v, i| v << 8 | u64::from(d.get(foot + 16 + i)));
        seal(d, header, 1024, 36);
    }
}

/// Btrfs superblock at 64 KiB and where its fsid and node size are.
const BTRFS_SB: u64 = 64 << 10;

fn crc32c(bytes: impl Iterator<Item = u8>) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The seed's tree-block size and fsid.
fn btrfs_geometry(data: &[u8]) -> Option<(u64, [u8; 16])> {
    let sb = data.get(BTRFS_SB as usize..BTRFS_SB as usize + 4096)?;
    let nodesize = u64::from(u32::from_le_bytes(sb[0x94..0x98].try_into().ok()?));
    Some((nodesize, sb[0x20..0x30].try_into().ok()?))
}

/// Superblock fields and, in every tree block of the seed, the header's
/// bytenr, item count and level and each item's key, data offset and size
/// (leaves) or key and child pointer (nodes): with the checksums resealed,
/// these give keys out of order, huge items, loops and bad chunks.
fn btrfs_fields(data: &[u8]) -> Vec<Field> {
    let mut f = le(
        &[
            (0x50, 8),
            (0x58, 8),
            (0x70, 8),
            (0x90, 4),
            (0x94, 4),
            (0xa0, 4),
            (0xc4, 2),
            (0xc6, 1),
            (0xc7, 1),
            (0x32b + 17, 8),
            (0x32b + 17 + 16, 8),
            (0x32b + 17 + 44, 2),
            (0x32b + 17 + 56, 8),
        ],
        BTRFS_SB,
    );
    let Some((nodesize, fsid)) = btrfs_geometry(data) else {
        return f;
    };
    let mut at = 0;
    while at + nodesize <= data.len() as u64 {
        let b = &data[at as usize..(at + nodesize) as usize];
        if b[0x20..0x30] == fsid && at != BTRFS_SB {
            f.extend(le(&[(0x30, 8), (0x60, 4), (0x64, 1)], at));
            let n = u32::from_le_bytes(b[0x60..0x64].try_into().unwrap()) as u64;
            let leaf = b[0x64] == 0;
            for i in 0..n.min(200) {
                let item = at + 101 + i * if leaf { 25 } else { 33 };
                f.extend(le(
                    &[
                        (0, 8),
                        (8, 1),
                        (9, 8),
                        (17, if leaf { 4 } else { 8 }),
                        (21, 4),
                    ],
                    item,
                ));
            }
        }
        at += nodesize;
    }
    f
}

/// Recomputes the crc32c of the superblock and of every tree block a
/// patch fell in.
fn reseal_btrfs(d: &mut Mutated) {
    let Some((nodesize, fsid)) = btrfs_geometry(&d.base) else {
        return;
    };
    let mut blocks: Vec<(u64, u64)> = d
        .patches
        .keys()
        .map(|&at| {
            if (BTRFS_SB..BTRFS_SB + 4096).contains(&at) {
                (BTRFS_SB, 4096)
            } else {
                (at / nodesize * nodesize, nodesize)
            }
        })
        .collect();
    blocks.dedup();
    for (start, len) in blocks {
        if start + len > d.len || (0x20..0x30).any(|i| d.get(start + i) != fsid[i as usize - 0x20])
        {
            continue;
        }
        let sum = crc32c((start + 32..start + len).map(|i| d.get(i)));
        for (i, b) in sum.to_le_bytes().into_iter().enumerate() {
            d.set(start + i as u64, b);
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn subjects(per_image: u64) -> Vec<Subject> {
    let seeds = repo().join("fuzz/seeds");
    let load = |rel: &str| std::fs::read(seeds.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let real = |name: &str| {
        let p = common::realimage(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let mut out = Vec::new();
    let mut add = |name: &str, data: Vec<u8>, fields: Vec<Field>, reseal| {
        out.push(Subject {
            name: name.to_string(),
            // A walk of the 48 MiB generated disk takes 100 times longer.
            cases: if data.len() > 8 << 20 {
                per_image / 5
            } else {
                per_image
            },
            data: Arc::new(data),
            fields,
            reseal,
        })
    };
    add(
        "qcow2/disk.qcow2",
        load("qcow2/disk.qcow2"),
        be(QCOW2, 0),
        None,
    );
    add(
        "qcow2/v2-compressed.qcow2",
        load("qcow2/v2-compressed.qcow2"),
        be(QCOW2, 0),
        None,
    );
    let vhd = load("vhd/dynamic.vhd");
    let mut f = be(VHD_FOOTER, vhd.len() as u64 - 512);
    f.extend(be(VHD_FOOTER, 0));
    f.extend(be(VHD_DYNAMIC, 512));
    add("vhd/dynamic.vhd", vhd, f, Some(reseal_vhd));
    add(
        "vhdx/dynamic.vhdx",
        load("vhdx/dynamic.vhdx"),
        Vec::new(),
        None,
    );
    add(
        "vmdk/sparse.vmdk",
        load("vmdk/sparse.vmdk"),
        le(VMDK_SPARSE, 0),
        None,
    );
    let stream = load("vmdk/stream.vmdk");
    let mut f = le(VMDK_SPARSE, 0);
    f.extend(le(VMDK_SPARSE, stream.len() as u64 - 1024));
    add("vmdk/stream.vmdk", stream, f, None);
    // Descriptors: their extents are in fuzz/fixtures/vmdk.
    add("vmdk/split.vmdk", load("vmdk/split.vmdk"), Vec::new(), None);
    add("vmdk/flat.vmdk", load("vmdk/flat.vmdk"), Vec::new(), None);
    let mut f = mbr_fields(0);
    f.extend(le(EXT_SB, 34 * 512 + 1024));
    add("volume/gpt-ext4.img", load("volume/gpt-ext4.img"), f, None);
    let disk2 = real("disk2.img");
    let mut f = mbr_fields(0);
    f.extend(mbr_fields(5 * 512));
    f.extend(mbr_fields(7 * 512));
    add("real/disk2.img", disk2, f, None);
    add("lvm/pv2.img", load("lvm/pv2.img"), Vec::new(), None);
    let btrfs = load("btrfs/mixed.btrfs");
    let f = btrfs_fields(&btrfs);
    add("btrfs/mixed.btrfs", btrfs, f, Some(reseal_btrfs));
    add("real/testfs1", real("testfs1"), le(NTFS_BOOT, 0), None);
    add(
        "real/data.ext4.dat",
        real("data.ext4.dat"),
        le(EXT_SB, 1024),
        None,
    );
    add(
        "real/gpt-disk.img",
        real("gpt-disk.img"),
        mbr_fields(0),
        None,
    );
    add(
        "ext/tiny.ext4",
        load("ext/tiny.ext4"),
        le(EXT_SB, 1024),
        None,
    );
    if let Some(dir) = common::generated("bare-ext4") {
        let disk = std::fs::read(dir.join("disk.img")).expect("bare-ext4 disk.img");
        add("generated/bare-ext4", disk, le(EXT_SB, 1024), None);
    }
    out
}

/// An offset worth mutating: most often one inside a non-zero 4 KiB block
/// (metadata, tables, data), as mutating the zeros of sparse images rarely
/// reaches a parser.
fn pick_offset(rng: &mut Rng, data: &[u8], len: u64) -> u64 {
    let mut at = rng.below(len);
    for _ in 0..8 {
        let block = (at & !4095) as usize;
        if data[block..(block + 4096).min(data.len())]
            .iter()
            .any(|&b| b != 0)
        {
            break;
        }
        at = rng.below(len);
    }
    at
}

/// An image with some bytes changed and maybe cut short, read through
/// without copying the image (the generated disk is 48 MiB).
struct Mutated {
    base: Arc<Vec<u8>>,
    len: u64,
    patches: BTreeMap<u64, u8>,
}

impl Mutated {
    fn get(&self, at: u64) -> u8 {
        self.patches
            .get(&at)
            .copied()
            .unwrap_or_else(|| self.base[at as usize])
    }
    fn set(&mut self, at: u64, v: u8) {
        if at < self.len {
            self.patches.insert(at, v);
        }
    }
}

impl ReadAt for Mutated {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - offset) as usize);
        let start = offset as usize;
        buf[..n].copy_from_slice(&self.base[start..start + n]);
        for (&at, &b) in self.patches.range(offset..offset + n as u64) {
            buf[(at - offset) as usize] = b;
        }
        Ok(n)
    }
}

/// Applies 1-4 (at most `max`) seeded mutations to `s`'s image.
fn mutate(s: &Subject, seed: u64, max: u64) -> Mutated {
    let mut rng = Rng::new(seed);
    let mut d = Mutated {
        base: s.data.clone(),
        len: s.data.len() as u64,
        patches: BTreeMap::new(),
    };
    for _ in 0..max.min(1 + rng.below(4)) {
        if d.len == 0 {
            break;
        }
        match rng.below(10) {
            0..=3 => {
                for _ in 0..1 + rng.below(8) {
                    let at = pick_offset(&mut rng, &s.data, d.len);
                    let v = d.get(at) ^ (1 << rng.below(8));
                    d.set(at, v);
                }
            }
            4 | 5 => {
                let at = pick_offset(&mut rng, &s.data, d.len) & !511;
                let v = if rng.below(2) == 0 { 0 } else { 0xFF };
                for i in at..at + 512 {
                    d.set(i, v);
                }
            }
            6 => d.len = rng.below(d.len),
            // A number in text (VMDK descriptors, LVM metadata) set to all
            // nines or zeros, keeping its width.
            7 => {
                let from = pick_offset(&mut rng, &s.data, d.len);
                let end = (from + 512).min(d.len);
                let digit = |d: &Mutated, i: u64| d.get(i).is_ascii_digit();
                if let Some(start) = (from..end).find(|&i| digit(&d, i)) {
                    let v = if rng.below(2) == 0 { b'9' } else { b'0' };
                    let mut i = start;
                    while i < d.len && digit(&d, i) {
                        d.set(i, v);
                        i += 1;
                    }
                }
            }
            _ if !s.fields.is_empty() => {
                let (at, width, big) = s.fields[rng.below(s.fields.len() as u64) as usize];
                let width = usize::from(width);
                if at + width as u64 <= d.len {
                    let max = if width == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (8 * width)) - 1
                    };
                    let v = match rng.below(6) {
                        0 => max,
                        1 => max - 1,
                        2 => 0,
                        3 => 1,
                        4 => max / 2 + 1,
                        _ => rng.next() & max,
                    };
                    for i in 0..width {
                        let shift = 8 * if big { width - 1 - i } else { i };
                        d.set(at + i as u64, (v >> shift) as u8);
                    }
                    if let Some(f) = s.reseal {
                        f(&mut d);
                    }
                }
            }
            _ => {
                let at = pick_offset(&mut rng, &s.data, d.len);
                d.set(at, rng.next() as u8);
            }
        }
    }
    d
}

/// Runs one case in a thread under the time limit; `Err` says what failed.
fn run_case(s: &Subject, seed: u64, fixtures: &Path) -> Result<(), String> {
    let data = mutate(s, seed, 4);
    CASE_SEED.store(seed, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    let fixtures = fixtures.to_path_buf();
    std::thread::spawn(move || {
        harness::everything(Arc::new(data), &fixtures);
        let _ = tx.send(());
    });
    let what = format!("{}:{seed}", s.name);
    let r = match rx.recv_timeout(CASE_LIMIT) {
        Ok(()) => Ok(()),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("{what}: hung for {} s", CASE_LIMIT.as_secs()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{what}: panicked")),
    };
    match OVER_CAP.swap(0, Ordering::SeqCst) {
        0 => r,
        n => Err(format!(
            "{what}: allocated {n} bytes at once (cap {ALLOC_CAP})"
        )),
    }
}

#[test]
fn mutated_images() {
    // The cap works: an allocation over it is refused and recorded (seed
    // u64::MAX: not reported).
    CASE_SEED.store(u64::MAX, Ordering::SeqCst);
    assert!(Vec::<u8>::new().try_reserve(ALLOC_CAP + 1).is_err());
    assert_eq!(OVER_CAP.swap(0, Ordering::SeqCst), ALLOC_CAP + 1);
    let fixtures = repo().join("fuzz/fixtures/vmdk");
    let per_image: u64 = std::env::var("MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut subjects = subjects(per_image);
    if let Ok(only) = std::env::var("MUTATION_ONLY") {
        subjects.retain(|s| s.name.contains(&only));
    }
    if let Ok(case) = std::env::var("MUTATION_CASE") {
        let (name, seed) = case.rsplit_once(':').expect("MUTATION_CASE=<image>:<seed>");
        let s = subjects
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no image {name}"));
        let seed = seed.parse().expect("seed");
        if let Some(out) = std::env::var_os("MUTATION_DUMP") {
            // The mutated image, e.g. for fuzz/regressions/.
            let m = mutate(s, seed, 4);
            let mut bytes = vec![0; m.len as usize];
            m.read_exact_at(0, &mut bytes).unwrap();
            std::fs::write(out, bytes).unwrap();
        }
        run_case(s, seed, &fixtures).unwrap();
        return;
    }
    let mut failures = Vec::new();
    for s in &subjects {
        // Unchanged, each image must open to more than an empty root, or
        // its mutations would test nothing past the first layer.
        let whole = harness::everything(Arc::new(mutate(s, 0, 0)), &fixtures);
        assert!(whole > 1, "{}: unmutated, only {whole} nodes", s.name);
        let start = Instant::now();
        for case in 0..s.cases {
            // Seeds differ between images and stay the same when images are
            // added: a hash of the image's name plus the case number.
            let seed = fnv1a(s.name.as_bytes()) + case;
            if let Err(e) = run_case(s, seed, &fixtures) {
                eprintln!("FAILED {e}");
                failures.push(e);
                if failures.len() >= 20 {
                    break;
                }
            }
        }
        eprintln!("{}: {} cases in {:.1?}", s.name, s.cases, start.elapsed());
    }
    assert!(
        failures.is_empty(),
        "{} mutation case(s) failed; rerun one with MUTATION_CASE=<image>:<seed>:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
