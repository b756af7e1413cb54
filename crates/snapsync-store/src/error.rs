//! The one error type of snapsync-store.
//!
//! Rules: every variant names the store URL with the key (`location`), passwords redacted (it comes from
//! [`crate::StoreUrl`], which never prints one). Callers decide by kind, not by message: `NotFound`,
//! `AlreadyExists`, `PermissionDenied` and `Transient` are what the layers above act on (skip, retry,
//! report). Messages are lower case, without a trailing period, and do not repeat their `source`.

use std::io;
use std::path::PathBuf;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object at that key.
    #[error("{location} does not exist")]
    NotFound {
        /// Store URL and key.
        location: String,
    },

    /// Create-if-absent found an object already there.
    #[error("{location} already exists")]
    AlreadyExists {
        /// Store URL and key.
        location: String,
    },

    /// The bucket or container itself does not exist.
    #[error("{location}: the bucket or container does not exist")]
    NoSuchBucket {
        /// Store URL and key.
        location: String,
    },

    /// The store refused: wrong or missing credentials, or no permission.
    #[error("{location}: access denied")]
    PermissionDenied {
        /// Store URL and key.
        location: String,
        /// The store's answer.
        #[source]
        source: Source,
    },

    /// Something that may work if tried again: a refused or dropped connection, a timeout, a 5xx.
    #[error("{location}: temporary failure")]
    Transient {
        /// Store URL and key.
        location: String,
        /// What happened.
        #[source]
        source: Source,
    },

    /// The store cannot do this at all.
    #[error("{location}: {operation} is not supported by this store")]
    Unsupported {
        /// Store URL and key.
        location: String,
        /// The operation.
        operation: &'static str,
    },

    /// A store URL that cannot be used.
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: String,
    },

    /// A key that cannot name an object (empty part, `..`, …).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// A local file or directory operation failed.
    #[error("{location}: i/o error")]
    Io {
        /// Store URL and key, or the local path.
        location: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A local file changed (was written, grew, shrank, or was replaced) while it was being stored, or
    /// is not the version the caller expected ([`crate::PutSource::FileExpecting`]): nothing was stored,
    /// the key keeps what it held. Not worth retrying as such: the caller decides whether to read the
    /// file again.
    #[error("{}: changed while it was being read; nothing was stored at {location}", path.display())]
    SourceChanged {
        /// Store URL and key.
        location: String,
        /// The local file.
        path: PathBuf,
    },

    /// Something that must be a directory is a file (or another kind of entry): a store's root, or a
    /// directory on the way to a key.
    #[error("{location} is not a directory")]
    NotADirectory {
        /// Store URL and key, or the local path.
        location: String,
    },

    /// No room to write: a full local disk (`ENOSPC`), an exceeded disk quota (`EDQUOT`), or a server
    /// that says it is out of space or over its quota (FTP `452`, `552`). Not transient: retrying does
    /// not free space.
    #[error("{location}: {reason}")]
    StorageFull {
        /// Store URL and key, or the local path.
        location: String,
        /// What is full, with the server's own words where it gave some: `no space left on device`,
        /// `the server is out of space (452 …)`.
        reason: String,
    },

    /// A netrc file that cannot be parsed (the line is named; the file's contents never are).
    #[error("{}: line {line}: {reason}", path.display())]
    Netrc {
        /// The netrc file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// Anything else the store reported.
    #[error("{location}: store error")]
    Other {
        /// Store URL and key.
        location: String,
        /// The store's error.
        #[source]
        source: Source,
    },
}

impl Error {
    /// True for failures worth retrying.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// True when the object is not there.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// A line of advice for the user, when there is something they can do.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::PermissionDenied { source, .. } if source.is::<crate::LoginRefused>() => Some(
                "check the user and the password: in the URL, in ~/.netrc ($NETRC), in the keyring (saved \
                 with --store-password), or typed when asked on a terminal",
            ),
            Error::PermissionDenied { location, .. }
                if location.starts_with("ftp://") || location.starts_with("ftps://") =>
            {
                Some("check the user name and password in the URL, and the permissions on the server")
            }
            Error::PermissionDenied { location, .. } if location.starts_with("sftp://") => Some(
                "check the user, the password or key (--ssh-key, ssh-agent), the host key (known_hosts) and \
                 the permissions on the server",
            ),
            Error::PermissionDenied { location, .. } if is_local_location(location) => Some(
                "check the permissions of the files and directories there (ls -l): the user running \
                 snapsync must be able to read them, and to write where it writes",
            ),
            Error::PermissionDenied { .. } => Some(
                "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, \
                 GOOGLE_APPLICATION_CREDENTIALS) and the permissions on the bucket or directory",
            ),
            Error::Transient { .. } => {
                Some("is the server reachable? the operation was retried; run it again to resume")
            }
            Error::NoSuchBucket { .. } => {
                Some("create it first: snapsync does not create buckets or containers")
            }
            Error::Io { source, .. } if source.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                Some("the destination is read-only")
            }
            Error::StorageFull { location, .. } if is_local_location(location) => {
                Some("free some space on that disk (or raise the quota), then run it again")
            }
            Error::StorageFull { .. } => Some(
                "free some space on the server, or ask its administrator for more (a quota), then run \
                 it again",
            ),
            Error::NotADirectory { .. } => Some("check the path: a file is where a directory must be"),
            Error::Netrc { .. } => Some("fix that line of the netrc file, or leave it out with --no-netrc"),
            Error::SourceChanged { .. } => {
                Some("the file is being written to: run again once it is complete (or exclude it)")
            }
            _ => None,
        }
    }

    /// Converts a local I/O error: not-found, exists and permission errors get their own kinds.
    pub(crate) fn from_io(location: String, source: io::Error) -> Error {
        if let Some(reason) = storage_full(&source) {
            return Error::StorageFull {
                location,
                reason: reason.to_owned(),
            };
        }
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { location },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists { location },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                location,
                source: Box::new(source),
            },
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                Error::Transient {
                    location,
                    source: Box::new(source),
                }
            }
            _ => Error::Io { location, source },
        }
    }

    /// Converts an `object_store` error.
    pub(crate) fn from_object_store(location: String, error: object_store::Error) -> Error {
        use object_store::Error as E;
        // A missing bucket answers 404 like a missing object; its error code tells them apart.
        let text = error.to_string();
        if [
            "NoSuchBucket",
            "ContainerNotFound",
            "The specified bucket does not exist",
        ]
        .iter()
        .any(|c| text.contains(c))
        {
            return Error::NoSuchBucket { location };
        }
        // Listings report a refused request as text only (`... status code: 403 Forbidden ...`).
        let refused = matches!(error, E::Generic { .. })
            && ["status code: 401", "status code: 403"]
                .iter()
                .any(|c| text.contains(c));
        match error {
            _ if refused => Error::PermissionDenied {
                location,
                source: Box::new(error),
            },
            E::NotFound { .. } => Error::NotFound { location },
            E::AlreadyExists { .. } | E::Precondition { .. } => Error::AlreadyExists { location },
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::PermissionDenied {
                location,
                source: Box::new(error),
            },
            E::NotSupported { .. } | E::NotImplemented { .. } => Error::Unsupported {
                location,
                operation: "this operation",
            },
            other if is_transient_object_store(&other) => Error::Transient {
                location,
                source: Box::new(other),
            },
            other => Error::Other {
                location,
                source: Box::new(other),
            },
        }
    }
}

