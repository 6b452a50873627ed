//! Mounting and unmounting, done here rather than by fuser.
//!
//! fuser 0.18 unmounts by path when its session ends. After an external
//! `fusermount3 -u` that path may already hold the next mount (a script
//! doing umount; mount), which fuser would then take down. Mounting
//! ourselves and handing fuser only the `/dev/fuse` descriptor
//! (`Session::from_fd`) leaves fuser nothing to unmount. It also gives the
//! `fuse.restorefs` type that fuser's direct mount(2) leaves out.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::MountOptions;

/// Mounts a FUSE filesystem on `dir` and returns its `/dev/fuse`
/// descriptor: with mount(2) as root, through fusermount3 otherwise.
pub(crate) fn mount(dir: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        mount_syscall(dir, opts)
    } else {
        mount_fusermount(dir, opts)
    }
}

fn cstr(s: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn mount_syscall(dir: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let dev = File::options().read(true).write(true).open("/dev/fuse")?;
    // The kernel wants the root's file type, not its permissions.
    let rootmode = std::fs::metadata(dir)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id=0,group_id=0",
        dev.as_raw_fd()
    );
    for o in opts.kernel_options() {
        data.push(',');
        data.push_str(&o);
    }
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | opts.extra_flags();
    let (source, target) = (cstr(opts.source())?, cstr(dir.as_os_str().as_bytes())?);
    let (fstype, data) = (cstr(crate::FS_TYPE)?, cstr(data)?);
    // SAFETY: every pointer is a valid NUL-terminated string.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dev.into())
}

/// Runs `fusermount3 -o OPTIONS -- DIR`, which opens `/dev/fuse`, mounts,
/// and passes the descriptor back over a socket named by `_FUSE_COMMFD`.
fn mount_fusermount(dir: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-o")
        .arg(opts.fusermount_options())
        .arg("--")
        .arg(dir)
        .env("_FUSE_COMMFD", their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl, async-signal-safe, between fork and exec: the
    // helper must inherit its end of the socket, which std made
    // close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Without auto_unmount the helper exits right after sending the
    // descriptor, which stays queued in the socket for us.
    let out = cmd.output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => io::Error::other("fusermount3 not found (install fuse3)"),
        _ => e,
    })?;
    drop(theirs);
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(io::Error::other(if msg.is_empty() {
            format!("fusermount3 failed: {}", out.status)
        } else {
            msg
        }));
    }
    receive_fd(&ours)
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes buffers owned by this frame.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg just
    // filled, bounded by msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("fusermount3 sent no file descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Unmounts `dir`: umount(2) as root, `fusermount3 -u` otherwise (or when
/// root's umount is refused, e.g. inside a user namespace).
///
/// EBUSY is retried for a moment: a file closed just before can keep the
/// mount busy until its asynchronous FUSE release has been answered.
pub(crate) fn unmount(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match unmount_once(dir) {
            Err(e) if is_busy(&e) && tries < 40 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

fn is_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBUSY) || e.to_string().contains("Device or resource busy")
}

fn unmount_once(dir: &Path) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = cstr(dir.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg("--")
        .arg(dir)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
