//! LVM2 on a disk made by LVM's own tools (testdata/make-lvm-disk.sh), the
//! LVs' bytes compared with the ext4 images written where `lvs` put them,
//! plus rewritten and mutated metadata.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use super::label;
use super::*;
use crate::fs::FsKind;
use crate::readat::{FileSource, MemSource, Window};
use crate::tree::{RestoreTree, VolumeState};
use crate::volume;
use crate::ReadAt;

/// Where the generated partitions start, in bytes (see the script).
const P2: usize = 18432 * 512;
const P3: usize = 59392 * 512;
const P2_LEN: usize = 40960 * 512;
const P3_LEN: usize = 69632 * 512;
const VG: &str = "rfs--test";
const READABLE: [&str; 3] = ["lin--ear", "multi", "stripes"];

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The generated disk's directory, made once per test run. `None` (with a
/// message) when this machine cannot make it; under CI that is a failure.
fn generated() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/volume/lvm/testdata");
        let script = here.join("make-lvm-disk.sh");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testimages/cache/lvm");
        let fresh = |p: &Path| {
            let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            matches!((m(p), m(&script)), (Some(a), Some(b)) if a >= b)
        };
        if fresh(&dir.join("stamp")) {
            return Some(dir);
        }
        let tools = [
            "pvcreate",
            "vgcreate",
            "vgcfgbackup",
            "vgcfgrestore",
            "vgchange",
            "lvs",
            "pvs",
            "vgs",
            "losetup",
            "sfdisk",
            "mkfs.ext4",
            "dd",
            "truncate",
        ];
        let missing: Vec<_> = tools.iter().filter(|t| !have(t)).collect();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !missing.is_empty() || !root {
            let why = format!("LVM test disk needs root and {missing:?}");
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let out = Command::new(&script)
            .arg(&dir)
            .output()
            .expect("run make-lvm-disk.sh");
        assert!(
            out.status.success(),
            "make-lvm-disk.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(dir)
    })
    .as_ref()
}

fn file(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mem(bytes: Vec<u8>) -> Source {
    Arc::new(MemSource(bytes))
}

fn all(src: &Source) -> Vec<u8> {
    let mut v = vec![0; src.size() as usize];
    src.read_exact_at(0, &mut v).unwrap();
    v
}

fn pvs_of(disk: &Source) -> Vec<(String, Source)> {
    vec![
        (
            "p2".into(),
            Arc::new(Window::new(disk.clone(), P2 as u64, P2_LEN as u64)) as Source,
        ),
        (
            "p3".into(),
            Arc::new(Window::new(disk.clone(), P3 as u64, P3_LEN as u64)),
        ),
    ]
}

fn names(s: &LvmScan) -> Vec<&str> {
    s.lvs.iter().map(|l| l.name.as_str()).collect()
}

fn reason<'a>(s: &'a LvmScan, lv: &str) -> &'a str {
    let name = format!("{VG}-{lv}");
    s.unsupported
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("{name} not in {:?}", s.unsupported))
}

fn want_names() -> Vec<String> {
    READABLE.iter().map(|l| format!("{VG}-{l}")).collect()
}

/// The volumes as the restore tree makes them of `disk`: the table, a
/// probe of each partition, LVM on those without a filesystem.
fn tree_of(disk: &Source) -> crate::Result<crate::tree::RestoreTree> {
    let image = crate::image::Image::new(disk.clone(), "raw", disk.size());
    crate::tree::RestoreTree::from_image(image)
}

#[test]
fn lvs_read_as_lvm_wrote_them() {
    let Some(dir) = generated() else { return };
    let disk: Source = Arc::new(FileSource::open(&dir.join("disk.img")).unwrap());
    let t = tree_of(&disk).unwrap();
    let got: Vec<(&str, bool)> = t
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.is_lvm_pv()))
        .collect();
    let mut want = vec![("p1", false), ("p2", true), ("p3", true)];
    let lvs = want_names();
    want.extend(lvs.iter().map(|n| (n.as_str(), false)));
    assert_eq!(got, want, "{:?}", t.table.notes);
    for v in &t.volumes[3..] {
        assert_eq!(
            all(&v.source),
            file(dir, &format!("{}.fs", v.name)),
            "{}",
            v.name
        );
    }
    let s = scan(&pvs_of(&disk));
    assert_eq!(reason(&s, "pool"), "segment1: segment type thin-pool");
    assert_eq!(reason(&s, "thin1"), "segment1: segment type thin");
    assert_eq!(s.unsupported.len(), 2, "{:?}", s.unsupported);
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("rfs--test-thin1 not exposed")));
}