/// What a full disk or an exceeded quota is called, when `error` is one (`ENOSPC`, `EDQUOT`).
fn storage_full(error: &io::Error) -> Option<&'static str> {
    match error.kind() {
        io::ErrorKind::StorageFull => Some("no space left on device"),
        io::ErrorKind::QuotaExceeded => Some("disk quota exceeded"),
        _ => None,
    }
}

/// Whether an error's location is a local path (`/dir/key`, `./dir`, `file:///dir/key`) rather than
/// a URL of a server or a bucket.
fn is_local_location(location: &str) -> bool {
    location.starts_with("file://") || !location.contains("://")
}

/// A connection, request or timeout failure anywhere in the chain, or a server error status.
fn is_transient_object_store(error: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::UnexpectedEof
            );
        }
        current = e.source();
    }
    // The retry layer reports an exhausted 5xx or 429 as text only; its message names the status.
    let text = error.to_string();
    [
        "status code: 5",
        "status code: 429",
        "Too Many Requests",
        "Service Unavailable",
        "Internal Server Error",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_says_so() {
        for source in [
            io::Error::from_raw_os_error(28),
            io::Error::from(io::ErrorKind::StorageFull),
        ] {
            let err = Error::from_io("/backup/data/k".into(), source);
            assert!(matches!(err, Error::StorageFull { .. }), "{err:?}");
            assert_eq!(err.to_string(), "/backup/data/k: no space left on device");
            assert!(!err.is_transient());
            assert!(err.hint().unwrap().contains("free some space on that disk"));
        }
        let err = Error::from_io(
            "file:///backup/k".into(),
            io::Error::from(io::ErrorKind::QuotaExceeded),
        );
        assert_eq!(err.to_string(), "file:///backup/k: disk quota exceeded");
        // Other failures keep their kinds.
        let err = Error::from_io("/x".into(), io::Error::from_raw_os_error(5));
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn local_paths_get_a_hint_about_file_permissions_not_credentials() {
        let denied = |location: &str| {
            Error::from_io(location.into(), io::Error::from(io::ErrorKind::PermissionDenied))
                .hint()
                .unwrap()
        };
        for local in ["/srv/backup/k", "./rel/k", "rel/k", "file:///srv/backup/k"] {
            let hint = denied(local);
            assert!(hint.contains("permissions of the files"), "{local}: {hint}");
            assert!(!hint.contains("AWS"), "{local}: {hint}");
        }
        assert!(denied("s3://bucket/k").contains("AWS_ACCESS_KEY_ID"));
        assert!(denied("az://container/k").contains("credentials"));
        assert!(denied("ftp://u:***@h/k").contains("user name and password"));
        assert!(denied("sftp://u@h/k").contains("known_hosts"));
        let full = Error::StorageFull {
            location: "sftp://u@h/k".into(),
            reason: "the server is out of space".into(),
        };
        assert!(full.hint().unwrap().contains("on the server"));
    }

    #[test]
    fn a_file_where_a_directory_must_be_is_named() {
        let err = Error::NotADirectory {
            location: "ftp://u:***@h/data".into(),
        };
        assert_eq!(err.to_string(), "ftp://u:***@h/data is not a directory");
        assert!(err.hint().is_some());
    }
}
