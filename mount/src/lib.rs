//! FUSE front end: serves a [`RestoreTree`] as a read-only filesystem.
//!
//! This crate knows no on-disk format. It maps tree nodes to FUSE inodes
//! ([`Node::ino`](restorefs_parsers::tree::Node::ino), with the tree's
//! root as inode 1), tree errors to errno values, and refuses every write
//! with `EROFS`. Mounting, serving and signal handling are here;
//! daemonizing is the caller's business because it has to happen between
//! opening the image and mounting.

mod attr;
mod fs;
mod kernel;
mod options;

use std::io;
use std::path::{Path, PathBuf};

use fuser::Session;
use restorefs_parsers::tree::RestoreTree;

pub use fs::RestoreFs;
pub use options::MountOptions;

/// A live mount: the kernel has answered the FUSE handshake, so the
/// mountpoint can be read as soon as [`serve`](Mounted::serve) runs.
pub struct Mounted {
    session: Session<RestoreFs>,
    dir: PathBuf,
}

/// Mounts `tree` on `dir`. Returns once the kernel has completed the FUSE
/// handshake; requests are answered only once [`Mounted::serve`] runs.
pub fn mount(tree: RestoreTree, dir: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    let fs = RestoreFs::new(tree, opts.image_name.clone());
    let fd = kernel::mount(dir, opts)?;
    let config = opts.config();
    match Session::from_fd(fs, fd, config.acl, config) {
        Ok(session) => Ok(Mounted {
            session,
            dir: dir.to_path_buf(),
        }),
        Err(e) => {
            let _ = kernel::unmount(dir);
            Err(e)
        }
    }
}

impl Mounted {
    /// Answers requests until the filesystem is unmounted (`fusermount3 -u`,
    /// `restorefs umount`) or the process gets SIGINT, SIGTERM or SIGHUP,
    /// which unmount it.
    pub fn serve(self) -> io::Result<()> {
        // Block the signals before the session spawns its worker threads so
        // that they inherit the mask and only the waiter below sees them.
        let set = termination_signals();
        // SAFETY: `set` is an initialised sigset_t; a null old-set is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let dir = self.dir;
        std::thread::Builder::new()
            .name("restorefs-signals".into())
            .spawn(move || wait_and_unmount(set, &dir))?;
        self.session.run()
    }
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; the signals are valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn wait_and_unmount(set: libc::sigset_t, dir: &Path) {
    loop {
        let mut sig = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        tracing::info!("signal {sig}: unmounting");
        match kernel::unmount(dir) {
            // The session loop sees ENODEV and returns; nothing more to do.
            Ok(()) => return,
            // Typically EBUSY: something is using the mount. Keep serving;
            // the user can retry or unmount lazily.
            Err(e) => tracing::error!("unmount failed: {e}"),
        }
    }
}

/// Unmounts the restorefs mount at `dir`; its server then exits. Refuses
/// any other kind of mount, so a mistyped path cannot take down `/home`.
pub fn unmount(dir: &Path) -> io::Result<()> {
    // A mount whose server died cannot be stat'ed (ENOTCONN), so resolve
    // the parent and keep the last component as it is.
    let abs = match (dir.canonicalize(), dir.parent(), dir.file_name()) {
        (Ok(abs), _, _) => abs,
        (Err(_), Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize()?.join(name)
        }
        (Err(e), _, _) => return Err(e),
    };
    match mount_type(&abs)? {
        Some(t) if t == FS_TYPE => kernel::unmount(&abs),
        Some(t) => Err(io::Error::other(format!("not a restorefs mount ({t})"))),
        None => Err(io::Error::other("not mounted")),
    }
}

/// The filesystem type mounted on `dir` (absolute, symlinks resolved),
/// if any, per `/proc/self/mountinfo`: the topmost mount when stacked.
pub fn mount_type(dir: &Path) -> io::Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = dir.to_string_lossy();
    // "36 35 98:0 / /mnt rw,noatime shared:1 - ext3 /dev/root rw": the
    // mount point is field 5, the type follows the "-" separator.
    Ok(info
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| unescape_mountinfo(mp) == want)
        })
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').next().map(String::from))
        .next_back())
}

/// The type restorefs mounts carry in `/proc/mounts`.
pub const FS_TYPE: &str = "fuse.restorefs";

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |c: u8| u32::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/mnt/x\"), r"/mnt/x\");
        assert_eq!(unescape_mountinfo("/"), "/");
    }
}
