use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use restorefs_parsers::image::display_name;
use restorefs_parsers::tree::{copy_out, copy_stream_out, safe_name, CopyOptions, CopyReport};

use super::{open, warn_volumes, CliError, CliResult, OpenSpec};

/// `restorefs cp IMAGE PATH... DEST [-r] [--force]`.
///
/// Like cp: into DEST if it is a directory, else to DEST itself (one source).
pub fn run(
    image: &Path,
    sources: &[String],
    dest: &Path,
    recursive: bool,
    force: bool,
    spec: &OpenSpec,
) -> CliResult {
    let tree = open(image, spec)?;
    for s in sources {
        warn_volumes(&tree, Some(s));
    }
    let dest_is_dir = dest.is_dir();
    if sources.len() > 1 && !dest_is_dir {
        return Err(CliError(format!(
            "{}: not a directory (several sources need one)",
            dest.display()
        )));
    }
    let bar = progress_bar();
    let tick = |n: u64| {
        bar.inc(n);
        let fetched = restorefs_parsers::remote::fetched_bytes();
        if fetched > 0 {
            bar.set_message(format!("{} fetched", indicatif::HumanBytes(fetched)));
        }
    };
    let opts = CopyOptions {
        recursive,
        force,
        progress: Some(&tick),
        // One copying thread per CPU.
        threads: 0,
    };
    let mut report = CopyReport::default();
    for src in sources {
        // `file:stream` names an NTFS alternate data stream.
        let (node, stream) = match tree.resolve_stream(src) {
            Ok(n) => n,
            Err(e) => {
                report.failed.push((src.clone(), e.to_string()));
                continue;
            }
        };
        let target: PathBuf = if dest_is_dir {
            let base = src
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|b| !b.is_empty())
                .unwrap_or("root");
            let (safe, renamed) = safe_name(base.as_ref());
            if renamed {
                report
                    .renamed
                    .push((src.clone(), safe.to_string_lossy().into_owned()));
            }
            dest.join(safe)
        } else {
            dest.to_path_buf()
        };
        match stream {
            Some(name) => copy_stream_out(&tree, node, &name, src, &target, &opts, &mut report),
            None => copy_out(&tree, node, src, &target, &opts, &mut report),
        }
    }
    bar.finish_and_clear();
    for (from, to) in &report.renamed {
        eprintln!("restorefs: renamed {from} -> {to}");
    }
    for (what, why) in &report.skipped {
        eprintln!("restorefs: skipped {what}: {why}");
    }
    for (what, why) in &report.failed {
        if why.starts_with(what.as_str()) {
            eprintln!("restorefs: {}: {why}", display_name(image));
        } else {
            eprintln!("restorefs: {}: {what}: {why}", display_name(image));
        }
    }
    tracing::info!(
        "copied {} files, {} dirs, {} symlinks, {} bytes",
        report.files,
        report.dirs,
        report.symlinks,
        report.bytes
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("restorefs: {} item(s) failed", report.failed.len());
        ExitCode::FAILURE
    })
}

/// A byte counter on a terminal; hidden when stderr is not one.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {bytes} copied ({bytes_per_sec}) {elapsed} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
