//! What a run did: counts, and the conflicts and failures it left, typed.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::Item;
use crate::decide::{Action, Conflict};
use crate::error::Error;
use crate::scan::Listing;

/// What a run did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Files uploaded.
    pub uploaded: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files downloaded.
    pub downloaded: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Local files deleted.
    pub deleted_local: u64,
    /// Remote files deleted.
    pub deleted_remote: u64,
    /// Empty directories removed (both sides).
    pub dirs_removed: u64,
    /// Empty directories made (both sides).
    pub dirs_created: u64,
    /// Files found equal on both sides by content.
    pub equal: u64,
    /// Conflicts settled by `--resolve` or `--force`.
    pub resolved: u64,
    /// Conflicts left as they are, in path order (in JSON: `[path, what]` pairs).
    pub conflicts: Vec<Unsettled>,
    /// Items that failed, in path order; their targets were left as they were (in JSON: `[path,
    /// error]` pairs).
    pub failed: Vec<Failure>,
    /// What the scan left out on purpose (symlinks, names that are not UTF-8), and other warnings.
    pub warnings: Vec<String>,
    /// Paths that could not be listed or read, and why: left alone with everything below them (the
    /// run then fails).
    pub unknown: Vec<(String, String)>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Whether nothing was changed (`--dry-run`).
    pub dry_run: bool,
}

/// Counts an item into the summary; the bytes it moves.
pub(super) fn count(summary: &mut Summary, item: &Item, local: &Listing, remote: &Listing) -> u64 {
    let size = |listing: &Listing| listing.get(&item.path).map_or(0, |o| o.size);
    if item.resolved.is_some() {
        summary.resolved += 1;
    }
    match item.action {
        Action::Upload => {
            let bytes = size(local);
            summary.uploaded += 1;
            summary.uploaded_bytes += bytes;
            bytes
        }
        Action::Download => {
            let bytes = size(remote);
            summary.downloaded += 1;
            summary.downloaded_bytes += bytes;
            bytes
        }
        Action::DeleteLocal => {
            summary.deleted_local += 1;
            0
        }
        Action::DeleteRemote => {
            summary.deleted_remote += 1;
            0
        }
        Action::Conflict(c) => {
            summary.conflicts.push(Unsettled {
                path: item.path.clone(),
                conflict: c,
            });
            0
        }
        Action::Nothing => {
            if local.files.contains_key(&item.path) && remote.files.contains_key(&item.path) {
                summary.equal += 1;
            }
            0
        }
        Action::Compare(_) => 0,
    }
}

/// A conflict a run left as it is: both sides keep their version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsettled {
    /// The path.
    pub path: String,
    /// How the sides disagree.
    pub conflict: Conflict,
}

impl fmt::Display for Unsettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.conflict)
    }
}

impl Serialize for Unsettled {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.path, self.conflict.to_string()).serialize(serializer)
    }
}

/// An item (a file, or a folder: its path then ends in `/`) that failed; its target was left as it
/// was.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The path.
    pub path: String,
    /// Why.
    pub error: Arc<Error>,
}

impl Failure {
    pub(super) fn new(path: String, error: Error) -> Failure {
        Failure {
            path,
            error: Arc::new(error),
        }
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Failure) -> bool {
        self.path == other.path && self.error.to_string() == other.error.to_string()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.error)
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.path, self.error.to_string()).serialize(serializer)
    }
}
