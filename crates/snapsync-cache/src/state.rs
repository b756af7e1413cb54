//! The cache's state: one JSON file, read and rewritten (atomically) under an exclusive file lock, so
//! threads and processes sharing a cache folder never lose each other's changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, Metadata};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use snapsync_core::atomic::{WriteOptions, write_atomic};
use snapsync_store::ObjectMeta;

use crate::error::{Error, Result};
use crate::to_ns;

const VERSION: u32 = 1;

/// What the remote held for a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remote {
    pub(crate) size: u64,
    pub(crate) mtime_ns: Option<i128>,
    /// The object store's `ETag`, where it gives one: it tells apart two versions written within
    /// the same second with the same size, which the time alone cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etag: Option<String>,
}

impl Remote {
    pub(crate) fn of(meta: &ObjectMeta) -> Remote {
        Remote {
            size: meta.size,
            mtime_ns: meta.modified.map(to_ns),
            etag: meta.etag.clone(),
        }
    }

    /// Whether the remote's object is still this one: same size, and the same time and tag where
    /// the store gives them.
    pub(crate) fn matches(&self, meta: &ObjectMeta) -> bool {
        meta.size == self.size && meta.modified.map(to_ns) == self.mtime_ns && meta.etag == self.etag
    }
}

/// A cached file: what the remote held and what the local copy was when it was fetched (or pushed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) remote: Remote,
    pub(crate) local_size: u64,
    pub(crate) local_mtime_ns: Option<i128>,
    pub(crate) blake3: String,
    pub(crate) fetched_ns: i128,
}

impl Entry {
    pub(crate) fn fetched(remote: Remote, local: &Metadata, blake3: String) -> Entry {
        Entry {
            remote,
            local_size: local.len(),
            local_mtime_ns: local.modified().ok().map(to_ns),
            blake3,
            fetched_ns: now_ns(),
        }
    }

    /// Whether the local copy is still the one fetched.
    pub(crate) fn local_matches(&self, meta: &Metadata) -> bool {
        meta.is_file()
            && meta.len() == self.local_size
            && meta.modified().ok().map(to_ns) == self.local_mtime_ns
    }

    pub(crate) fn fetched_age(&self) -> Duration {
        let age = now_ns().saturating_sub(self.fetched_ns).max(0);
        Duration::from_nanos(u64::try_from(age).unwrap_or(u64::MAX))
    }
}

pub(crate) fn now_ns() -> i128 {
    to_ns(SystemTime::now())
}

/// The whole state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) version: u32,
    pub(crate) remote: String,
    pub(crate) files: BTreeMap<String, Entry>,
    pub(crate) queue: BTreeSet<String>,
    #[serde(default)]
    pub(crate) conflicts: BTreeMap<String, String>,
}

/// The state, held under the cache's lock until dropped.
pub(crate) struct Locked {
    pub(crate) state: State,
    path: PathBuf,
    _lock: File,
}

impl Locked {
    /// Takes the lock of the cache whose meta folder is `dir`, and reads the state (a new one for a new
    /// cache) of the remote `remote`.
    pub(crate) fn take(dir: &Path, remote: &str) -> Result<Locked> {
        let lock_path = dir.join("state.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let path = dir.join("state.json");
        let damaged = |reason: String| Error::State {
            path: path.clone(),
            reason,
        };
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| damaged(format!("the cache's state is damaged ({e})")))?;
                if state.version != VERSION {
                    return Err(damaged(format!("unknown state version {}", state.version)));
                }
                if state.remote != remote {
                    return Err(damaged(format!(
                        "this cache folder belongs to {}, not {remote}; use another folder",
                        state.remote
                    )));
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: VERSION,
                remote: remote.to_owned(),
                ..State::default()
            },
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(Locked {
            state,
            path,
            _lock: lock,
        })
    }

    /// Writes the state back (a temporary file, flushed, renamed).
    pub(crate) fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &bytes, WriteOptions::DURABLE).map_err(|e| Error::io(&self.path, e))
    }
}
