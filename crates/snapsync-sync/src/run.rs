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
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use snapsync_store::{PutMode, PutSource, Store, StoreExt, temp_path};

use crate::decide::{Action, Conflict, Observed};
use crate::error::{Error, Result};
use crate::plan::{Item, Mode, Options, Plan, plan};
use crate::scan::{self, Filter, LOCK_NAME, Listing};
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
    /// A lock older than this is stale and taken over.
    pub lock_timeout: Duration,
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
            lock_timeout: Duration::from_hours(1),
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
    /// Files found equal on both sides by content.
    pub equal: u64,
    /// Conflicts settled by `--resolve` or `--force`.
    pub resolved: u64,
    /// Conflicts left as they are: path and kind.
    pub conflicts: Vec<(String, String)>,
    /// Items that failed: path and error.
    pub failed: Vec<(String, String)>,
    /// What the scan left out (symlinks, unreadable entries).
    pub warnings: Vec<String>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Whether nothing was changed (`--dry-run`).
    pub dry_run: bool,
}

/// A planned run, ready to execute.
#[derive(Debug)]
pub struct Prepared {
    /// The plan (after comparing contents where it asked to).
    pub plan: Plan,
    local: Listing,
    remote: Listing,
    hashes: HashMap<String, [u8; 32]>,
    state: State,
    locked: bool,
    interrupted: bool,
    running: PathBuf,
    started: Instant,
}

