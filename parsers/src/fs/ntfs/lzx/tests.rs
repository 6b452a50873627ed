use super::encode::{compress, Block};
use super::*;

fn sample(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 5 {
            // x86-like calls, to exercise the translation.
            0 => out.extend([0xE8, x as u8, (x >> 8) as u8, 0, 0]),
            1 => out.extend(b"the quick brown fox "),
            2 => out.extend((x as u16).to_le_bytes()),
            3 => out.extend(std::iter::repeat_n(b'-', (x % 300) as usize)),
            _ => out.extend(format!("{} ", x % 1000).bytes()),
        }
    }
    out.truncate(n);
    out
}

#[test]
fn hand_made_uncompressed_block() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Type 3, size bit clear, size 5: 3+1+16 bits, then 12 bits of
    // padding to the word boundary; R0-R2; 5 bytes and a pad byte.
    let mut src = Vec::new();
    let head: u32 = (3 << 17) | 5;
    let bits = head << 12; // 20 bits used, 12 of padding
    src.extend(((bits >> 16) as u16).to_le_bytes());
    src.extend((bits as u16).to_le_bytes());
    for r in [1u32, 1, 1] {
        src.extend(r.to_le_bytes());
    }
    src.extend(b"hello\0");
    let mut out = [0u8; 5];
    decompress(&src, &mut out).map_err(|e| format!("{e:?}"))?;
    assert_eq!(&out, b"hello");
    Ok(())
}

#[test]
fn round_trips_every_block_kind() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let plain = sample(WINDOW, 7);
    let blocks = [
        Block {
            kind: 1,
            len: 10_000,
            max_len: 257,
        },
        Block {
            kind: 2,
            len: 12_001,
            max_len: 257,
        },
        Block {
            kind: 3,
            len: 3_001,
            max_len: 0,
        },
        Block {
            kind: 1,
            len: WINDOW - 25_002,
            max_len: 8,
        },
    ];
    let packed = compress(&plain, &blocks);
    assert!(packed.len() < plain.len() / 2, "{}", packed.len());
    let mut out = vec![0u8; WINDOW];
    decompress(&packed, &mut out).map_err(|e| format!("{e:?}"))?;
    assert!(out == plain, "round trip differs");

    // One full-size block (the size bit set), and a short last chunk.
    for (n, kind) in [(WINDOW, 2), (5000, 1), (11, 1), (3, 3)] {
        let plain = sample(n, n as u32);
        let packed = compress(
            &plain,
            &[Block {
                kind,
                len: n,
                max_len: 257,
            }],
        );
        let mut out = vec![0u8; n];
        decompress(&packed, &mut out).map_err(|e| format!("{e:?}"))?;
        assert!(out == plain, "{n} bytes, block kind {kind}");
    }
    Ok(())
}

#[test]
fn e8_translation_only_where_due() {
    // A call at position 100 to absolute 0x150 becomes 0x150-100; one
    // in the last 10 bytes stays.
    let mut data = vec![0u8; 200];
    data[100] = 0xE8;
    data[101..105].copy_from_slice(&0x150i32.to_le_bytes());
    data[195] = 0xE8;
    data[196..200].copy_from_slice(&7i32.to_le_bytes());
    undo_e8(&mut data);
    assert_eq!(&data[101..105], &(0x150 - 100i32).to_le_bytes());
    assert_eq!(&data[196..200], &7i32.to_le_bytes());
    // Negative absolute targets wrap by the translation size.
    let mut data = vec![0u8; 50];
    data[20] = 0xE8;
    data[21..25].copy_from_slice(&(-5i32).to_le_bytes());
    undo_e8(&mut data);
    assert_eq!(&data[21..25], &(12_000_000 - 5i32).to_le_bytes());
}

#[test]
fn hostile_input_never_panics() {
    let plain = sample(20_000, 3);
    let packed = compress(
        &plain,
        &[
            Block {
                kind: 2,
                len: 15_000,
                max_len: 257,
            },
            Block {
                kind: 3,
                len: 5_000,
                max_len: 0,
            },
        ],
    );
    let mut x = 0xDEAD_BEEFu32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut out = vec![0u8; WINDOW];
    let start = std::time::Instant::now();
    for round in 0..2000 {
        let buf: Vec<u8> = if round % 4 == 0 {
            (0..next() % 4000).map(|_| next() as u8).collect()
        } else {
            let mut b = packed.clone();
            for _ in 0..1 + next() % 6 {
                let at = next() as usize % b.len();
                b[at] ^= 1 << (next() % 8);
            }
            if round % 3 == 0 {
                b.truncate(next() as usize % b.len());
            }
            b
        };
        let n = next() as usize % (WINDOW + 1);
        let _ = decompress(&buf, &mut out[..n]);
    }
    assert!(start.elapsed().as_secs() < 120);
    // Larger than the window is refused, not decoded.
    let mut big = vec![0u8; WINDOW + 1];
    assert!(decompress(&packed, &mut big).is_err());
}
