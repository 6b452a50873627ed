//! Chains made by qemu (qcow2, VMDK): each restore point must read exactly
//! as `qemu-img convert -O raw` reads it; broken links must fail clearly.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::vhd::tests::have;
use crate::image::{open, open_with, OpenOptions};
use crate::{Error, ReadAt};

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn qemu_raw(img: &Path) -> Vec<u8> {
    let out = img.with_extension("want.raw");
    run("qemu-img", &["convert", "-O", "raw", p(img), p(&out)]);
    std::fs::read(&out).unwrap()
}

fn read_all(disk: &dyn ReadAt) -> Vec<u8> {
    let mut out = vec![0u8; disk.size() as usize];
    // Odd chunks cross grain and cluster edges.
    for (i, chunk) in out.chunks_mut(777_777).enumerate() {
        disk.read_exact_at(i as u64 * 777_777, chunk).unwrap();
    }
    out
}

fn assert_point(img: &Path, layers: usize) {
    let image = open(img).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
    assert_eq!(image.chain.len(), layers, "{}", img.display());
    let want = qemu_raw(img);
    let got = read_all(&*image.disk);
    assert_eq!(got.len(), want.len());
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{}: first difference at offset {i}", img.display());
    }
}

/// Writes through qemu-io, `cmds` being its `-c` commands.
fn write(fmt: &str, img: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(p(img));
    run("qemu-io", &args);
}

/// base <- mid <- top, each with writes that overlap the one below in
/// whole and partial grains/clusters, plus zero writes over data.
fn make_chain(dir: &Path, fmt: &str, opts: &str) -> [PathBuf; 3] {
    let ext = fmt;
    let base = dir.join(format!("base.{ext}"));
    let mid = dir.join(format!("mid.{ext}"));
    let top = dir.join(format!("top.{ext}"));
    run(
        "qemu-img",
        &["create", "-f", fmt, "-o", opts, p(&base), "8M"],
    );
    write(
        fmt,
        &base,
        &[
            "write -P 0x11 0 3M",
            "write -P 0x12 5M 1M",
            "write -P 0x13 7M 4k",
        ],
    );
    // Relative backing names, as a backup product writes them. Each point
    // is written before the next is made on it, since a VMDK write
    // changes the CID the next delta records.
    let writes: [&[&str]; 2] = [
        &[
            "write -P 0x21 1M 1M",
            "write -P 0x22 2560k 4k",
            "write -z 5M 128k",
            "write -P 0x23 6M 512",
        ],
        &[
            "write -P 0x31 0 4k",
            "write -P 0x32 1536k 512",
            "write -P 0x33 7M 1k",
        ],
    ];
    for ((child, parent), cmds) in [(&mid, &base), (&top, &mid)].into_iter().zip(writes) {
        let name = parent.file_name().unwrap().to_str().unwrap();
        let out = Command::new("qemu-img")
            .current_dir(dir)
            .args(["create", "-f", fmt, "-o", opts, "-b", name, "-F", fmt])
            .arg(child.file_name().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        write(fmt, child, cmds);
    }
    [base, mid, top]
}

fn chain_case(fmt: &str, opts: &str) {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let points = make_chain(dir.path(), fmt, opts);
    for (i, pt) in points.iter().enumerate() {
        assert_point(pt, i + 1);
    }
    let img = open(&points[2]).unwrap();
    assert_eq!(img.chain[0].parent.as_deref(), Some(points[1].as_path()));
    assert!(img.chain[1].link.as_deref().unwrap().contains("base"));
    let all = img.into_points();
    assert_eq!(all.len(), 3);
    for (img, pt) in all.iter().zip(&points) {
        assert!(read_all(&*img.disk) == qemu_raw(pt), "{}", pt.display());
    }
}

#[test]
fn qcow2_chain_of_three() {
    chain_case("qcow2", "cluster_size=65536");
}

#[test]
fn qcow2_chain_small_clusters() {
    chain_case("qcow2", "cluster_size=4096");
}

#[test]
fn qcow2_chain_extended_l2() {
    // Subclusters: 2 KiB of a 64 KiB cluster, so partial writes leave the
    // rest of the cluster to the backing file.
    chain_case("qcow2", "cluster_size=65536,extended_l2=on");
}

#[test]
fn vmdk_sparse_chain_of_three() {
    chain_case("vmdk", "subformat=monolithicSparse");
}

#[test]
fn vmdk_split_sparse_chain_of_three() {
    chain_case("vmdk", "subformat=twoGbMaxExtentSparse");
}

#[test]
fn qcow2_over_raw_backing() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("base.raw");
    // A raw base whose first bytes look like a qcow2 header must still be
    // read as raw when the link says so.
    let mut bytes = vec![0x5au8; 4 << 20];
    bytes[..4].copy_from_slice(b"QFI\xfb");
    std::fs::write(&raw, &bytes).unwrap();
    let top = dir.path().join("top.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-b", p(&raw), "-F", "raw", p(&top)],
    );
    write("qcow2", &top, &["write -P 0x44 64k 8k"]);
    assert_point(&top, 2);
    assert_eq!(open(&top).unwrap().chain[1].format, "raw");
}

