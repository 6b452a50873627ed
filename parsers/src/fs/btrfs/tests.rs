//! Tests on volumes made with `mkfs.btrfs --rootdir` (no mount, no root
//! needed): contents against the directory they were made from, a damaged
//! tree block read from its DUP copy, and refused when it has none. The
//! kernel-compared tests are in `tests/btrfs.rs`.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::{BtrfsFs, FS_TREE};
use crate::fs::{FileSystem, FileType, NodeId};
use crate::readat::FileSource;
use crate::testutil::{have, run, TempDir, XorShift};
use crate::{ReadAt, Source};

/// A source with some bytes replaced.
struct Patched {
    base: Source,
    patches: Vec<(u64, u8)>,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.base.read_at(offset, buf)?;
        for &(at, v) in &self.patches {
            if at >= offset && at < offset + n as u64 {
                buf[(at - offset) as usize] ^= v;
            }
        }
        Ok(n)
    }
}

/// Files of the source directory: (name, contents).
fn files(rng: &mut XorShift) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("tiny".to_string(), b"hello\n".to_vec()),
        ("big.bin".to_string(), rng.bytes(300_000)),
    ];
    for i in 0..200 {
        v.push((format!("entry-{i:04}"), format!("{i}\n").into_bytes()));
    }
    v
}

/// A volume made from a directory holding `files`.
fn make(tmp: &TempDir, name: &str, args: &[&str], files: &[(String, Vec<u8>)]) -> Option<Source> {
    if !have("mkfs.btrfs") {
        if std::env::var_os("CI").is_some() {
            panic!("mkfs.btrfs required under CI");
        }
        eprintln!("skipping: no mkfs.btrfs");
        return None;
    }
    let dir = tmp.join(&format!("{name}.d"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (n, data) in files {
        std::fs::write(dir.join(n), data).unwrap();
    }
    std::os::unix::fs::symlink("tiny", dir.join("sub/link")).unwrap();
    let img = tmp.join(&format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-f", "-L", name])
        .args(args)
        .arg("--rootdir")
        .arg(&dir)
        .arg(&img));
    Some(Arc::new(FileSource::open(Path::new(&img)).unwrap()))
}

fn read_all(fs: &dyn FileSystem, node: NodeId) -> Vec<u8> {
    let size = fs.stat(node).unwrap().size;
    let mut v = vec![0u8; size as usize];
    let mut done = 0;
    while done < v.len() {
        let end = (done + 70_001).min(v.len());
        let n = fs.read(node, done as u64, &mut v[done..end]).unwrap();
        assert!(n > 0);
        done += n;
    }
    v
}

fn check_contents(fs: &BtrfsFs, files: &[(String, Vec<u8>)]) {
    let root = fs.root();
    let names: Vec<_> = fs
        .read_dir(root)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), files.len() + 1);
    for (n, data) in files {
        let node = fs.lookup(root, OsStr::new(n)).unwrap().unwrap();
        assert_eq!(fs.stat(node).unwrap().kind, FileType::File);
        assert_eq!(&read_all(fs, node), data, "{n}");
    }
    let sub = fs.lookup(root, OsStr::new("sub")).unwrap().unwrap();
    let link = fs.lookup(sub, OsStr::new("link")).unwrap().unwrap();
    assert_eq!(fs.read_link(link).unwrap(), "tiny");
    assert_eq!(fs.lookup(root, OsStr::new("absent")).unwrap(), None);
}

/// Flips a byte in the middle of copy `copy` of the top-level fs tree's
/// root block.
fn damage_fs_root(src: &Source, copies: &[usize]) -> Source {
    let fs = BtrfsFs::open(src.clone()).unwrap();
    let tree = fs.subvol(FS_TREE).unwrap().tree;
    let m = fs.chunks.map(tree.bytenr).unwrap();
    let patches = copies
        .iter()
        .map(|&c| (m.copies[c].1 + 200, 0x5a))
        .collect();
    Arc::new(Patched {
        base: src.clone(),
        patches,
    })
}