#[test]
fn lvs_appear_in_the_tree() {
    let Some(dir) = generated() else { return };
    let tree = RestoreTree::open(&dir.join("disk.img")).unwrap();
    let root: Vec<String> = tree
        .read_dir(tree.root())
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    for raw in ["p2.img", "p3.img"] {
        assert!(root.iter().any(|n| n == raw), "{root:?}");
    }
    for (lv, plain) in want_names().iter().zip(["lin-ear", "multi", "stripes"]) {
        let v = tree.volumes.iter().position(|v| v.name == *lv).unwrap();
        match &tree.volumes[v].state {
            VolumeState::Fs(..) => {
                assert!(root.contains(lv), "{lv} in {root:?}");
                let node = tree.resolve(&format!("/{lv}/hello.txt")).unwrap();
                let mut buf = [0u8; 64];
                let n = tree.read(node, 0, &mut buf).unwrap();
                assert_eq!(&buf[..n], format!("hello from {plain}\n").as_bytes());
            }
            // Until the ext reader lands, the LV is recognised as ext and
            // offered raw: its bytes are the filesystem image.
            VolumeState::Failed(FsKind::Ext, _) => {
                let raw = format!("{lv}.img");
                assert!(root.contains(&raw), "{raw} in {root:?}");
                let node = tree.resolve(&format!("/{raw}")).unwrap();
                let want = file(dir, &format!("{lv}.fs"));
                let mut got = vec![0u8; want.len()];
                let mut done = 0;
                while done < got.len() {
                    let n = tree.read(node, done as u64, &mut got[done..]).unwrap();
                    assert!(n > 0, "{raw} short");
                    done += n;
                }
                assert!(got == want, "{raw} bytes");
            }
            _ => panic!("{lv}: no filesystem recognised"),
        }
    }
}

#[test]
fn newest_seqno_wins_over_a_stale_copy() {
    let Some(dir) = generated() else { return };
    let mut img = file(dir, "disk.img");
    let old = file(dir, "p3-old-mda.bin");
    img[P3 + 4096..P3 + 4096 + old.len()].copy_from_slice(&old);
    let s = scan(&pvs_of(&mem(img)));
    assert_eq!(names(&s), want_names());
    let seq: i64 = String::from_utf8(file(dir, "seqno.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale = format!(
        "p3: LVM metadata area 1 has seqno {}, older than {seq}",
        seq - 1
    );
    assert!(s.notes.iter().any(|n| n.contains(&stale)), "{:?}", s.notes);
}

#[test]
fn damaged_first_copies_fall_back_to_the_second_area() {
    let Some(dir) = generated() else { return };
    let clean = file(dir, "disk.img");
    // p3 has one area, p2 two: breaking p3's and p2's first leaves p2's
    // second (at the end of p2) as the only copy.
    let text_at = |pv: usize| {
        let h = pv + 4096;
        4096 + u64::from_le_bytes(clean[h + 40..h + 48].try_into().unwrap()) as usize + 20
    };
    for (what, p2_at, p3_at) in [
        ("header", 4096 + 100, 4096 + 100),
        ("text", text_at(P2), text_at(P3)),
    ] {
        let mut img = clean.clone();
        img[P2 + p2_at] ^= 0x20;
        img[P3 + p3_at] ^= 0x20;
        let s = scan(&pvs_of(&mem(img)));
        assert_eq!(names(&s), want_names(), "{what}: {:?}", s.notes);
        let bad = s
            .notes
            .iter()
            .filter(|n| n.contains("checksum mismatch"))
            .count();
        assert_eq!(bad, 2, "{what}: {:?}", s.notes);
    }
}

#[test]
fn label_in_a_later_sector_and_bad_label_crc() {
    let Some(dir) = generated() else { return };
    let mut img = file(dir, "disk.img");
    // Move p2's label from sector 1 to sector 3, fixing its sector and CRC.
    let sec: Vec<u8> = img[P2 + 512..P2 + 1024].to_vec();
    img[P2 + 512..P2 + 1024].fill(0);
    let mut sec = sec;
    sec[8..16].copy_from_slice(&3u64.to_le_bytes());
    let crc = calc_crc(&sec[20..]);
    sec[16..20].copy_from_slice(&crc.to_le_bytes());
    img[P2 + 1536..P2 + 2048].copy_from_slice(&sec);
    let s = scan(&pvs_of(&mem(img.clone())));
    assert_eq!(names(&s), want_names(), "{:?}", s.notes);
    // A broken CRC: p2 is no PV, so what lives on it is missing.
    img[P2 + 1536 + 100] ^= 1;
    let s = scan(&pvs_of(&mem(img)));
    assert!(s.lvs.is_empty(), "{:?}", names(&s));
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("p2: LVM label in sector 3: checksum")));
    assert!(reason(&s, "lin--ear").contains("not on this disk"));
}