#[test]
fn qcow2_over_vmdk_backing() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vmdk");
    run("qemu-img", &["create", "-f", "vmdk", p(&base), "4M"]);
    write("vmdk", &base, &["write -P 0x61 0 2M"]);
    let top = dir.path().join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            p(&base),
            "-F",
            "vmdk",
            p(&top),
        ],
    );
    write("qcow2", &top, &["write -P 0x62 1M 4k"]);
    assert_point(&top, 2);
}

fn chain_error(e: &Error) -> String {
    assert!(matches!(e.root(), Error::Chain(_)), "{e}");
    e.to_string()
}

#[test]
fn missing_moved_or_renamed_parent_names_both_files() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["qcow2", "vmdk"] {
        let sub = dir.path().join(fmt);
        std::fs::create_dir(&sub).unwrap();
        let [base, mid, top] = make_chain(
            &sub,
            fmt,
            if fmt == "vmdk" {
                "subformat=monolithicSparse"
            } else {
                "cluster_size=65536"
            },
        );
        let moved = dir.path().join(format!("moved-base.{fmt}"));
        std::fs::rename(&base, &moved).unwrap();
        let e = open(&top).err().unwrap();
        let msg = chain_error(&e);
        assert!(
            msg.contains(p(&mid)) && msg.contains(&format!("base.{fmt}")),
            "{msg}"
        );
        // --parent points the middle layer at the moved (and renamed) base.
        let opts = OpenOptions {
            parents: vec![mid.clone(), moved.clone()],
            ignore_link_check: false,
        };
        let img = open_with(&top, &opts).unwrap();
        assert_eq!(img.chain[2].file, moved);
        std::fs::rename(&moved, &base).unwrap();
        assert!(read_all(&*img.disk) == qemu_raw(&top));
    }
}

#[test]
fn vmdk_cid_mismatch_is_refused_unless_ignored() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [base, _mid, top] = make_chain(dir.path(), "vmdk", "subformat=monolithicSparse");
    // Another disk put where the parent was: its CID differs.
    let other = dir.path().join("other.vmdk");
    run("qemu-img", &["create", "-f", "vmdk", p(&other), "8M"]);
    write("vmdk", &other, &["write -P 0x77 0 1M"]);
    std::fs::rename(&other, &base).unwrap();
    let e = open(&top).err().unwrap();
    let msg = chain_error(&e);
    assert!(msg.contains("CID") && msg.contains(p(&base)), "{msg}");
    let img = open_with(
        &top,
        &OpenOptions {
            parents: Vec::new(),
            ignore_link_check: true,
        },
    )
    .unwrap();
    let mid = img.parent.as_ref().unwrap();
    assert!(
        mid.notes.iter().any(|n| n.contains("link check ignored")),
        "{:?}",
        mid.notes
    );
    assert!(mid.chain[0].check.failed());
}

#[test]
fn cycle_is_an_error() {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&a), "1M"]);
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-b", p(&a), "-F", "qcow2", p(&b)],
    );
    // -u rewrites the link without reading the (now cyclic) chain.
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            p(&b),
            "-F",
            "qcow2",
            p(&a),
        ],
    );
    let msg = chain_error(&open(&b).err().unwrap());
    assert!(msg.contains("cycle") && msg.contains(p(&b)), "{msg}");
    // A file naming itself.
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&a),
        ],
    );
    let msg = chain_error(&open(&a).err().unwrap());
    assert!(msg.contains("cycle"), "{msg}");
}

