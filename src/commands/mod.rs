//! One module per subcommand.

pub mod cat;
pub mod cp;
pub mod info;
pub mod ls;
pub mod mount;
pub mod raw;

use std::fmt;
use std::path::Path;

use restorefs_parsers::tree::RestoreTree;

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

/// Opens the restore point at `image`.
pub fn open(image: &Path) -> Result<RestoreTree, CliError> {
    RestoreTree::open(image).map_err(|e| CliError::at(image, e))
}
