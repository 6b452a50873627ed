//! Every input a fuzz target once crashed on (fuzz/regressions/TARGET/),
//! replayed through the target's own code (fuzz/src/lib.rs), each under a
//! time limit. Runs on stable, no cargo-fuzz needed.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Runs what fuzz target `target` runs on `data`.
pub fn run_target(target: &str, data: &[u8], fixtures: &Path) {
    match target {
        "qcow2" | "vhd" | "vhdx" | "vmdk" => harness::container(target, data, fixtures),
        "volume" => harness::volume(data),
        "lvm" => harness::lvm(data),
        "ext" => harness::ext(data),
        "ntfs" => harness::ntfs(data),
        "stack" => harness::stack(data),
        "chain" => harness::chain(data),
        "xfs" => harness::xfs(data),
        "fat" => harness::fat(data),
        "exfat" => harness::exfat(data),
        "btrfs" => harness::btrfs(data),
        "http_headers" => harness::http_headers(data),
        other => panic!("fuzz/regressions/{other}: no such target"),
    }
}

#[test]
fn fuzz_regressions() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let fixtures = fuzz.join("fixtures/vmdk");
    let Ok(dirs) = std::fs::read_dir(fuzz.join("regressions")) else {
        return;
    };
    let mut failures = Vec::new();
    let mut n = 0;
    for dir in dirs {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let (tx, rx) = mpsc::channel();
            let (t, fx) = (target.clone(), fixtures.clone());
            std::thread::spawn(move || {
                run_target(&t, &data, &fx);
                let _ = tx.send(());
            });
            n += 1;
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    failures.push(format!("{}: hung for 30 s", path.display()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failures.push(format!("{}: panicked", path.display()))
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "of {n} inputs:\n{}",
        failures.join("\n")
    );
}

/// The chain target's seeds are what they claim: a delta that opens over
/// its parent (two points, the newest differing from the base), so the
/// fuzzer starts from inputs that reach the resolver and the overlay.
#[test]
fn chain_seeds_open_as_chains() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/chain");
    let mut n = 0;
    for f in std::fs::read_dir(&seeds).unwrap() {
        let path = f.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (child, opts) = harness::chain_files(&data).expect("seed splits into two files");
        let img = restorefs_parsers::image::open_with(&child, &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let points = img.into_points();
        assert_eq!(points.len(), 2, "{}", path.display());
        let read = |i: usize| {
            let mut buf = vec![0u8; 64 << 10];
            restorefs_parsers::ReadAt::read_exact_at(&*points[i].disk, 0, &mut buf).unwrap();
            buf
        };
        assert_ne!(
            read(0),
            read(1),
            "{}: the delta changes nothing",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 6, "{n} chain seeds");
}
