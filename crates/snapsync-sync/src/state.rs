//! The sync state: the base (what both sides agreed on at the end of the last sync of a pair), kept on
//! disk so that it survives a killed run.
//!
//! Files, in one directory per pair (see [`StateDir`]):
//!
//! * `base.json` — the base at the end of the last completed run: `{"version":1,"remote":URL,"entries":
//!   {PATH: {"size":N,"local_mtime_ns":T|null,"remote_mtime_ns":T|null,"remote_size":N,"blake3":HEX|null}}}`.
//!   Written to a temporary name, flushed and renamed, so it is always whole.
//! * `journal.jsonl` — one line per action finished since: `{"set":PATH,"entry":{…}}` or
//!   `{"remove":PATH}`, appended and flushed as the run goes. Loading applies it on top of the base; a
//!   torn last line (a run killed mid-write) is ignored, so a killed run redoes at most the actions that
//!   were in flight. [`State::compact`] folds it into `base.json` at the end of a run.
//!
//! The remote's times are recorded as the remote reported them (and its size as it listed it), so a
//! server that cannot set times, or rounds them, is handled by the mapping kept here.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::decide::Recorded;

/// The version written in `base.json`.
const VERSION: u32 = 1;

/// What the base knows of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseEntry {
    /// Size of the local file.
    pub size: u64,
    /// Local modification time, nanoseconds since 1970.
    pub local_mtime_ns: Option<u64>,
    /// Size of the remote file as the remote listed it.
    pub remote_size: u64,
    /// Remote modification time as the remote reported it, nanoseconds since 1970.
    pub remote_mtime_ns: Option<u64>,
    /// BLAKE3 of the content (hex), where known.
    pub blake3: Option<String>,
}

impl BaseEntry {
    /// The record of the local side, for [`crate::classify`].
    #[must_use]
    pub fn local(&self) -> Recorded {
        Recorded {
            size: self.size,
            mtime: self.local_mtime_ns.map(from_ns),
            hash: self.hash(),
        }
    }

    /// The record of the remote side.
    #[must_use]
    pub fn remote(&self) -> Recorded {
        Recorded {
            size: self.remote_size,
            mtime: self.remote_mtime_ns.map(from_ns),
            hash: self.hash(),
        }
    }

