//! The one error type of snapsync-pkg.
//!
//! Rules: every variant names what it is about — a URL (its password removed: URLs here are always
//! [`crate::auth::redact`]ed before they are stored), a file name, a local path — so a message can be
//! shown as it is. Passwords and tokens never appear in a message or in `Debug` output. Messages are
//! lower case without a trailing period. An HTTP error carries the status and the server's own words
//! (trimmed), because that is what a user needs to fix an upload the server refused.

use std::io;
use std::path::PathBuf;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading an index, reading a distribution or uploading one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source or destination that is neither an HTTP(S) index nor a store URL.
    #[error("{url}: {reason}")]
    InvalidUrl {
        /// What was given (password removed).
        url: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// A requirement that is not PEP 508, or one this mirror cannot select by (a URL requirement).
    #[error("invalid requirement {requirement:?}: {reason}")]
    InvalidRequirement {
        /// The requirement as given.
        requirement: String,
        /// The parser's explanation.
        reason: String,
    },

    /// The server could not be reached, or the connection broke (a body cut short included).
    #[error("{url}: {source}")]
    Http {
        /// The URL asked for.
        url: String,
        /// What the HTTP client saw (its text never includes a password: URLs are sent without one).
        #[source]
        source: reqwest::Error,
    },

    /// The server answered a read with an HTTP error.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's message, trimmed.
        message: String,
    },

    /// An index page that cannot be read: not HTML or JSON, malformed, truncated, or an API version
    /// this client does not know.
    #[error("{url}: bad index page: {reason}")]
    BadPage {
        /// The page.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A page or metadata file larger than the limit this client reads.
    #[error("{url}: larger than {limit} bytes")]
    TooLarge {
        /// Where.
        url: String,
        /// The limit.
        limit: u64,
    },

    /// A distribution whose bytes do not hash to what the index said: nothing is uploaded.
    #[error("{filename}: sha256 mismatch (the index says {expected}, the download is {actual}) from {url}")]
    HashMismatch {
        /// The distribution.
        filename: String,
        /// Where it was downloaded from.
        url: String,
        /// The index's sha256.
        expected: String,
        /// The download's sha256.
        actual: String,
    },

    /// A file name that is not a wheel, sdist or egg name.
    #[error("{filename}: not a distribution file name: {reason}")]
    BadFilename {
        /// The file name.
        filename: String,
        /// Why.
        reason: String,
    },

    /// A distribution whose archive or metadata cannot be read.
    #[error("{}: unreadable distribution: {reason}", path.display())]
    Archive {
        /// The local file (the file name of the distribution is in `reason` when it is a temporary file).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The destination already has a file of that name (HTTP 409).
    #[error("{url}: {filename} already exists on the destination (HTTP 409): {message}")]
    UploadExists {
        /// The upload URL.
        url: String,
        /// The distribution.
        filename: String,
        /// The server's message.
        message: String,
    },

    /// The destination refused the credentials or the permission (HTTP 401 or 403).
    #[error("{url}: upload of {filename} denied (HTTP {status}): {message}")]
    UploadDenied {
        /// The upload URL.
        url: String,
        /// The distribution.
        filename: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// The destination rejected the upload itself (HTTP 400: bad metadata, bad file name).
    #[error("{url}: upload of {filename} rejected (HTTP 400): {message}")]
    UploadRejected {
        /// The upload URL.
        url: String,
        /// The distribution.
        filename: String,
        /// The server's message.
        message: String,
    },

    /// Any other HTTP error status to an upload.
    #[error("{url}: upload of {filename} failed (HTTP {status}): {message}")]
    UploadFailed {
        /// The upload URL.
        url: String,
        /// The distribution.
        filename: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// The destination has a file of that name with other contents: it is not replaced.
    #[error(
        "{filename}: the destination has a different file of that name (sha256 {destination}, the source's is {source_sha256})"
    )]
    Conflict {
        /// The distribution.
        filename: String,
        /// The sha256 the source has.
        source_sha256: String,
        /// The sha256 the destination has.
        destination: String,
    },

    /// A requirement names a project the source does not have.
    #[error("{url}: no project {project:?}")]
    ProjectNotFound {
        /// The source index.
        url: String,
        /// The project.
        project: String,
    },

    /// A store (a local folder, S3, SFTP…) holding a PEP 503 tree failed.
    #[error(transparent)]
    Store(#[from] snapsync_store::Error),

    /// A mirror was cancelled ([`crate::MirrorOptions::cancel`], Ctrl-C): the files that arrived are
    /// listed, no file is half-uploaded, the next run sends the rest.
    #[error("interrupted")]
    Cancelled,

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// A line of advice where the user can act, for front ends to print after the message.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::UploadDenied { .. } => Some(
                "check the user and password (in the URL, or in ~/.netrc), or the token (user __token__)",
            ),
            Error::UploadExists { .. } => Some(
                "indexes do not let a file be replaced; a re-run skips files the destination lists with the same sha256",
            ),
            Error::HashMismatch { .. } => {
                Some("the source served other bytes than its index lists; nothing was uploaded")
            }
            Error::Conflict { .. } => {
                Some("remove the destination's file first if the source's is the one to keep")
            }
            Error::Status {
                status: 401 | 403, ..
            } => Some("the index wants credentials: give them in the URL or in ~/.netrc"),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn archive(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Archive {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
