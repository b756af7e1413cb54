//! What a remote holds, and what runs left on it (`snapsync scan`): its tree as a listing
//! ([`list_remote`]), and the temporary files of writes that were interrupted ([`leftovers`],
//! [`remove_leftovers`]). The lock is [`crate::lock::remove_stale`]'s, the sync states
//! [`crate::state::forget`]'s.
//!
//! A missing remote folder is an error ([`Error::MissingRemote`]), never an empty listing, and a folder
//! the server will not list is the store's error naming it, never left out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use snapsync_store::Store;

use crate::error::{Error, Result};
use crate::scan::{Filter, LOCK_NAME, STATE_DIR_NAME, Verdict};

/// What kind of entry a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A folder (shown by stores that have folders, and on object stores for a key prefix).
    Dir,
    /// A file.
    File,
}

/// One entry of a remote's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The path below the remote's root, `/`-separated, without a trailing `/`.
    pub path: String,
    /// A file or a folder.
    pub kind: EntryKind,
    /// Size in bytes (0 for a folder).
    pub size: u64,
    /// Last modification, where the store reports one.
    pub modified: Option<SystemTime>,
}

/// Lists the remote `store` as a sync sees it: the files `filter` wants (`--match`, `--exclude`; what
/// `--match` leaves out is not shown) and the folders it enters, sorted by path; recursively with
/// `--match`, only the folders that hold a file shown. Without `recursive`, only the top level, read
/// with [`Store::list_top`] (folders are not entered, as in pyftpsync's `scan`; on object stores, the
/// first part of a key stands for a folder). The remote's lock, temporary files and `.snapsync` are
/// never shown.
///
/// # Errors
/// [`Error::MissingRemote`] when the remote folder does not exist; the store's error when it, or a
/// folder in it, cannot be listed.
pub async fn list_remote(store: &dyn Store, filter: &Filter, recursive: bool) -> Result<Vec<RemoteEntry>> {
    if !store.root_exists().await? {
        return Err(Error::MissingRemote {
            location: store.url().to_string(),
        });
    }
    // Recursively, a folder is shown with --match only when it holds a file shown; at the top level
    // what a folder holds is not listed, so every folder the filter enters is shown.
    let matching = recursive && filter.has_matches();
    let mut files: BTreeMap<String, RemoteEntry> = BTreeMap::new();
    let mut dirs: BTreeMap<String, Option<SystemTime>> = BTreeMap::new();
    let mut stream = if recursive {
        store.list_with_dirs("")
    } else {
        store.list_top()
    };
    while let Some(meta) = stream.try_next().await? {
        if meta.key.starts_with(LOCK_NAME) || meta.key.starts_with(&format!("{STATE_DIR_NAME}/")) {
            continue;
        }
        if let Some(dir) = meta.key.strip_suffix('/') {
            if filter.enters_all(dir) && !matching {
                dirs.insert(dir.to_owned(), meta.modified);
            }
            continue;
        }
        if filter.verdict_of_listed(&meta.key) != Verdict::Wanted {
            continue;
        }
        // The folders above a file are shown (object stores list none; with --match, only these).
        for (i, _) in meta.key.match_indices('/') {
            dirs.entry(meta.key[..i].to_owned()).or_insert(None);
        }
        files.insert(
            meta.key.clone(),
            RemoteEntry {
                path: meta.key,
                kind: EntryKind::File,
                size: meta.size,
                modified: meta.modified,
            },
        );
    }
    let mut entries: Vec<RemoteEntry> = dirs
        .into_iter()
        .map(|(path, modified)| RemoteEntry {
            path,
            kind: EntryKind::Dir,
            size: 0,
            modified,
        })
        .chain(files.into_values())
        .filter(|entry| recursive || !entry.path.contains('/'))
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// A temporary file an interrupted write left on a remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// Its key below the remote's root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its last modification, where the store reports one.
    pub modified: Option<SystemTime>,
    /// The process id in its name (of the writer, on whichever machine it ran).
    pub pid: u32,
}

/// The temporary files on `store` whose names are unambiguously snapsync's
/// (`.NAME.snapsync-PID-N.tmp`, with a process id: [`crate::scan::temp_pid`]), sorted by path. Object
/// stores write atomically and leave none.
///
/// # Errors
/// The store's error when it cannot be listed.
pub async fn leftovers(store: &dyn Store) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    let mut stream = store.list_leftovers();
    while let Some(meta) = stream.try_next().await? {
        let name = meta.key.rsplit('/').next().unwrap_or(&meta.key);
        if let Some(pid) = crate::scan::temp_pid(name) {
            found.push(Leftover {
                pid,
                path: meta.key,
                size: meta.size,
                modified: meta.modified,
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// What [`remove_leftovers`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeftoversRemoved {
    /// Removed (with `dry_run`: would be removed).
    pub removed: Vec<Leftover>,
    /// Kept, with why: written to less than `min_age` ago (a write may be under way), or of no
    /// known time.
    pub kept: Vec<(Leftover, String)>,
}

/// Removes the temporary files of interrupted writes from `store` ([`leftovers`]) that were last
/// written `min_age` ago or more, by the store's clock as its listing reports it against this
/// machine's. The age, not the lock, decides: temporary files are written by uploads of any run
/// (sync, snapshot pushes, cache pushes, package mirrors), and only sync runs hold the lock; a write
/// under way keeps changing its file, so its time stays fresh. A file of unknown time is kept. With
/// `dry_run` nothing is removed.
///
/// # Errors
/// The store's error when it cannot be listed, or a file cannot be removed (those removed before it
/// stay removed).
pub async fn remove_leftovers(
    store: &dyn Store,
    min_age: Duration,
    dry_run: bool,
) -> Result<LeftoversRemoved> {
    let now = SystemTime::now();
    let mut done = LeftoversRemoved::default();
    for leftover in leftovers(store).await? {
        let Some(modified) = leftover.modified else {
            done.kept
                .push((leftover, "the server gives no time for it".into()));
            continue;
        };
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age < min_age {
            let why = format!(
                "written {} s ago, less than {} s: a write may be under way",
                age.as_secs(),
                min_age.as_secs()
            );
            done.kept.push((leftover, why));
            continue;
        }
        if !dry_run {
            store.delete(&leftover.path).await?;
        }
        done.removed.push(leftover);
    }
    Ok(done)
}