    fn hash(&self) -> Option<[u8; 32]> {
        let hex = self.blake3.as_deref()?;
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
}

/// Nanoseconds since 1970, for the state file.
#[must_use]
pub fn to_ns(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
}

fn from_ns(ns: u64) -> SystemTime {
    let seconds = ns / 1_000_000_000;
    UNIX_EPOCH + Duration::new(seconds, (ns % 1_000_000_000) as u32)
}

#[derive(Serialize, Deserialize)]
struct BaseFile {
    version: u32,
    remote: String,
    entries: BTreeMap<String, BaseEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JournalLine {
    Set { set: String, entry: BaseEntry },
    Remove { remove: String },
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file of the state could not be read or written.
    #[error("sync state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `base.json` is not a base this version can read.
    #[error("sync state {path} is damaged or from another version: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state belongs to another remote.
    #[error("sync state {path} belongs to {found}, not {expected}")]
    OtherRemote {
        /// The file.
        path: PathBuf,
        /// The remote it records.
        found: String,
        /// The remote of this run.
        expected: String,
    },
}

/// Where the state of one (local folder, remote) pair lives: `LOCAL/.snapsync/sync/<16 hex of the
/// remote URL's BLAKE3>/`. The `.snapsync` folder is never synced. Keeping it in the local folder means
/// each machine syncing a remote has its own base, and a moved folder keeps it.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    remote: String,
}

impl StateDir {
    /// The state directory for `local` and `remote` (the remote URL as printed: without a password).
    #[must_use]
    pub fn new(local: &Path, remote: &str) -> StateDir {
        let id = blake3::hash(remote.as_bytes()).to_hex();
        StateDir {
            dir: local.join(".snapsync").join("sync").join(&id.as_str()[..16]),
            remote: remote.to_owned(),
        }
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn base_path(&self) -> PathBuf {
        self.dir.join("base.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    /// Loads the base (empty when there is none yet: a first sync) with the journal of an interrupted
    /// run applied, and opens the journal for this run.
    ///
    /// # Errors
    /// [`StateError`] for unreadable or damaged files, or a state of another remote.
    pub fn load(&self) -> Result<State, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let base_path = self.base_path();
        let mut entries = match fs::read(&base_path) {
            Ok(bytes) => {
                let file: BaseFile = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                    path: base_path.clone(),
                    reason: e.to_string(),
                })?;
                if file.version != VERSION {
                    return Err(StateError::Corrupt {
                        path: base_path,
                        reason: format!("version {} (this snapsync reads {VERSION})", file.version),
                    });
                }
                if file.remote != self.remote {
                    return Err(StateError::OtherRemote {
                        path: base_path,
                        found: file.remote,
                        expected: self.remote.clone(),
                    });
                }
                file.entries
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&base_path)(e)),
        };
        let journal_path = self.journal_path();
        let mut replayed = 0;
        match File::open(&journal_path) {
            Ok(file) => {
                for line in BufReader::new(file).split(b'\n') {
                    let line = line.map_err(io(&journal_path))?;
                    // A line that does not parse is the torn end of a killed run: nothing after it counts.
                    let Ok(record) = serde_json::from_slice::<JournalLine>(&line) else {
                        break;
                    };
                    match record {
                        JournalLine::Set { set, entry } => {
                            entries.insert(set, entry);
                        }
                        JournalLine::Remove { remove } => {
                            entries.remove(&remove);
                        }
                    }
                    replayed += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&journal_path)(e)),
        }
        Ok(State {
            dir: self.clone(),
            entries,
            journal: None,
            replayed,
        })
    }
}

/// The base of a pair, loaded, and the journal of the run that changes it.
#[derive(Debug)]
pub struct State {
    dir: StateDir,
    entries: BTreeMap<String, BaseEntry>,
    journal: Option<File>,
    replayed: usize,
}

