//! A run: lock the remote, scan both sides, plan, compare what needs comparing, then carry the plan
//! out with bounded parallel transfers, recording every finished action in the state as it goes.
//!
//! Every write is safe to interrupt: uploads go through the store's `put` (a temporary name, its size
//! checked, renamed into place; an object store's put is atomic), downloads to a temporary file beside
//! the target that is hashed, flushed and renamed. Before a file is replaced or deleted, its side is
//! checked to still hold what the scan saw, so an edit made during the run is never overwritten.
//! Directories are removed only once empty, after the files in them were deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use snapsync_store::{PutMode, PutSource, Store, temp_path};

use crate::decide::{Action, Conflict, Observed};
use crate::error::{Error, Result};
use crate::lock::Lease;
use crate::plan::{DirAction, Item, Mode, Options, Plan, plan, plan_dirs};
use crate::scan::{self, Filter, Listing};
use crate::state::{BaseEntry, State, StateDir, to_ns};

/// The mark of a run under way, in the pair's state directory.
const RUNNING: &str = "running";

/// Everything that shapes a run besides the two sides.
#[derive(Clone, Debug)]
// Independent command-line switches: flags are what they are.
#[allow(clippy::struct_excessive_bools)]
pub struct Config {
    /// Direction, `--delete`, `--force`, `--resolve`.
    pub options: Options,
    /// `--match` and `--exclude`.
    pub filter: Filter,
    /// `--delete-unmatched`: one way, also delete target files `--match` leaves out.
    pub delete_unmatched: bool,
    /// `--checksum`: hash every local file and let content decide where the base has a hash.
    pub checksum: bool,
    /// Parallel transfers (`--jobs`); 0 means the store's default.
    pub jobs: usize,
    /// `--dry-run`: plan and compare, change nothing.
    pub dry_run: bool,
    /// `--break-lock`: remove another run's lock.
    pub break_lock: bool,
    /// A lock not renewed for this long is stale and taken over.
    pub lock_timeout: Duration,
    /// `--allow-mass-delete`: carry out a plan that deletes a whole side or most of it (see
    /// [`Prepared::mass_delete`]) without asking.
    pub allow_mass_delete: bool,
    /// `--create-folder`: create the remote folder when it does not exist (otherwise that is an
    /// error: a missing remote is never taken as an empty one).
    pub create_folder: bool,
}

impl Config {
    /// A configuration with the defaults for `options`.
    #[must_use]
    pub fn new(options: Options) -> Config {
        Config {
            options,
            filter: Filter::default(),
            delete_unmatched: false,
            checksum: false,
            jobs: 0,
            dry_run: false,
            break_lock: false,
            lock_timeout: Duration::from_mins(10),
            allow_mass_delete: false,
            create_folder: false,
        }
    }
}

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
    /// Conflicts left as they are: path and kind.
    pub conflicts: Vec<(String, String)>,
    /// Items that failed: path and error.
    pub failed: Vec<(String, String)>,
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
    lease: Option<Lease>,
    /// Pids of interrupted runs of this pair on this machine: their temporary files are leftovers.
    dead_pids: Vec<u32>,
    /// The run before this one did not finish: its mark stays until a run finishes.
    interrupted: bool,
    running: PathBuf,
    started: Instant,
}

impl Prepared {
    /// Why this plan would delete too much to be carried out without the user's say-so, if it would:
    /// every file of a side, or a side that had files at the last sync and lists none now (a remote
    /// folder that is not mounted, an account that was reset), or at least [`MASS_DELETE_MIN`] files
    /// and more than half of a side. [`Pair::execute`] then refuses, unless
    /// [`Config::allow_mass_delete`] or [`Prepared::confirm_mass_delete`].
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
    config: Config,
}

/// Asks the user how to settle one conflict (`--resolve ask`): the action, or `None` to skip.
pub type Ask<'a> = &'a (dyn Fn(&Item, Conflict) -> Option<Action> + Sync);

