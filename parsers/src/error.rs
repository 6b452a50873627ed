//! One error type for every layer, carrying where it happened.

use std::io;

/// Result alias used throughout the parsers.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, and in which layer and at which offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The byte source beneath failed.
    #[error("{layer}: read error at offset {offset}: {source}")]
    Io {
        layer: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// On-disk data that cannot be right.
    #[error("{layer}: corrupt data at offset {offset}: {what}")]
    Corrupt {
        layer: &'static str,
        offset: u64,
        what: String,
    },
    /// A feature restorefs refuses rather than return wrong bytes.
    #[error("{layer}: unsupported: {what}")]
    Unsupported { layer: &'static str, what: String },
    /// A path or name that does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// A path component that is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// A read of a directory's bytes.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A readlink on something that is not a symlink.
    #[error("{0}: not a symbolic link")]
    NotASymlink(String),
    /// A chain of restore points that does not hold together: a missing
    /// parent, a parent whose id disagrees, a cycle.
    #[error("chain: {0}")]
    Chain(String),
    /// An error with the name of what was being read around it (image, volume).
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Corrupt data in `layer` at byte `offset`.
    pub fn corrupt(layer: &'static str, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            layer,
            offset,
            what: what.into(),
        }
    }

    /// A feature that `layer` does not read.
    pub fn unsupported(layer: &'static str, what: impl Into<String>) -> Self {
        Error::Unsupported {
            layer,
            what: what.into(),
        }
    }

    /// An I/O failure of the source beneath `layer`.
    pub fn io(layer: &'static str, offset: u64, source: io::Error) -> Self {
        Error::Io {
            layer,
            offset,
            source,
        }
    }

    /// Wraps the error with the name of what was being read.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, under every context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// The errno a filesystem front end answers with.
    pub fn errno(&self) -> i32 {
        match self.root() {
            Error::NotFound(_) => libc_errno::ENOENT,
            Error::NotADirectory(_) => libc_errno::ENOTDIR,
            Error::IsADirectory(_) => libc_errno::EISDIR,
            Error::NotASymlink(_) => libc_errno::EINVAL,
            Error::Unsupported { .. } => libc_errno::EOPNOTSUPP,
            _ => libc_errno::EIO,
        }
    }
}

/// The few errno values we need, without a libc dependency in the parsers.
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EOPNOTSUPP: i32 = 95;
}

/// Adds context to results, like `anyhow::Context` but keeping our type.
pub trait ResultExt<T> {
    /// Wraps an error with `context`, computed only on failure.
    fn with_context<F: FnOnce() -> String>(self, context: F) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn with_context<F: FnOnce() -> String>(self, context: F) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}
