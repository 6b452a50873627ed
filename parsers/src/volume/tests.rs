use std::sync::Arc;

use super::*;
use crate::readat::MemSource;

fn real(name: &str) -> Vec<u8> {
    let p = crate::testutil::real_image(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn src(bytes: Vec<u8>) -> Source {
    Arc::new(MemSource(bytes))
}

#[test]
fn gpt_made_by_fdisk() {
    let t = scan(&src(real("gpt-disk.img"))).unwrap();
    assert!(matches!(
        t.scheme,
        Scheme::Gpt {
            from_backup: false,
            ..
        }
    ));
    let got: Vec<_> = t
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.offset / 512,
                v.size / 512,
                v.part_guid.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "p1",
                34,
                1,
                "F38EAB50-076F-CB45-97F8-B1B7E5AF078F".to_string()
            ),
            (
                "p2",
                35,
                4,
                "8EEE35AF-4A93-2C4F-AA7A-5FB193AC6FF7".to_string()
            ),
        ]
    );
}

#[test]
fn gpt_falls_back_to_backup_header() {
    let mut img = real("gpt-disk.img");
    img[512 + 20] ^= 0xFF; // corrupt the primary header (its CRC no longer matches)
    let t = scan(&src(img)).unwrap();
    assert!(matches!(
        t.scheme,
        Scheme::Gpt {
            from_backup: true,
            ..
        }
    ));
    assert_eq!(t.volumes.len(), 2);
    assert!(
        t.notes.iter().any(|n| n.contains("backup")),
        "{:?}",
        t.notes
    );
}

#[test]
fn gpt_with_damaged_primary_array_uses_backup_array() {
    let mut img = real("gpt-disk.img");
    // The primary entry array starts at LBA 2: break its CRC.
    img[1024 + 40] ^= 0x55;
    let t = scan(&src(img)).unwrap();
    assert!(matches!(
        t.scheme,
        Scheme::Gpt {
            from_backup: true,
            ..
        }
    ));
    assert_eq!(t.volumes.len(), 2);
}

#[test]
fn mbr_with_logical_chain() {
    let t = scan(&src(real("disk2.img"))).unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    // As sfdisk -d reads it: p1 1+3, p2 extended 5+15, p5..p9 logicals.
    let got: Vec<_> = t
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.offset / 512,
                v.size / 512,
                v.type_id.as_str(),
                v.is_container(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("p1", 1, 3, "0x83", false),
            ("p2", 5, 15, "0x05", true),
            ("p5", 6, 1, "0x83", false),
            ("p6", 8, 2, "0x83", false),
            ("p7", 11, 3, "0x83", false),
            ("p8", 15, 1, "0x83", false),
            ("p9", 17, 1, "0x83", false),
        ]
    );
}

#[test]
fn mbr_bad_ebr_keeps_what_came_before() {
    let mut img = real("disk2.img");
    // Break the boot signature of the third EBR (LBA 10).
    img[10 * 512 + 510] = 0;
    let t = scan(&src(img)).unwrap();
    let names: Vec<_> = t.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["p1", "p2", "p5", "p6"]);
    assert!(
        t.notes.iter().any(|n| n.contains("LBA 10")),
        "{:?}",
        t.notes
    );
}

#[test]
fn mbr_ebr_loop_is_cut() {
    let mut img = real("disk2.img");
    // Point the second EBR's link back at the first (relative LBA 0 -> 2 -> 0).
    let link = 7 * 512 + 446 + 16 + 8;
    img[link..link + 4].copy_from_slice(&1u32.to_le_bytes());
    let t = scan(&src(img)).unwrap();
    assert!(t.volumes.len() <= 5);
    assert!(
        t.notes.iter().any(|n| n.contains("bad link")),
        "{:?}",
        t.notes
    );
}

/// Deterministic hostile inputs: bytes of the tables flipped, zeroed or set
/// to extremes. Errors are fine; panics, hangs and huge allocations are not.
#[test]
fn mutated_tables_never_panic() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for base in ["gpt-disk.img", "disk2.img"] {
        let orig = real(base);
        // The tables live in the first sectors and (GPT backup) the last ones.
        let hot: Vec<usize> = (0..orig.len().min(24 * 512))
            .chain(orig.len().saturating_sub(33 * 512)..orig.len())
            .collect();
        for case in 0..400 {
            let mut img = orig.clone();
            match case % 4 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let i = hot[(next() as usize) % hot.len()];
                        img[i] ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    let i = hot[(next() as usize) % hot.len()] & !7;
                    let v = if next() % 2 == 0 { 0xFF } else { 0 };
                    for b in img.iter_mut().skip(i).take(8) {
                        *b = v;
                    }
                }
                2 => img.truncate((next() as usize) % orig.len()),
                _ => {
                    let s = (next() as usize % 20) * 512;
                    for b in img.iter_mut().skip(s).take(512) {
                        *b = 0;
                    }
                }
            }
            let _ = scan(&src(img));
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites a field of the primary GPT header and fixes its CRC, so the
/// header passes its checksum and only our own bounds stand in the way.
fn with_primary_field(off: usize, val: u32) -> Vec<u8> {
    let mut img = real("gpt-disk.img");
    let h = 512;
    img[h + off..h + off + 4].copy_from_slice(&val.to_le_bytes());
    img[h + 16..h + 20].copy_from_slice(&[0; 4]);
    let c = crc32(&img[h..h + 92]);
    img[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
    img
}

#[test]
fn hostile_gpt_entry_size_and_count_fall_back() {
    // Entry size 64 would trip the gpt crate's assert; a huge count would
    // make it allocate gigabytes. Both must be refused and the backup used.
    for (off, val) in [(84, 64u32), (80, u32::MAX), (84, 0)] {
        let t = scan(&src(with_primary_field(off, val))).unwrap();
        assert!(
            matches!(
                t.scheme,
                Scheme::Gpt {
                    from_backup: true,
                    ..
                }
            ),
            "field {off}={val}"
        );
        assert_eq!(t.volumes.len(), 2);
    }
}

#[test]
fn backup_gpt_found_through_protective_mbr_on_a_grown_disk() {
    // Primary header gone and the disk grown by 8 sectors (as a VHD rounds
    // its size up): the backup is no longer at the last LBA, but the
    // protective MBR still says where the disk ended.
    let mut img = real("gpt-disk.img");
    img[512..1024].fill(0);
    img.extend_from_slice(&[0u8; 8 * 512]);
    let t = scan(&src(img)).unwrap();
    assert!(matches!(
        t.scheme,
        Scheme::Gpt {
            from_backup: true,
            ..
        }
    ));
    assert_eq!(t.volumes.len(), 2);
}