#[test]
fn rootdir_dup_metadata_falls_back_to_the_mirror() {
    let tmp = TempDir::new("btrfs");
    let files = files(&mut XorShift(7));
    let Some(src) = make(&tmp, "dup", &["-m", "dup"], &files) else {
        return;
    };
    assert_eq!(crate::fs::probe(&src), Some(crate::fs::FsKind::Btrfs));
    let fs = BtrfsFs::open(src.clone()).unwrap();
    assert_eq!(fs.info().kind, "btrfs");
    assert_eq!(fs.info().label.as_deref(), Some("dup"));
    assert!(fs.subvolumes().unwrap().is_empty());
    check_contents(&fs, &files);

    // One copy damaged: the other serves.
    let one = damage_fs_root(&src, &[0]);
    check_contents(&BtrfsFs::open(one).unwrap(), &files);
    // Both damaged: an error naming the block, never data.
    let both = damage_fs_root(&src, &[0, 1]);
    let fs = BtrfsFs::open(both).unwrap();
    let e = fs.read_dir(fs.root()).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
}

#[test]
fn rootdir_single_metadata_refuses_a_bad_block() {
    let tmp = TempDir::new("btrfs");
    let files = files(&mut XorShift(8));
    let Some(src) = make(&tmp, "single", &["-m", "single", "-n", "4096"], &files) else {
        return;
    };
    check_contents(&BtrfsFs::open(src.clone()).unwrap(), &files);
    let bad = damage_fs_root(&src, &[0]);
    let fs = BtrfsFs::open(bad).unwrap();
    let e = fs
        .lookup(fs.root(), OsStr::new("tiny"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");

    // A damaged data sector: that read fails, the others do not.
    let fs = BtrfsFs::open(src.clone()).unwrap();
    let node = fs
        .lookup(fs.root(), OsStr::new("big.bin"))
        .unwrap()
        .unwrap();
    let (sv, ino, _) = fs.inode(node).unwrap();
    let extents = fs.file_extents(node, &sv, ino).unwrap();
    let Some(super::Body::Regular { disk_bytenr, .. }) = extents.first().map(|e| &e.body) else {
        panic!("big.bin has no regular extent: {extents:?}");
    };
    let phys = fs.chunks.map(*disk_bytenr).unwrap().copies[0].1;
    let bad: Source = Arc::new(Patched {
        base: src.clone(),
        patches: vec![(phys + 5000, 1)],
    });
    let fs = BtrfsFs::open(bad).unwrap();
    let node = fs
        .lookup(fs.root(), OsStr::new("big.bin"))
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; 100];
    let e = fs.read(node, 4000, &mut buf).unwrap_err();
    assert!(e.to_string().contains("data checksum mismatch"), "{e}");
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(fs.read(node, 0, &mut buf).unwrap(), 100);
    assert_eq!(&buf[..], &files[1].1[..100]);

    // A damaged primary superblock: the mirror at 64 MiB serves, with a
    // warning.
    let sb = Arc::new(Patched {
        base: src.clone(),
        patches: vec![(65536 + 0x100, 1)],
    });
    let fs = BtrfsFs::open(sb).unwrap();
    assert!(!fs.info().warnings.is_empty());
    check_contents(&fs, &files);
}

#[test]
fn node_ids_encode_subvolume_and_inode() {
    assert_eq!(super::encode(5, 256).unwrap(), 256);
    assert_eq!(super::decode(256), (5, 256));
    let n = super::encode(300, 1 << 20).unwrap();
    assert_eq!(super::decode(n), (300, 1 << 20));
    assert!(n < 1 << 48);
    assert!(super::encode(65790, 7).is_ok());
    assert!(super::encode(65791, 7).is_err());
    assert!(super::encode(256, 1 << 32).is_err());
    assert!(super::encode(3, 1).is_err());
}
