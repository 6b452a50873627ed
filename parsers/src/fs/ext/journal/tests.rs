//! Journal checksums (v3, as metadata_csum makes them) against the kernel's
//! own recovery: a journal written by the kernel (data=journal, a commit
//! per fsync), copied while mounted, damaged in one place, then recovered
//! by the kernel (a ro mount of a writable loop device replays it onto the
//! copy) and replayed by us; every block the journal logs must read the
//! same both ways.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::super::ExtFs;
use crate::readat::FileSource;

const BS: u64 = 1024;

fn have_tools() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["mkfs.ext4", "debugfs", "losetup", "mount", "python3"];
    let ok = root
        && tools.iter().all(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !ok && std::env::var_os("CI").is_some() {
        panic!("journal tests need root and {tools:?} under CI");
    }
    if !ok {
        eprintln!("skipping: needs root and {tools:?}");
    }
    ok
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .output()
        .expect("run sh")
}

fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let m = self.0.join("mnt");
        let _ = Command::new("umount").arg(&m).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One transaction as `debugfs logdump` shows it (journal block numbers).
#[derive(Default)]
struct Transaction {
    descriptors: Vec<u64>,
    commit: u64,
    /// (filesystem block, journal block of its copy).
    logged: Vec<(u64, u64)>,
}

/// What `debugfs logdump` says the journal holds, in log order.
struct Log {
    transactions: Vec<Transaction>,
}

fn logdump(img: &Path) -> Log {
    let out = sh_ok(&format!(
        "debugfs -R 'logdump -a' '{}' 2>/dev/null",
        img.display()
    ));
    let mut transactions = Vec::new();
    let mut cur: Option<Transaction> = None;
    let num = |w: &str| w.trim_end_matches([',', ':']).parse::<u64>().unwrap();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Found expected sequence") {
            let at = num(w[w.len() - 1]);
            let t = cur.get_or_insert_with(Transaction::default);
            if line.contains("(descriptor block)") {
                t.descriptors.push(at);
            } else if line.contains("(commit block)") {
                t.commit = at;
                transactions.extend(cur.take());
            }
        } else if line.trim_start().starts_with("FS block")
            && line.contains("logged at journal block")
        {
            if let Some(t) = cur.as_mut() {
                t.logged.push((num(w[2]), num(w[7])));
            }
        }
    }
    Log { transactions }
}

/// The filesystem block holding journal block `j` (journal inode 8).
fn journal_block_home(img: &Path, j: u64) -> u64 {
    sh_ok(&format!(
        "debugfs -R 'bmap <8> {j}' '{}' 2>/dev/null",
        img.display()
    ))
    .trim()
    .parse()
    .unwrap()
}

fn flip(img: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5A], at).unwrap();
}

fn blocks_of(img: &Path, blocks: &[u64]) -> BTreeMap<u64, Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(img).unwrap();
    blocks
        .iter()
        .map(|&b| {
            let mut v = vec![0u8; BS as usize];
            f.read_exact_at(&mut v, b * BS).unwrap();
            (b, v)
        })
        .collect()
}

/// The kernel's recovery of a copy of `img`: whether the mount worked, and
/// the `blocks` afterwards (recovery writes what it replayed before it
/// fails, if it fails).
fn kernel(dir: &Path, img: &Path, blocks: &[u64]) -> (bool, BTreeMap<u64, Vec<u8>>) {
    let copy = dir.join("kernel.img");
    std::fs::copy(img, &copy).unwrap();
    let mnt = dir.join("mnt");
    let out = sh(&format!(
        "dev=$(losetup --find --show '{c}')
         if mount -t ext4 -o ro \"$dev\" '{m}'; then umount '{m}'; ok=1; else ok=0; fi
         losetup -d \"$dev\"; echo $ok",
        c = copy.display(),
        m = mnt.display()
    ));
    let mounted = String::from_utf8_lossy(&out.stdout).trim() == "1";
    (mounted, blocks_of(&copy, blocks))
}

/// Our replay of `img`: its warnings and the `blocks` as read through it.
fn ours(img: &Path, blocks: &[u64]) -> (Vec<String>, BTreeMap<u64, Vec<u8>>) {
    let src = Arc::new(FileSource::open(img).unwrap());
    let fs = ExtFs::open(src).unwrap();
    let got = blocks
        .iter()
        .map(|&b| {
            let mut v = vec![0u8; BS as usize];
            fs.read_raw(b * BS, &mut v).unwrap();
            (b, v)
        })
        .collect();
    (fs.warnings.clone(), got)
}

