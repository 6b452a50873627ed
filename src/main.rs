//! `restorefs`: item-level recovery from VM backup images.
//!
//! The binary is thin: argument parsing and output. The work lives in
//! `restorefs-parsers` (formats, the restore tree) and `restorefs-mount`.

mod commands;
mod format;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use restorefs_parsers::image::OpenOptions;

/// Read files out of virtual-machine backup images without booting them.
///
/// IMAGE (and --parent) is a file, or a URL: http(s)://... (Range requests;
/// Azure blob URLs with a SAS token too) or s3://bucket/key (AWS
/// credentials and region from the environment or ~/.aws; AWS_ENDPOINT_URL
/// for S3-compatible stores).
#[derive(Parser)]
#[command(name = "restorefs", version, about, max_term_width = 100)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    view: ViewArgs,
    /// Keep blocks of images read by URL in DIR, so a later session over
    /// the same image version does not fetch them again.
    #[arg(long, value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How a delta's parents are found (every command that opens an image).
#[derive(clap::Args)]
struct ChainArgs {
    /// Parent file (or URL) of a delta, instead of the one its link names;
    /// repeatable: the first is IMAGE's parent, the next that parent's, ...
    #[arg(long = "parent", value_name = "FILE", global = true)]
    parents: Vec<PathBuf>,
    /// Open a chain whose parent ids (CID, unique id, GUID) disagree, with a
    /// warning.
    #[arg(long, global = true)]
    ignore_link_check: bool,
}

/// What the tree shows beyond the guest's files (every command that lists
/// or reads).
#[derive(clap::Args)]
struct ViewArgs {
    /// List `FILE#` beside every file that holds items (a mailbox's folders
    /// and messages); `FILE#` is reachable by path without it.
    #[arg(long, global = true)]
    items: bool,
    /// A `$Deleted` folder at the root of every NTFS, FAT and exFAT volume
    /// with the deleted files the filesystem still records.
    #[arg(long, global = true)]
    deleted: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Show the image format, partition table and every volume.
    Info {
        image: PathBuf,
        /// Every restore point of the chain, each with its volumes.
        #[arg(long)]
        all_points: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a directory (`/p1/Users/alice`), or the root.
    Ls {
        image: PathBuf,
        #[arg(default_value = "/")]
        path: String,
        /// Long listing: type, mode, links, owner, size, mtime.
        #[arg(short = 'l', long)]
        long: bool,
        /// List subdirectories too.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
        /// Every restore point of the chain, each as its own top-level
        /// directory (`/@1-base`, `/@2-delta`, ...; oldest first).
        #[arg(long)]
        all_points: bool,
    },
    /// Write a file's bytes to stdout.
    Cat {
        image: PathBuf,
        path: String,
        /// Every restore point of the chain, each as its own top-level
        /// directory (`/@1-base`, `/@2-delta`, ...; oldest first).
        #[arg(long)]
        all_points: bool,
    },
    /// Copy files or trees out of the image, keeping times and modes.
    Cp {
        image: PathBuf,
        /// Paths in the image, then the destination on the host.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        /// Copy directories recursively.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        /// Replace files that already exist at the destination.
        #[arg(short, long)]
        force: bool,
        /// Every restore point of the chain, each as its own top-level
        /// directory (`/@1-base`, `/@2-delta`, ...; oldest first).
        #[arg(long)]
        all_points: bool,
    },
    /// Write the virtual disk, or one volume, as raw bytes.
    Raw {
        image: PathBuf,
        /// A volume name (`p1`); the whole disk if omitted.
        volume: Option<String>,
        /// Write to this file (sparse) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(short, long)]
        force: bool,
    },
    /// Mount the image read-only on DIR with FUSE (in the background).
    Mount {
        image: PathBuf,
        dir: PathBuf,
        /// Stay in the foreground, logging to stderr; Ctrl-C unmounts.
        #[arg(short, long)]
        foreground: bool,
        /// Mount options, comma-separated or repeated (allow_other, ...).
        #[arg(short = 'o', value_name = "OPT")]
        options: Vec<String>,
        /// Every restore point of the chain, each as its own top-level
        /// directory (`/@1-base`, `/@2-delta`, ...; oldest first).
        #[arg(long)]
        all_points: bool,
    },
    /// Unmount a restorefs mount (same as `fusermount3 -u DIR`).
    Umount { dir: PathBuf },
}

fn main() -> ExitCode {
    // A panic is a bug; the user gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("restorefs: internal error: {info}");
    }));
    let cli = Cli::parse();
    init_logging(cli.verbose);
    restorefs_parsers::remote::configure(restorefs_parsers::remote::Settings {
        cache_dir: cli.cache_dir.clone(),
        ..Default::default()
    });
    let spec = |all_points| commands::OpenSpec {
        chain: OpenOptions {
            parents: cli.chain.parents.clone(),
            ignore_link_check: cli.chain.ignore_link_check,
        },
        all_points,
        items: cli.view.items,
        deleted: cli.view.deleted,
    };
    let result = match cli.command {
        Command::Info {
            image,
            json,
            all_points,
        } => commands::info::run(&image, json, &spec(all_points)),
        Command::Ls {
            image,
            path,
            long,
            recursive,
            json,
            all_points,
        } => commands::ls::run(&image, &path, long, recursive, json, &spec(all_points)),
        Command::Cat {
            image,
            path,
            all_points,
        } => commands::cat::run(&image, &path, &spec(all_points)),
        Command::Cp {
            image,
            mut paths,
            recursive,
            force,
            all_points,
        } => {
            // clap guarantees at least two.
            let dest = PathBuf::from(paths.pop().unwrap_or_default());
            commands::cp::run(&image, &paths, &dest, recursive, force, &spec(all_points))
        }
        Command::Raw {
            image,
            volume,
            output,
            force,
        } => commands::raw::run(
            &image,
            volume.as_deref(),
            output.as_deref(),
            force,
            &spec(false),
        ),
        Command::Mount {
            image,
            dir,
            foreground,
            options,
            all_points,
        } => commands::mount::run(&image, &dir, foreground, &options, &spec(all_points)),
        Command::Umount { dir } => commands::mount::umount(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("restorefs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
