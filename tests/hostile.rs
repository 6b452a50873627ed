//! Damaged restore points: truncated and corrupted generated disks, opened
//! and walked end to end. Errors are expected; panics and hangs are bugs.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use restorefs_parsers::fs::FileType;
use restorefs_parsers::image::Image;
use restorefs_parsers::readat::{FileSource, Window};
use restorefs_parsers::tree::RestoreTree;
use restorefs_parsers::{ReadAt, Source};

/// Opens and walks everything, reading every file; returns how many nodes
/// were visited. Every error is tolerated.
fn walk_all(disk: Source) -> usize {
    let size = disk.size();
    let image = Image::new(disk, "raw", size);
    let Ok(tree) = RestoreTree::from_image(image) else {
        return 0;
    };
    let mut seen = 0;
    let mut stack = vec![tree.root()];
    let mut buf = vec![0u8; 1 << 16];
    while let Some(node) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let Ok(st) = tree.stat(node) else { continue };
        match st.kind {
            FileType::Dir => {
                if let Ok(entries) = tree.read_dir(node) {
                    stack.extend(entries.into_iter().map(|e| e.node));
                }
            }
            FileType::Symlink => {
                let _ = tree.read_link(node);
            }
            _ => {
                let mut off = 0u64;
                while off < st.size.min(64 << 20) {
                    match tree.read(node, off, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => off += n as u64,
                    }
                }
            }
        }
        let _ = tree.xattrs(node);
    }
    seen
}

/// Runs `walk_all` with a time limit, so a hang fails instead of blocking.
fn walk_limited(disk: Source, what: &str) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(walk_all(disk));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(_) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung for 60 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// A source with a few bytes changed, so mutations need no copy of the disk.
struct Patched {
    base: Source,
    patches: std::collections::BTreeMap<u64, u8>,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.base.read_at(offset, buf)?;
        for (&at, &b) in self.patches.range(offset..offset + n as u64) {
            buf[(at - offset) as usize] = b;
        }
        Ok(n)
    }
}

fn open_file(dir: &Path) -> Source {
    Arc::new(FileSource::open(&dir.join("disk.img")).expect("disk.img"))
}

#[test]
fn truncated_disks() {
    for name in ["gpt-ntfs-ext4", "mbr-logical", "bare-ext4"] {
        let Some(dir) = generated(name) else { return };
        let file = open_file(&dir);
        let size = file.size();
        for i in 1..24u64 {
            let cut = size * i / 24 + i * 4099 % 8192;
            walk_limited(
                Arc::new(Window::new(file.clone(), 0, cut.min(size))),
                &format!("{name} cut at {cut}"),
            );
        }
    }
}

#[test]
fn corrupted_superblocks_and_metadata() {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for name in ["gpt-ntfs-ext4", "mbr-logical"] {
        let Some(dir) = generated(name) else { return };
        let file = open_file(&dir);
        let tree = RestoreTree::open(&dir.join("disk.img")).unwrap();
        // The first 256 KiB of each volume hold the superblocks, boot
        // sectors, group descriptors, MFT starts and inode tables' heads.
        let starts: Vec<u64> = tree
            .volumes
            .iter()
            .filter_map(|v| v.partition.as_ref().map(|p| p.offset))
            .collect();
        for case in 0..200 {
            let base = starts[(next() as usize) % starts.len()];
            let mut patches = std::collections::BTreeMap::new();
            for _ in 0..1 + next() % 16 {
                let at = base + next() % (256 << 10);
                let mut b = [0u8];
                file.read_exact_at(at, &mut b).unwrap();
                let v = match next() % 3 {
                    0 => b[0] ^ (1 << (next() % 8)),
                    1 => 0,
                    _ => 0xFF,
                };
                patches.insert(at, v);
            }
            let disk = Arc::new(Patched {
                base: file.clone(),
                patches,
            });
            walk_limited(disk, &format!("{name} case {case}"));
        }
    }
}
