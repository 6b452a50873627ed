//! Was the volume shut down cleanly? A crash-consistent backup of a running
//! Windows guest is a volume whose $LogFile still holds changes not yet in
//! place; a guest that hibernated (or shut down with Fast Startup) keeps its
//! newest state in hiberfil.sys. We do not replay $LogFile (ntfs-3g, The
//! Sleuth Kit and libfsntfs do not either), so `info` must say when the
//! volume as it is on disk may lack the newest changes: the checks here are
//! the ones ntfs-3g makes before it refuses to mount such a volume.

use crate::bytes::{le16, le32, le64};

/// A restart page's magic; `CHKD` marks one chkdsk has touched.
const RSTR: &[u8; 4] = b"RSTR";
const CHKD: &[u8; 4] = b"CHKD";
/// Restart area flag: the log holds nothing to redo.
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
/// `client_in_use_list` when no log client is active.
const NO_CLIENT: u16 = 0xFFFF;

/// What $LogFile's restart area says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogState {
    /// Clean, or never used (mkntfs and ntfs-3g leave it all 0xFF).
    Clean,
    /// Changes logged but not known to be in place.
    Unclean,
    /// Neither restart page is readable.
    Unknown(String),
}

/// Reads the state from the first two restart pages of $LogFile (`head`:
/// its first 8 KiB or more).
pub(crate) fn log_state(head: &[u8]) -> LogState {
    if head.len() >= 512 && head.iter().take(512).all(|&b| b == 0xFF) {
        return LogState::Clean;
    }
    // Two copies of the restart page: at 0 and one system page later;
    // the newer (higher current LSN) counts.
    let mut best: Option<(u64, bool)> = None;
    let first_page = restart(head, 0);
    let page_size = first_page
        .as_ref()
        .map_or(4096, |p| p.system_page_size as usize);
    for page in [first_page, restart(head, page_size)].into_iter().flatten() {
        if best.is_none_or(|(lsn, _)| page.current_lsn > lsn) {
            best = Some((page.current_lsn, page.clean));
        }
    }
    match best {
        Some((_, true)) => LogState::Clean,
        Some((_, false)) => LogState::Unclean,
        None => LogState::Unknown("no valid restart page".into()),
    }
}

struct Restart {
    system_page_size: u32,
    current_lsn: u64,
    clean: bool,
}

/// The restart page at `off`: its header, then the restart area it points
/// to (within the page's first sector, which the update sequence leaves
/// alone but for its last two bytes).
fn restart(head: &[u8], off: usize) -> Option<Restart> {
    let page = head.get(off..)?;
    let magic = page.get(..4)?;
    if magic != RSTR && magic != CHKD {
        return None;
    }
    let system_page_size = le32(page, 0x10);
    if !(512..=65536).contains(&system_page_size) || !system_page_size.is_power_of_two() {
        return None;
    }
    let area = usize::from(le16(page, 0x18));
    let area_bytes = page.get(area..area.checked_add(0x30)?)?;
    let current_lsn = le64(area_bytes, 0);
    let in_use = le16(area_bytes, 0x0C);
    let flags = le16(area_bytes, 0x0E);
    Some(Restart {
        system_page_size,
        current_lsn,
        clean: in_use == NO_CLIENT || flags & RESTART_VOLUME_IS_CLEAN != 0,
    })
}

/// Whether the first bytes of hiberfil.sys say Windows is hibernated:
/// `hibr` or `HIBR`, as ntfs-3g checks (after a resume Windows writes
/// `wake` there: the file no longer holds a state to resume).
pub(crate) fn hibernated(first: &[u8]) -> bool {
    matches!(first.get(..4), Some(b"hibr" | b"HIBR"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A restart page as Windows writes one: header, restart area at 0x30.
    pub(crate) fn page(lsn: u64, in_use: u16, flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..4].copy_from_slice(RSTR);
        p[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes());
        p[0x14..0x18].copy_from_slice(&4096u32.to_le_bytes());
        p[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
        p[0x30..0x38].copy_from_slice(&lsn.to_le_bytes());
        p[0x30 + 0x0C..0x30 + 0x0E].copy_from_slice(&in_use.to_le_bytes());
        p[0x30 + 0x0E..0x30 + 0x10].copy_from_slice(&flags.to_le_bytes());
        p
    }

    #[test]
    fn restart_areas() {
        assert_eq!(log_state(&[0xFF; 8192]), LogState::Clean);
        let both = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
        assert_eq!(
            log_state(&both(page(5, 0, 2), page(4, 0, 0))),
            LogState::Clean
        );
        assert_eq!(
            log_state(&both(page(5, 0, 0), page(4, 0, 2))),
            LogState::Unclean
        );
        // The newer copy counts.
        assert_eq!(
            log_state(&both(page(4, 0, 2), page(9, 0, 0))),
            LogState::Unclean
        );
        // No client in use: nothing to redo.
        assert_eq!(
            log_state(&both(page(5, NO_CLIENT, 0), vec![0; 4096])),
            LogState::Clean
        );
        assert!(matches!(log_state(&[0u8; 8192]), LogState::Unknown(_)));
        assert!(matches!(log_state(&[]), LogState::Unknown(_)));
        assert!(hibernated(b"HIBRxxxx") && hibernated(b"hibr"));
        assert!(!hibernated(b"wake") && !hibernated(b"\0\0\0\0"));
        assert!(!hibernated(b"hi"));
    }
}
