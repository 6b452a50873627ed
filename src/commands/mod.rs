//! One module per subcommand.

pub mod cat;
pub mod cp;
pub mod info;
pub mod ls;
pub mod mount;
pub mod raw;

use std::fmt;
use std::path::Path;

use restorefs_parsers::image::ChainLayer;
use restorefs_parsers::tree::{RestoreTree, TreeOptions};

/// An error for the user: one line naming the image.
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CliError {
    /// `IMAGE: what went wrong`.
    pub fn at(image: &Path, e: impl fmt::Display) -> Self {
        CliError(format!(
            "{}: {e}",
            restorefs_parsers::image::display_name(image)
        ))
    }
}

pub type CliResult = Result<std::process::ExitCode, CliError>;

/// How a command opens its image: the tree's options (parent overrides,
/// link checks, every restore point, items, deleted files).
pub type OpenSpec = TreeOptions;

/// Opens the restore point at `image` (or, with `--all-points`, every point
/// of its chain), warning on stderr about links opened despite a failed
/// check.
pub fn open(image: &Path, spec: &OpenSpec) -> Result<RestoreTree, CliError> {
    let tree = RestoreTree::open_with(image, spec).map_err(|e| CliError::at(image, e))?;
    warn_failed_links(&tree.image.chain);
    Ok(tree)
}

/// Tells the user, on stderr, what may make the volumes read differ from
/// their newest state (a log not replayed, a hibernated Windows, ...): of
/// every volume, or with `path`, of the volume holding it.
pub fn warn_volumes(tree: &RestoreTree, path: Option<&str>) {
    for (dir, w) in tree.volume_warnings(path) {
        eprintln!("restorefs: warning: {dir}: {w}");
    }
}

/// Tells the user which links `--ignore-link-check` let through.
pub fn warn_failed_links(chain: &[ChainLayer]) {
    for l in chain.iter().filter(|l| l.check.failed()) {
        eprintln!(
            "restorefs: warning: {} -> {}: parent link check {}",
            l.file.display(),
            l.parent.as_deref().unwrap_or(Path::new("?")).display(),
            l.check
        );
    }
}
