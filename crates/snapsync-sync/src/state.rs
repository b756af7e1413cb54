//! The sync state: the base (what both sides agreed on at the end of the last sync of a pair), kept on
//! disk so that it survives a killed run.
//!
//! Files, in one directory per pair (see [`StateDir`]):
//!
//! * `base.json` — the base at the end of the last completed run: `{"version":1,"remote":URL,"entries":
//!   {PATH: {"size":N,"local_mtime_ns":T|null,"remote_mtime_ns":T|null,"remote_size":N,"blake3":HEX|null}}}`.
//!   Written with [`snapsync_core::atomic::write_atomic`] (temporary name, flushed, renamed, folder
//!   flushed), so it is always whole.
//! * `journal.jsonl` — one line per action finished since: `{"set":PATH,"entry":{…}}` or
//!   `{"remove":PATH}`, appended and flushed as the run goes. Loading applies it on top of the base; a
//!   torn last line (a run killed mid-write) is ignored, so a killed run redoes at most the actions that
//!   were in flight. [`State::compact`] folds it into `base.json` at the end of a run.
//!
//! The remote's times are recorded as the remote reported them (and its size as it listed it), so a
//! server that cannot set times, or rounds them, is handled by the mapping kept here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use snapsync_core::atomic::{WriteOptions, write_atomic};

use crate::decide::Recorded;

/// The version written in `base.json`.
const VERSION: u32 = 1;

/// What the base knows of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseEntry {
    /// Size of the local file.
    pub size: u64,
    /// Local modification time, nanoseconds since 1970 (negative before).
    pub local_mtime_ns: Option<i64>,
    /// Size of the remote file as the remote listed it.
    pub remote_size: u64,
    /// Remote modification time as the remote reported it, nanoseconds since 1970 (negative before).
    pub remote_mtime_ns: Option<i64>,
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

/// Nanoseconds since 1970, for the state file: negative before 1970 (a file dated 1969 has a time
/// like any other); `None` only outside ±292 years.
#[must_use]
pub fn to_ns(time: SystemTime) -> Option<i64> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        Err(before) => i64::try_from(before.duration().as_nanos()).ok().map(|ns| -ns),
    }
}

fn from_ns(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[derive(Serialize, Deserialize)]
struct BaseFile {
    version: u32,
    remote: String,
    entries: BTreeMap<String, BaseEntry>,
    /// Folders both sides had at the end of the last run (where the remote has folders).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    dirs: BTreeSet<String>,
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

/// Where the state of one (local folder, remote) pair lives: `STATE/sync/<16 hex digits of
/// BLAKE3(local folder's absolute path, remote URL)>/`, where STATE is `$SNAPSYNC_STATE_DIR`, else
/// `$XDG_STATE_HOME/snapsync`, else `~/.local/state/snapsync` (see [`default_root`]). Outside the
/// folder, so syncing a folder never changes it (its snapshot id stays the same); each machine, and
/// each folder synced with a remote, has its own base. A state an earlier version kept inside the
/// folder (`LOCAL/.snapsync/sync/<16 hex of BLAKE3(remote URL)>/`) is moved here when first loaded.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    legacy: PathBuf,
    /// The local folder, absolute (recorded in `pair.json`, so `snapsync scan --remove-state` can
    /// say which folder a state was kept for).
    local: PathBuf,
    remote: String,
}

/// The name of the file in a pair's state directory that says which pair it is (`{"local":PATH,
/// "remote":URL}`): the directory's name is a hash, so without it a state could not be found by its
/// remote before the first run finished (`base.json` names the remote only).
const PAIR_FILE: &str = "pair.json";

/// What `pair.json` says.
#[derive(Serialize, Deserialize)]
struct PairFile {
    local: PathBuf,
    remote: String,
}

/// Where sync states live by default: `$SNAPSYNC_STATE_DIR`, else `$XDG_STATE_HOME/snapsync`, else
/// `$HOME/.local/state/snapsync` (the XDG base directory rules), else `.snapsync-state` in the
/// working directory.
#[must_use]
pub fn default_root() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SNAPSYNC_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("snapsync")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/snapsync")))
        .unwrap_or_else(|| PathBuf::from(".snapsync-state"))
}

impl StateDir {
    /// The state directory for `local` and `remote` (the remote URL as printed: without a password)
    /// under [`default_root`].
    #[must_use]
    pub fn new(local: &Path, remote: &str) -> StateDir {
        StateDir::in_root(&default_root(), local, remote)
    }