#[test]
fn truncated_delta_fails_cleanly() {
    if !have("qemu-img", "--version") || !have("qemu-io", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (fmt, opts) in [
        ("qcow2", "cluster_size=65536"),
        ("vmdk", "subformat=monolithicSparse"),
    ] {
        let sub = dir.path().join(fmt);
        std::fs::create_dir(&sub).unwrap();
        let [_, mid, top] = make_chain(&sub, fmt, opts);
        let len = std::fs::metadata(&mid).unwrap().len();
        for cut in [len / 2, 1024] {
            let f = std::fs::OpenOptions::new().write(true).open(&mid).unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            // Either the open fails or reads fail; neither panics or hangs.
            if let Ok(img) = open(&top) {
                let mut buf = vec![0u8; 1 << 20];
                let mut failed = false;
                for at in (0..img.disk.size()).step_by(1 << 20) {
                    failed |= img.disk.read_exact_at(at, &mut buf).is_err();
                }
                assert!(failed, "{fmt}: cut at {cut} read without error");
            }
        }
    }
}

/// Deltas stored by `qemu-img convert -B` (only what differs from the
/// point below), streamOptimized (compressed grains) and hosted sparse.
#[test]
fn vmdk_converted_deltas_stream_optimized() {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = crate::image::vhd::tests::Rng(4);
    let mut point: Vec<u8> = (0..8 << 20).map(|_| rng.next() as u8).collect();
    point[3 << 20..4 << 20].fill(0);
    let mut raws = Vec::new();
    for k in 0..3u8 {
        if k > 0 {
            for _ in 0..20 {
                let at = rng.below(point.len() as u64 - 70_000) as usize;
                let len = 1 + rng.below(70_000) as usize;
                point[at..at + len].fill(if k == 2 { 0 } else { 0x40 + k });
            }
        }
        let raw = d.join(format!("p{k}.raw"));
        std::fs::write(&raw, &point).unwrap();
        raws.push((raw, point.clone()));
    }
    for sub in ["streamOptimized", "monolithicSparse"] {
        let mut prev: Option<String> = None;
        for (k, (raw, want)) in raws.iter().enumerate() {
            let name = format!("{sub}-{k}.vmdk");
            let opt = format!("subformat={sub}");
            let mut args = vec!["convert", "-f", "raw", "-O", "vmdk", "-o", &opt];
            if let Some(parent) = &prev {
                args.extend(["-B", parent, "-F", "vmdk"]);
            }
            args.extend([p(raw), name.as_str()]);
            let out = Command::new("qemu-img")
                .current_dir(d)
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = d.join(&name);
            assert_point(&file, k + 1);
            assert!(read_all(&*open(&file).unwrap().disk) == *want, "{name}");
            prev = Some(name);
        }
    }
}

#[test]
fn cycle_through_a_hard_link_is_an_error() {
    if !have("qemu-img", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", p(&a), "1M"]);
    // b -> a, then a's link rewritten to name "c", a hard link to b.
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            p(&b),
        ],
    );
    std::fs::hard_link(&b, dir.path().join("c.qcow2")).unwrap();
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "c.qcow2",
            "-F",
            "qcow2",
            p(&a),
        ],
    );
    let msg = chain_error(&open(&b).err().unwrap());
    assert!(msg.contains("cycle") && msg.contains("c.qcow2"), "{msg}");
}

/// A layer holding every other 512-byte sector, for the overlay's own
/// rules.
struct Alternate(crate::readat::MemSource);

impl ReadAt for Alternate {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_at(offset, buf)
    }
}

impl super::Layer for Alternate {
    fn holds(&self, offset: u64, max: u64) -> crate::Result<(bool, u64)> {
        Ok(((offset / 512) & 1 == 0, (512 - offset % 512).min(max)))
    }
}

#[test]
fn overlay_takes_held_sectors_from_the_child_and_zeros_past_the_parent() {
    use std::sync::Arc;
    let child = Arc::new(Alternate(crate::readat::MemSource(vec![1u8; 4096])));
    // The parent is shorter than the child: what it lacks reads as zeros.
    let parent = Arc::new(crate::readat::MemSource(vec![2u8; 2560]));
    let o = super::Overlay::new(child, parent);
    assert_eq!(o.size(), 4096);
    let mut buf = vec![0xAAu8; 4096];
    o.read_exact_at(0, &mut buf).unwrap();
    for (s, chunk) in buf.chunks(512).enumerate() {
        let want = match s {
            s if s % 2 == 0 => 1,
            s if s < 5 => 2,
            _ => 0,
        };
        assert!(chunk.iter().all(|&b| b == want), "sector {s}");
    }
    // Unaligned reads that start and end mid-sector.
    let mut small = [0u8; 700];
    o.read_exact_at(300, &mut small).unwrap();
    assert!(small == buf[300..1000]);
    assert_eq!(o.read_at(4096, &mut small).unwrap(), 0);
}
