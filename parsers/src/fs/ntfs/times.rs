//! NTFS timestamps (100 ns units since 1601-01-01 UTC) to Unix time.

use crate::fs::Timespec;

/// Seconds from 1601-01-01 to 1970-01-01.
const EPOCH_DIFF_SECS: i64 = 11_644_473_600;
const TICKS_PER_SEC: u64 = 10_000_000;

/// Converts an NTFS timestamp exactly; times before 1970 get negative
/// seconds with the nanoseconds still counted forward, as `struct timespec`.
pub(crate) fn to_timespec(nt: u64) -> Timespec {
    // u64::MAX / 10^7 fits an i64, so neither step can overflow.
    let secs = (nt / TICKS_PER_SEC) as i64 - EPOCH_DIFF_SECS;
    let nanos = ((nt % TICKS_PER_SEC) * 100) as u32;
    Timespec { secs, nanos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_before() {
        assert_eq!(
            to_timespec(116_444_736_000_000_000),
            Timespec { secs: 0, nanos: 0 }
        );
        assert_eq!(
            to_timespec(116_444_736_000_000_001),
            Timespec {
                secs: 0,
                nanos: 100
            }
        );
        // 100 ns before 1970: -1 s + 999_999_900 ns.
        assert_eq!(
            to_timespec(116_444_735_999_999_999),
            Timespec {
                secs: -1,
                nanos: 999_999_900
            }
        );
        assert_eq!(to_timespec(0).secs, -EPOCH_DIFF_SECS);
    }
}
