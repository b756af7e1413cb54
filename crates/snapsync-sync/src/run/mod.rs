//! A run: lock the remote, scan both sides, plan, compare what needs comparing, then carry the plan
//! out with bounded parallel transfers, recording every finished action in the state as it goes.
//!
//! Every write is safe to interrupt: uploads go through the store's `put` (a temporary name, its size
//! checked, renamed into place; an object store's put is atomic), downloads to a temporary file beside
//! the target that is hashed, flushed and renamed. Before a file is replaced or deleted, its side is
//! checked to still hold what the scan saw, so an edit made during the run is never overwritten.
//! Directories are removed only once empty, after the files in them were deleted.

mod compare;
mod folders;
mod journal;
mod locking;
mod summary;
mod transfer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use snapsync_store::Store;

use self::journal::Journal;
use self::locking::Hold;
pub use self::summary::{Failure, Summary, Unsettled};
use crate::decide::{Action, Conflict, Observed};
use crate::error::{Error, Result};
use crate::lock::Lease;
use crate::options::Options;
use crate::plan::{DirAction, Item, Mode, Plan, plan, plan_dirs};
use crate::scan::{self, Listing};
use crate::state::{BaseEntry, State, StateDir};

/// A finished action, reported as the run goes (for progress and `-v` output).
#[derive(Debug)]
pub enum Event<'a> {
    /// An item was carried out; `bytes` transferred.
    Done {
        /// The item.
        item: &'a Item,
        /// Bytes transferred.
        bytes: u64,
    },
    /// Bytes of a transfer under way moved (progress within a file: a download's as they arrive,
    /// an upload's as they are read, a few times a second; [`Event::Done`] follows with the file's
    /// total, which these add up to).
    Moved {
        /// The item.
        item: &'a Item,
        /// Bytes moved since the last report.
        bytes: u64,
    },
    /// An empty folder was made or removed (or, with `--dry-run`, would be).
    Folder {
        /// The folder.
        path: &'a str,
        /// What was done.
        action: DirAction,
    },
    /// An item failed; the target was left as it was.
    Failed {
        /// The item.
        item: &'a Item,
        /// Why.
        error: &'a Error,
    },
}

/// Deleting at least this many files, and more than half of a side, stops a run (unless allowed).
pub const MASS_DELETE_MIN: usize = 10;

/// A planned run, ready to execute.
#[derive(Debug)]
pub struct Prepared {
    /// The plan (after comparing contents where it asked to).
    pub plan: Plan,
    /// Why the plan deletes too much to go ahead unasked (see [`Prepared::mass_delete`]).
    mass_delete: Option<String>,
    local: Listing,
    remote: Listing,
    hashes: HashMap<String, [u8; 32]>,
    state: State,
    /// The mark of the run and the remote's lock.
    hold: Hold,
    started: Instant,
}

impl Prepared {
    /// Why this plan would delete too much to be carried out without the user's say-so, if it would:
    /// every file of a side, or a side that had files at the last sync and lists none now (a remote
    /// folder that is not mounted, an account that was reset), or at least [`MASS_DELETE_MIN`] files
    /// and more than half of a side. [`Pair::execute`] then refuses, unless
    /// [`Options::allow_mass_delete`] or [`Prepared::confirm_mass_delete`].
    #[must_use]
    pub fn mass_delete(&self) -> Option<&str> {
        self.mass_delete.as_deref()
    }

    /// The user said yes to the deletions [`Prepared::mass_delete`] warned about.
    pub fn confirm_mass_delete(&mut self) {
        self.mass_delete = None;
    }

    /// Files and bytes the plan transfers (uploads and downloads), for progress.
    #[must_use]
    pub fn transfers(&self) -> (u64, u64) {
        let mut files = 0;
        let mut bytes = 0;
        for item in &self.plan.items {
            let side = match item.action {
                Action::Upload => &self.local,
                Action::Download => &self.remote,
                _ => continue,
            };
            files += 1;
            bytes += side.get(&item.path).map_or(0, |o| o.size);
        }
        (files, bytes)
    }
}

/// A sync pair: a local folder and a store.
#[derive(Debug)]
pub struct Pair {
    local: PathBuf,
    store: Arc<dyn Store>,
    options: Options,
}

/// Asks the user how to settle one conflict (`--resolve ask`): the action, or `None` to skip.
pub type Ask<'a> = &'a (dyn Fn(&Item, Conflict) -> Option<Action> + Sync);

