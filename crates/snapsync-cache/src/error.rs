//! What can go wrong with the cache, by what the caller does about it.

use std::io;
use std::path::{Path, PathBuf};

/// A cache error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path is neither cached nor on the remote.
    #[error("{path}: not in the cache and not on the remote")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The remote cannot be reached (and the file is not cached, or `online` asked for the remote).
    #[error("{location}: the remote cannot be reached: {source}")]
    Unreachable {
        /// Where.
        location: String,
        /// Why.
        #[source]
        source: snapsync_store::Error,
    },
    /// The remote (or the cache folder) refused.
    #[error("{location}: permission denied: {source}")]
    PermissionDenied {
        /// Where.
        location: String,
        /// The refusal.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A push was cancelled ([`crate::CacheOptions::cancel`], Ctrl-C): the files that went up are
    /// recorded, the others stay queued, no temporary file is left.
    #[error("interrupted: the files not pushed stay queued")]
    Cancelled,
    /// The remote copy changed since it was fetched (or appeared, for a new file): pushing would
    /// clobber it.
    #[error("{path}: {why}; not pushed (push with force to overwrite)")]
    Conflict {
        /// The path.
        path: String,
        /// How the remote changed.
        why: String,
    },
    /// A path with a `..` or empty part, an absolute path, one outside the cache, or one that leads out
    /// of it through a symlink.
    #[error("{path}: not a usable path in the cache: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Any other store error.
    #[error(transparent)]
    Store(snapsync_store::Error),
    /// Local I/O on the cache folder.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The cache's state file is damaged or belongs to another remote.
    #[error("{}: {reason}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::PermissionDenied {
            return Error::PermissionDenied {
                location: path.display().to_string(),
                source: Box::new(source),
            };
        }
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A store error as the cache reports it: unreachable, refused, missing, or as it is.
    pub(crate) fn from_store(path: &str, error: snapsync_store::Error) -> Error {
        match error {
            snapsync_store::Error::NotFound { .. } => Error::NotFound {
                path: path.to_owned(),
            },
            snapsync_store::Error::PermissionDenied { location, source } => {
                Error::PermissionDenied { location, source }
            }
            e if e.is_transient() => Error::Unreachable {
                location: path.to_owned(),
                source: e,
            },
            e => Error::Store(e),
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
