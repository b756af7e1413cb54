//! Errors of a sync run: the whole run (scanning, the lock, the state) and single paths (a transfer
//! that failed, a file that changed under the run).

use std::io;
use std::path::{Path, PathBuf};

use crate::state::StateError;

/// A sync error. Store errors print the store URL without its password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] snapsync_store::Error),

    /// The sync state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),

    /// A local file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What happened.
        #[source]
        source: io::Error,
    },

    /// An `--exclude` pattern does not compile.
    #[error(transparent)]
    Pattern(snapsync_core::Error),

    /// A `--match` pattern does not compile.
    #[error("invalid --match pattern {pattern:?}: {reason}")]
    InvalidMatch {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },

    /// Another run holds the remote's lock.
    #[error("{location} is locked by another run ({holder})")]
    Locked {
        /// The lock's location.
        location: String,
        /// Who holds it, as the lock says.
        holder: String,
    },

    /// The run's lock was taken over by another run (it had not been renewed in time): the run
    /// started nothing more.
    #[error("{location}: the lock was taken over by another run; this run stopped (nothing half-done)")]
    LockLost {
        /// The lock's location.
        location: String,
    },

    /// A file changed between the scan and the action: nothing was done to it.
    #[error(
        "{path}: changed on the {side} side during the run; nothing was changed for it (the next run picks it up)"
    )]
    Changed {
        /// The path.
        path: String,
        /// `local` or `remote`.
        side: &'static str,
    },

    /// A transfer did not deliver what it should have: the target was left as it was.
    #[error("{path}: {what}; the target was left as it was")]
    Verify {
        /// The path.
        path: String,
        /// What did not match.
        what: String,
    },

    /// The plan deletes a whole side, or most of it: nothing was changed (see
    /// [`crate::Prepared::mass_delete`]).
    #[error("stopped before changing anything: {reason}")]
    MassDelete {
        /// What the plan would delete.
        reason: String,
    },

    /// The remote folder does not exist (and `--create-folder` was not given).
    #[error("{location} does not exist (a missing remote folder is never taken as an empty one)")]
    MissingRemote {
        /// The remote's URL, without its password.
        location: String,
    },

    /// Options that contradict each other or cannot work (see [`crate::OptionsBuilder::build`]).
    #[error("{reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },

    /// The run was cancelled ([`crate::OptionsBuilder::cancel`], Ctrl-C): nothing new was started, the
    /// transfers in flight were abandoned and their temporary files removed, what finished is
    /// recorded in the state, and the lock is released. The next run carries on from there.
    #[error("interrupted: what finished is recorded, the next run carries on")]
    Cancelled,

    /// A path that would leave the local folder (a `..` part, or a symlinked directory on the way).
    #[error("{path}: refused, {reason}")]
    Unsafe {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A line of advice for this error, where there is one.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Store(e) => e.hint(),
            Error::Locked { .. } => Some(
                "wait for the other run to finish; if it was killed, the lock goes stale after --lock-timeout, or remove it now with --break-lock",
            ),
            Error::MassDelete { .. } => Some(
                "check that both folders are the ones you meant (a disk not mounted, a typo in the path); \
run with --dry-run to see the plan, then with --allow-mass-delete if the deletions are what you want",
            ),
            Error::MissingRemote { .. } => {
                Some("check the path; to create it (a first upload), run again with --create-folder")
            }
            Error::State(_) => Some(
                "the sync state is under ~/.local/state/snapsync/sync/ (or $XDG_STATE_HOME, $SNAPSYNC_STATE_DIR); removing this pair's directory there starts over as a first sync (nothing is deleted then)",
            ),
            _ => None,
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
