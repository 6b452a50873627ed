//! A metadata area: its 512-byte header and the circular buffer of text
//! behind it, where the raw location says the current metadata is.

use super::label::Area;
use super::{calc_crc, crc_update, le32, le64, INITIAL_CRC};
use crate::ReadAt;

const MDA_HEADER_LEN: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// raw_locn flag: this area is ignored (its text may be stale).
const RAW_LOCN_IGNORED: u32 = 1;
/// Real metadata is kilobytes; this bounds what a damaged size can ask for.
pub(super) const MAX_TEXT: u64 = 4 << 20;

/// The metadata text of one area, checksum verified.
pub(super) struct MdaText {
    pub text: Vec<u8>,
}

/// Reads the current metadata text of the area `area` of `pv`. `None` (with
/// a note, unless the area is simply empty or ignored) if there is none.
pub(super) fn read(
    pv: &dyn ReadAt,
    area: Area,
    what: &str,
    notes: &mut Vec<String>,
) -> Option<MdaText> {
    match read_inner(pv, area) {
        Ok(t) => t,
        Err(why) => {
            notes.push(format!("{what}: {why}"));
            None
        }
    }
}

fn read_inner(pv: &dyn ReadAt, area: Area) -> Result<Option<MdaText>, String> {
    let mut hdr = [0u8; MDA_HEADER_LEN as usize];
    pv.read_exact_at(area.offset, &mut hdr)
        .map_err(|e| format!("metadata area header unreadable: {e}"))?;
    let stored = le32(&hdr, 0).ok_or("short header")?;
    let want = calc_crc(hdr.get(4..).ok_or("short header")?);
    if stored != want {
        return Err(format!(
            "metadata area header checksum mismatch (stored {stored:#010x}, computed {want:#010x})"
        ));
    }
    if hdr.get(4..20) != Some(MDA_MAGIC.as_slice()) {
        return Err("metadata area header has a bad magic".into());
    }
    let version = le32(&hdr, 20).ok_or("short header")?;
    if version != 1 {
        return Err(format!("metadata area header version {version}"));
    }
    let start = le64(&hdr, 24).ok_or("short header")?;
    let size = le64(&hdr, 32).ok_or("short header")?;
    if start != area.offset {
        return Err(format!(
            "metadata area header says it starts at {start}, the label says {}",
            area.offset
        ));
    }
    // pvcreate records the same size in the label and the area header.
    if area.size != 0 && size != area.size {
        return Err(format!(
            "metadata area header says {size} bytes, the label says {}",
            area.size
        ));
    }
    if size <= MDA_HEADER_LEN {
        return Err(format!("metadata area size {size} too small"));
    }
    // raw_locn[0] is the committed metadata.
    let offset = le64(&hdr, 40).ok_or("short header")?;
    let len = le64(&hdr, 48).ok_or("short header")?;
    let checksum = le32(&hdr, 56).ok_or("short header")?;
    let flags = le32(&hdr, 60).ok_or("short header")?;
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if offset < MDA_HEADER_LEN || offset >= size {
        return Err(format!("metadata text offset {offset} outside the area"));
    }
    if len == 0 || len > MAX_TEXT || len > size - MDA_HEADER_LEN {
        return Err(format!("metadata text size {len} out of bounds"));
    }
    // The text is a circular buffer after the header: what does not fit
    // before the end of the area continues right after the header.
    let first = len.min(size - offset);
    let mut text = vec![0u8; len as usize];
    let (a, b) = text.split_at_mut(first as usize);
    let abs = start.checked_add(offset).ok_or("offset overflows")?;
    pv.read_exact_at(abs, a)
        .map_err(|e| format!("metadata text unreadable at {abs}: {e}"))?;
    if !b.is_empty() {
        pv.read_exact_at(start + MDA_HEADER_LEN, b)
            .map_err(|e| format!("wrapped metadata text unreadable: {e}"))?;
    }
    let got = crc_update(INITIAL_CRC, &text);
    if got != checksum {
        return Err(format!(
            "metadata text checksum mismatch (stored {checksum:#010x}, computed {got:#010x}); copy skipped"
        ));
    }
    // Writers end the text with NULs; they are not part of the config.
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(MdaText { text }))
}
