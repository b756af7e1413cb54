//! The two-way decision table: what to do with one path, given what each side has now and what both
//! agreed on at the end of the last sync (the base).
//!
//! Each side is first *classified* against the base's record of that side ([`classify`]): unchanged,
//! modified, new, deleted, or absent. The base has a record of a path or not, so the two classes come
//! from one of two groups: {unchanged, modified, deleted} (the base knows the path) or {new, absent} (it
//! does not). [`decide`] maps the pair to an [`Action`]; where both sides changed, the content decides
//! whether that is a conflict (same content on both sides is not). The full table is in `docs/sync.md`,
//! and the tests below go through every pair.
//!
//! Directories are not decided here: a directory is deleted only when every path below it was decided
//! as a delete (see the planner), so deleting a folder on one side while a file inside it changed on
//! the other ends in a conflict for that file, never in a silent delete.

use std::time::SystemTime;

/// What one side has at a path now, as its listing reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Size in bytes.
    pub size: u64,
    /// Modification time as this side reports it (servers may round it).
    pub mtime: Option<SystemTime>,
    /// BLAKE3 of the content, where known (always locally with `--checksum`).
    pub hash: Option<[u8; 32]>,
}

/// What the base recorded of one side at a path, at the end of the last sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Size in bytes.
    pub size: u64,
    /// Modification time as this side reported it then.
    pub mtime: Option<SystemTime>,
    /// BLAKE3 of the content both sides agreed on, where known.
    pub hash: Option<[u8; 32]>,
}

/// How one side changed since the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// The base knows the path and this side still has it as recorded.
    Unchanged,
    /// The base knows the path and this side has it with another size or time.
    Modified,
    /// The base knows the path and this side no longer has it.
    Deleted,
    /// The base does not know the path and this side has it.
    New,
    /// Neither the base nor this side has it.
    Absent,
}

impl Class {
    /// Every class, for exhaustive tests and documentation.
    pub const ALL: [Class; 5] = [
        Class::Unchanged,
        Class::Modified,
        Class::Deleted,
        Class::New,
        Class::Absent,
    ];

    /// Whether this side has the path now.
    #[must_use]
    pub fn present(self) -> bool {
        matches!(self, Class::Unchanged | Class::Modified | Class::New)
    }

    /// Whether this class can occur when the base does (`true`) or does not (`false`) know the path.
    #[must_use]
    pub fn fits_base(self, base_known: bool) -> bool {
        match self {
            Class::Unchanged | Class::Modified | Class::Deleted => base_known,
            Class::New | Class::Absent => !base_known,
        }
    }
}

/// Classifies one side: `now` is what it has, `base` what the base recorded of it (`None` when the base
/// does not know the path at all).
///
/// A file is unchanged when its size and modification time are what the base recorded of this side.
/// Times are compared as this side reports them, so a server that rounds times, or cannot set them,
/// still works: an untouched file keeps the time the server gave it. Where both the file's hash and
/// the base's are known (`--checksum`), the hash decides instead of the time: a file touched but not
/// edited is unchanged, and an edit that kept size and time is caught.
#[must_use]
pub fn classify(now: Option<&Observed>, base: Option<&Recorded>) -> Class {
    match (now, base) {
        (Some(now), Some(base)) => {
            let same = match (now.hash, base.hash) {
                (Some(a), Some(b)) => now.size == base.size && a == b,
                _ => now.size == base.size && now.mtime == base.mtime,
            };
            if same { Class::Unchanged } else { Class::Modified }
        }
        (None, Some(_)) => Class::Deleted,
        (Some(_), None) => Class::New,
        (None, None) => Class::Absent,
    }
}

/// Why two changes cannot both be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// Modified on both sides, differently.
    BothModified,
    /// New on both sides, with different content.
    BothNew,
    /// Modified locally, deleted remotely.
    ModifiedLocalDeletedRemote,
    /// Deleted locally, modified remotely.
    DeletedLocalModifiedRemote,
    /// A file on one side where the other side has a folder of that name that stays (one side
    /// replaced a file by a folder, or the reverse, while the other changed it): never settled
    /// automatically.
    FileAndFolder,
}

