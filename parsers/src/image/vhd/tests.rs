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

pub(crate) fn detail<'a>(img: &'a Image, key: &str) -> &'a str {
    img.details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no detail {key}"))
}

fn qemu_case(opts: &str, seed: u64) {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = write(dir.path(), "in.raw", &pattern((37 << 20) + 512 * 3, seed));
    let vhd = dir.path().join("t.vhd");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vpc", "-o", opts])
        .arg(&raw)
        .arg(&vhd));
    let want = qemu_raw(dir.path(), &vhd, "vpc");
    let img = image::open(&vhd).unwrap();
    assert_eq!(img.format, "vhd");
    assert_eq!(img.disk.size(), want.len() as u64);
    assert!(read_all(&*img.disk) == want);
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