    /// The state directory for `local` and `remote` under `root`.
    #[must_use]
    pub fn in_root(root: &Path, local: &Path, remote: &str) -> StateDir {
        let folder = fs::canonicalize(local)
            .or_else(|_| std::path::absolute(local))
            .unwrap_or_else(|_| local.to_owned());
        let mut key = blake3::Hasher::new();
        key.update(folder.as_os_str().as_encoded_bytes());
        key.update(b"\0");
        key.update(remote.as_bytes());
        let id = key.finalize().to_hex();
        let legacy = blake3::hash(remote.as_bytes()).to_hex();
        StateDir {
            dir: root.join("sync").join(&id.as_str()[..16]),
            legacy: local.join(".snapsync").join("sync").join(&legacy.as_str()[..16]),
            local: folder,
            remote: remote.to_owned(),
        }
    }

    /// Makes the directory, and `pair.json` in it when it is not there yet (written whole, by
    /// [`write_atomic`]), before anything else of the run goes in.
    ///
    /// # Errors
    /// [`StateError::Io`] when either cannot be written.
    pub fn create(&self) -> Result<(), StateError> {
        let pair = self.dir.join(PAIR_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        if !pair.exists() {
            let body = PairFile {
                local: self.local.clone(),
                remote: self.remote.clone(),
            };
            let bytes = serde_json::to_vec_pretty(&body).map_err(|e| io(&pair)(io::Error::other(e)))?;
            write_atomic(&pair, &bytes, WriteOptions::DURABLE).map_err(io(&pair))?;
        }
        Ok(())
    }

    /// Moves a state an earlier version kept inside the local folder to [`StateDir::path`], once.
    fn migrate(&self) -> Result<(), StateError> {
        if self.dir.exists() || !self.legacy.is_dir() {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let parent = self.dir.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(io(parent))?;
        // Copied whole into a temporary directory, then renamed: a kill leaves the old state in use.
        let temp = parent.join(format!(".migrate.{}.tmp", std::process::id()));
        let _ = fs::remove_dir_all(&temp);
        fs::create_dir_all(&temp).map_err(io(&temp))?;
        for entry in fs::read_dir(&self.legacy).map_err(io(&self.legacy))? {
            let entry = entry.map_err(io(&self.legacy))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let to = temp.join(entry.file_name());
                fs::copy(entry.path(), &to).map_err(io(&to))?;
            }
        }
        fs::rename(&temp, &self.dir).map_err(io(&self.dir))?;
        // The old copy goes, and the folders it leaves empty (never anything else of the user's).
        let _ = fs::remove_dir_all(&self.legacy);
        if let Some(sync) = self.legacy.parent() {
            let _ = fs::remove_dir(sync);
            if let Some(top) = sync.parent() {
                let _ = fs::remove_dir(top);
            }
        }
        Ok(())
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
        self.migrate()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let base_path = self.base_path();
        let (mut entries, dirs) = match fs::read(&base_path) {
            Ok(bytes) => parse_base(&bytes, &self.remote, &base_path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), BTreeSet::new()),
            Err(e) => return Err(io(&base_path)(e)),
        };
        let journal_path = self.journal_path();
        let replayed = match File::open(&journal_path) {
            Ok(file) => replay_journal(BufReader::new(file), &mut entries).map_err(io(&journal_path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&journal_path)(e)),
        };
        Ok(State {
            dir: self.clone(),
            entries,
            dirs,
            journal: None,
            replayed,
        })
    }
}

/// The entries and folders of a `base.json` (read from `path`) kept for `remote`.
pub(crate) fn parse_base(bytes: &[u8], remote: &str, path: &Path) -> Result<Base, StateError> {
    let file: BaseFile = serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("version {} (this snapsync reads {VERSION})", file.version),
        });
    }
    if file.remote != remote {
        return Err(StateError::OtherRemote {
            path: path.to_path_buf(),
            found: file.remote,
            expected: remote.to_owned(),
        });
    }
    Ok((file.entries, file.dirs))
}

/// The text of `base.json` for this base (what [`State::compact`] writes).
pub(crate) fn render_base(
    remote: &str,
    entries: &BTreeMap<String, BaseEntry>,
    dirs: &BTreeSet<String>,
) -> io::Result<Vec<u8>> {
    let file = BaseFile {
        version: VERSION,
        remote: remote.to_owned(),
        entries: entries.clone(),
        dirs: dirs.clone(),
    };
    serde_json::to_vec_pretty(&file).map_err(io::Error::other)
}

