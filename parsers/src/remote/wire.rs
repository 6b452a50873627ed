//! The few HTTP header values restorefs reads itself: `Content-Range`
//! (RFC 9110 section 14.4) and HTTP dates (RFC 9110 section 5.6.7, the
//! IMF-fixdate form servers send in `Last-Modified`). Everything else of
//! the protocol is the client library's. Both parsers take any bytes a
//! server sends and answer `None` for anything malformed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `Content-Range` answer: `bytes FIRST-LAST/TOTAL` (a satisfied range,
/// TOTAL may be `*`) or `bytes */TOTAL` (an unsatisfiable one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First and last byte (inclusive) sent, if a range was satisfied.
    pub range: Option<(u64, u64)>,
    /// The whole object's length, if the server gave it.
    pub total: Option<u64>,
}

/// Parses a `Content-Range` value; `None` if malformed or inconsistent
/// (`last < first`, `last >= total`).
pub fn content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?;
    let rest = rest.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(number(t)?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b) = (number(a)?, number(b)?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            Some((a, b))
        }
    };
    if range.is_none() && total.is_none() {
        return None;
    }
    Some(ContentRange { range, total })
}

/// A decimal number of at most 19 digits (no sign, no spaces inside).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(value: &str) -> Option<SystemTime> {
    let mut it = value.split_ascii_whitespace();
    let _weekday = it.next()?.strip_suffix(',')?;
    let day: u32 = small(it.next()?, 2)?;
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let year: u32 = small(it.next()?, 4)?;
    let mut hms = it.next()?.split(':');
    let (h, m, s): (u32, u32, u32) = (
        small(hms.next()?, 2)?,
        small(hms.next()?, 2)?,
        small(hms.next()?, 2)?,
    );
    if hms.next().is_some() || it.next()? != "GMT" || it.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + u64::from(h * 3600 + m * 60 + s);
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn small(s: &str, max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian, `y >= 1970`).
fn days_from_civil(y: u32, m: u32, d: u32) -> u64 {
    let y = u64::from(if m <= 2 { y - 1 } else { y });
    let era = y / 400;
    let yoe = y - era * 400;
    let m = u64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + u64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// `(year, month, day, hour, minute, second)` in UTC of `t`.
pub fn civil(t: SystemTime) -> (u64, u64, u64, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    #[test]
    fn content_ranges() {
        let r = content_range("bytes 0-99/1000").unwrap();
        assert_eq!(r.range, Some((0, 99)));
        assert_eq!(r.total, Some(1000));
        assert_eq!(
            content_range("bytes */512"),
            Some(ContentRange {
                range: None,
                total: Some(512)
            })
        );
        assert_eq!(content_range("bytes 5-9/*").unwrap().total, None);
        for bad in [
            "",
            "bytes",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes -1-5/10",
            "bytes 0-5",
            "bytes */*",
            "items 0-5/10",
            "bytes 0-99999999999999999999/5",
            "bytes 1 -2/5",
        ] {
            assert_eq!(content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_round_trip() {
        let t = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert_eq!(civil(t), (1994, 11, 6, 8, 49, 37));
        let leap = http_date("Thu, 29 Feb 2024 23:59:59 GMT").unwrap();
        assert_eq!(civil(leap), (2024, 2, 29, 23, 59, 59));
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(http_date(bad), None, "{bad:?}");
        }
    }

    /// Seeded random and mutated header values: never a panic, and every
    /// accepted range is consistent.
    #[test]
    fn parsers_survive_random_input() {
        let mut rng = XorShift(0x5eed_0019);
        let seeds = [
            "bytes 0-1048575/1073741824",
            "bytes */0",
            "Tue, 15 Nov 1994 12:45:26 GMT",
        ];
        let alphabet = b"bytes 0123456789-/*,: GMTJanFeb\t\x00\xff";
        for i in 0..20_000u32 {
            let mut v: Vec<u8> = seeds[i as usize % seeds.len()].as_bytes().to_vec();
            for _ in 0..(rng.next() % 6) {
                let pos = (rng.next() as usize) % (v.len() + 1);
                match rng.next() % 3 {
                    0 if pos < v.len() => {
                        v.remove(pos);
                    }
                    1 => v.insert(pos, alphabet[rng.next() as usize % alphabet.len()]),
                    _ if pos < v.len() => v[pos] = rng.next() as u8,
                    _ => {}
                }
            }
            let s = String::from_utf8_lossy(&v);
            if let Some(r) = content_range(&s) {
                if let (Some((a, b)), Some(t)) = (r.range, r.total) {
                    assert!(a <= b && b < t, "{s:?}");
                }
            }
            let _ = http_date(&s);
        }
    }
}