/// Reports finished items.
pub type Report<'a> = &'a (dyn Fn(Event<'_>) + Sync);

impl Pair {
    /// The pair `local` ⇄ `store`, run as `config` says.
    #[must_use]
    pub fn new(local: PathBuf, store: Arc<dyn Store>, config: Config) -> Pair {
        Pair { local, store, config }
    }

    fn jobs(&self) -> usize {
        if self.config.jobs == 0 {
            self.store.capabilities().default_jobs.max(1)
        } else {
            self.config.jobs
        }
    }

    /// Locks the remote (unless a dry run), scans both sides, loads the state, plans, and compares the
    /// contents the plan asks about.
    ///
    /// # Errors
    /// A locked remote, a side that cannot be listed, a damaged state.
    pub async fn prepare(&self) -> Result<Prepared> {
        let started = Instant::now();
        let meta = fs::metadata(&self.local).map_err(|e| Error::io(&self.local, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                &self.local,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        // A remote folder that is not there is an error, never an empty remote: an unmounted disk or a
        // typo would otherwise read as "everything was deleted there". Checked before the lock, whose
        // write would create it.
        if !self.store.root_exists().await? {
            if !self.config.create_folder {
                return Err(Error::MissingRemote {
                    location: self.store.url().to_string(),
                });
            }
            if !self.config.dry_run {
                self.store.create_root().await?;
            }
        }
        let mut unlocked_warning = None;
        // The mark of a run under way goes down before the lock, so a run killed even while locking
        // leaves it; a run that finds it knows the one before was interrupted.
        let running = StateDir::new(&self.local, &self.store.url().to_string())
            .path()
            .join(RUNNING);
        let interrupted_before = running.exists();
        // The pid of the run that was interrupted: only temporary files it left are removed.
        let previous_pid: Option<u32> = fs::read_to_string(&running)
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        if !self.config.dry_run {
            if let Some(dir) = running.parent() {
                fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            fs::write(&running, std::process::id().to_string()).map_err(|e| Error::io(&running, e))?;
        }
        let unmark = || {
            if !interrupted_before && !self.config.dry_run {
                let _ = fs::remove_file(&running);
            }
        };
        let mut lease = None;
        let mut dead_pids: Vec<u32> = previous_pid.into_iter().collect();
        if !self.config.dry_run {
            match Lease::take(
                Arc::clone(&self.store),
                self.config.lock_timeout,
                self.config.break_lock,
            )
            .await
            {
                Ok(taken) => {
                    // A run of this machine that died with the lock: its temporary files may be left.
                    if let Some(holder) = taken.took_over
                        && holder.host == crate::lock::hostname()
                    {
                        dead_pids.push(holder.pid);
                    }
                    lease = Some(taken.lease);
                }
                // A download only writes here: a read-only remote (an anonymous FTP mirror, a folder
                // mounted read-only) is fine.
                Err(Error::Store(e)) if self.config.options.mode == Mode::Download && read_only(&e) => {
                    unlocked_warning = Some(format!(
                        "the remote cannot be locked ({e}); downloading without a lock"
                    ));
                }
                Err(e) => {
                    unmark();
                    return Err(e);
                }
            }
        }
        // A reused pid must not make this run's own files look like leftovers.
        dead_pids.retain(|&pid| pid != std::process::id());
        let prepared = self.scan_and_plan(started, dead_pids, interrupted_before).await;
        match prepared {
            Ok(mut prepared) => {
                if let Some(warning) = unlocked_warning {
                    prepared.local.warnings.insert(0, warning);
                }
                prepared.lease = lease;
                Ok(prepared)
            }
            Err(e) => {
                unmark();
                if let Some(lease) = lease {
                    lease.release().await;
                }
                Err(e)
            }
        }
    }

    async fn scan_and_plan(
        &self,
        started: Instant,
        dead_pids: Vec<u32>,
        interrupted: bool,
    ) -> Result<Prepared> {
        let (root, filter, checksum) = (
            self.local.clone(),
            self.config.filter.clone(),
            self.config.checksum,
        );
        let local = tokio::task::spawn_blocking(move || scan::scan_local(&root, &filter, checksum))
            .await
            .map_err(|e| Error::io(&self.local, std::io::Error::other(e)))??;
        let remote = scan::scan_remote(&*self.store, &self.config.filter).await?;
        let state_dir = StateDir::new(&self.local, &self.store.url().to_string());
        // `interrupted`: the last run here did not finish, so its mark stays until a run finishes.
        let running = state_dir.path().join(RUNNING);
        let mut state = state_dir.load()?;
        let adopted = adopted_remote_times(&state, &remote);
        let mut base: BTreeMap<String, BaseEntry> =
            state.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (path, entry) in adopted {
            // A dry run plans with the adopted times but records nothing.
            if !self.config.dry_run {
                state.set(&path, entry.clone())?;
            }
            base.insert(path, entry);
        }
        // What this run did not look at keeps its base entry as it is: files the filter leaves out
        // (they are in neither listing, which must not read as "deleted on both sides"), and paths
        // either side could not read or left alone (unknown is not empty).
        let in_view = |path: &str| {
            self.config.filter.verdict_of_listed(path) == scan::Verdict::Wanted
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
        let mut plan = plan(&local_files, &remote_files, &base, &self.config.options);
        if self.config.delete_unmatched && self.config.options.mode != Mode::Sync {
            let (target, delete) = match self.config.options.mode {
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
                &self.config.options,
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
        Ok(Prepared {
            mass_delete,
            plan,
            local,
            remote,
            hashes,
            state,
            lease: None,
            dead_pids,
            interrupted,
            running,
            started,
        })
    }

    /// Settles the plan's comparisons: equal content is nothing to do (and is recorded), different
    /// content the conflict or its resolution. Sizes decide without reading when they differ.
    async fn compare(
        &self,
        plan: &mut Plan,
        local: &Listing,
        remote: &Listing,
        hashes: &mut HashMap<String, [u8; 32]>,
    ) -> Result<()> {
        let asks: Vec<usize> = (0..plan.items.len())
            .filter(|&i| matches!(plan.items[i].action, Action::Compare(_)))
            .collect();
        let results: Vec<(usize, Option<[u8; 32]>)> = futures::stream::iter(asks)
            .map(|i| {
                let path = plan.items[i].path.clone();
                let (l, r) = (local.files.get(&path), remote.files.get(&path));
                let known = hashes.get(&path).copied();
                async move {
                    let (Some(l), Some(r)) = (l, r) else {
                        return Ok((i, None));
                    };
                    if l.size != r.size {
                        return Ok((i, None));
                    }
                    let local_hash = match known {
                        Some(h) => h,
                        None => self.hash_local(&path).await?,
                    };
                    let remote_hash = self.hash_remote(&path).await?;
                    Ok::<_, Error>((i, (local_hash == remote_hash).then_some(local_hash)))
                }
            })
            .buffer_unordered(self.jobs())
            .try_collect()
            .await?;
        for (i, same) in results {
            let item = &mut plan.items[i];
            let Action::Compare(conflict) = item.action else {
                continue;
            };
            if let Some(hash) = same {
                item.action = Action::Nothing;
                item.on_mismatch = None;
                hashes.insert(item.path.clone(), hash);
            } else if let Some(action) = item.on_mismatch.take() {
                item.action = action;
                item.resolved = Some(conflict);
            } else {
                item.action = Action::Conflict(conflict);
            }
        }
        Ok(())
    }

    async fn hash_local(&self, path: &str) -> Result<[u8; 32]> {
        let file = self.local_path(path)?;
        blocking(&self.local, move || hash_file(&file)).await
    }

    async fn hash_remote(&self, path: &str) -> Result<[u8; 32]> {
        let mut stream = self.store.get(path).await?.stream;
        let mut hasher = blake3::Hasher::new();
        while let Some(piece) = stream.try_next().await? {
            hasher.update(&piece);
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// The local path of `path`, refusing one that would leave the folder through a symlinked
    /// directory.
    fn local_path(&self, path: &str) -> Result<PathBuf> {
        let unsafe_path = |reason: String| Error::Unsafe {
            path: path.to_owned(),
            reason,
        };
        snapsync_store::check_key(path).map_err(|e| match e {
            snapsync_store::Error::InvalidKey { reason, .. } => unsafe_path(reason.to_owned()),
            other => unsafe_path(other.to_string()),
        })?;
        let relative = Path::new(path);
        snapsync_core::pathsafe::check_no_symlink_parents(&self.local, relative).map_err(|e| match e {
            snapsync_core::Error::UnsafePath { reason, .. } => unsafe_path(reason.to_owned()),
            other => unsafe_path(other.to_string()),
        })?;
        Ok(self.local.join(relative))
    }

    /// Lets go of what [`Pair::prepare`] took (the lock, the mark of a run under way) for a run that
    /// goes no further.
    async fn release(&self, prepared: Prepared) {
        if let Some(lease) = prepared.lease {
            lease.release().await;
        }
        if !prepared.interrupted {
            let _ = fs::remove_file(&prepared.running);
        }
    }

    /// Carries the plan out (or, with `--dry-run`, only counts it), then records the state.
    ///
    /// # Errors
    /// Only when the state cannot be written; failed items are in the summary.
    pub async fn execute(
        &self,
        prepared: Prepared,
        ask: Option<Ask<'_>>,
        report: Report<'_>,
    ) -> Result<Summary> {
        if let Some(reason) = prepared.mass_delete.clone()
            && !self.config.allow_mass_delete
            && !self.config.dry_run
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
            lease,
            dead_pids,
            interrupted: _,
            running,
            started,
        } = prepared;
        let mut summary = Summary {
            dry_run: self.config.dry_run,
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
        let result = if self.config.dry_run {
            for item in &plan.items {
                let bytes = count(&mut summary, item, &local, &remote);
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
                &plan,
                (&local, &remote),
                &hashes,
                state,
                (&dead_pids, lease.as_ref(), &running),
                &mut summary,
                report,
            )
            .await
        };
        let lost = lease.as_ref().is_some_and(Lease::lost);
        if let Some(lease) = lease {
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

    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        plan: &Plan,
        (local, remote): (&Listing, &Listing),
        hashes: &HashMap<String, [u8; 32]>,
        state: State,
        (dead_pids, lease, running): (&[u32], Option<&Lease>, &Path),
        summary: &mut Summary,
        report: Report<'_>,
    ) -> Result<()> {
        // Temporary files of interrupted runs of this pair on this machine (their pid is in their
        // name): under the lock, no other run is writing them. A file that only looks like one (a
        // user's, or another machine's run's) is left alone.
        let dead = |name: &str| scan::temp_pid(name).is_some_and(|pid| dead_pids.contains(&pid));
        for leftover in &local.leftovers {
            if leftover.file_name().and_then(|n| n.to_str()).is_some_and(dead) {
                let _ = fs::remove_file(leftover);
            }
        }
        if !dead_pids.is_empty() {
            let mut leftovers = self.store.list_leftovers();
            while let Ok(Some(meta)) = leftovers.try_next().await {
                if dead(meta.key.rsplit('/').next().unwrap_or(&meta.key)) {
                    let _ = self.store.delete(&meta.key).await;
                }
            }
        }
        let state = Mutex::new(state);
        // Deletions first, then the folders they emptied, then transfers: a file replaced by a folder
        // of the same name (or the reverse) is then settled in one run, its old kind out of the way
        // before the new one arrives.
        let is_delete =
            |i: &usize| matches!(plan.items[*i].action, Action::DeleteLocal | Action::DeleteRemote);
        let (deletes, rest): (Vec<usize>, Vec<usize>) = (0..plan.items.len()).partition(is_delete);
        let outcomes = self
            .run_items(plan, deletes, (local, remote), hashes, (&state, lease), report)
            .await;
        let (mut local_dirs, mut remote_dirs) = (BTreeSet::new(), BTreeSet::new());
        for (i, outcome) in &outcomes {
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
            .run_items(plan, rest, (local, remote), hashes, (&state, lease), report)
            .await;
        let mut state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
        if self.store.capabilities().directories {
            let done = self.carry_out_dirs(plan, summary, report).await;
            // The folders both sides have now; what this run did not look at keeps its record.
            let mut both: BTreeSet<String> = local.dirs.intersection(&remote.dirs).cloned().collect();
            for (dir, action) in done {
                match action {
                    DirAction::CreateLocal | DirAction::CreateRemote => both.insert(dir),
                    DirAction::RemoveLocal | DirAction::RemoveRemote => both.remove(&dir),
                };
            }
            for dir in &gone {
                both.remove(dir);
            }
            let unseen =
                |d: &&String| !self.config.filter.enters_all(d) || local.protects(d) || remote.protects(d);
            both.extend(state.dirs().iter().filter(unseen).cloned());
            state.set_dirs(both);
        }
        for (i, outcome) in outcomes.into_iter().chain(transfers) {
            let item = &plan.items[i];
            match outcome {
                Ok(_) => {
                    count(summary, item, local, remote);
                }
                Err(e) => summary.failed.push((item.path.clone(), e.to_string())),
            }
        }
        summary.failed.sort();
        // Uploads recorded the remote's time as pending; the listing says what the next run will see.
        if summary.uploaded > 0 {
            let listed = scan::scan_remote(&*self.store, &self.config.filter).await;
            if let Ok(listed) = listed {
                adopt_remote_times(&mut state, &listed)?;
            }
        }
        state.compact()?;
        let _ = fs::remove_file(running);
        Ok(())
    }

    /// Carries out the items `indices` of `plan`, `--jobs` at a time; each one's outcome.
    async fn run_items(
        &self,
        plan: &Plan,
        indices: Vec<usize>,
        (local, remote): (&Listing, &Listing),
        hashes: &HashMap<String, [u8; 32]>,
        (state, lease): (&Mutex<State>, Option<&Lease>),
        report: Report<'_>,
    ) -> Vec<(usize, Result<u64>)> {
        futures::stream::iter(indices)
            .map(|i| {
                let item = &plan.items[i];
                let (l, r) = (local.get(&item.path), remote.get(&item.path));
                let hash = hashes.get(&item.path).copied();
                async move {
                    // Another run has the remote now (the lock was taken over): start nothing more.
                    let outcome = if lease.is_some_and(Lease::lost) {
                        Err(Error::LockLost {
                            location: self.store.url().with_key(crate::lock::LOCK_NAME),
                        })
                    } else {
                        self.one(item, l, r, hash, (state, report)).await
                    };
                    match &outcome {
                        Ok(bytes) if !matches!(item.action, Action::Conflict(_)) => {
                            report(Event::Done { item, bytes: *bytes });
                        }
                        Ok(_) => {}
                        Err(error) => report(Event::Failed { item, error }),
                    }
                    (i, outcome)
                }
            })
            .buffer_unordered(self.jobs())
            .collect()
            .await
    }

    /// Removes the local folders `dirs` that are empty, deepest first; those it removed.
    fn prune_local(&self, dirs: &BTreeSet<String>) -> BTreeSet<String> {
        let mut removed = BTreeSet::new();
        for dir in deepest_first(dirs) {
            let Ok(path) = self.local_path(dir) else {
                continue;
            };
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && fs::remove_dir(&path).is_ok() {
                removed.insert(dir.clone());
            }
        }
        removed
    }

    /// Makes and removes the plan's empty folders (removals deepest first, and only of folders still
    /// empty); those done. A failure is reported and counted, never fatal.
    async fn carry_out_dirs(
        &self,
        plan: &Plan,
        summary: &mut Summary,
        report: Report<'_>,
    ) -> Vec<(String, DirAction)> {
        let mut done = Vec::new();
        let mut ordered: Vec<&(String, DirAction)> = plan.dirs.iter().collect();
        // Makes first, top down; then removals, deepest first.
        ordered.sort_by_key(|(dir, action)| {
            let depth = dir.matches('/').count();
            match action {
                DirAction::CreateLocal | DirAction::CreateRemote => (0, depth),
                DirAction::RemoveLocal | DirAction::RemoveRemote => (1, usize::MAX - depth),
            }
        });
        for (dir, action) in ordered {
            let outcome: Result<bool> = match action {
                DirAction::CreateLocal => self.local_path(dir).and_then(|path| {
                    fs::create_dir_all(&path)
                        .map(|()| true)
                        .map_err(|e| Error::io(&path, e))
                }),
                DirAction::CreateRemote => self
                    .store
                    .create_dir(dir)
                    .await
                    .map(|()| true)
                    .map_err(Error::from),
                DirAction::RemoveLocal => Ok(!self.prune_local(&BTreeSet::from([dir.clone()])).is_empty()),
                DirAction::RemoveRemote => self.store.remove_empty_dir(dir).await.map_err(Error::from),
            };
            match outcome {
                Ok(true) => {
                    match action {
                        DirAction::CreateLocal | DirAction::CreateRemote => summary.dirs_created += 1,
                        DirAction::RemoveLocal | DirAction::RemoveRemote => summary.dirs_removed += 1,
                    }
                    report(Event::Folder {
                        path: dir,
                        action: *action,
                    });
                    done.push((dir.clone(), *action));
                }
                // Not empty any more (something arrived meanwhile): it stays, as the next run will see.
                Ok(false) => {}
                Err(e) => summary.failed.push((format!("{dir}/"), e.to_string())),
            }
        }
        done
    }

    /// Carries out one item; the bytes transferred.
    async fn one(
        &self,
        item: &Item,
        l: Option<&Observed>,
        r: Option<&Observed>,
        hash: Option<[u8; 32]>,
        (state, report): (&Mutex<State>, Report<'_>),
    ) -> Result<u64> {
        let path = item.path.as_str();
        let record = |entry: Option<BaseEntry>| -> Result<()> {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            match entry {
                Some(entry) => state.set(path, entry)?,
                None => state.remove(path)?,
            }
            Ok(())
        };
        match item.action {
            Action::Conflict(_) | Action::Compare(_) => Ok(0),
            Action::Nothing => {
                match (l, r) {
                    (Some(l), Some(r)) => record(Some(BaseEntry {
                        size: l.size,
                        local_mtime_ns: l.mtime.and_then(to_ns),
                        remote_size: r.size,
                        remote_mtime_ns: r.mtime.and_then(to_ns),
                        blake3: hash.map(hex),
                    }))?,
                    (None, None) => record(None)?,
                    // One way without --delete: the base keeps what it knew.
                    _ => {}
                }
                Ok(0)
            }
            Action::Upload => {
                let l = l.ok_or_else(|| changed(path, "local"))?;
                // The store counts what it reads; reported a few times a second while it sends.
                let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let upload = self.upload(path, l, r, hash, Arc::clone(&sent));
                tokio::pin!(upload);
                let mut reported = 0;
                let mut report_sent = || {
                    let now = sent.load(std::sync::atomic::Ordering::Relaxed).min(l.size);
                    if now > reported {
                        report(Event::Moved {
                            item,
                            bytes: now - reported,
                        });
                        reported = now;
                    }
                };
                let entry = loop {
                    tokio::select! {
                        done = &mut upload => break done?,
                        () = tokio::time::sleep(Duration::from_millis(200)) => report_sent(),
                    }
                };
                report_sent();
                let bytes = entry.size;
                record(Some(entry))?;
                Ok(bytes)
            }
            Action::Download => {
                let r = r.ok_or_else(|| changed(path, "remote"))?;
                let received = |bytes| report(Event::Moved { item, bytes });
                let entry = self.download(path, r, l, &received).await?;
                let bytes = entry.size;
                record(Some(entry))?;
                Ok(bytes)
            }
            Action::DeleteLocal => {
                let l = l.ok_or_else(|| changed(path, "local"))?;
                let file = self.local_path(path)?;
                let expected = l.clone();
                let owned = path.to_owned();
                blocking(&self.local, move || {
                    check_local(&file, Some(&expected), &owned)?;
                    fs::remove_file(&file).map_err(|e| Error::io(&file, e))
                })
                .await?;
                record(None)?;
                Ok(0)
            }
            Action::DeleteRemote => {
                let r = r.ok_or_else(|| changed(path, "remote"))?;
                self.check_remote(path, r).await?;
                self.store.delete(path).await?;
                record(None)?;
                Ok(0)
            }
        }
    }

    async fn check_remote(&self, path: &str, expected: &Observed) -> Result<()> {
        match self.store.head(path).await {
            Ok(meta) if meta.size == expected.size => Ok(()),
            Ok(_) | Err(snapsync_store::Error::NotFound { .. }) => Err(changed(path, "remote")),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload(
        &self,
        path: &str,
        l: &Observed,
        r: Option<&Observed>,
        hash: Option<[u8; 32]>,
        sent: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<BaseEntry> {
        let file = self.local_path(path)?;
        let (checked, expected, owned) = (file.clone(), l.clone(), path.to_owned());
        let hash = blocking(&self.local, move || {
            check_local(&checked, Some(&expected), &owned)?;
            match hash {
                Some(hash) => Ok(hash),
                None => hash_file(&checked),
            }
        })
        .await?;
        let mode = if let Some(r) = r {
            self.check_remote(path, r).await?;
            PutMode::Overwrite
        } else if self.store.capabilities().atomic_create {
            // A file that appeared remotely since the scan is not replaced.
            PutMode::Create
        } else {
            // Without an atomic create (FTP), checking first would cost two round trips per file and
            // still leave a window; the lock keeps other snapsync runs out meanwhile.
            PutMode::Overwrite
        };
        // The store publishes the file only if, when opened, it is the version scanned and hashed
        // (size and time) and it did not change while it was read: what goes up is what was hashed,
        // and an edit made meanwhile leaves the remote as it was (the next run uploads the edit).
        let source = PutSource::FileExpecting {
            path: file.clone(),
            size: l.size,
            mtime: l.mtime,
            progress: Some(sent),
        };
        match self.store.put(path, source, mode).await {
            Ok(()) => {}
            Err(snapsync_store::Error::AlreadyExists { .. }) => return Err(changed(path, "remote")),
            Err(snapsync_store::Error::SourceChanged { .. }) => return Err(changed(path, "local")),
            Err(e) => return Err(e.into()),
        }
        if let Some(mtime) = l.mtime
            && self.store.capabilities().set_mtime
        {
            match self.store.set_mtime(path, mtime).await {
                Ok(()) | Err(snapsync_store::Error::Unsupported { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(BaseEntry {
            size: l.size,
            local_mtime_ns: l.mtime.and_then(to_ns),
            remote_size: l.size,
            // Pending: filled in from the listing at the end of the run (or the next run's).
            remote_mtime_ns: None,
            blake3: Some(hex(hash)),
        })
    }

    async fn download(
        &self,
        path: &str,
        r: &Observed,
        l: Option<&Observed>,
        received: &(dyn Fn(u64) + Sync),
    ) -> Result<BaseEntry> {
        let target = self.local_path(path)?;
        if let Some(parent) = target.parent() {
            let parent = parent.to_owned();
            blocking(&self.local, move || {
                fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))
            })
            .await?;
        }
        let got = self.store.get(path).await?;
        if got.meta.size != r.size {
            return Err(changed(path, "remote"));
        }
        let temp = temp_path(&target);
        let written = self.write_temp(&temp, got.stream, r, received).await;
        let (hash, size) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        if size != r.size {
            let _ = fs::remove_file(&temp);
            return Err(Error::Verify {
                path: path.to_owned(),
                what: format!("{size} bytes arrived, the remote listed {}", r.size),
            });
        }
        let (expected, owned) = (l.cloned(), path.to_owned());
        let placed = target.clone();
        let meta = blocking(&self.local, move || {
            let result = (|| {
                check_local(&placed, expected.as_ref(), &owned)?;
                if expected.is_some() {
                    fs::rename(&temp, &placed).map_err(|e| Error::io(&placed, e))?;
                } else {
                    // Never replace a file that appeared during the run.
                    fs::hard_link(&temp, &placed).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            changed(&owned, "local")
                        } else {
                            Error::io(&placed, e)
                        }
                    })?;
                    let _ = fs::remove_file(&temp);
                }
                fs::metadata(&placed).map_err(|e| Error::io(&placed, e))
            })();
            if result.is_err() {
                let _ = fs::remove_file(&temp);
            }
            result
        })
        .await?;
        let now = scan::observed(&meta);
        Ok(BaseEntry {
            size: now.size,
            local_mtime_ns: now.mtime.and_then(to_ns),
            remote_size: r.size,
            remote_mtime_ns: r.mtime.and_then(to_ns),
            blake3: Some(hex(hash)),
        })
    }

    /// Writes a download to its temporary file: hashed, flushed to disk, given the remote's time.
    async fn write_temp(
        &self,
        temp: &Path,
        mut stream: futures::stream::BoxStream<'static, snapsync_store::Result<Bytes>>,
        r: &Observed,
        received: &(dyn Fn(u64) + Sync),
    ) -> Result<([u8; 32], u64)> {
        let mut file = tokio::fs::File::create(temp)
            .await
            .map_err(|e| Error::io(temp, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(piece) = stream.try_next().await? {
            hasher.update(&piece);
            size += piece.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &piece)
                .await
                .map_err(|e| Error::io(temp, e))?;
            received(piece.len() as u64);
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io(temp, e))?;
        let file: File = file.into_std().await;
        let mtime = r.mtime;
        let path = temp.to_owned();
        blocking(&self.local, move || {
            if let Some(mtime) = mtime {
                file.set_modified(mtime).map_err(|e| Error::io(&path, e))?;
            }
            file.sync_all().map_err(|e| Error::io(&path, e))
        })
        .await?;
        Ok((*hasher.finalize().as_bytes(), size))
    }
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

/// Counts an item into the summary; the bytes it moves.
fn count(summary: &mut Summary, item: &Item, local: &Listing, remote: &Listing) -> u64 {
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
            summary
                .conflicts
                .push((item.path.clone(), conflict_name(c).to_owned()));
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

/// How a conflict is named in output.
#[must_use]
pub fn conflict_name(conflict: Conflict) -> &'static str {
    match conflict {
        Conflict::BothModified => "modified on both sides",
        Conflict::BothNew => "new on both sides, different content",
        Conflict::ModifiedLocalDeletedRemote => "modified locally, deleted remotely",
        Conflict::DeletedLocalModifiedRemote => "deleted locally, modified remotely",
        Conflict::FileAndFolder => "a file on one side, a folder on the other",
    }
}

fn changed(path: &str, side: &'static str) -> Error {
    Error::Changed {
        path: path.to_owned(),
        side,
    }
}

/// Checks that the local file is still what the scan saw (`None`: that there is none).
fn check_local(file: &Path, expected: Option<&Observed>, path: &str) -> Result<()> {
    match (fs::symlink_metadata(file), expected) {
        (Ok(meta), Some(expected))
            if meta.is_file() && meta.len() == expected.size && meta.modified().ok() == expected.mtime =>
        {
            Ok(())
        }
        (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        (Err(e), Some(_)) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(file, e)),
        _ => Err(changed(path, "local")),
    }
}

/// Base entries whose remote time is pending (an upload whose time was not listed yet) take the time
/// the listing shows, when the size is what was uploaded.
fn adopt_remote_times(state: &mut State, listing: &Listing) -> Result<()> {
    for (path, entry) in adopted_remote_times(state, listing) {
        state.set(&path, entry)?;
    }
    Ok(())
}

/// The base entries whose pending remote time the listing settles, updated.
fn adopted_remote_times(state: &State, listing: &Listing) -> Vec<(String, BaseEntry)> {
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

fn ancestors(path: &str) -> impl Iterator<Item = String> + '_ {
    path.match_indices('/').map(|(i, _)| path[..i].to_owned())
}

fn deepest_first(dirs: &BTreeSet<String>) -> Vec<&String> {
    let mut sorted: Vec<&String> = dirs.iter().collect();
    sorted.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    sorted
}

/// BLAKE3 of a local file.
fn hash_file(file: &Path) -> Result<[u8; 32]> {
    snapsync_core::hash_file(file)
        .map(|(c, _)| *c.as_bytes())
        .map_err(|e| Error::io(file, e))
}

fn hex(hash: [u8; 32]) -> String {
    blake3::Hash::from(hash).to_hex().to_string()
}

async fn blocking<T: Send + 'static>(
    root: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io(root, std::io::Error::other(e)))?
}

/// Whether a store error says the remote cannot be written (a read-only account or mount).
fn read_only(error: &snapsync_store::Error) -> bool {
    match error {
        snapsync_store::Error::PermissionDenied { .. } => true,
        snapsync_store::Error::Io { source, .. } => source.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
        _ => false,
    }
}
