//! One module per subcommand.

pub mod cat;
pub mod cp;
pub mod info;
pub mod ls;
pub mod mount;
pub mod raw;

use std::fmt;
use std::path::Path;

use restorefs_parsers::image::{ChainLayer, OpenOptions};
use restorefs_parsers::tree::{RestoreTree, VolumeState};

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
        CliError(format!("{}: {e}", image.display()))
    }
}

pub type CliResult = Result<std::process::ExitCode, CliError>;

/// How a command opens its image: parent overrides and link checks, and
/// whether to show every restore point of the chain.
pub struct OpenSpec {
    pub chain: OpenOptions,
    pub all_points: bool,
}

/// Opens the restore point at `image` (or, with `--all-points`, every point
/// of its chain), warning on stderr about links opened despite a failed
/// check.
pub fn open(image: &Path, spec: &OpenSpec) -> Result<RestoreTree, CliError> {
    let tree = if spec.all_points {
        RestoreTree::open_points(image, &spec.chain)
    } else {
        restorefs_parsers::image::open_with(image, &spec.chain).and_then(RestoreTree::from_image)
    }
    .map_err(|e| CliError::at(image, e))?;
    warn_failed_links(&tree.image.chain);
    Ok(tree)
}

/// Tells the user, on stderr, what may make the volumes read differ from
/// their newest state (a log not replayed, a hibernated Windows, ...): of
/// every volume, or with `path`, of the volume holding it.
pub fn warn_volumes(tree: &RestoreTree, path: Option<&str>) {
    let parts: Vec<&str> = path
        .map(|p| p.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    for (i, v) in tree.volumes.iter().enumerate() {
        let VolumeState::Fs(_, fs) = &v.state else {
            continue;
        };
        let mut prefix: Vec<&str> = Vec::new();
        if let Some(p) = tree
            .points
            .iter()
            .find(|p| (p.first..p.first + p.count).contains(&i))
        {
            prefix.push(&p.name);
        }
        if !tree.bare {
            prefix.push(&v.name);
        }
        if path.is_some() && !parts.starts_with(&prefix) {
            continue;
        }
        for w in fs.warnings() {
            eprintln!("restorefs: warning: /{}: {w}", prefix.join("/"));
        }
    }
}

/// Tells the user which links `--ignore-link-check` let through.
pub fn warn_failed_links(chain: &[ChainLayer]) {
    for l in chain.iter().filter(|l| l.check.starts_with("FAILED")) {
        eprintln!(
            "restorefs: warning: {} -> {}: parent link check {}",
            l.file.display(),
            l.parent.as_deref().unwrap_or(Path::new("?")).display(),
            l.check
        );
    }
}
