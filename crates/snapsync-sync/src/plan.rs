//! The plan: what a run will do with each path, as a value (printed by `--dry-run`, carried out by the
//! executor). [`plan`] classifies both sides against the base and applies the decision table
//! ([`crate::decide()`]) for a two-way sync, or the one-way rules of `upload` and `download`
//! (docs/sync.md); conflicts are settled by `--resolve` (and `--force` one way) where they can be.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::decide::{Action, Class, Conflict, Observed, Resolve, classify, decide, resolve};
use crate::options::Options;
use crate::scan::whole_seconds;
use crate::state::BaseEntry;

/// Which way a run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The remote follows the local folder.
    Upload,
    /// The local folder follows the remote.
    Download,
    /// Both ways.
    Sync,
}

/// One path of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The path, `/`-separated, relative to both roots.
    pub path: String,
    /// What to do. [`Action::Conflict`] is a conflict left as it is; [`Action::Compare`] asks the
    /// executor to compare contents first (the same content is nothing to do; different content is the
    /// conflict, settled by [`Item::on_mismatch`] if anything).
    pub action: Action,
    /// For [`Action::Compare`]: what to do if the contents differ (`None`: keep the conflict).
    pub on_mismatch: Option<Action>,
    /// The conflict this item had, when `--resolve` or `--force` settled it.
    pub resolved: Option<Conflict>,
}

/// The whole plan, in path order; paths with nothing to do and nothing to record are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The items.
    pub items: Vec<Item>,
    /// Empty folders to make or remove (folders that hold files follow their files), in path order.
    pub dirs: Vec<(String, DirAction)>,
}

/// What happens to an empty folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirAction {
    /// Make it here (it is new on the remote).
    CreateLocal,
    /// Make it on the remote (it is new here).
    CreateRemote,
    /// Remove it here if it is still empty (the remote removed it).
    RemoveLocal,
    /// Remove it on the remote if it is still empty (it was removed here).
    RemoveRemote,
}

/// The empty folders' part of a plan: `local` and `remote` are each side's folders, `base` the folders
/// both had at the end of the last run, `holds_files` whether anything (a file of either side, or a
/// path left alone) lies below a folder: such folders follow their files and are not planned here.
///
/// Two-way, a folder one side has is made on the other, unless both had it at the last run (then the
/// other side removed it, and it is removed here too, if still empty). One way, the target gets the
/// source's empty folders, and loses its own only with `--delete`.
#[must_use]
pub fn plan_dirs(
    local: &BTreeSet<String>,
    remote: &BTreeSet<String>,
    base: &BTreeSet<String>,
    holds_files: impl Fn(&str) -> bool,
    options: &Options,
) -> Vec<(String, DirAction)> {
    let mut out = Vec::new();
    for dir in local.symmetric_difference(remote) {
        if holds_files(dir) {
            continue;
        }
        let here = local.contains(dir);
        let known = base.contains(dir);
        let action = match (options.mode(), here) {
            (Mode::Sync, true) if known => DirAction::RemoveLocal,
            (Mode::Sync | Mode::Upload, true) => DirAction::CreateRemote,
            (Mode::Sync, false) if known => DirAction::RemoveRemote,
            (Mode::Sync | Mode::Download, false) => DirAction::CreateLocal,
            (Mode::Upload, false) if options.delete() => DirAction::RemoveRemote,
            (Mode::Download, true) if options.delete() => DirAction::RemoveLocal,
            _ => continue,
        };
        out.push((dir.clone(), action));
    }
    // In path order: the symmetric difference of two sorted sets is sorted.
    out
}

impl Plan {
    /// How many items have each action, for summaries.
    #[must_use]
    pub fn count(&self, wanted: impl Fn(&Action) -> bool) -> usize {
        self.items.iter().filter(|i| wanted(&i.action)).count()
    }
}

