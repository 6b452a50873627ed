//! Text and JSON renderings shared by the commands.

use restorefs_parsers::fs::{FileType, Stat, Timespec};
use serde_json::{json, Value};

/// `drwxr-xr-x` from a type and permission bits.
pub fn mode_string(kind: FileType, mode: u32) -> String {
    let t = match kind {
        FileType::File => '-',
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let on = mode & bit != 0;
        s.push(match (special, on, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// `2024-05-01 12:34:56` in UTC.
pub fn time_string(t: Timespec) -> String {
    let days = t.secs.div_euclid(86400);
    let rem = t.secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Nanoseconds since the epoch (saturating past the year 2262).
pub fn ns(t: Timespec) -> i64 {
    t.secs
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nanos))
}

/// The JSON object `ls --json` prints for one entry.
pub fn stat_json(path: &str, ino: u64, st: &Stat, target: Option<&str>) -> Value {
    let mut v = json!({
        "path": path,
        "type": st.kind.name(),
        "size": st.size,
        "mode": st.mode,
        "uid": st.uid,
        "gid": st.gid,
        "nlink": st.nlink,
        "ino": ino,
        "mtime": time_string(st.mtime),
        "mtime_ns": ns(st.mtime),
        "atime_ns": ns(st.atime),
        "ctime_ns": ns(st.ctime),
    });
    if let Some(c) = st.crtime {
        v["crtime_ns"] = json!(ns(c));
    }
    if let Some(t) = target {
        v["target"] = json!(t);
    }
    v
}

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Writes `bytes` to stdout.
pub fn write_out(bytes: &[u8]) -> Result<(), crate::commands::CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| crate::commands::CliError(format!("stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_dates() {
        assert_eq!(mode_string(FileType::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileType::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileType::Dir, 0o1777), "drwxrwxrwt");
        let t = Timespec {
            secs: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(time_string(t), "2023-11-14 22:13:20");
        assert_eq!(
            time_string(Timespec { secs: -1, nanos: 0 }),
            "1969-12-31 23:59:59"
        );
    }
}