impl State {
    /// What the base knows of `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&BaseEntry> {
        self.entries.get(path)
    }

    /// Every path the base knows, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &BaseEntry)> {
        self.entries.iter()
    }

    /// How many journal records of an interrupted run were applied at load.
    #[must_use]
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// Records that `path` is now in agreement as `entry` (after a transfer, or when both sides were
    /// found equal); written to the journal before this returns.
    ///
    /// # Errors
    /// When the journal cannot be written (the disk is full, say).
    pub fn set(&mut self, path: &str, entry: BaseEntry) -> Result<(), StateError> {
        self.append(&JournalLine::Set {
            set: path.to_owned(),
            entry: entry.clone(),
        })?;
        self.entries.insert(path.to_owned(), entry);
        Ok(())
    }

    /// Records that `path` is gone from both sides.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn remove(&mut self, path: &str) -> Result<(), StateError> {
        if self.entries.contains_key(path) {
            self.append(&JournalLine::Remove {
                remove: path.to_owned(),
            })?;
            self.entries.remove(path);
        }
        Ok(())
    }

    fn append(&mut self, record: &JournalLine) -> Result<(), StateError> {
        let path = self.dir.journal_path();
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| io(io::Error::other(e)))?;
        line.push(b'\n');
        let mut journal = if let Some(journal) = self.journal.take() {
            journal
        } else {
            fs::create_dir_all(self.dir.path()).map_err(io)?;
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?
        };
        // One write per record: a kill leaves a whole line or a torn last one, never a mix.
        journal.write_all(&line).map_err(io)?;
        journal.flush().map_err(io)?;
        self.journal = Some(journal);
        Ok(())
    }

    /// Writes the whole base to `base.json` (temporary name, flushed, renamed) and empties the journal:
    /// the end of a run.
    ///
    /// # Errors
    /// When a file cannot be written; the journal then still holds everything.
    pub fn compact(&mut self) -> Result<(), StateError> {
        let base = self.dir.base_path();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(self.dir.path()).map_err(io(&base))?;
        let file = BaseFile {
            version: VERSION,
            remote: self.dir.remote.clone(),
            entries: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(&base)(io::Error::other(e)))?;
        let temp = self
            .dir
            .path()
            .join(format!(".base.json.{}.tmp", std::process::id()));
        let written = (|| {
            let mut out = File::create(&temp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            fs::rename(&temp, &base)?;
            if let Some(journal) = self.journal.take() {
                drop(journal);
            }
            match fs::remove_file(self.dir.journal_path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(io(&base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64) -> BaseEntry {
        BaseEntry {
            size,
            local_mtime_ns: Some(1_600_000_000_123_456_789),
            remote_size: size,
            remote_mtime_ns: Some(1_600_000_000_000_000_000),
            blake3: Some(blake3::hash(b"x").to_hex().to_string()),
        }
    }

    #[test]
    fn a_first_sync_starts_empty_and_a_compacted_base_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let pair = StateDir::new(dir.path(), "sftp://me@host/site");
        let mut state = pair.load().unwrap();
        assert_eq!(state.entries().count(), 0);
        state.set("a.txt", entry(1)).unwrap();
        state.set("dir/b.txt", entry(2)).unwrap();
        state.remove("a.txt").unwrap();
        state.compact().unwrap();
        assert!(!pair.journal_path().exists());
        let loaded = pair.load().unwrap();
        assert_eq!(
            loaded.entries().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["dir/b.txt"]
        );
        assert_eq!(loaded.get("dir/b.txt"), Some(&entry(2)));
        assert_eq!(loaded.replayed(), 0);
        // Times and hashes come back as records for the decision table.
        let local = loaded.get("dir/b.txt").unwrap().local();
        assert_eq!(local.mtime.map(to_ns), Some(Some(1_600_000_000_123_456_789)));
        assert_eq!(local.hash, Some(*blake3::hash(b"x").as_bytes()));
        // The state lives in the local folder, per remote.
        assert!(pair.path().starts_with(dir.path().join(".snapsync/sync")));
        assert_ne!(
            pair.path(),
            StateDir::new(dir.path(), "sftp://me@other/site").path()
        );
    }

    #[test]
    fn a_killed_run_is_replayed_from_its_journal_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pair = StateDir::new(dir.path(), "ftp://h/x");
        let mut state = pair.load().unwrap();
        state.set("old", entry(1)).unwrap();
        state.compact().unwrap();
        let mut state = pair.load().unwrap();
        state.set("new", entry(3)).unwrap();
        state.remove("old").unwrap();
        drop(state); // killed: no compaction
        // The kill also tore a last record in half.
        let mut journal = OpenOptions::new().append(true).open(pair.journal_path()).unwrap();
        journal.write_all(br#"{"set":"half","entry":{"size":"#).unwrap();
        let loaded = pair.load().unwrap();
        assert_eq!(loaded.replayed(), 2);
        assert_eq!(
            loaded.entries().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
    }

    #[test]
    fn damaged_or_foreign_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let pair = StateDir::new(dir.path(), "s3://b/p");
        fs::create_dir_all(pair.path()).unwrap();
        fs::write(pair.base_path(), "{not json").unwrap();
        let err = pair.load().unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        let foreign = BaseFile {
            version: VERSION,
            remote: "s3://other/p".into(),
            entries: BTreeMap::new(),
        };
        fs::write(pair.base_path(), serde_json::to_vec(&foreign).unwrap()).unwrap();
        let err = pair.load().unwrap_err().to_string();
        assert!(err.contains("belongs to s3://other/p"), "{err}");
        let future = BaseFile {
            version: VERSION + 1,
            remote: "s3://b/p".into(),
            entries: BTreeMap::new(),
        };
        fs::write(pair.base_path(), serde_json::to_vec(&future).unwrap()).unwrap();
        assert!(pair.load().unwrap_err().to_string().contains("version 2"));
    }
}