#[test]
fn damaged_journal_replays_as_the_kernel_recovers_it() {
    if !have_tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("restorefs-jbd2-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    let scratch = Scratch(dir.clone());
    let img = dir.join("fs.img");
    let dirty = dir.join("dirty.img");
    // 24 transactions, each one fsync'd file (data=journal logs its data
    // too); the backing file is copied while still mounted, so nothing
    // is checkpointed to its home yet (commit=60 keeps the kernel quiet).
    sh_ok(&format!(
        "truncate -s 24M '{img}'
         mkfs.ext4 -q -F -b 1024 -O metadata_csum -J size=4 '{img}'
         dev=$(losetup --find --show '{img}')
         mount -o data=journal,commit=60 \"$dev\" '{mnt}'
         python3 - '{mnt}' <<'EOF'
import os, sys
m = sys.argv[1]
for i in range(24):
    os.makedirs(os.path.join(m, 'd%d' % (i % 4)), exist_ok=True)
    p = os.path.join(m, 'd%d' % (i % 4), 'f%02d' % i)
    with open(p, 'wb') as f:
        f.write(bytes((i * 7 + j) % 251 for j in range(2500 + 300 * i)))
        f.flush()
        os.fsync(f.fileno())
EOF
         cp --sparse=never '{img}' '{dirty}'
         umount '{mnt}'; losetup -d \"$dev\"",
        img = img.display(),
        mnt = dir.join("mnt").display(),
        dirty = dirty.display()
    ));
    let log = logdump(&dirty);
    assert!(
        log.transactions.len() >= 10,
        "{} transactions",
        log.transactions.len()
    );
    // Every block the journal replaces but the superblock (recovery
    // rewrites it).
    let mut targets: Vec<u64> = log
        .transactions
        .iter()
        .flat_map(|t| t.logged.iter().map(|&(fs, _)| fs))
        .filter(|&b| b != 1)
        .collect();
    targets.sort_unstable();
    targets.dedup();

    let mid = &log.transactions[log.transactions.len() / 2];
    let home = |j: u64| journal_block_home(&dirty, j) * BS;
    let on_disk = |at: u64| blocks_of(&dirty, &[at / BS]).remove(&(at / BS)).unwrap();
    // The newest copy of a block that differs from what the block would
    // hold without it (the copy before, or its home): losing that copy
    // changes what recovery leaves there.
    let once = targets
        .iter()
        .find_map(|&fs| {
            let copies: Vec<u64> = log
                .transactions
                .iter()
                .flat_map(|t| &t.logged)
                .filter(|(b, _)| *b == fs)
                .map(|&(_, j)| j)
                .collect();
            let (&newest, before) = copies.split_last()?;
            let without = match before.last() {
                Some(&j) => on_disk(home(j)),
                None => on_disk(fs * BS),
            };
            (on_disk(home(newest)) != without).then_some((fs, newest))
        })
        .expect("a block whose newest copy matters");
    let cases: Vec<(&str, Option<u64>)> = vec![
        ("intact", None),
        ("data block", Some(home(once.1) + 100)),
        // In its header (h_commit_nsec): the commit fails.
        ("commit block", Some(home(mid.commit) + 56)),
        // Past its header: a commit torn after the header, which passes.
        ("torn commit block", Some(home(mid.commit) + 100)),
        ("descriptor block", Some(home(mid.descriptors[0]) + BS - 8)),
    ];
    let (_, clean) = kernel(&dir, &dirty, &targets);
    for (case, at) in cases {
        let damaged = dir.join("damaged.img");
        std::fs::copy(&dirty, &damaged).unwrap();
        if let Some(at) = at {
            flip(&damaged, at);
        }
        let (warnings, got) = ours(&damaged, &targets);
        let (mounted, want) = kernel(&dir, &damaged, &targets);
        let differ: Vec<u64> = targets
            .iter()
            .copied()
            .filter(|b| got[b] != want[b])
            .collect();
        assert!(
            differ.is_empty(),
            "{case}: blocks {differ:?} differ from the kernel's recovery; {warnings:?}"
        );
        let said = |s: &str| warnings.iter().any(|w| w.contains(s));
        match case {
            "intact" => {
                assert!(mounted && warnings.is_empty(), "{warnings:?}");
                assert_eq!(want, clean);
            }
            "data block" => {
                assert!(said("fails its checksum: not replayed"), "{warnings:?}");
                assert!(
                    want[&once.0] != clean[&once.0],
                    "the damage changed nothing"
                );
            }
            "commit block" => {
                assert!(said("fails its commit checksum"), "{warnings:?}");
                assert!(want != clean, "the damage changed nothing");
            }
            "torn commit block" => {
                assert!(mounted && warnings.is_empty(), "{warnings:?}");
                assert_eq!(want, clean);
            }
            _ => {
                assert!(!mounted, "the kernel refuses a bad descriptor");
                assert!(said("not replayed"), "{warnings:?}");
                assert_eq!(got, blocks_of(&dirty, &targets), "read as on disk");
            }
        }
    }
    drop(scratch);
}