/// Plans a run from the two listings (files by path) and the base.
#[must_use]
pub fn plan(
    local: &BTreeMap<String, Observed>,
    remote: &BTreeMap<String, Observed>,
    base: &BTreeMap<String, BaseEntry>,
    options: &Options,
) -> Plan {
    let paths: BTreeSet<&String> = local.keys().chain(remote.keys()).chain(base.keys()).collect();
    let mut items = Vec::new();
    for path in paths {
        let (l, r) = (local.get(path), remote.get(path));
        let known = base.get(path);
        let lc = classify(l, known.map(BaseEntry::local).as_ref());
        let rc = classify(r, known.map(BaseEntry::remote).as_ref());
        let times = (l.and_then(|o| o.mtime), r.and_then(|o| o.mtime));
        let (action, on_mismatch, resolved) = match options.mode() {
            Mode::Sync => two_way(lc, rc, options.resolve(), times),
            Mode::Upload => one_way(lc, rc, options, times, Side::Local),
            Mode::Download => one_way(rc, lc, options, (times.1, times.0), Side::Remote),
        };
        // Unchanged on both sides, or gone from both and from the base: nothing to do or record.
        let idle = action == Action::Nothing
            && ((lc == Class::Unchanged && rc == Class::Unchanged) || known.is_none());
        if !idle {
            items.push(Item {
                path: path.clone(),
                action,
                on_mismatch,
                resolved,
            });
        }
    }
    kinds_apart(&mut items, local, remote);
    Plan {
        items,
        dirs: Vec::new(),
    }
}

/// A transfer into a folder whose name is a file on the target side that stays there (it is not
/// deleted by the plan) cannot be carried out: it, and the file, are a [`Conflict::FileAndFolder`].
fn kinds_apart(items: &mut [Item], local: &BTreeMap<String, Observed>, remote: &BTreeMap<String, Observed>) {
    let deleted = |action: Action| -> BTreeSet<String> {
        items
            .iter()
            .filter(|i| i.action == action)
            .map(|i| i.path.clone())
            .collect()
    };
    let (local_deletes, remote_deletes) = (deleted(Action::DeleteLocal), deleted(Action::DeleteRemote));
    let mut clashes = BTreeSet::new();
    for item in items.iter() {
        let (target, gone) = match item.action {
            Action::Upload => (remote, &remote_deletes),
            Action::Download => (local, &local_deletes),
            Action::Compare(_) => match item.on_mismatch {
                Some(Action::Upload) => (remote, &remote_deletes),
                Some(Action::Download) => (local, &local_deletes),
                _ => continue,
            },
            _ => continue,
        };
        let path = item.path.as_str();
        for (i, _) in path.match_indices('/') {
            let folder = &path[..i];
            if target.contains_key(folder) && !gone.contains(folder) {
                clashes.insert(folder.to_owned());
                clashes.insert(path.to_owned());
            }
        }
    }
    for item in items.iter_mut().filter(|i| clashes.contains(&i.path)) {
        item.action = Action::Conflict(Conflict::FileAndFolder);
        item.on_mismatch = None;
        item.resolved = None;
    }
}

type Decided = (Action, Option<Action>, Option<Conflict>);

fn two_way(
    lc: Class,
    rc: Class,
    strategy: Resolve,
    times: (Option<SystemTime>, Option<SystemTime>),
) -> Decided {
    match decide(lc, rc, None) {
        Action::Conflict(c) => match resolve(c, strategy, times.0, times.1) {
            Some(action) => (action, None, Some(c)),
            None => (Action::Conflict(c), None, None),
        },
        Action::Compare(c) => (Action::Compare(c), resolve(c, strategy, times.0, times.1), None),
        action => (action, None, None),
    }
}

/// Which side is the source of a one-way run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Local,
    Remote,
}

