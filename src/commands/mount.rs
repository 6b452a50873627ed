//! `restorefs mount` and `restorefs umount`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use restorefs_mount::MountOptions;

use super::{open, warn_volumes, CliError, CliResult, OpenSpec};

/// `restorefs mount IMAGE DIR [-f] [-o OPT...]`.
///
/// Everything that can fail for a reason the user can fix (options, the
/// mountpoint, the image) is checked before forking, so the error is
/// printed by the command itself and no process is left behind.
pub fn run(
    image: &Path,
    dir: &Path,
    foreground: bool,
    opts: &[String],
    spec: &OpenSpec,
) -> CliResult {
    let image_abs =
        restorefs_parsers::image::mount_name(image).map_err(|e| CliError::at(image, e))?;
    let mut options = MountOptions::new(&image_abs.to_string_lossy());
    for o in opts {
        options.add(o).map_err(|e| CliError(format!("-o {e}")))?;
    }
    let dir = check_mountpoint(dir)?;
    let tree = open(image, spec)?;
    warn_volumes(&tree, None);

    if foreground {
        let mounted = restorefs_mount::mount(tree, &dir, &options)
            .map_err(|e| CliError(format!("{}: mount failed: {e}", dir.display())))?;
        tracing::info!("{} mounted on {}", image_abs.display(), dir.display());
        mounted
            .serve()
            .map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
        return Ok(ExitCode::SUCCESS);
    }

    let (rx, tx) = pipe().map_err(|e| CliError(format!("pipe: {e}")))?;
    // SAFETY: the process is single-threaded here (the image was opened
    // without threads; fuser's threads start only in the child), so the
    // child may run ordinary Rust code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(CliError(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(rx);
            child(tree, &dir, &options, tx)
        }
        pid => {
            drop(tx);
            parent(pid, rx, image, &dir)
        }
    }
}

/// Waits for the child's verdict: `ok` once the mount is live, otherwise
/// the error, which is printed here; a failed child is reaped.
fn parent(pid: libc::pid_t, rx: OwnedFd, image: &Path, dir: &Path) -> CliResult {
    let mut msg = String::new();
    let _ = File::from(rx).read_to_string(&mut msg);
    if msg == "ok" {
        return Ok(ExitCode::SUCCESS);
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if msg.is_empty() {
        msg = "the mount process died before mounting".into();
    }
    Err(CliError(format!(
        "{} on {}: {msg}",
        restorefs_parsers::image::display_name(image),
        dir.display()
    )))
}

/// The daemon: mounts, reports through `tx`, detaches from the terminal
/// and the caller's pipes, and serves until unmounted.
fn child(
    tree: restorefs_parsers::tree::RestoreTree,
    dir: &Path,
    options: &MountOptions,
    tx: OwnedFd,
) -> ! {
    let mut tx = File::from(tx);
    // SAFETY: plain syscalls without memory arguments.
    unsafe { libc::setsid() };
    let mounted = match restorefs_mount::mount(tree, dir, options) {
        Ok(m) => m,
        Err(e) => {
            let _ = write!(tx, "mount failed: {e}");
            std::process::exit(1);
        }
    };
    // A caller reading our stdout/stderr (a script's `$(...)`, a test)
    // would otherwise wait for the daemon to exit.
    if let Err(e) = detach_stdio() {
        let _ = write!(tx, "cannot detach from the terminal: {e}");
        std::process::exit(1);
    }
    let _ = std::env::set_current_dir("/");
    let _ = tx.write_all(b"ok");
    drop(tx);
    match mounted.serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            tracing::error!("{}: {e}", dir.display());
            std::process::exit(1)
        }
    }
}

fn detach_stdio() -> std::io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The canonical mountpoint, refusing what would only fail (or worse,
/// stack a second mount) later.
fn check_mountpoint(dir: &Path) -> Result<PathBuf, CliError> {
    let abs = dir
        .canonicalize()
        .map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    if !abs.is_dir() {
        return Err(CliError(format!("{}: not a directory", dir.display())));
    }
    match restorefs_mount::mount_type(&abs) {
        Ok(Some(t)) => Err(CliError(format!(
            "{}: already a mount point ({t}); unmount it first",
            dir.display()
        ))),
        Ok(None) => Ok(abs),
        // Without /proc, let the mount itself decide.
        Err(_) => Ok(abs),
    }
}

/// `restorefs umount DIR`.
pub fn umount(dir: &Path) -> CliResult {
    restorefs_mount::unmount(dir)
        .map_err(|e| CliError(format!("{}: unmount failed: {e}", dir.display())))?;
    Ok(ExitCode::SUCCESS)
}