/// Reports finished items.
pub type Report<'a> = &'a (dyn Fn(Event<'_>) + Sync);

impl Pair {
    /// The pair `local` ⇄ `store`, run as `options` say.
    #[must_use]
    pub fn new(local: PathBuf, store: Arc<dyn Store>, options: Options) -> Pair {
        Pair {
            local,
            store,
            options,
        }
    }

    /// The options the pair runs with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn jobs(&self) -> usize {
        self.options.jobs().map_or_else(
            || self.store.capabilities().default_jobs.max(1),
            std::num::NonZeroUsize::get,
        )
    }

    /// Locks the remote (unless a dry run), scans both sides, loads the state, plans, and compares the
    /// contents the plan asks about.
    ///
    /// # Errors
    /// A locked remote, a side that cannot be listed, a damaged state.
    pub async fn prepare(&self) -> Result<Prepared> {
        let started = Instant::now();
        // A download into a folder that is not there yet makes it (only a download: for the other
        // ways, a missing local folder is as suspect as a missing remote one).
        if self.options.mode() == Mode::Download && !self.options.dry_run() && !self.local.exists() {
            fs::create_dir_all(&self.local).map_err(|e| Error::io(&self.local, e))?;
        }
        // A dry run of that download plans against the empty folder the real run would make.
        if !self.dry_run_into_absent_folder() {
            let meta = fs::metadata(&self.local).map_err(|e| Error::io(&self.local, e))?;
            if !meta.is_dir() {
                return Err(Error::io(
                    &self.local,
                    std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
                ));
            }
        }
        // A remote folder that is not there is an error, never an empty remote: an unmounted disk or a
        // typo would otherwise read as "everything was deleted there". Checked before the lock, whose
        // write would create it.
        if !self.store.root_exists().await? {
            if !self.options.create_folder() {
                return Err(Error::MissingRemote {
                    location: self.store.url().to_string(),
                });
            }
            if !self.options.dry_run() {
                self.store.create_root().await?;
            }
        }
        let hold = self.hold().await?;
        let cancel = self.options.cancel();
        let scanned = tokio::select! {
            biased;
            scanned = self.scan_and_plan() => scanned,
            // Scanning and comparing write nothing: dropped as they are.
            () = cancel.cancelled() => Err(Error::Cancelled),
        };
        match scanned {
            Ok(mut scanned) => {
                if let Some(warning) = &hold.warning {
                    scanned.local.warnings.insert(0, warning.clone());
                }
                Ok(Prepared {
                    plan: scanned.plan,
                    mass_delete: scanned.mass_delete,
                    local: scanned.local,
                    remote: scanned.remote,
                    hashes: scanned.hashes,
                    state: scanned.state,
                    hold,
                    started,
                })
            }
            Err(e) => {
                self.let_go(hold).await;
                Err(e)
            }
        }
    }

    /// Scans both sides, loads the state, plans, and compares the contents the plan asks about.
    /// A dry run of a download into a local folder that does not exist yet (and that the real run
    /// would make): only then does a missing local folder read as an empty one.
    fn dry_run_into_absent_folder(&self) -> bool {
        self.options.mode() == Mode::Download
            && self.options.dry_run()
            && matches!(fs::symlink_metadata(&self.local), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    async fn scan_and_plan(&self) -> Result<Scanned> {
        let (root, filter, checksum) = (
            self.local.clone(),
            self.options.filter().clone(),
            self.options.checksum(),
        );
        let local = if self.dry_run_into_absent_folder() {
            scan::Listing::default()
        } else {
            tokio::task::spawn_blocking(move || scan::scan_local(&root, &filter, checksum))
                .await
                .map_err(|e| Error::io(&self.local, std::io::Error::other(e)))??
        };
        let remote = scan::scan_remote(&*self.store, self.options.filter()).await?;
        let state_dir = StateDir::new(&self.local, &self.store.url().to_string());
        let mut state = state_dir.load()?;
        let adopted = journal::adopted_remote_times(&state, &remote);
        let mut base: BTreeMap<String, BaseEntry> =
            state.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (path, entry) in adopted {
            // A dry run plans with the adopted times but records nothing.
            if !self.options.dry_run() {
                state.set(&path, entry.clone())?;
            }
            base.insert(path, entry);
        }
        // What this run did not look at keeps its base entry as it is: files the filter leaves out
        // (they are in neither listing, which must not read as "deleted on both sides"), and paths
        // either side could not read or left alone (unknown is not empty).
        let in_view = |path: &str| {
            self.options.filter().verdict_of_listed(path) == scan::Verdict::Wanted
                && !local.protects(path)
                && !remote.protects(path)
        };
        base.retain(|path, _| in_view(path));
        let visible = |files: &BTreeMap<String, Observed>| -> BTreeMap<String, Observed> {
            files
                .iter()
                .filter(|(path, _)| !local.protects(path) && !remote.protects(path))
                .map(|(p, o)| (p.clone(), o.clone()))
                .collect()
        };
        let (local_files, remote_files) = (visible(&local.files), visible(&remote.files));
        let mut plan = plan(&local_files, &remote_files, &base, &self.options);
        if self.options.delete_unmatched() && self.options.mode() != Mode::Sync {
            let (target, delete) = match self.options.mode() {
                Mode::Upload => (&remote, Action::DeleteRemote),
                _ => (&local, Action::DeleteLocal),
            };
            let protected = |path: &&String| local.protects(path) || remote.protects(path);
            plan.items.extend(
                target
                    .unmatched
                    .keys()
                    .filter(|p| !protected(p))
                    .map(|path| Item {
                        path: path.clone(),
                        action: delete,
                        on_mismatch: None,
                        resolved: None,
                    }),
            );
            plan.items.sort_by(|a, b| a.path.cmp(&b.path));
        }
        if self.store.capabilities().directories {
            let holds_files = |dir: &str| {
                let below = format!("{dir}/");
                let has = |files: &BTreeMap<String, Observed>| {
                    files
                        .range(below.clone()..)
                        .next()
                        .is_some_and(|(p, _)| p.starts_with(&below))
                };
                let left_alone = |listing: &Listing| {
                    listing
                        .unknown
                        .iter()
                        .map(|(p, _)| p)
                        .chain(&listing.skipped)
                        .any(|p| scan::is_within(p, dir) || scan::is_within(dir, p))
                };
                [&local, &remote]
                    .iter()
                    .any(|l| has(&l.files) || has(&l.unmatched) || left_alone(l))
            };
            plan.dirs = plan_dirs(
                &local.dirs,
                &remote.dirs,
                state.dirs(),
                holds_files,
                &self.options,
            );
        }
        let mut hashes: HashMap<String, [u8; 32]> = local
            .files
            .iter()
            .filter_map(|(p, o)| o.hash.map(|h| (p.clone(), h)))
            .collect();
        self.compare(&mut plan, &local, &remote, &mut hashes).await?;
        let mass_delete = mass_delete(
            &plan,
            (
                local_files.len() + local.unmatched.len(),
                remote_files.len() + remote.unmatched.len(),
            ),
            base.len(),
        );
        Ok(Scanned {
            plan,
            mass_delete,
            local,
            remote,
            hashes,
            state,
        })
    }

    /// Carries the plan out (or, with `--dry-run`, only counts it), then records the state.
    ///
    /// # Errors
    /// When the state cannot be written; failed items are in the summary. [`Error::Cancelled`] when
    /// the options' [`snapsync_core::Cancel`] was cancelled: no item started after that, the ones in
    /// flight were abandoned (their temporary files removed on both sides), the finished ones are
    /// recorded in the state, and the lock is released.
    pub async fn execute(
        &self,
        prepared: Prepared,
        ask: Option<Ask<'_>>,
        report: Report<'_>,
    ) -> Result<Summary> {
        if self.options.cancel().is_cancelled() {
            self.release(prepared).await;
            return Err(Error::Cancelled);
        }
        if let Some(reason) = prepared.mass_delete.clone()
            && !self.options.allow_mass_delete()
            && !self.options.dry_run()
        {
            self.release(prepared).await;
            return Err(Error::MassDelete { reason });
        }
        let Prepared {
            mass_delete,
            mut plan,
            local,
            remote,
            hashes,
            state,
            hold,
            started,
        } = prepared;
        let mut summary = Summary {
            dry_run: self.options.dry_run(),
            warnings: local.warnings.iter().chain(&remote.warnings).cloned().collect(),
            unknown: local.unknown.iter().chain(&remote.unknown).cloned().collect(),
            ..Summary::default()
        };
        if let Some(reason) = mass_delete {
            summary.warnings.push(format!(
                "{reason}: a real run stops here unless --allow-mass-delete"
            ));
        }
        if let Some(ask) = ask {
            for item in &mut plan.items {
                if let Action::Conflict(conflict) = item.action
                    && let Some(action) = ask(item, conflict)
                {
                    item.action = action;
                    item.resolved = Some(conflict);
                }
            }
        }
        let result = if self.options.dry_run() {
            for item in &plan.items {
                let bytes = summary::count(&mut summary, item, &local, &remote);
                if !matches!(item.action, Action::Conflict(_)) {
                    report(Event::Done { item, bytes });
                }
            }
            for (path, action) in &plan.dirs {
                match action {
                    DirAction::CreateLocal | DirAction::CreateRemote => summary.dirs_created += 1,
                    DirAction::RemoveLocal | DirAction::RemoveRemote => summary.dirs_removed += 1,
                }
                report(Event::Folder {
                    path,
                    action: *action,
                });
            }
            Ok(())
        } else {
            self.carry_out(
                (&plan, &hashes),
                (&local, &remote),
                state,
                &hold,
                &mut summary,
                report,
            )
            .await
        };
        let lost = hold.lease.as_ref().is_some_and(Lease::lost);
        if let Some(lease) = hold.lease {
            lease.release().await;
        }
        if lost && result.is_ok() {
            return Err(Error::LockLost {
                location: self.store.url().with_key(crate::lock::LOCK_NAME),
            });
        }
        summary.seconds = started.elapsed().as_secs_f64();
        result.map(|()| summary)
    }

    async fn carry_out(
        &self,
        (plan, hashes): (&Plan, &HashMap<String, [u8; 32]>),
        (local, remote): (&Listing, &Listing),
        state: State,
        hold: &Hold,
        summary: &mut Summary,
        report: Report<'_>,
    ) -> Result<()> {
        self.remove_leftovers(local, &hold.dead_pids).await;
        let lease = hold.lease.as_ref();
        let journal = Journal::new(state);
        // Deletions first, then the folders they emptied, then transfers: a file replaced by a folder
        // of the same name (or the reverse) is then settled in one run, its old kind out of the way
        // before the new one arrives.
        let is_delete =
            |i: &usize| matches!(plan.items[*i].action, Action::DeleteLocal | Action::DeleteRemote);
        let (deletes, rest): (Vec<usize>, Vec<usize>) = (0..plan.items.len()).partition(is_delete);
        let outcomes = self
            .run_items(plan, deletes, (local, remote), hashes, (&journal, lease), report)
            .await;
        let cancel = self.options.cancel();
        let (mut local_dirs, mut remote_dirs) = (BTreeSet::new(), BTreeSet::new());
        for (i, outcome) in outcomes.iter().filter(|_| !cancel.is_cancelled()) {
            let item = &plan.items[*i];
            if outcome.is_ok() {
                let dirs = match item.action {
                    Action::DeleteLocal => &mut local_dirs,
                    _ => &mut remote_dirs,
                };
                dirs.extend(ancestors(&item.path));
            }
        }
        // A folder emptied by deletions goes too, unless the other side keeps it (where the remote
        // has folders, an empty folder is synced like a file).
        local_dirs.retain(|d| !remote.dirs.contains(d));
        remote_dirs.retain(|d| !local.dirs.contains(d));
        let mut gone: BTreeSet<String> = self.prune_local(&local_dirs);
        for dir in deepest_first(&remote_dirs) {
            if self.store.remove_empty_dir(dir).await.unwrap_or(false) {
                gone.insert(dir.clone());
            }
        }
        summary.dirs_removed += gone.len() as u64;
        let transfers = self
            .run_items(plan, rest, (local, remote), hashes, (&journal, lease), report)
            .await;
        let mut state = journal.into_state();
        if cancel.is_cancelled() {
            return self.stop(state, hold).await;
        }
        if self.store.capabilities().directories {
            let done = self.carry_out_dirs(plan, summary, report).await;
            // The folders both sides have now; what this run did not look at keeps its record.
            let both = journal::folders_now(&state, (local, remote), done, &gone, self.options.filter());
            state.set_dirs(both);
        }
        for (i, outcome) in outcomes.into_iter().chain(transfers) {
            let item = &plan.items[i];
            match outcome {
                Ok(_) => {
                    summary::count(summary, item, local, remote);
                }
                Err(e) => summary.failed.push(Failure::new(item.path.clone(), e)),
            }
        }
        summary.failed.sort_by(|a, b| a.path.cmp(&b.path));
        // Uploads recorded the remote's time as pending; the listing says what the next run will see.
        if summary.uploaded > 0 {
            let listed = scan::scan_remote(&*self.store, self.options.filter()).await;
            if let Ok(listed) = listed {
                journal::adopt_remote_times(&mut state, &listed)?;
            }
        }
        state.compact()?;
        let _ = fs::remove_file(&hold.running);
        Ok(())
    }

    /// Ends a cancelled run: the temporary files of the uploads it abandoned removed from the remote
    /// (a download's local one went when it was dropped), the state written with what finished. The
    /// mark of a run under way goes too, unless a temporary file could not be removed: then the next
    /// run removes it as a leftover of this one.
    async fn stop(&self, mut state: State, hold: &Hold) -> Result<()> {
        let cleaned = self.store.remove_abandoned().await.is_ok();
        state.compact()?;
        if cleaned && !hold.interrupted {
            let _ = fs::remove_file(&hold.running);
        }
        Err(Error::Cancelled)
    }

    /// Carries out the items `indices` of `plan`, `--jobs` at a time; each one's outcome. Once the
    /// run is cancelled, no item starts and those under way are dropped ([`Error::Cancelled`]).
    async fn run_items(
        &self,
        plan: &Plan,
        indices: Vec<usize>,
        (local, remote): (&Listing, &Listing),
        hashes: &HashMap<String, [u8; 32]>,
        (journal, lease): (&Journal, Option<&Lease>),
        report: Report<'_>,
    ) -> Vec<(usize, Result<u64>)> {
        futures::stream::iter(indices)
            .map(|i| {
                let item = &plan.items[i];
                let (l, r) = (local.get(&item.path), remote.get(&item.path));
                let hash = hashes.get(&item.path).copied();
                async move {
                    let cancel = self.options.cancel();
                    // Another run has the remote now (the lock was taken over): start nothing more.
                    let outcome = if cancel.is_cancelled() {
                        Err(Error::Cancelled)
                    } else if lease.is_some_and(Lease::lost) {
                        Err(Error::LockLost {
                            location: self.store.url().with_key(crate::lock::LOCK_NAME),
                        })
                    } else {
                        // A transfer dropped halfway publishes nothing: an upload's temporary
                        // name is left for `remove_abandoned`, a download's temporary file is
                        // removed with it. One that finished first is recorded.
                        tokio::select! {
                            biased;
                            outcome = self.one(item, l, r, hash, (journal, report)) => outcome,
                            () = cancel.cancelled() => Err(Error::Cancelled),
                        }
                    };
                    match &outcome {
                        Ok(bytes) if !matches!(item.action, Action::Conflict(_)) => {
                            report(Event::Done { item, bytes: *bytes });
                        }
                        Ok(_) | Err(Error::Cancelled) => {}
                        Err(error) => report(Event::Failed { item, error }),
                    }
                    (i, outcome)
                }
            })
            .buffer_unordered(self.jobs())
            .collect()
            .await
    }
}

/// What [`Pair::scan_and_plan`] found.
struct Scanned {
    plan: Plan,
    mass_delete: Option<String>,
    local: Listing,
    remote: Listing,
    hashes: HashMap<String, [u8; 32]>,
    state: State,
}

/// Why `plan` deletes too much to go ahead unasked (see [`Prepared::mass_delete`]); `files` is how
/// many files each side (local, remote) lists in view, `known` how many paths the base knows.
fn mass_delete(plan: &Plan, files: (usize, usize), known: usize) -> Option<String> {
    let deletes = |action: Action| plan.count(|a| *a == action);
    let sides = [
        ("local", "remote", deletes(Action::DeleteLocal), files.0, files.1),
        ("remote", "local", deletes(Action::DeleteRemote), files.1, files.0),
    ];
    for (side, other, deleted, held, other_held) in sides {
        if deleted == 0 {
            continue;
        }
        let reason = if other_held == 0 && known > 0 {
            format!(
                "the {other} side lists no files at all, though {known} were synced before (a folder that is not mounted, or was emptied?); \
this run would delete {deleted} {side} file{}",
                plural(deleted)
            )
        } else if deleted >= held {
            format!("this run would delete every {side} file ({deleted})")
        } else if deleted >= MASS_DELETE_MIN && deleted * 2 > held {
            format!("this run would delete {deleted} of the {held} {side} files")
        } else {
            continue;
        };
        return Some(reason);
    }
    None
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn ancestors(path: &str) -> impl Iterator<Item = String> + '_ {
    path.match_indices('/').map(|(i, _)| path[..i].to_owned())
}

fn deepest_first(dirs: &BTreeSet<String>) -> Vec<&String> {
    let mut sorted: Vec<&String> = dirs.iter().collect();
    sorted.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    sorted
}

async fn blocking<T: Send + 'static>(
    root: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io(root, std::io::Error::other(e)))?
}
