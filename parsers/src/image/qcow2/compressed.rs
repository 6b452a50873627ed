//! Compressed clusters (spec: "Compressed Clusters Descriptor"): one guest
//! cluster stored as a raw deflate stream (qemu writes windowBits -12) or a
//! zstd frame, followed by whatever fills its last 512-byte sector.

use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::header::CompressionType;
use super::LAYER;
use crate::{Error, Result};

/// Largest zstd window accepted: qemu compresses one cluster (at most
/// 2 MiB) per frame, so its windows are at most 2^21; the cap bounds what
/// a hostile frame header can make the decoder allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 22;

/// Decompresses `input` (the bytes of a compressed cluster at host offset
/// `at`) into exactly `cluster_size` bytes. Trailing bytes after the stream
/// are ignored, as qemu does: the descriptor rounds up to whole sectors.
pub(super) fn decompress(
    kind: CompressionType,
    input: &[u8],
    cluster_size: usize,
    at: u64,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; cluster_size];
    let produced = match kind {
        CompressionType::Zlib => inflate(input, &mut out),
        CompressionType::Zstd => unzstd(input, &mut out, at)?,
    };
    if produced != cluster_size {
        return Err(Error::corrupt(
            LAYER,
            at,
            format!(
                "{} cluster decompresses to {produced} bytes, not {cluster_size}",
                kind.name()
            ),
        ));
    }
    Ok(out)
}

/// Raw inflate into `out`; returns how many bytes came out before the
/// stream ended, the output filled, or the data stopped making sense.
fn inflate(input: &[u8], out: &mut [u8]) -> usize {
    // zlib_header = false: qemu writes bare deflate, no zlib wrapper. A
    // 32 KiB-window decoder reads 4 KiB-window streams unchanged.
    let mut d = Decompress::new(false);
    loop {
        let (in_pos, out_pos) = (d.total_in() as usize, d.total_out() as usize);
        let (Some(rest_in), Some(rest_out)) = (input.get(in_pos..), out.get_mut(out_pos..)) else {
            return out_pos;
        };
        if rest_out.is_empty() {
            return out_pos;
        }
        match d.decompress(rest_in, rest_out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => return d.total_out() as usize,
            Ok(_) if d.total_in() as usize == in_pos && d.total_out() as usize == out_pos => {
                // No progress: the input ran out mid-stream.
                return out_pos;
            }
            Ok(_) => {}
            Err(_) => return out_pos,
        }
    }
}

/// zstd-decodes into `out`, stopping once it is full (the rest of the
/// input is sector padding); returns the bytes produced.
fn unzstd(input: &[u8], out: &mut [u8], at: u64) -> Result<usize> {
    let fail = |e: std::io::Error| Error::corrupt(LAYER, at, format!("zstd: {e}"));
    let mut d = Decoder::new().map_err(fail)?;
    d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
        .map_err(fail)?;
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    while outb.pos() < outb.capacity() {
        let (in_pos, out_pos) = (inb.pos(), outb.pos());
        d.run(&mut inb, &mut outb).map_err(fail)?;
        if inb.pos() == in_pos && outb.pos() == out_pos {
            break;
        }
    }
    Ok(outb.pos())
}
