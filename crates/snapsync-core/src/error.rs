//! The one error type of snapsync-core.
//!
//! Rules for every variant:
//! - A variant about a file carries its `path`; a variant about manifest text carries the line number.
//! - Messages are lower case, have no trailing period, and never repeat the `source` (so a printed
//!   chain says each thing once).
//! - Where the user can do something about it, [`Error::hint`] says what.
//! - Paths taken from a manifest are shown in their rendered (escaped) form, so a hostile name cannot
//!   inject newlines or terminal escapes into an error message.

use std::io;
use std::path::PathBuf;

use crate::hash::Checksum;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in snapsync-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file, a directory or its metadata failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The walk root (or a path that must be a directory) is something else.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// A file's size changed between listing and hashing, or it was truncated while memory-mapped.
    #[error("{} changed while it was being hashed (listed with {expected} bytes, read {actual})", path.display())]
    ChangedDuringWalk {
        /// The file.
        path: PathBuf,
        /// The size the directory listing reported.
        expected: u64,
        /// The number of bytes actually read.
        actual: u64,
    },

    /// A file listed by the walk was gone when it was opened for hashing.
    #[error("{} vanished during the walk", path.display())]
    VanishedDuringWalk {
        /// The file.
        path: PathBuf,
    },

    /// An `--exclude` glob or regular expression does not compile.
    #[error("invalid exclude pattern {pattern:?}")]
    InvalidPattern {
        /// The pattern as the user wrote it.
        pattern: String,
        /// The compiler's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Manifest text that does not follow the format.
    #[error("manifest line {line}: {reason}")]
    ManifestSyntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// The operation was cancelled ([`crate::Cancel`]): a walk stopped before it hashed every file.
    #[error("interrupted")]
    Cancelled,

    /// A manifest whose entries are well-formed but disagree with each other.
    #[error("manifest entry {path}: {reason}")]
    ManifestInconsistent {
        /// The entry's rendered path.
        path: String,
        /// What does not add up.
        reason: String,
    },

    /// A manifest entry that could not be created: bad path shape, duplicate, mode out of range.
    #[error("invalid manifest entry {path}: {reason}")]
    InvalidEntry {
        /// The entry's rendered path.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Text that should be a 64-digit lowercase hex BLAKE3 checksum but is not.
    #[error("invalid checksum {text:?}: expected 64 lowercase hex digits")]
    InvalidChecksum {
        /// The offending text (at most 80 characters of it).
        text: String,
    },

    /// Creating, writing, flushing or renaming a file into place failed (see [`crate::atomic`]).
    #[error("cannot write {}", path.display())]
    Write {
        /// The file that was to be written (its final name).
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A file written under a temporary name has another size than expected, so it was removed
    /// instead of published.
    #[error("{} was not written: {actual} bytes arrived, {expected} were expected", path.display())]
    SizeMismatch {
        /// The file that was to be written (its final name).
        path: PathBuf,
        /// The size it should have.
        expected: u64,
        /// The bytes that were written.
        actual: u64,
    },

    /// A file written under a temporary name has another BLAKE3 than expected, so it was removed
    /// instead of published.
    #[error("{} was not written: its BLAKE3 is {actual}, not the expected {expected}", path.display())]
    HashMismatch {
        /// The file that was to be written (its final name).
        path: PathBuf,
        /// The checksum it should have.
        expected: Checksum,
        /// The checksum of what was written.
        actual: Checksum,
    },

    /// A manifest path that would leave the destination directory if materialised.
    #[error("unsafe path {path} in manifest: {reason}")]
    UnsafePath {
        /// The rendered path.
        path: String,
        /// Why it is unsafe.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A line of advice for the user, when there is something they can do.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::ChangedDuringWalk { .. } | Error::VanishedDuringWalk { .. } => {
                Some("the tree changed under snapsync; re-run when nothing is writing to it")
            }
            Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Some("exclude the path with --exclude, or run as a user who can read it")
            }
            Error::Write { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                Some("the disk is full")
            }
            Error::Write { source, .. } if source.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                Some("the destination is read-only")
            }
            Error::InvalidPattern { .. } => Some(
                "--exclude takes a glob (`*.log`, `build/`, `docs/**/*.tmp`); --exclude-regex takes a regular expression",
            ),
            _ => None,
        }
    }
}