/// The committed metadata text of the first area of the PV at `pv`.
fn current_text(img: &[u8], pv: usize) -> String {
    let h = pv + 4096;
    let off = u64::from_le_bytes(img[h + 40..h + 48].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(img[h + 48..h + 56].try_into().unwrap()) as usize;
    String::from_utf8(img[h + off..h + off + len].to_vec())
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

/// Writes `text` as the committed metadata of every area of both PVs, at
/// `at` bytes into each area (so a large `at` makes it wrap around).
fn put_text(img: &mut [u8], text: &str, at: Option<u64>) {
    for pv in [P2, P3] {
        let mut notes = Vec::new();
        let l = label::read(&MemSource(img[pv..pv + 4096].to_vec()), "pv", &mut notes).unwrap();
        for area in &l.metadata_areas {
            let h = pv + area.offset as usize;
            let size = u64::from_le_bytes(img[h + 32..h + 40].try_into().unwrap());
            let off = at.unwrap_or(512);
            for (i, b) in text.bytes().enumerate() {
                let mut pos = off + i as u64;
                if pos >= size {
                    pos = pos - size + 512;
                }
                img[h + pos as usize] = b;
            }
            img[h + 40..h + 48].copy_from_slice(&off.to_le_bytes());
            img[h + 48..h + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
            let c = calc_crc(text.as_bytes());
            img[h + 56..h + 60].copy_from_slice(&c.to_le_bytes());
            let c = calc_crc(&img[h + 4..h + 512]);
            img[h..h + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// The disk with its metadata text passed through `edit`.
fn edited(dir: &Path, edit: impl FnOnce(String) -> String, at: Option<u64>) -> LvmScan {
    let mut img = file(dir, "disk.img");
    let text = edit(current_text(&img, P2));
    put_text(&mut img, &text, at);
    scan(&pvs_of(&mem(img)))
}

/// The byte range of `name { ... }` inside `text` at or after `from`.
fn block(text: &str, name: &str, from: usize) -> std::ops::Range<usize> {
    let start = from + text[from..].find(&format!("{name} {{")).unwrap();
    let mut depth = 0;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return start..start + i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("{name} not closed");
}

#[test]
fn rewritten_metadata_unchanged_and_wrapped() {
    let Some(dir) = generated() else { return };
    let clean = file(dir, "disk.img");
    let want: Vec<Vec<u8>> = want_names()
        .iter()
        .map(|n| file(dir, &format!("{n}.fs")))
        .collect();
    // Near the end of the 1020 KiB area, so the text wraps to just after
    // the header.
    for at in [None, Some(0xff000 - 300)] {
        let s = edited(dir, |t| t, at);
        assert_eq!(names(&s), want_names(), "{at:?}: {:?}", s.notes);
        for (lv, w) in s.lvs.iter().zip(&want) {
            assert_eq!(&all(&lv.source), w, "{}", lv.name);
        }
    }
    drop(clean);
}

#[test]
fn segments_listed_out_of_order_are_sorted() {
    let Some(dir) = generated() else { return };
    let s = edited(
        dir,
        |t| {
            // Move multi's first segment after its last.
            let lv = block(&t, "multi", 0);
            let first = block(&t, "segment1", lv.start);
            let seg = t[first.clone()].to_string();
            let mut t2 = t.clone();
            let end = block(&t, "segment3", lv.start).end;
            t2.insert_str(end, &format!("\n{seg}"));
            t2.replace_range(first, "");
            t2
        },
        None,
    );
    assert_eq!(names(&s), want_names(), "{:?}", s.notes);
    let multi = &s.lvs[1];
    assert_eq!(all(&multi.source), file(dir, &format!("{VG}-multi.fs")));
}

#[test]
fn unsupported_and_inconsistent_lvs_are_listed_not_read() {
    let Some(dir) = generated() else { return };
    // A stripe on a PV the VG does not have.
    let s = edited(dir, |t| t.replacen("\"pv0\", 0", "\"pv7\", 0", 1), None);
    assert!(
        reason(&s, "lin--ear").contains("unknown PV pv7"),
        "{:?}",
        s.unsupported
    );
    assert_eq!(s.lvs.len(), 2);

    // pv1's uuid not found on the disk: everything using it is missing.
    let s = edited(
        dir,
        |t| {
            let pv1 = block(&t, "pv1", 0);
            let id = pv1.start + t[pv1.clone()].find("id = \"").unwrap() + 6;
            let mut t = t;
            t.replace_range(id..id + 6, "XXXXXX");
            t
        },
        None,
    );
    assert_eq!(names(&s), [format!("{VG}-lin--ear")]);
    assert!(reason(&s, "multi").contains("not on this disk"));
    assert!(reason(&s, "stripes").contains("not on this disk"));

    // Extents past the end of the PV, a gap between segments, a stripe
    // count that does not divide the extents.
    for (lv, from, to, why) in [
        (
            "lin-ear",
            "extent_count = 4",
            "extent_count = 400",
            "past the 18 extents",
        ),
        (
            "multi",
            "start_extent = 4",
            "start_extent = 5",
            "not contiguous",
        ),
        (
            "stripes",
            "extent_count = 4",
            "extent_count = 5",
            "do not split",
        ),
    ] {
        let s = edited(
            dir,
            |t| {
                let b = block(&t, lv, 0);
                let inner = t[b.clone()].replacen(from, to, 1);
                let mut t = t;
                t.replace_range(b, &inner);
                t
            },
            None,
        );
        let dm = lv.replace('-', "--");
        assert!(reason(&s, &dm).contains(why), "{lv}: {:?}", s.unsupported);
    }

    // pe_count raised past the PV's size: the extents are refused anyway.
    let s = edited(
        dir,
        |t| {
            let pv0 = block(&t, "pv0", 0);
            let inner = t[pv0.clone()].replacen("pe_count = 18", "pe_count = 100000", 1);
            let mut t = t;
            t.replace_range(pv0, &inner);
            let lv = block(&t, "lin-ear", 0);
            let inner = t[lv.clone()].replacen("\"pv0\", 0", "\"pv0\", 90000", 1);
            t.replace_range(lv, &inner);
            t
        },
        None,
    );
    assert!(
        reason(&s, "lin--ear").contains("past the 20971520 bytes of pv0"),
        "{:?}",
        s.unsupported
    );

    // A snapshot whose exception store is lin-ear: its bytes are COW chunks.
    let s = edited(
        dir,
        |t| {
            let lvs = block(&t, "logical_volumes", 0);
            let snap = "snapshot0 {\nid = \"aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa\"\nstatus = [\"READ\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 4\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"multi\"\ncow_store = \"lin-ear\"\n}\n}\n";
            let mut t = t;
            t.insert_str(lvs.end - 1, snap);
            t
        },
        None,
    );
    assert!(
        reason(&s, "lin--ear").contains("snapshot of multi"),
        "{:?}",
        s.unsupported
    );
    assert_eq!(s.lvs.len(), 2, "the origin stays readable");
}

#[test]
fn bare_disk_pv_gives_its_lvs() {
    let Some(dir) = generated() else { return };
    let img = file(dir, "disk.img");
    // p2 alone as a whole disk: lin-ear is all on it, the others need p3.
    let disk = mem(img[P2..P2 + P2_LEN].to_vec());
    let t = tree_of(&disk).unwrap();
    assert_eq!(t.table.scheme, volume::Scheme::None);
    let got: Vec<_> = t.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(got, [format!("{VG}-lin--ear")]);
    assert!(
        t.table
            .notes
            .iter()
            .any(|n| n.contains("rfs--test-multi not exposed")),
        "{:?}",
        t.table.notes
    );
}

/// The disk with some bytes replaced, without copying 64 MiB per case.
struct Patched {
    base: Arc<Vec<u8>>,
    patches: Vec<(usize, u8)>,
    len: usize,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = crate::readat::clamp_len(self.len as u64, offset, buf.len());
        let o = offset as usize;
        if n == 0 {
            return Ok(0);
        }
        buf[..n].copy_from_slice(&self.base[o..o + n]);
        for &(at, v) in &self.patches {
            if (o..o + n).contains(&at) {
                buf[at - o] = v;
            }
        }
        Ok(n)
    }
}

/// Seeded hostile changes to labels, area headers and metadata text, and
/// truncations: errors and notes are fine, panics and hangs are not.
#[test]
fn mutated_lvm_never_panics() {
    let Some(dir) = generated() else { return };
    let base = Arc::new(file(dir, "disk.img"));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Labels, first area headers and texts of both PVs, p2's second area.
    let p2_mda2 = P2 + P2_LEN - 0x100000;
    let hot: Vec<usize> = [P2, P3, p2_mda2]
        .iter()
        .flat_map(|&pv| (pv..pv + 2048).chain(pv + 4096..pv + 4096 + 4096))
        .collect();
    for case in 0..300 {
        let mut patches = Vec::new();
        let mut len = base.len();
        match case % 4 {
            0 => {
                for _ in 0..1 + next() % 8 {
                    let i = hot[(next() as usize) % hot.len()];
                    patches.push((i, base[i] ^ (1 << (next() % 8))));
                }
            }
            1 => {
                let i = hot[(next() as usize) % hot.len()] & !7;
                let v = if next() % 2 == 0 { 0xFF } else { 0 };
                patches.extend((i..i + 8).map(|j| (j, v)));
            }
            2 => len = P2 + (next() as usize) % (base.len() - P2),
            _ => {
                // Digits in the text changed: extents, counts, seqnos.
                let i = P2 + 4096 + 512 + (next() as usize) % 2048;
                patches.push((i, b"0123456789\"{}[]-"[(next() % 16) as usize]));
            }
        }
        let disk: Source = Arc::new(Patched {
            base: base.clone(),
            patches,
            len,
        });
        if let Ok(t) = tree_of(&disk) {
            for v in &t.volumes {
                let mut buf = vec![0u8; 70_000];
                let _ = v.source.read_at(v.size().saturating_sub(50_000), &mut buf);
                let _ = v.source.read_at(0, &mut buf);
            }
        }
    }
}

#[test]
fn filesystem_over_a_stale_label_is_not_a_pv() {
    let Some(dir) = generated() else { return };
    let mut img = file(dir, "disk.img");
    // An ext4 made over p2 later, its unused boot block still holding the
    // old label.
    let label = img[P2 + 512..P2 + 1024].to_vec();
    let fs = file(dir, &format!("{VG}-multi.fs"));
    img[P2..P2 + fs.len()].copy_from_slice(&fs);
    img[P2 + 512..P2 + 1024].copy_from_slice(&label);
    let t = tree_of(&mem(img)).unwrap();
    let pv: Vec<_> = t
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.is_lvm_pv()))
        .collect();
    assert_eq!(pv[..3], [("p1", false), ("p2", false), ("p3", true)]);
    // Every LV has extents on pv0 (p2), which is gone.
    assert_eq!(t.volumes.len(), 3, "{:?}", t.table.notes);
}