/// One way, from the source's class `sc` to the target's `tc` (see docs/sync.md).
fn one_way(
    sc: Class,
    tc: Class,
    options: &Options,
    times: (Option<SystemTime>, Option<SystemTime>),
    source: Side,
) -> Decided {
    let (copy, delete) = match source {
        Side::Local => (Action::Upload, Action::DeleteRemote),
        Side::Remote => (Action::Download, Action::DeleteLocal),
    };
    // `--resolve local` / `remote` names a side; one way it settles conflicts for the source.
    let source_wins = options.force()
        || matches!(
            (options.resolve(), source),
            (Resolve::Local, Side::Local) | (Resolve::Remote, Side::Remote)
        )
        || (options.resolve() == Resolve::Newer && times.0 > times.1 && times.1.is_some())
        || (options.resolve() == Resolve::Older && times.0 < times.1 && times.0.is_some());
    let target_changed = matches!(tc, Class::Modified);
    let conflict = match source {
        Side::Local => Conflict::DeletedLocalModifiedRemote,
        Side::Remote => Conflict::ModifiedLocalDeletedRemote,
    };
    let settle = |c: Conflict, action: Action| {
        if source_wins {
            (action, None, Some(c))
        } else {
            (Action::Conflict(c), None, None)
        }
    };
    if sc.present() {
        match tc {
            Class::Unchanged if sc == Class::Unchanged => (Action::Nothing, None, None),
            Class::Deleted | Class::Absent | Class::Unchanged => (copy, None, None),
            // Nothing synced yet, and the source's file is newer (a first upload over older copies):
            // it replaces the target's, as pyftpsync, lftp and rclone do.
            Class::New if sc == Class::New && newer(times.0, times.1) => (copy, None, None),
            // The target changed since the base (or both are new): equal contents are fine.
            _ => {
                let c = if sc == Class::New && tc == Class::New {
                    Conflict::BothNew
                } else {
                    Conflict::BothModified
                };
                if sc == Class::Unchanged && target_changed {
                    // Only the target changed: copying would drop that edit.
                    settle(c, copy)
                } else {
                    (Action::Compare(c), source_wins.then_some(copy), None)
                }
            }
        }
    } else if !tc.present() || !options.delete() {
        (Action::Nothing, None, None)
    } else if target_changed {
        settle(conflict, delete)
    } else {
        (delete, None, None)
    }
}