impl std::fmt::Display for Conflict {
    /// How the conflict is named in output: "modified on both sides", ….
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conflict::BothModified => "modified on both sides",
            Conflict::BothNew => "new on both sides, different content",
            Conflict::ModifiedLocalDeletedRemote => "modified locally, deleted remotely",
            Conflict::DeletedLocalModifiedRemote => "deleted locally, modified remotely",
            Conflict::FileAndFolder => "a file on one side, a folder on the other",
        })
    }
}

/// What to do with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing to transfer (both sides agree, or both deleted it); the base is brought up to date.
    Nothing,
    /// Copy the local file to the remote.
    Upload,
    /// Copy the remote file to the local side.
    Download,
    /// Delete the local file (it was deleted remotely and not changed here).
    DeleteLocal,
    /// Delete the remote file (it was deleted locally and not changed there).
    DeleteRemote,
    /// Both sides changed in ways that cannot both be kept; `--resolve` decides.
    Conflict(Conflict),
    /// Both sides changed and may hold the same content: compare (by hash) before deciding; the same
    /// content is [`Action::Nothing`], different content the conflict named.
    Compare(Conflict),
}

/// The table: the action for a pair of classes. `same_content` is what a comparison found, when one
/// was made (`None`: not compared yet, or not comparable).
///
/// # Panics
/// Never for the pairs that can occur; a pair mixing the two groups (one side `New`, the other
/// `Unchanged`, say) cannot, because the base either knows a path or does not: it is treated as the
/// base not knowing it.
#[must_use]
// One arm per row of the documented table, even where two rows do the same.
#[allow(clippy::match_same_arms)]
pub fn decide(local: Class, remote: Class, same_content: Option<bool>) -> Action {
    use Class::{Absent, Deleted, Modified, New, Unchanged};
    let compared = |conflict| match same_content {
        Some(true) => Action::Nothing,
        Some(false) => Action::Conflict(conflict),
        None => Action::Compare(conflict),
    };
    match (local, remote) {
        (Unchanged, Unchanged) | (Deleted, Deleted) | (Absent, Absent) => Action::Nothing,
        (Unchanged, Modified) => Action::Download,
        (Unchanged, Deleted) => Action::DeleteLocal,
        (Modified, Unchanged) => Action::Upload,
        (Modified, Modified) => compared(Conflict::BothModified),
        (Modified, Deleted) => Action::Conflict(Conflict::ModifiedLocalDeletedRemote),
        (Deleted, Unchanged) => Action::DeleteRemote,
        (Deleted, Modified) => Action::Conflict(Conflict::DeletedLocalModifiedRemote),
        (New, New) => compared(Conflict::BothNew),
        (New, Absent) => Action::Upload,
        (Absent, New) => Action::Download,
        // Mixed groups cannot occur (see above); decide as if the base did not know the path.
        (l, r) => decide(unknown(l), unknown(r), same_content),
    }
}

fn unknown(class: Class) -> Class {
    if class.present() {
        Class::New
    } else {
        Class::Absent
    }
}

/// How `--resolve` settles conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolve {
    /// Leave both sides as they are and report the conflict (the default).
    Skip,
    /// The local side wins: its file is uploaded, or its delete applied remotely.
    Local,
    /// The remote side wins.
    Remote,
    /// The newer modification wins; a modification wins over a delete (no data is dropped).
    Newer,
    /// The older modification wins; a modification still wins over a delete.
    Older,
}

