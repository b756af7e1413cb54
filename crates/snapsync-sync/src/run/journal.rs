//! Recording what a run did in the sync state as it goes: each finished action is written to the
//! state's journal at once (so a killed run loses nothing it finished, and the next run replays it), the
//! folders both sides hold at the end, and the remote times uploads could not know until the remote was
//! listed again.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use crate::decide::Observed;
use crate::error::Result;
use crate::plan::DirAction;
use crate::scan::{Filter, Listing};
use crate::state::{BaseEntry, State, to_ns};

/// The state of a run under way, shared by its parallel transfers.
pub(super) struct Journal {
    state: Mutex<State>,
}

impl Journal {
    pub(super) fn new(state: State) -> Journal {
        Journal {
            state: Mutex::new(state),
        }
    }

    /// Records what both sides now agree on for `path` (`None`: that neither side has it).
    pub(super) fn record(&self, path: &str, entry: Option<BaseEntry>) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match entry {
            Some(entry) => state.set(path, entry)?,
            None => state.remove(path)?,
        }
        Ok(())
    }

    pub(super) fn into_state(self) -> State {
        self.state.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The base entry of a file both sides hold with the same content.
pub(super) fn agreed(l: &Observed, r: &Observed, hash: Option<[u8; 32]>) -> BaseEntry {
    BaseEntry {
        size: l.size,
        local_mtime_ns: l.mtime.and_then(to_ns),
        remote_size: r.size,
        remote_mtime_ns: r.mtime.and_then(to_ns),
        blake3: hash.map(hex),
    }
}

/// The folders both sides have after a run: those both listed, changed by the folder actions `done`
/// and the folders `gone` (emptied by deletions and removed); what this run did not look at
/// (`unseen`) keeps its record.
pub(super) fn folders_now(
    state: &State,
    (local, remote): (&Listing, &Listing),
    done: Vec<(String, DirAction)>,
    gone: &BTreeSet<String>,
    filter: &Filter,
) -> BTreeSet<String> {
    let mut both: BTreeSet<String> = local.dirs.intersection(&remote.dirs).cloned().collect();
    for (dir, action) in done {
        match action {
            DirAction::CreateLocal | DirAction::CreateRemote => both.insert(dir),
            DirAction::RemoveLocal | DirAction::RemoveRemote => both.remove(&dir),
        };
    }
    for dir in gone {
        both.remove(dir);
    }
    let unseen = |d: &&String| !filter.enters_all(d) || local.protects(d) || remote.protects(d);
    both.extend(state.dirs().iter().filter(unseen).cloned());
    both
}

/// Base entries whose remote time is pending (an upload whose time was not listed yet) take the time
/// the listing shows, when the size is what was uploaded.
pub(super) fn adopt_remote_times(state: &mut State, listing: &Listing) -> Result<()> {
    for (path, entry) in adopted_remote_times(state, listing) {
        state.set(&path, entry)?;
    }
    Ok(())
}

/// The base entries whose pending remote time the listing settles, updated.
pub(super) fn adopted_remote_times(state: &State, listing: &Listing) -> Vec<(String, BaseEntry)> {
    state
        .entries()
        .filter(|(_, e)| e.remote_mtime_ns.is_none())
        .filter_map(|(path, entry)| {
            let seen = listing.get(path)?;
            let time = seen.mtime.and_then(to_ns)?;
            (seen.size == entry.remote_size).then(|| {
                (
                    path.clone(),
                    BaseEntry {
                        remote_mtime_ns: Some(time),
                        ..entry.clone()
                    },
                )
            })
        })
        .collect()
}

/// A BLAKE3 hash as the state writes it.
pub(super) fn hex(hash: [u8; 32]) -> String {
    blake3::Hash::from(hash).to_hex().to_string()
}