/// Whether `a` is newer than `b` by a whole second or more (what remotes keep of a time).
fn newer(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (whole_seconds(a), whole_seconds(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn seen(size: u64, t: u64) -> Observed {
        Observed {
            size,
            mtime: Some(UNIX_EPOCH + Duration::from_secs(t)),
            hash: None,
        }
    }

    fn based(size: u64, t: u64) -> BaseEntry {
        let ns = i64::try_from(t).unwrap() * 1_000_000_000;
        BaseEntry {
            size,
            local_mtime_ns: Some(ns),
            remote_size: size,
            remote_mtime_ns: Some(ns),
            blake3: None,
        }
    }

    fn options(mode: Mode) -> Options {
        Options::new(mode)
    }

    fn with(mode: Mode, delete: bool, force: bool, resolve: Resolve) -> Options {
        Options::builder(mode)
            .delete(delete)
            .force(force)
            .resolve(resolve)
            .build()
            .unwrap()
    }

    /// A scenario: each path's (local, remote, base) as (size, time) pairs.
    type Side3 = (Option<(u64, u64)>, Option<(u64, u64)>, Option<(u64, u64)>);

    fn run(cases: &[(&str, Side3)], options: &Options) -> BTreeMap<String, (Action, Option<Action>)> {
        let mut local = BTreeMap::new();
        let mut remote = BTreeMap::new();
        let mut base = BTreeMap::new();
        for (path, (l, r, b)) in cases {
            if let Some((s, t)) = l {
                local.insert((*path).to_owned(), seen(*s, *t));
            }
            if let Some((s, t)) = r {
                remote.insert((*path).to_owned(), seen(*s, *t));
            }
            if let Some((s, t)) = b {
                base.insert((*path).to_owned(), based(*s, *t));
            }
        }
        plan(&local, &remote, &base, options)
            .items
            .into_iter()
            .map(|i| (i.path, (i.action, i.on_mismatch)))
            .collect()
    }

    fn scenario() -> Vec<(&'static str, Side3)> {
        vec![
            ("same", (Some((1, 10)), Some((1, 10)), Some((1, 10)))),
            ("edited-here", (Some((2, 20)), Some((1, 10)), Some((1, 10)))),
            ("edited-there", (Some((1, 10)), Some((2, 20)), Some((1, 10)))),
            ("edited-both", (Some((2, 20)), Some((3, 30)), Some((1, 10)))),
            ("deleted-here", (None, Some((1, 10)), Some((1, 10)))),
            ("deleted-there", (Some((1, 10)), None, Some((1, 10)))),
            ("deleted-here-edited-there", (None, Some((2, 20)), Some((1, 10)))),
            ("deleted-both", (None, None, Some((1, 10)))),
            ("new-here", (Some((1, 10)), None, None)),
            ("new-there", (None, Some((1, 10)), None)),
            ("new-both", (Some((1, 10)), Some((1, 30)), None)),
        ]
    }

    #[test]
    fn two_way_plans_follow_the_table() {
        let got = run(&scenario(), &options(Mode::Sync));
        let want = [
            ("edited-here", Action::Upload),
            ("edited-there", Action::Download),
            ("edited-both", Action::Compare(Conflict::BothModified)),
            ("deleted-here", Action::DeleteRemote),
            ("deleted-there", Action::DeleteLocal),
            (
                "deleted-here-edited-there",
                Action::Conflict(Conflict::DeletedLocalModifiedRemote),
            ),
            ("deleted-both", Action::Nothing),
            ("new-here", Action::Upload),
            ("new-there", Action::Download),
            ("new-both", Action::Compare(Conflict::BothNew)),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (path, action) in want {
            assert_eq!(got[path].0, action, "{path}");
        }
        // --resolve settles conflicts; a content mismatch gets the resolution to apply.
        let got = run(&scenario(), &with(Mode::Sync, false, false, Resolve::Remote));
        assert_eq!(got["deleted-here-edited-there"].0, Action::Download);
        assert_eq!(
            got["edited-both"],
            (Action::Compare(Conflict::BothModified), Some(Action::Download))
        );
        let got = run(&scenario(), &with(Mode::Sync, false, false, Resolve::Newer));
        assert_eq!(
            got["edited-both"].1,
            Some(Action::Download),
            "the remote edit is newer"
        );
        assert_eq!(
            got["deleted-here-edited-there"].0,
            Action::Download,
            "an edit beats a delete"
        );
    }

    #[test]
    fn upload_makes_the_remote_follow_without_dropping_remote_edits() {
        let got = run(&scenario(), &options(Mode::Upload));
        assert_eq!(got["edited-here"].0, Action::Upload);
        assert_eq!(
            got["edited-there"].0,
            Action::Conflict(Conflict::BothModified),
            "a remote edit is not overwritten"
        );
        assert_eq!(
            got["edited-both"],
            (Action::Compare(Conflict::BothModified), None)
        );
        assert_eq!(
            got["deleted-there"].0,
            Action::Upload,
            "a file missing remotely is uploaded again"
        );
        assert_eq!(got["new-here"].0, Action::Upload);
        assert!(
            !got.contains_key("new-there"),
            "without --delete remote extras stay"
        );
        assert_eq!(got["deleted-here"].0, Action::Nothing);
        // --delete removes remote files the local side does not have, but not a remote edit.
        let got = run(&scenario(), &with(Mode::Upload, true, false, Resolve::Skip));
        assert_eq!(got["new-there"].0, Action::DeleteRemote);
        assert_eq!(got["deleted-here"].0, Action::DeleteRemote);
        assert_eq!(
            got["deleted-here-edited-there"].0,
            Action::Conflict(Conflict::DeletedLocalModifiedRemote)
        );
        // --force overwrites and deletes all the same.
        let got = run(&scenario(), &with(Mode::Upload, true, true, Resolve::Skip));
        assert_eq!(got["edited-there"].0, Action::Upload);
        assert_eq!(got["deleted-here-edited-there"].0, Action::DeleteRemote);
        assert_eq!(got["edited-both"].1, Some(Action::Upload));
    }

    #[test]
    fn without_a_base_one_way_replaces_older_targets_and_keeps_newer_ones() {
        let cases = [
            ("older-there", (Some((1, 20)), Some((2, 10)), None)),
            ("newer-there", (Some((1, 10)), Some((2, 20)), None)),
            ("same-time", (Some((1, 10)), Some((2, 10)), None)),
        ];
        let got = run(&cases, &options(Mode::Upload));
        assert_eq!(got["older-there"], (Action::Upload, None));
        assert_eq!(
            got["newer-there"],
            (Action::Compare(Conflict::BothNew), None),
            "a newer target is a conflict unless the contents are equal"
        );
        assert_eq!(got["same-time"], (Action::Compare(Conflict::BothNew), None));
        let force = with(Mode::Upload, false, true, Resolve::Skip);
        assert_eq!(
            run(&cases, &force)["newer-there"],
            (Action::Compare(Conflict::BothNew), Some(Action::Upload))
        );
        // Download: the remote is the source.
        let got = run(&cases, &options(Mode::Download));
        assert_eq!(got["newer-there"], (Action::Download, None));
        assert_eq!(got["older-there"], (Action::Compare(Conflict::BothNew), None));
        // Two-way sync without a base keeps reporting both-new conflicts (as Unison does).
        let got = run(&cases, &options(Mode::Sync));
        assert_eq!(got["older-there"].0, Action::Compare(Conflict::BothNew));
    }

    #[test]
    fn a_file_against_a_folder_of_the_same_name_is_a_conflict_unless_one_is_deleted() {
        // Local: the file `x` became a folder `x/` holding `a`; the remote still has the file.
        let cases = [
            ("x", (None, Some((1, 10)), Some((1, 10)))),
            ("x/a", (Some((1, 20)), None, None)),
        ];
        let got = run(&cases, &options(Mode::Sync));
        assert_eq!(got["x"].0, Action::DeleteRemote, "the file goes first");
        assert_eq!(got["x/a"].0, Action::Upload);
        // The remote edited the file meanwhile: it stays, and the folder cannot go up.
        let cases = [
            ("x", (None, Some((2, 30)), Some((1, 10)))),
            ("x/a", (Some((1, 20)), None, None)),
        ];
        let got = run(&cases, &options(Mode::Sync));
        assert_eq!(got["x"].0, Action::Conflict(Conflict::FileAndFolder));
        assert_eq!(got["x/a"].0, Action::Conflict(Conflict::FileAndFolder));
    }

    #[test]
    fn empty_folders_are_made_on_the_other_side_and_removals_follow_the_base() {
        let set = |dirs: &[&str]| dirs.iter().map(ToString::to_string).collect::<BTreeSet<String>>();
        let (local, remote) = (
            set(&["new-here", "gone-there", "full"]),
            set(&["new-there", "gone-here"]),
        );
        let base = set(&["gone-there", "gone-here"]);
        let holds = |dir: &str| dir == "full";
        let plan = |mode, delete| {
            let o = with(mode, delete, false, Resolve::Skip);
            plan_dirs(&local, &remote, &base, holds, &o)
        };
        assert_eq!(
            plan(Mode::Sync, false),
            [
                ("gone-here".to_owned(), DirAction::RemoveRemote),
                ("gone-there".to_owned(), DirAction::RemoveLocal),
                ("new-here".to_owned(), DirAction::CreateRemote),
                ("new-there".to_owned(), DirAction::CreateLocal),
            ]
        );
        let upload = plan(Mode::Upload, false);
        assert_eq!(
            upload,
            [
                ("gone-there".to_owned(), DirAction::CreateRemote),
                ("new-here".to_owned(), DirAction::CreateRemote),
            ]
        );
        assert!(plan(Mode::Upload, true).contains(&("new-there".to_owned(), DirAction::RemoveRemote)));
        assert!(plan(Mode::Download, false).contains(&("new-there".to_owned(), DirAction::CreateLocal)));
    }

    #[test]
    fn download_is_the_mirror_image() {
        let got = run(&scenario(), &with(Mode::Download, true, false, Resolve::Skip));
        assert_eq!(got["edited-there"].0, Action::Download);
        assert_eq!(got["edited-here"].0, Action::Conflict(Conflict::BothModified));
        assert_eq!(got["deleted-here"].0, Action::Download);
        assert_eq!(got["new-here"].0, Action::DeleteLocal);
        assert_eq!(got["deleted-there"].0, Action::DeleteLocal);
        assert_eq!(got["new-there"].0, Action::Download);
    }
}
