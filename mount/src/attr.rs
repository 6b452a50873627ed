//! Tree metadata to FUSE attributes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseType, INodeNo};
use restorefs_parsers::fs::{FileType, Stat, Timespec};

/// The FUSE file type of a tree file type.
pub(crate) fn kind(k: FileType) -> FuseType {
    match k {
        FileType::File => FuseType::RegularFile,
        FileType::Dir => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::Socket => FuseType::Socket,
        FileType::CharDevice => FuseType::CharDevice,
        FileType::BlockDevice => FuseType::BlockDevice,
    }
}

/// A time from the image; out-of-range values (corrupt or far future)
/// become the epoch rather than a panic.
pub(crate) fn time(t: Timespec) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let at = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    at.and_then(|at| at.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// `rdev` as the FUSE protocol carries it: the kernel's 32-bit
/// `new_encode_dev`, not glibc's 64-bit `makedev` the tree uses.
pub(crate) fn rdev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The attributes FUSE reports for `stat`, numbered `ino`.
pub(crate) fn file_attr(ino: u64, st: &Stat, blksize: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.size,
        blocks: st.allocated.div_ceil(512),
        atime: time(st.atime),
        mtime: time(st.mtime),
        ctime: time(st.ctime),
        crtime: time(st.crtime.unwrap_or(st.ctime)),
        kind: kind(st.kind),
        perm: (st.mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: rdev(st.rdev),
        blksize,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = time(Timespec {
            secs: -1,
            nanos: 500_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(500)
        );
        // Must not panic, whatever the platform's range.
        let _ = time(Timespec {
            secs: i64::MIN,
            nanos: u32::MAX,
        });
    }

    #[test]
    fn devices() {
        assert_eq!(rdev(libc::makedev(8, 1)), 0x801);
        assert_eq!(rdev(libc::makedev(1, 0x12345)), 0x1230_0145);
    }
}