impl Prepared {
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

#[derive(Serialize, Deserialize)]
struct LockBody {
    host: String,
    pid: u32,
    started_ns: u64,
}

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
        let mut unlocked_warning = None;
        let mut taken_over = false;
        // The mark of a run under way goes down before the lock, so a run killed even while locking
        // leaves it; a run that finds it knows the one before was interrupted.
        let running = StateDir::new(&self.local, &self.store.url().to_string())
            .path()
            .join(RUNNING);
        let interrupted_before = running.exists();
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
        let locked = if self.config.dry_run {
            false
        } else {
            match self.lock().await {
                Ok(took_over) => {
                    taken_over = took_over;
                    true
                }
                // A download only writes here: a read-only remote (an anonymous FTP mirror, say) is fine.
                Err(Error::Store(e @ snapsync_store::Error::PermissionDenied { .. }))
                    if self.config.options.mode == Mode::Download =>
                {
                    unlocked_warning = Some(format!(
                        "the remote cannot be locked ({e}); downloading without a lock"
                    ));
                    false
                }
                Err(e) => {
                    unmark();
                    return Err(e);
                }
            }
        };
        let mut prepared = self
            .scan_and_plan(started, locked, taken_over || interrupted_before)
            .await;
        if let (Ok(prepared), Some(warning)) = (&mut prepared, unlocked_warning) {
            prepared.local.warnings.insert(0, warning);
        }
        if prepared.is_err() {
            unmark();
            if locked {
                let _ = self.store.delete(LOCK_NAME).await;
            }
        }
        prepared
    }

    async fn scan_and_plan(&self, started: Instant, locked: bool, interrupted: bool) -> Result<Prepared> {
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
        // `interrupted`: the last run here did not finish (or a run that died held the lock), so the
        // remote may hold temporary files of its interrupted uploads.
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
        let mut plan = plan(&local.files, &remote.files, &base, &self.config.options);
        if self.config.delete_unmatched && self.config.options.mode != Mode::Sync {
            let (target, delete) = match self.config.options.mode {
                Mode::Upload => (&remote, Action::DeleteRemote),
                _ => (&local, Action::DeleteLocal),
            };
            plan.items.extend(target.unmatched.keys().map(|path| Item {
                path: path.clone(),
                action: delete,
                on_mismatch: None,
                resolved: None,
            }));
            plan.items.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let mut hashes: HashMap<String, [u8; 32]> = local
            .files
            .iter()
            .filter_map(|(p, o)| o.hash.map(|h| (p.clone(), h)))
            .collect();
        self.compare(&mut plan, &local, &remote, &mut hashes).await?;
        Ok(Prepared {
            plan,
            local,
            remote,
            hashes,
            state,
            locked,
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

    /// Takes the remote's lock; `true` when it took over the lock of a run that died.
    async fn lock(&self) -> Result<bool> {
        let now = to_ns(SystemTime::now()).unwrap_or(0);
        let body = LockBody {
            host: hostname(),
            pid: std::process::id(),
            started_ns: now,
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        for attempt in 0..2 {
            match self
                .store
                .put(LOCK_NAME, PutSource::Bytes(bytes.clone()), PutMode::Create)
                .await
            {
                Ok(()) => return Ok(attempt > 0),
                Err(snapsync_store::Error::AlreadyExists { location }) if attempt == 0 => {
                    let held = self.store.get_bytes(LOCK_NAME).await.ok();
                    let holder = held
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<LockBody>(b).ok());
                    let age = holder
                        .as_ref()
                        .map(|h| Duration::from_nanos(now.saturating_sub(h.started_ns)));
                    // Too old, or left by a process of this machine that is gone (a killed run).
                    let dead = holder.as_ref().is_some_and(|h| {
                        h.host == body.host
                            && Path::new("/proc/self").exists()
                            && !Path::new(&format!("/proc/{}", h.pid)).exists()
                    });
                    let stale = dead || age.is_none_or(|age| age > self.config.lock_timeout);
                    if self.config.break_lock || stale {
                        self.store.delete(LOCK_NAME).await?;
                        continue;
                    }
                    let holder = holder.map_or_else(
                        || "unreadable lock".to_owned(),
                        |h| {
                            format!(
                                "host {}, process {}, {} s ago",
                                h.host,
                                h.pid,
                                age.unwrap_or_default().as_secs()
                            )
                        },
                    );
                    return Err(Error::Locked { location, holder });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Locked {
            location: self.store.url().with_key(LOCK_NAME),
            holder: "another run took it at the same moment".into(),
        })
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
        let Prepared {
            mut plan,
            local,
            remote,
            hashes,
            state,
            locked,
            interrupted,
            running,
            started,
        } = prepared;
        let mut summary = Summary {
            dry_run: self.config.dry_run,
            warnings: local.warnings.clone(),
            ..Summary::default()
        };
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
            Ok(())
        } else {
            self.carry_out(
                &plan,
                (&local, &remote),
                &hashes,
                state,
                (interrupted, &running),
                &mut summary,
                report,
            )
            .await
        };
        if locked {
            let _ = self.store.delete(LOCK_NAME).await;
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
        (interrupted, running): (bool, &Path),
        summary: &mut Summary,
        report: Report<'_>,
    ) -> Result<()> {
        for leftover in &local.leftovers {
            let _ = fs::remove_file(leftover);
        }
        // The remote's leftovers of an interrupted run: under the lock, no other run is writing them.
        if interrupted {
            let mut leftovers = self.store.list_leftovers();
            while let Ok(Some(meta)) = leftovers.try_next().await {
                let _ = self.store.delete(&meta.key).await;
            }
        }
        let state = Mutex::new(state);
        let jobs = self.jobs();
        let outcomes: Vec<(usize, Result<u64>)> = futures::stream::iter(0..plan.items.len())
            .map(|i| {
                let item = &plan.items[i];
                let (l, r) = (local.get(&item.path), remote.get(&item.path));
                let hash = hashes.get(&item.path).copied();
                let state = &state;
                async move {
                    let outcome = self.one(item, l, r, hash, state).await;
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
            .buffer_unordered(jobs)
            .collect()
            .await;
        let mut state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
        let (mut local_dirs, mut remote_dirs) = (BTreeSet::new(), BTreeSet::new());
        for (i, outcome) in outcomes {
            let item = &plan.items[i];
            match outcome {
                Ok(_) => {
                    count(summary, item, local, remote);
                    let dirs = match item.action {
                        Action::DeleteLocal => &mut local_dirs,
                        Action::DeleteRemote => &mut remote_dirs,
                        _ => continue,
                    };
                    dirs.extend(ancestors(&item.path));
                }
                Err(e) => summary.failed.push((item.path.clone(), e.to_string())),
            }
        }
        summary.failed.sort();
        summary.dirs_removed += self.prune_local(&local_dirs);
        for dir in deepest_first(&remote_dirs) {
            if self.store.remove_empty_dir(dir).await.unwrap_or(false) {
                summary.dirs_removed += 1;
            }
        }
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

    fn prune_local(&self, dirs: &BTreeSet<String>) -> u64 {
        let mut removed = 0;
        for dir in deepest_first(dirs) {
            let Ok(path) = self.local_path(dir) else {
                continue;
            };
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && fs::remove_dir(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Carries out one item; the bytes transferred.
    async fn one(
        &self,
        item: &Item,
        l: Option<&Observed>,
        r: Option<&Observed>,
        hash: Option<[u8; 32]>,
        state: &Mutex<State>,
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
                let entry = self.upload(path, l, r, hash).await?;
                let bytes = entry.size;
                record(Some(entry))?;
                Ok(bytes)
            }
            Action::Download => {
                let r = r.ok_or_else(|| changed(path, "remote"))?;
                let entry = self.download(path, r, l).await?;
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
        match self.store.put(path, PutSource::File(file.clone()), mode).await {
            Ok(()) => {}
            Err(snapsync_store::Error::AlreadyExists { .. }) => return Err(changed(path, "remote")),
            Err(e) => return Err(e.into()),
        }
        // The file must not have changed while it was read: what went up is then what was hashed.
        let (after_file, expected, owned) = (file.clone(), l.clone(), path.to_owned());
        blocking(&self.local, move || {
            check_local(&after_file, Some(&expected), &owned)
        })
        .await?;
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

    async fn download(&self, path: &str, r: &Observed, l: Option<&Observed>) -> Result<BaseEntry> {
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
        let written = self.write_temp(&temp, got.stream, r).await;
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

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

async fn blocking<T: Send + 'static>(
    root: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io(root, std::io::Error::other(e)))?
}
