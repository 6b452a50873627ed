//! What each fuzz target does with its input, shared with `cargo test`
//! (tests/fuzz_regressions.rs and tests/mutations.rs include this file), so
//! a regression input is replayed through exactly the fuzzed code path.
//!
//! Every entry point opens the bytes as one layer and then uses everything
//! that layer offers, within bounds (nodes visited, bytes read) that keep one
//! run short; errors are expected, only panics, hangs and huge allocations
//! are bugs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use restorefs_parsers::fs::{FileSystem, FileType, NodeId};
use restorefs_parsers::image::{self, Image, OpenOptions};
use restorefs_parsers::readat::MemSource;
use restorefs_parsers::tree::{Node, RestoreTree};
use restorefs_parsers::volume;
use restorefs_parsers::{ReadAt, Source};

/// Most nodes one walk visits.
const MAX_NODES: usize = 20_000;
/// Bytes read from the head of each file or volume.
const HEAD_BYTES: u64 = 512 << 10;
/// Bytes one run reads in all; a walk stops reading (not walking) past it.
const MAX_READ: u64 = 32 << 20;

/// Where the `ntfs` crate panics on bad input in calls the parser wraps in
/// `catch_unwind` on purpose (`guarded` in parsers/src/fs/ntfs/index.rs):
/// bounds checks on immutable slices, unchecked additions.
const CONTAINED_PANICS: &[&str] = &[
    "/src/index_entry.rs",
    "/src/index_record.rs",
    "/src/structured_values/index_root.rs",
];

/// Run once at a fuzz target's start. libFuzzer's panic hook aborts on
/// every panic, even one the parser catches; this lets through the ones
/// listed in `CONTAINED_PANICS`. A panic nobody catches still aborts, in
/// libfuzzer-sys.
pub fn allow_contained_panics() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let contained = info.location().is_some_and(|l| {
            let f = l.file().replace('\\', "/");
            f.contains("/ntfs-0.4.") && CONTAINED_PANICS.iter().any(|c| f.ends_with(c))
        });
        if !contained {
            abort(info);
        }
    }));
}

pub fn mem(data: &[u8]) -> Source {
    Arc::new(MemSource(data.to_vec()))
}

/// Reads `size` bytes of something through `read` the way a restore does,
/// but bounded: its head, its middle and its last bytes.
fn read_sampled(size: u64, budget: &mut u64, mut read: impl FnMut(u64, &mut [u8]) -> bool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0;
    while off < size.min(HEAD_BYTES) && *budget > 0 {
        if !read(off, &mut buf) {
            break;
        }
        off += buf.len() as u64;
        *budget = budget.saturating_sub(buf.len() as u64);
    }
    for at in [size / 2, size.saturating_sub(4096), size.saturating_sub(1)] {
        if at >= off && *budget > 0 {
            read(at, &mut buf[..4096]);
            *budget = budget.saturating_sub(4096);
        }
    }
}

/// Samples a virtual disk or volume.
pub fn read_source(src: &Source, budget: &mut u64) {
    read_sampled(
        src.size(),
        budget,
        |off, buf| matches!(src.read_at(off, buf), Ok(n) if n > 0),
    );
}

/// Walks a filesystem from its root: every directory listed, every file
/// read (sampled), every symlink and xattr list read.
pub fn walk_fs(fs: &dyn FileSystem) {
    let _ = fs.info();
    let mut budget = MAX_READ;
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeId> = vec![fs.root()];
    while let Some(node) = stack.pop() {
        if !seen.insert(node) || seen.len() > MAX_NODES {
            continue;
        }
        let Ok(st) = fs.stat(node) else { continue };
        match st.kind {
            FileType::Dir => {
                if let Ok(entries) = fs.read_dir(node) {
                    for e in entries {
                        let _ = fs.lookup(node, &e.name);
                        stack.push(e.node);
                    }
                }
            }
            FileType::Symlink => {
                let _ = fs.read_link(node);
            }
            _ => read_sampled(
                st.size,
                &mut budget,
                |off, buf| matches!(fs.read(node, off, buf), Ok(n) if n > 0),
            ),
        }
        let _ = fs.xattrs(node);
    }
}

/// Walks a whole restore tree the same way; returns the nodes visited.
pub fn walk_tree(tree: &RestoreTree) -> usize {
    let mut budget = MAX_READ;
    let mut seen: HashSet<Node> = HashSet::new();
    let mut stack = vec![tree.root()];
    while let Some(node) = stack.pop() {
        if !seen.insert(node) || seen.len() > MAX_NODES {
            continue;
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
            _ => read_sampled(
                st.size,
                &mut budget,
                |off, buf| matches!(tree.read(node, off, buf), Ok(n) if n > 0),
            ),
        }
        let _ = tree.xattrs(node);
    }
    seen.len()
}

/// Targets `qcow2`, `vhd`, `vhdx`, `vmdk`: that format's opener (after its
/// probe, as `image::open` calls it), then its virtual disk sampled. `dir`
/// is where a VMDK descriptor's extents are looked up.
pub fn container(format: &str, data: &[u8], dir: &Path) {
    let file = mem(data);
    let path = dir.join("fuzz.img");
    // Only inputs the format's own probe takes; `open_source` then runs
    // that format's opener (a delta's own structures are parsed before it
    // is refused for want of its parent).
    let ours = match format {
        "qcow2" => image::qcow2::probe(&*file),
        "vhd" => image::vhd::probe(&*file),
        "vhdx" => image::vhdx::probe(&*file),
        "vmdk" => image::vmdk::probe(&data[..data.len().min(512)], file.size()),
        _ => false,
    };
    if !ours {
        return;
    }
    let opened = image::open_source(&path, file);
    if let Ok(img) = opened {
        let mut budget = MAX_READ;
        read_source(&img.disk, &mut budget);
    }
}