/// What a resolved conflict does, or `None` to skip it. `local_mtime` and `remote_mtime` are the
/// present files' times (for `Newer` and `Older`); equal or unknown times skip.
#[must_use]
// One arm per kind of conflict, even where two do the same.
#[allow(clippy::match_same_arms)]
pub fn resolve(
    conflict: Conflict,
    strategy: Resolve,
    local_mtime: Option<SystemTime>,
    remote_mtime: Option<SystemTime>,
) -> Option<Action> {
    if conflict == Conflict::FileAndFolder {
        return None;
    }
    let local_wins = match conflict {
        Conflict::ModifiedLocalDeletedRemote => Action::Upload,
        Conflict::DeletedLocalModifiedRemote => Action::DeleteRemote,
        Conflict::BothModified | Conflict::BothNew | Conflict::FileAndFolder => Action::Upload,
    };
    let remote_wins = match conflict {
        Conflict::ModifiedLocalDeletedRemote => Action::DeleteLocal,
        Conflict::DeletedLocalModifiedRemote
        | Conflict::BothModified
        | Conflict::BothNew
        | Conflict::FileAndFolder => Action::Download,
    };
    match strategy {
        Resolve::Skip => None,
        Resolve::Local => Some(local_wins),
        Resolve::Remote => Some(remote_wins),
        Resolve::Newer | Resolve::Older => match conflict {
            // A modification against a delete: keep the modified file, whichever strategy.
            Conflict::ModifiedLocalDeletedRemote => Some(Action::Upload),
            Conflict::DeletedLocalModifiedRemote => Some(Action::Download),
            Conflict::FileAndFolder => None,
            Conflict::BothModified | Conflict::BothNew => {
                let (Some(l), Some(r)) = (local_mtime, remote_mtime) else {
                    return None;
                };
                let local_newer = match l.cmp(&r) {
                    std::cmp::Ordering::Equal => return None,
                    order => order == std::cmp::Ordering::Greater,
                };
                Some(if local_newer == (strategy == Resolve::Newer) {
                    Action::Upload
                } else {
                    Action::Download
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[allow(clippy::unnecessary_wraps)] // the times under test are optional
    fn at(seconds: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn classification_compares_with_what_this_side_reported() {
        let base = Recorded {
            size: 5,
            mtime: at(100),
            hash: None,
        };
        let now = |size, mtime| Observed {
            size,
            mtime,
            hash: None,
        };
        assert_eq!(classify(Some(&now(5, at(100))), Some(&base)), Class::Unchanged);
        assert_eq!(classify(Some(&now(6, at(100))), Some(&base)), Class::Modified);
        assert_eq!(classify(Some(&now(5, at(101))), Some(&base)), Class::Modified);
        assert_eq!(classify(Some(&now(5, None)), Some(&base)), Class::Modified);
        assert_eq!(classify(None, Some(&base)), Class::Deleted);
        assert_eq!(classify(Some(&now(5, at(100))), None), Class::New);
        assert_eq!(classify(None, None), Class::Absent);
        // A server that cannot keep times: the base holds the time it gave, and an untouched file keeps it.
        let server = Recorded {
            size: 5,
            mtime: at(999),
            hash: None,
        };
        assert_eq!(classify(Some(&now(5, at(999))), Some(&server)), Class::Unchanged);
        // With hashes on both: the content decides, not the time.
        let hashed = Recorded {
            size: 5,
            mtime: at(100),
            hash: Some([1; 32]),
        };
        let touched = Observed {
            size: 5,
            mtime: at(300),
            hash: Some([1; 32]),
        };
        assert_eq!(classify(Some(&touched), Some(&hashed)), Class::Unchanged);
        let sneaky = Observed {
            size: 5,
            mtime: at(100),
            hash: Some([2; 32]),
        };
        assert_eq!(classify(Some(&sneaky), Some(&hashed)), Class::Modified);
    }

    /// Every pair that can occur, with the expected action: the table of docs/sync.md.
    #[test]
    fn the_table_is_total_and_as_documented() {
        use Action::{Compare, DeleteLocal, DeleteRemote, Download, Nothing, Upload};
        use Class::{Absent, Deleted, Modified, New, Unchanged};
        let expected = [
            (Unchanged, Unchanged, Nothing),
            (Unchanged, Modified, Download),
            (Unchanged, Deleted, DeleteLocal),
            (Modified, Unchanged, Upload),
            (Modified, Modified, Compare(Conflict::BothModified)),
            (
                Modified,
                Deleted,
                Action::Conflict(Conflict::ModifiedLocalDeletedRemote),
            ),
            (Deleted, Unchanged, DeleteRemote),
            (
                Deleted,
                Modified,
                Action::Conflict(Conflict::DeletedLocalModifiedRemote),
            ),
            (Deleted, Deleted, Nothing),
            (New, New, Compare(Conflict::BothNew)),
            (New, Absent, Upload),
            (Absent, New, Download),
            (Absent, Absent, Nothing),
        ];
        let mut seen = 0;
        for local in Class::ALL {
            for remote in Class::ALL {
                for base_known in [true, false] {
                    if !(local.fits_base(base_known) && remote.fits_base(base_known)) {
                        continue;
                    }
                    seen += 1;
                    let (_, _, want) = expected
                        .iter()
                        .find(|(l, r, _)| *l == local && *r == remote)
                        .unwrap_or_else(|| panic!("({local:?}, {remote:?}) is missing from the table"));
                    assert_eq!(decide(local, remote, None), *want, "({local:?}, {remote:?})");
                }
            }
        }
        assert_eq!(seen, expected.len(), "every possible pair is in the table once");
    }

    #[test]
    fn the_same_content_on_both_sides_is_not_a_conflict() {
        for (local, remote, conflict) in [
            (Class::Modified, Class::Modified, Conflict::BothModified),
            (Class::New, Class::New, Conflict::BothNew),
        ] {
            assert_eq!(decide(local, remote, Some(true)), Action::Nothing);
            assert_eq!(decide(local, remote, Some(false)), Action::Conflict(conflict));
        }
        // A delete against a modification is a conflict whatever the content.
        assert_eq!(
            decide(Class::Modified, Class::Deleted, Some(true)),
            Action::Conflict(Conflict::ModifiedLocalDeletedRemote)
        );
    }

    #[test]
    fn mixed_groups_are_decided_as_unknown_to_the_base() {
        assert_eq!(
            decide(Class::New, Class::Unchanged, None),
            Action::Compare(Conflict::BothNew)
        );
        assert_eq!(decide(Class::Deleted, Class::New, None), Action::Download);
        assert_eq!(decide(Class::Modified, Class::Absent, None), Action::Upload);
    }

    #[test]
    fn resolution_strategies() {
        use Conflict::{BothModified, BothNew, DeletedLocalModifiedRemote, ModifiedLocalDeletedRemote};
        let (old, new) = (at(100), at(200));
        for conflict in [
            BothModified,
            BothNew,
            ModifiedLocalDeletedRemote,
            DeletedLocalModifiedRemote,
        ] {
            assert_eq!(resolve(conflict, Resolve::Skip, new, old), None);
        }
        for strategy in [Resolve::Local, Resolve::Remote, Resolve::Newer, Resolve::Older] {
            assert_eq!(resolve(Conflict::FileAndFolder, strategy, new, old), None);
        }
        assert_eq!(
            resolve(BothModified, Resolve::Local, old, new),
            Some(Action::Upload)
        );
        assert_eq!(
            resolve(BothModified, Resolve::Remote, new, old),
            Some(Action::Download)
        );
        assert_eq!(
            resolve(ModifiedLocalDeletedRemote, Resolve::Local, new, None),
            Some(Action::Upload)
        );
        assert_eq!(
            resolve(ModifiedLocalDeletedRemote, Resolve::Remote, new, None),
            Some(Action::DeleteLocal)
        );
        assert_eq!(
            resolve(DeletedLocalModifiedRemote, Resolve::Local, None, new),
            Some(Action::DeleteRemote)
        );
        assert_eq!(
            resolve(DeletedLocalModifiedRemote, Resolve::Remote, None, new),
            Some(Action::Download)
        );
        // Newer / older by time; equal or unknown times are skipped.
        assert_eq!(
            resolve(BothModified, Resolve::Newer, new, old),
            Some(Action::Upload)
        );
        assert_eq!(
            resolve(BothModified, Resolve::Newer, old, new),
            Some(Action::Download)
        );
        assert_eq!(resolve(BothNew, Resolve::Older, new, old), Some(Action::Download));
        assert_eq!(resolve(BothNew, Resolve::Older, old, new), Some(Action::Upload));
        assert_eq!(resolve(BothModified, Resolve::Newer, new, new), None);
        assert_eq!(resolve(BothModified, Resolve::Newer, None, new), None);
        // A modification always wins over a delete under newer/older: nothing edited is dropped.
        for strategy in [Resolve::Newer, Resolve::Older] {
            assert_eq!(
                resolve(ModifiedLocalDeletedRemote, strategy, old, None),
                Some(Action::Upload)
            );
            assert_eq!(
                resolve(DeletedLocalModifiedRemote, strategy, None, old),
                Some(Action::Download)
            );
        }
    }
}