/// Applies a journal's records to `entries`, in order, up to the first line that does not parse (the
/// torn end of a killed run: nothing after it counts); returns how many were applied.
pub(crate) fn replay_journal(
    journal: impl BufRead,
    entries: &mut BTreeMap<String, BaseEntry>,
) -> io::Result<usize> {
    let mut replayed = 0;
    for line in journal.split(b'\n') {
        let Ok(record) = serde_json::from_slice::<JournalLine>(&line?) else {
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
    Ok(replayed)
}

/// One line of the journal (its newline included): `path` set to `entry`, or removed when `None`.
pub(crate) fn journal_line(path: &str, entry: Option<&BaseEntry>) -> io::Result<Vec<u8>> {
    let record = match entry {
        Some(entry) => JournalLine::Set {
            set: path.to_owned(),
            entry: entry.clone(),
        },
        None => JournalLine::Remove {
            remove: path.to_owned(),
        },
    };
    let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// A base: its entries by path, and its folders.
pub(crate) type Base = (BTreeMap<String, BaseEntry>, BTreeSet<String>);

/// The state of one pair kept for a remote, as [`states_of`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairState {
    /// The state's directory.
    pub dir: PathBuf,
    /// The local folder it was kept for; `None` for a state written by an earlier version, which did
    /// not record it (only the remote).
    pub local: Option<PathBuf>,
    /// A run of this pair is under way on this machine: the mark of its run names a process that is
    /// running. Such a state is never removed.
    pub in_use: bool,
}

/// What [`forget`] removed, and what it kept because a run is using it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// The states removed (with `dry_run`: that would be removed).
    pub removed: Vec<PairState>,
    /// The states of runs under way, left as they are.
    pub in_use: Vec<PairState>,
}

/// Every pair's state under `root` (see [`default_root`]) kept for `remote` (the remote's URL as
/// printed, without a password: [`snapsync_store::StoreUrl`]'s `Display`), whatever the local folder,
/// sorted by folder. A state is recognised by its `pair.json`, or, for one an earlier version wrote,
/// by the remote its `base.json` names; a directory that says neither is not this remote's.
///
/// # Errors
/// [`StateError::Io`] when `root`'s `sync` directory cannot be listed (a missing one holds nothing).
pub fn states_of(root: &Path, remote: &str) -> Result<Vec<PairState>, StateError> {
    #[derive(Deserialize)]
    struct RemoteOnly {
        remote: String,
    }
    let sync = root.join("sync");
    let io = |source| StateError::Io {
        path: sync.clone(),
        source,
    };
    let entries = match fs::read_dir(&sync) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let dir = entry.path();
        // Temporary directories (a migration under way, a removal) are not states.
        if entry.file_name().as_encoded_bytes().starts_with(b".") || !dir.is_dir() {
            continue;
        }
        let (local, recorded) = match fs::read(dir.join(PAIR_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<PairFile>(&b).ok())
        {
            Some(pair) => (Some(pair.local), Some(pair.remote)),
            None => (
                None,
                fs::read(dir.join("base.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<RemoteOnly>(&b).ok())
                    .map(|r| r.remote),
            ),
        };
        if recorded.as_deref() != Some(remote) {
            continue;
        }
        let in_use = fs::read_to_string(dir.join("running"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && crate::lock::process_start(pid).is_some());
        found.push(PairState { dir, local, in_use });
    }
    found.sort_by(|a, b| (&a.local, &a.dir).cmp(&(&b.local, &b.dir)));
    Ok(found)
}

/// Forgets every pair's state kept for `remote` under `root` (see [`states_of`]), so the next run of
/// each of those folders with it is a first sync (which only adds: nothing is deleted on either
/// side). A state whose run is under way ([`PairState::in_use`]) is kept. Each state directory is
/// first renamed out of the way, then removed: a kill leaves the whole state or none, never a part.
/// With `dry_run`, nothing is removed; the result says what would be.
///
/// # Errors
/// [`StateError::Io`] when the states cannot be listed or one cannot be removed (those removed
/// before it stay removed).
pub fn forget(root: &Path, remote: &str, dry_run: bool) -> Result<Forgotten, StateError> {
    let mut forgotten = Forgotten::default();
    for state in states_of(root, remote)? {
        if state.in_use {
            forgotten.in_use.push(state);
            continue;
        }
        if !dry_run {
            let name = state.dir.file_name().unwrap_or_default().to_string_lossy();
            let aside = state
                .dir
                .with_file_name(format!(".removing-{name}-{}", std::process::id()));
            fs::rename(&state.dir, &aside).map_err(|source| StateError::Io {
                path: state.dir.clone(),
                source,
            })?;
            fs::remove_dir_all(&aside).map_err(|source| StateError::Io {
                path: aside.clone(),
                source,
            })?;
        }
        forgotten.removed.push(state);
    }
    Ok(forgotten)
}

/// The base of a pair, loaded, and the journal of the run that changes it.
#[derive(Debug)]
pub struct State {
    dir: StateDir,
    entries: BTreeMap<String, BaseEntry>,
    dirs: BTreeSet<String>,
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

    /// The folders both sides had at the end of the last run.
    #[must_use]
    pub fn dirs(&self) -> &BTreeSet<String> {
        &self.dirs
    }

    /// The folders both sides have now; written with the base at [`State::compact`] (a killed run
    /// keeps the last run's: a folder is then judged again, which only creates or removes empty
    /// folders).
    pub fn set_dirs(&mut self, dirs: BTreeSet<String>) {
        self.dirs = dirs;
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
        self.append(path, Some(&entry))?;
        self.entries.insert(path.to_owned(), entry);
        Ok(())
    }

    /// Records that `path` is gone from both sides.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn remove(&mut self, path: &str) -> Result<(), StateError> {
        if self.entries.contains_key(path) {
            self.append(path, None)?;
            self.entries.remove(path);
        }
        Ok(())
    }

    fn append(&mut self, key: &str, entry: Option<&BaseEntry>) -> Result<(), StateError> {
        let path = self.dir.journal_path();
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let line = journal_line(key, entry).map_err(io)?;
        let mut journal = if let Some(journal) = self.journal.take() {
            journal
        } else {
            self.dir.create()?;
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

    /// Writes the whole base to `base.json` (temporary name, flushed, renamed, folder flushed) and empties
    /// the journal: the end of a run.
    ///
    /// # Errors
    /// When a file cannot be written; the journal then still holds everything.
    pub fn compact(&mut self) -> Result<(), StateError> {
        let base = self.dir.base_path();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        self.dir.create()?;
        let bytes = render_base(&self.dir.remote, &self.entries, &self.dirs).map_err(io(&base))?;
        // Flushed with its folder, so that the new base is on disk under its name before the journal it
        // replaces is removed.
        write_atomic(&base, &bytes, WriteOptions::DURABLE).map_err(io(&base))?;
        if let Some(journal) = self.journal.take() {
            drop(journal);
        }
        match fs::remove_file(self.dir.journal_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io(&base)(e)),
            _ => Ok(()),
        }
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
        let root = tempfile::tempdir().unwrap();
        let pair = StateDir::in_root(root.path(), dir.path(), "sftp://me@host/site");
        let mut state = pair.load().unwrap();
        assert_eq!(state.entries().count(), 0);
        state.set("a.txt", entry(1)).unwrap();
        state.set("dir/b.txt", entry(2)).unwrap();
        state.remove("a.txt").unwrap();
        state.compact().unwrap();
        assert!(!pair.journal_path().exists());
        let names: Vec<_> = fs::read_dir(pair.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(
            names,
            ["base.json", "pair.json"],
            "only the base and the pair's names are left"
        );
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
        // The state lives outside the local folder, per folder and remote.
        assert!(pair.path().starts_with(root.path().join("sync")));
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the folder was changed"
        );
        assert_ne!(
            pair.path(),
            StateDir::in_root(root.path(), dir.path(), "sftp://me@other/site").path()
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            pair.path(),
            StateDir::in_root(root.path(), other.path(), "sftp://me@host/site").path()
        );
    }

    #[test]
    fn a_compact_that_cannot_write_the_base_keeps_the_journal() {
        let (folder, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = StateDir::in_root(root.path(), folder.path(), "ftp://host/site");
        let mut state = pair.load().unwrap();
        state.set("a.txt", entry(1)).unwrap();
        // A folder where the base goes: the rename into place fails.
        fs::create_dir_all(pair.base_path().join("in the way")).unwrap();
        assert!(state.compact().is_err());
        let mut names: Vec<_> = fs::read_dir(pair.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["base.json", "journal.jsonl", "pair.json"],
            "no temporary file is left"
        );
        fs::remove_dir_all(pair.base_path()).unwrap();
        let loaded = pair.load().unwrap();
        assert_eq!(loaded.get("a.txt"), Some(&entry(1)));
        assert_eq!(loaded.replayed(), 1);
    }

    #[test]
    fn a_state_kept_in_the_folder_by_an_earlier_version_moves_out() {
        let (folder, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = StateDir::in_root(root.path(), folder.path(), "ftp://h/x");
        fs::create_dir_all(&pair.legacy).unwrap();
        let old = BaseFile {
            version: VERSION,
            remote: "ftp://h/x".into(),
            entries: BTreeMap::from([("a".to_owned(), entry(1))]),
            dirs: BTreeSet::new(),
        };
        fs::write(pair.legacy.join("base.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        fs::write(folder.path().join("mine.txt"), "user file").unwrap();
        let loaded = pair.load().unwrap();
        assert_eq!(loaded.get("a"), Some(&entry(1)));
        assert!(pair.path().join("base.json").exists());
        let left: Vec<_> = fs::read_dir(folder.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["mine.txt"], "the old state stayed in the folder");
    }

    #[test]
    fn forget_removes_every_state_of_a_remote_but_one_in_use() {
        let root = tempfile::tempdir().unwrap();
        let folders: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let remote = "sftp://me@host/site";
        let state = |i: usize, remote: &str| {
            let dir = StateDir::in_root(root.path(), folders[i].path(), remote);
            let mut state = dir.load().unwrap();
            state.set("a", entry(1)).unwrap();
            state.compact().unwrap();
            dir
        };
        let (done, busy, other) = (state(0, remote), state(1, remote), state(2, "ftp://host/site"));
        // A state an earlier version wrote: no pair.json, found by the remote in base.json.
        let old = state(3, remote);
        fs::remove_file(old.path().join(PAIR_FILE)).unwrap();
        // A run of folder 1 is under way: its mark names a running process.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(busy.path().join("running"), child.id().to_string()).unwrap();
        let found = states_of(root.path(), remote).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        let canonical = |i: usize| Some(fs::canonicalize(folders[i].path()).unwrap());
        assert!(found.contains(&PairState {
            dir: done.path().to_owned(),
            local: canonical(0),
            in_use: false
        }));
        assert!(found.contains(&PairState {
            dir: old.path().to_owned(),
            local: None,
            in_use: false
        }));
        let planned = forget(root.path(), remote, true).unwrap();
        assert!(
            done.path().exists() && old.path().exists(),
            "a dry run removed a state"
        );
        let forgotten = forget(root.path(), remote, false).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(forgotten, planned);
        assert_eq!(forgotten.removed.len(), 2);
        assert_eq!(forgotten.in_use.len(), 1);
        assert_eq!(forgotten.in_use[0].dir, busy.path());
        assert!(!done.path().exists() && !old.path().exists());
        assert!(busy.path().exists() && other.path().exists());
        assert_eq!(done.load().unwrap().entries().count(), 0, "not a first sync");
        assert_eq!(other.load().unwrap().entries().count(), 1);
        // Nothing is left beside the states (the removals' temporary names are gone).
        assert_eq!(fs::read_dir(root.path().join("sync")).unwrap().count(), 2);
    }

    #[test]
    fn times_before_1970_are_kept() {
        let before = UNIX_EPOCH - Duration::new(86_400 * 365, 250);
        let ns = to_ns(before).unwrap();
        assert_eq!(ns, -(86_400 * 365 * 1_000_000_000 + 250));
        assert_eq!(from_ns(ns), before);
        let after = UNIX_EPOCH + Duration::new(1_600_000_000, 7);
        assert_eq!(from_ns(to_ns(after).unwrap()), after);
    }

    #[test]
    fn a_killed_run_is_replayed_from_its_journal_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pair = StateDir::in_root(dir.path(), dir.path(), "ftp://h/x");
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
        let pair = StateDir::in_root(dir.path(), dir.path(), "s3://b/p");
        fs::create_dir_all(pair.path()).unwrap();
        fs::write(pair.base_path(), "{not json").unwrap();
        let err = pair.load().unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        let foreign = BaseFile {
            version: VERSION,
            remote: "s3://other/p".into(),
            entries: BTreeMap::new(),
            dirs: BTreeSet::new(),
        };
        fs::write(pair.base_path(), serde_json::to_vec(&foreign).unwrap()).unwrap();
        let err = pair.load().unwrap_err().to_string();
        assert!(err.contains("belongs to s3://other/p"), "{err}");
        let future = BaseFile {
            version: VERSION + 1,
            remote: "s3://b/p".into(),
            entries: BTreeMap::new(),
            dirs: BTreeSet::new(),
        };
        fs::write(pair.base_path(), serde_json::to_vec(&future).unwrap()).unwrap();
        assert!(pair.load().unwrap_err().to_string().contains("version 2"));
    }
}