/// Target `volume`: GPT or MBR (and LVM on its partitions), every volume
/// sampled.
pub fn volume(data: &[u8]) {
    let disk = mem(data);
    let Ok(mut table) = volume::scan(&disk) else {
        return;
    };
    let all: Vec<usize> = (0..table.volumes.len()).collect();
    volume::add_lvm(&disk, &mut table, &all);
    let mut budget = MAX_READ;
    for v in &table.volumes {
        read_source(&v.source, &mut budget);
    }
}

/// Target `lvm`: the bytes as one PV; every LV sampled.
pub fn lvm(data: &[u8]) {
    let scan = volume::lvm::scan(&[("fuzz".to_string(), mem(data))]);
    let mut budget = MAX_READ;
    for lv in &scan.lvs {
        read_source(&lv.source, &mut budget);
    }
}

/// The bytes opened by one filesystem's `open` and, if it takes them,
/// walked: targets `ext`, `ntfs`, `xfs` (its log replayed in memory when
/// dirty), `fat` (FAT12/16/32), `exfat`, `btrfs`.
fn filesystem<F: FileSystem>(data: &[u8], open: impl Fn(Source) -> restorefs_parsers::Result<F>) {
    if let Ok(fs) = open(mem(data)) {
        walk_fs(&fs);
    }
}

pub fn ext(data: &[u8]) {
    filesystem(data, restorefs_parsers::fs::ext::ExtFs::open)
}

pub fn ntfs(data: &[u8]) {
    filesystem(data, restorefs_parsers::fs::ntfs::NtfsFs::open)
}

pub fn xfs(data: &[u8]) {
    filesystem(data, restorefs_parsers::fs::xfs::XfsFs::open)
}

pub fn fat(data: &[u8]) {
    filesystem(data, restorefs_parsers::fs::fat::FatFs::open)
}

pub fn exfat(data: &[u8]) {
    filesystem(data, restorefs_parsers::fs::exfat::ExfatFs::open)
}

/// Opens `data` as a Btrfs volume and walks it (subvolumes, compressed
/// extents), listing its subvolumes too.
pub fn btrfs(data: &[u8]) {
    filesystem(data, |src| {
        let fs = restorefs_parsers::fs::btrfs::BtrfsFs::open(src)?;
        let _ = fs.subvolumes();
        Ok(fs)
    })
}

/// Target `stack`: the bytes as a raw disk through the whole stack: table,
/// LVM, filesystems, one tree, walked.
pub fn stack(data: &[u8]) {
    let disk = mem(data);
    let size = disk.size();
    let image = Image::new(disk, "raw", size);
    if let Ok(tree) = RestoreTree::from_image(image) {
        walk_tree(&tree);
    }
}

/// A folder of this process's own for the files the `chain` target
/// writes (in /dev/shm where there is one: the files are rewritten on
/// every run).
fn chain_dir() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("restorefs-fuzz-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok().map(|()| dir)
    })
    .as_deref()
}

/// Target `chain`: a delta over its parent through the chain resolver,
/// which opens files by path, so both are written to files first. Input:
/// a flags byte (bit 0: ignore the link check; bit 1: name the parent
/// as `--parent` does instead of through the child's link), the child's
/// length (u32 LE), the child's bytes, then the parent's bytes. The child
/// is `child.img`, the parent `base.img` (the name the seeds' links
/// use). Every point of the chain is sampled.
pub fn chain(data: &[u8]) {
    let Some((child, opts)) = chain_files(data) else {
        return;
    };
    if let Ok(img) = image::open_with(&child, &opts) {
        let mut budget = MAX_READ;
        for point in img.into_points().iter().rev() {
            read_source(&point.disk, &mut budget);
        }
    }
}

/// Writes the two files of a `chain` input; returns the child's path and
/// the options to open it with.
pub fn chain_files(data: &[u8]) -> Option<(std::path::PathBuf, OpenOptions)> {
    let dir = chain_dir()?;
    let (&flags, rest) = data.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (child, parent) = rest.split_at(n);
    let (child_path, parent_path) = (dir.join("child.img"), dir.join("base.img"));
    std::fs::write(&child_path, child).ok()?;
    std::fs::write(&parent_path, parent).ok()?;
    let opts = OpenOptions {
        parents: if flags & 2 != 0 {
            vec![parent_path]
        } else {
            Vec::new()
        },
        ignore_link_check: flags & 1 != 0,
    };
    Some((child_path, opts))
}

/// Everything at once, for the mutation test: the container decoded as
/// `image::open` does, then the whole stack over its disk, walked.
/// Returns the nodes visited.
pub fn everything(file: Source, dir: &Path) -> usize {
    let Ok(img) = image::open_source(&dir.join("fuzz.img"), file) else {
        return 0;
    };
    RestoreTree::from_image(img).map_or(0, |tree| walk_tree(&tree))
}

/// Target `http_headers`: the header values restorefs parses itself when
/// reading images by URL (`Content-Range`, HTTP dates), from any bytes a
/// server might send. An accepted range must be consistent.
pub fn http_headers(data: &[u8]) {
    use restorefs_parsers::remote::wire;
    let text = String::from_utf8_lossy(data);
    if let Some(r) = wire::content_range(&text) {
        if let (Some((first, last)), Some(total)) = (r.range, r.total) {
            assert!(first <= last && last < total, "{text:?}");
        }
    }
    let _ = wire::http_date(&text);
}
