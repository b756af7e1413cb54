//! snapsync-cache: a local cache over a remote store, for programs that need a few files of a big
//! remote tree at a time.
//!
//! [`CacheAgent::path`] gives the local copy of a remote file, fetching it first when it is not cached
//! (or, with a maximum age, when the remote copy changed since); [`CacheAgent::add`] queues a local
//! file for upload and [`CacheAgent::push`] uploads the queue — each file only if the remote copy is
//! still the one it was fetched from (or still absent, for a new file), so a remote edit is never
//! clobbered unless the caller forces it.
//!
//! Everything the cache knows is in one small state file under the cache folder
//! (`.snapsync-cache/state.json`, rewritten atomically under a file lock): for each cached file, what
//! the remote held when it was fetched (size, time, BLAKE3) and what the local copy was then; the queue.
//! A fetch goes to a checked temporary file beside its target and is renamed into place; an upload goes
//! through the store's temporary name, check and rename. Two threads or processes fetching one missing
//! file download it once (a lock file per path), and neither sees a partial file. A push marks itself
//! under way (`.snapsync-cache/push-PID`): the next push removes the remote temporary files of one
//! that was killed; opening the cache removes a killed state write's temporary file.

#![forbid(unsafe_code)]

mod error;
mod state;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use snapsync_core::Cancel;
use snapsync_core::atomic::{CheckedFile, WriteOptions};
use snapsync_store::{ObjectMeta, PutMode, PutSource, RunMark, Store};

pub use error::{Error, Result};
use state::{Entry, Locked, Remote};

/// How often pushed files are recorded in the state (each record rewrites it durably), and at most
/// how many wait for it.
const RECORD_EVERY: Duration = Duration::from_millis(500);
const RECORD_BATCH: usize = 1024;

/// The folder under the cache root that holds the state and the locks; never a cached path.
pub const META_DIR: &str = ".snapsync-cache";

/// How the agent treats freshness and an unreachable remote.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// A cached file fetched longer ago than this is checked against the remote (its size and time)
    /// and fetched again only if it changed. `None`: a cached file is used as it is.
    pub max_age: Option<Duration>,
    /// An unreachable remote is an error even for a cached file (otherwise the cached copy is used,
    /// with a warning).
    pub online: bool,
    /// How long checking a cached file against the remote may wait for an answer before the cached
    /// copy is used, with a warning (not with `online`, which waits for the store's own timeouts and
    /// retries): a remote that is down or stalled costs an open this much, not the retries' seconds.
    pub offline_after: Duration,
    /// Stops a [`CacheAgent::push`] early ([`Error::Cancelled`]): no upload starts after it is
    /// cancelled, those in flight are abandoned (their temporary files removed) and stay queued, and
    /// the ones that finished are recorded.
    pub cancel: Cancel,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_age: None,
            online: false,
            offline_after: Duration::from_secs(2),
            cancel: Cancel::new(),
        }
    }
}

/// What [`CacheAgent::path`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The cached copy, without asking the remote.
    Cached,
    /// The cached copy, found unchanged on the remote.
    Revalidated,
    /// Fetched from the remote.
    Fetched,
    /// The cached copy, because the remote could not be reached (the warning says why).
    Offline(String),
    /// The local copy, changed since it was fetched (queued, or edited in place): never replaced by a
    /// fetch.
    LocalEdit,
}

/// What happened to one queued file in [`CacheAgent::push`].
#[derive(Debug)]
pub enum Pushed {
    /// Uploaded (bytes).
    Uploaded(u64),
    /// Not uploaded: the remote copy changed; the file stays queued.
    Conflict(Error),
    /// Not uploaded: it failed; the file stays queued.
    Failed(Error),
}

/// Counters a [`CacheAgent::push_counting`] updates, for a progress display.
#[derive(Debug, Default)]
pub struct PushProgress {
    /// Queued files done (pushed, refused or failed).
    pub files: AtomicU64,
    /// Bytes read to be sent.
    pub bytes: Arc<AtomicU64>,
}

/// One cached or queued file, for [`CacheAgent::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    /// The path below the cache root.
    pub path: String,
    /// Size of the local copy (0 when it is gone).
    pub size: u64,
    /// Queued for upload.
    pub queued: bool,
    /// Fetched longer ago than the maximum age.
    pub stale: bool,
    /// The last push found the remote changed.
    pub conflict: Option<String>,
}

/// A cache folder over a remote store.
#[derive(Debug)]
pub struct CacheAgent {
    store: Arc<dyn Store>,
    root: PathBuf,
    options: CacheOptions,
}

impl CacheAgent {
    /// The cache in `root` (created if missing) over `store`.
    ///
    /// # Errors
    /// When the folder cannot be made, or its state belongs to another remote or is damaged.
    pub fn open(store: Arc<dyn Store>, root: &Path, options: CacheOptions) -> Result<CacheAgent> {
        fs::create_dir_all(root.join(META_DIR).join("locks")).map_err(|e| Error::io(root, e))?;
        let root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        // A process killed while it rewrote the state left its temporary file beside it.
        let meta = root.join(META_DIR);
        remove_dead_temporaries(&meta, &meta.join("state.json"));
        let agent = CacheAgent { store, root, options };
        // Checks the state now (a cache of another remote is refused before anything is done), and
        // writes it, so the folder belongs to this remote from now on.
        agent.locked()?.save()?;
        Ok(agent)
    }

    /// The cache in `root` over the remote `url` names (a store URL or a path; a relative path is taken
    /// from the working directory), reached as `connect` says; local remotes flush every write.
    ///
    /// # Errors
    /// A URL that does not parse or a store that cannot be opened ([`Error::Store`]), and as
    /// [`CacheAgent::open`].
    pub fn connect(
        url: &str,
        connect: &snapsync_store::ConnectOptions,
        root: &Path,
        options: CacheOptions,
    ) -> Result<CacheAgent> {
        let parsed = snapsync_store::StoreUrl::parse(url).map_err(Error::Store)?;
        let parsed = parsed.absolute().map_err(|e| Error::io(Path::new(url), e))?;
        let connect = connect
            .clone()
            .with_local_durability(snapsync_store::LocalDurability::FlushEachWrite);
        let store = snapsync_store::open(&parsed, &connect).map_err(Error::Store)?;
        CacheAgent::open(store, root, options)
    }

    /// The cache root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn locked(&self) -> Result<Locked> {
        Locked::take(&self.root.join(META_DIR), &self.store.url().to_string())
    }

    /// `path` checked (no `..`, not absolute, no symlinked folder on the way), and its local path.
    fn local(&self, path: &str) -> Result<PathBuf> {
        let invalid = |reason: String| Error::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        snapsync_store::check_key(path).map_err(|e| invalid(e.to_string()))?;
        if path == META_DIR || path.starts_with(&format!("{META_DIR}/")) {
            return Err(invalid("the cache's own folder".into()));
        }
        snapsync_core::pathsafe::check_no_symlink_parents(&self.root, Path::new(path))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(self.root.join(path))
    }

    /// A path given relative to the cache root or as an absolute path inside it, as the key it is.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a path outside the cache.
    pub fn key_of(&self, given: &Path) -> Result<String> {
        let invalid = |reason: &str| Error::InvalidPath {
            path: given.display().to_string(),
            reason: reason.to_owned(),
        };
        let relative = if given.is_absolute() {
            let absolute = std::path::absolute(given).map_err(|e| Error::io(given, e))?;
            absolute
                .strip_prefix(&self.root)
                .map_err(|_| invalid("outside the cache folder"))?
                .to_owned()
        } else {
            given.to_owned()
        };
        let key = relative.to_str().ok_or_else(|| invalid("not UTF-8"))?.to_owned();
        self.local(&key)?;
        Ok(key)
    }

    /// The local path of `path`, fetched first when it is not cached (see [`CacheAgent::open_file`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] when neither side has it; [`Error::Unreachable`] when it is not cached and the
    /// remote cannot be reached (or `online` is set); [`Error::InvalidPath`]; others as they come.
    pub async fn path(&self, path: &str) -> Result<(PathBuf, Opened)> {
        let local = self.local(path)?;
        let (recorded, queued) = {
            let locked = self.locked()?;
            (
                locked.state.files.get(path).cloned(),
                locked.state.queue.contains(path),
            )
        };
        let current = fs::symlink_metadata(&local).ok().filter(fs::Metadata::is_file);
        if let (Some(entry), Some(meta)) = (&recorded, &current) {
            if queued || !entry.local_matches(meta) {
                return Ok((local, Opened::LocalEdit));
            }
            let fresh = self.options.max_age.is_none_or(|age| entry.fetched_age() <= age);
            if fresh && !self.options.online {
                return Ok((local, Opened::Cached));
            }
            let head = self.store.head(path);
            let answer = if self.options.online {
                head.await
            } else {
                match tokio::time::timeout(self.options.offline_after, head).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Ok((
                            local,
                            Opened::Offline(format!(
                                "the remote cannot be reached (no answer within {:?}); using the cached copy",
                                self.options.offline_after
                            )),
                        ));
                    }
                }
            };
            match answer {
                Ok(meta) if entry.remote.matches(&meta) => {
                    self.update(|state| {
                        if let Some(e) = state.files.get_mut(path) {
                            e.fetched_ns = state::now_ns();
                        }
                    })?;
                    return Ok((local, Opened::Revalidated));
                }
                Ok(_) => {}
                Err(e) if e.is_transient() && !self.options.online => {
                    return Ok((
                        local,
                        Opened::Offline(format!(
                            "the remote cannot be reached ({e}); using the cached copy"
                        )),
                    ));
                }
                Err(e) => return Err(Error::from_store(path, e)),
            }
        } else if current.is_some() && recorded.is_none() {
            // A file put in the cache folder by hand (or added, not yet pushed): it is the local copy.
            return Ok((local, Opened::LocalEdit));
        }
        let opened = self.fetch(path, &local, recorded.map(|e| e.fetched_ns)).await?;
        Ok((local, opened))
    }

    /// Opens `path` for reading: the cached copy, or the remote's fetched first.
    ///
    /// # Errors
    /// As [`CacheAgent::path`].
    pub async fn open_file(&self, path: &str) -> Result<File> {
        let (local, _) = self.path(path).await?;
        File::open(&local).map_err(|e| Error::io(&local, e))
    }

    /// Downloads `path` into its place, once however many callers ask at the same moment: `seen` is
    /// when the entry the caller looked at was fetched (`None`: there was none). [`Opened::Cached`]
    /// when another caller fetched it while this one waited.
    async fn fetch(&self, path: &str, local: &Path, seen: Option<i128>) -> Result<Opened> {
        let lock_path = self
            .root
            .join(META_DIR)
            .join("locks")
            .join(blake3::hash(path.as_bytes()).to_hex().as_str());
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::io(local, std::io::Error::other(e)))?
        .map_err(|e| Error::io(local, e))?;
        // Another caller may have fetched it while this one waited for the lock.
        let done_meanwhile = self.locked()?.state.files.get(path).is_some_and(|entry| {
            Some(entry.fetched_ns) != seen
                && fs::symlink_metadata(local).is_ok_and(|m| entry.local_matches(&m))
        });
        if done_meanwhile {
            return Ok(Opened::Cached);
        }
        let result = self.download(path, local).await;
        drop(lock);
        result.map(|()| Opened::Fetched)
    }

    async fn download(&self, path: &str, local: &Path) -> Result<()> {
        if let Some(parent) = local.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            remove_dead_temporaries(parent, local);
        }
        // The local copy as it is now (the one the caller judged replaceable, or none): the fetch is
        // published only over that, never over an edit made while it ran.
        let stamp = |meta: &fs::Metadata| (meta.len(), meta.modified().ok());
        let before = fs::symlink_metadata(local).ok().map(|m| stamp(&m));
        let mut got = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::from_store(path, e))?;
        let remote = Remote::of(&got.meta);
        let options = if before.is_some() {
            WriteOptions::DURABLE
        } else {
            WriteOptions::DURABLE.no_clobber()
        };
        let file = CheckedFile::create_for(local, options).map_err(|e| Error::io(local, e))?;
        let file = snapsync_store::stream_into(&mut got.stream, file, Some(got.meta.size), |_| {})
            .await
            .map_err(|e| match e {
                snapsync_store::StreamError::Store(e) => Error::from_store(path, e),
                snapsync_store::StreamError::Write { path, source } => Error::io(&path, source),
                // More bytes than the store listed.
                e => Error::Store(snapsync_store::Error::Other {
                    location: self.store.url().with_key(path),
                    source: Box::new(e),
                }),
            })?;
        // Checked and published (flushed: durable) off the async threads.
        let (modified, size, owned, target) = (
            got.meta.modified,
            got.meta.size,
            path.to_owned(),
            local.to_owned(),
        );
        let entry = tokio::task::spawn_blocking(move || {
            let (path, local) = (owned.as_str(), target.as_path());
            if let Some(time) = modified {
                file.set_modified(time).map_err(|e| Error::io(local, e))?;
            }
            let edited = || Error::Conflict {
                path: path.to_owned(),
                why: "the cached copy changed while it was being fetched; it was kept".to_owned(),
            };
            if fs::symlink_metadata(local).ok().map(|m| stamp(&m)) != before {
                return Err(edited());
            }
            let published = file.persist_if(local, Some(size), None).map_err(|e| match e {
                snapsync_core::Error::Write { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    edited()
                }
                other => Error::io(local, std::io::Error::other(other)),
            })?;
            let meta = published.file.metadata().map_err(|e| Error::io(local, e))?;
            Ok(Entry::fetched(remote, &meta, published.checksum.to_string()))
        })
        .await
        .map_err(|e| Error::io(local, std::io::Error::other(e)))??;
        self.update(|state| {
            state.files.insert(path.to_owned(), entry);
        })
    }

    fn update(&self, change: impl FnOnce(&mut state::State)) -> Result<()> {
        let mut locked = self.locked()?;
        change(&mut locked.state);
        locked.save()
    }

    /// Queues the file at `path` (a key, see [`CacheAgent::key_of`]) for [`CacheAgent::push`].
    ///
    /// # Errors
    /// [`Error::InvalidPath`]; [`Error::NotFound`] when there is no such local file.
    pub fn add(&self, path: &str) -> Result<()> {
        self.add_all([path])
    }

    /// Queues several files at once (one write of the state); nothing is queued if one of them is not
    /// a file of the cache.
    ///
    /// # Errors
    /// As [`CacheAgent::add`], for the first path that fails.
    pub fn add_all<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let paths: Vec<&str> = paths.into_iter().collect();
        for path in &paths {
            let local = self.local(path)?;
            if !fs::symlink_metadata(&local).is_ok_and(|m| m.is_file()) {
                return Err(Error::NotFound {
                    path: (*path).to_owned(),
                });
            }
        }
        self.update(|state| {
            state.queue.extend(paths.iter().map(|p| (*p).to_owned()));
        })
    }

    /// Uploads every queued file whose remote copy is unchanged since it was fetched (or absent, for
    /// a file that was never fetched); with `force`, every queued file. Each file's outcome, by path.
    ///
    /// # Errors
    /// Only when the state cannot be read or written; per-file failures are in the result.
    pub async fn push(&self, force: bool) -> Result<BTreeMap<String, Pushed>> {
        self.push_counting(force, None).await
    }

    /// [`CacheAgent::push`], updating `progress` as it goes: the bytes as they are read to be sent (an
    /// attempt that is retried counts again), each file once it is done.
    ///
    /// # Errors
    /// As [`CacheAgent::push`].
    pub async fn push_counting(
        &self,
        force: bool,
        progress: Option<&PushProgress>,
    ) -> Result<BTreeMap<String, Pushed>> {
        // Marked under way (`.snapsync-cache/push-PID`), so that should this push be killed the next
        // one removes the temporary files it left on the remote. The cache folder belongs to one
        // remote, so the mark needs to name no store.
        let meta = self.root.join(META_DIR);
        let mark = RunMark::start(&meta, "push-").map_err(|e| Error::io(&meta, e))?;
        let pushed = self.push_queue(force, progress).await;
        mark.finish(self.store.as_ref()).await;
        pushed
    }

    async fn push_queue(
        &self,
        force: bool,
        progress: Option<&PushProgress>,
    ) -> Result<BTreeMap<String, Pushed>> {
        let (queue, files) = {
            let locked = self.locked()?;
            (locked.state.queue.clone(), locked.state.files.clone())
        };
        let jobs = self.store.capabilities().default_jobs.max(1);
        let mut results = futures::stream::iter(queue)
            .map(|path| {
                let recorded = files.get(&path);
                async move {
                    let cancel = &self.options.cancel;
                    let sent = progress.map(|p| Arc::clone(&p.bytes));
                    let outcome = if cancel.is_cancelled() {
                        Err(Error::Cancelled)
                    } else {
                        tokio::select! {
                            biased;
                            outcome = self.push_one(&path, recorded, force, sent) => outcome,
                            () = cancel.cancelled() => Err(Error::Cancelled),
                        }
                    };
                    if let Some(progress) = progress {
                        progress.files.fetch_add(1, Ordering::Relaxed);
                    }
                    (path, outcome)
                }
            })
            .buffer_unordered(jobs);
        let mut outcomes = BTreeMap::new();
        // Recorded in batches: a push killed before its record is written finds, next time, a remote
        // copy with the local content, which it takes as pushed (see `push_one`).
        let mut pending = Vec::new();
        let mut recorded = std::time::Instant::now();
        while let Some(result) = results.next().await {
            pending.push(result);
            if pending.len() >= RECORD_BATCH || recorded.elapsed() >= RECORD_EVERY {
                self.record_pushes(&mut pending, &mut outcomes)?;
                recorded = std::time::Instant::now();
            }
        }
        self.record_pushes(&mut pending, &mut outcomes)?;
        if self.options.cancel.is_cancelled() {
            let _ = self.store.remove_abandoned().await;
            return Err(Error::Cancelled);
        }
        Ok(outcomes)
    }

    /// Records finished pushes in the state, and their outcomes.
    fn record_pushes(
        &self,
        pending: &mut Vec<(String, Result<(u64, Entry)>)>,
        outcomes: &mut BTreeMap<String, Pushed>,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        self.update(|state| {
            for (path, outcome) in pending.drain(..) {
                let pushed = match outcome {
                    // Not pushed, still queued: the next push sends it.
                    Err(Error::Cancelled) => continue,
                    Ok((bytes, entry)) => {
                        state.queue.remove(&path);
                        state.files.insert(path.clone(), entry);
                        state.conflicts.remove(&path);
                        Pushed::Uploaded(bytes)
                    }
                    Err(e @ Error::Conflict { .. }) => {
                        state.conflicts.insert(path.clone(), e.to_string());
                        Pushed::Conflict(e)
                    }
                    Err(e) => {
                        state.conflicts.remove(&path);
                        Pushed::Failed(e)
                    }
                };
                done.push((path, pushed));
            }
        })?;
        outcomes.extend(done);
        Ok(())
    }

    async fn push_one(
        &self,
        path: &str,
        recorded: Option<&Entry>,
        force: bool,
        sent: Option<Arc<AtomicU64>>,
    ) -> Result<(u64, Entry)> {
        let local = self.local(path)?;
        let meta = fs::symlink_metadata(&local)
            .ok()
            .filter(fs::Metadata::is_file)
            .ok_or_else(|| Error::NotFound {
                path: path.to_owned(),
            })?;
        let conflict = |why: &str| Error::Conflict {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        // A file the cache fetched goes up only over the copy it fetched, checked just before. A new
        // one goes up as a create, which the store refuses when the name is taken: no round trip
        // before it.
        let settle = async |now: ObjectMeta, why: &str| self.settle(path, &local, &meta, &now, why).await;
        let mode = match recorded {
            _ if force => PutMode::Overwrite,
            None => PutMode::Create,
            Some(entry) => match self.store.head(path).await {
                Ok(now) if entry.remote.matches(&now) => PutMode::Overwrite,
                Ok(now) => return settle(now, "the remote copy changed since it was fetched").await,
                Err(snapsync_store::Error::NotFound { .. }) => {
                    return Err(conflict("the remote copy was deleted since it was fetched"));
                }
                Err(e) => return Err(Error::from_store(path, e)),
            },
        };
        let source = PutSource::FileExpecting {
            path: local.clone(),
            size: meta.len(),
            mtime: meta.modified().ok(),
            progress: sent,
        };
        // What the remote then holds is recorded: the next push (or a refresh) compares against it.
        let now = match self.store.put_meta(path, source, mode).await {
            Ok(now) => now,
            Err(snapsync_store::Error::AlreadyExists { .. }) => {
                let now = self
                    .store
                    .head(path)
                    .await
                    .map_err(|e| Error::from_store(path, e))?;
                return settle(now, "the remote has a file of that name the cache never fetched").await;
            }
            Err(e) => return Err(Error::from_store(path, e)),
        };
        let hash = local_hash(&local)?;
        Ok((
            meta.len(),
            Entry::fetched(Remote::of(&now), &meta, hash.to_string()),
        ))
    }

    /// The remote holds `now`, not what the push expected. If that is exactly the local content (a
    /// push killed after its upload, before its record), there is nothing to send, only to record;
    /// otherwise it is a conflict, for the reason `why`.
    async fn settle(
        &self,
        path: &str,
        local: &Path,
        meta: &fs::Metadata,
        now: &ObjectMeta,
        why: &str,
    ) -> Result<(u64, Entry)> {
        if now.size == meta.len() {
            let hash = local_hash(local)?;
            if self.remote_hash(path).await? == hash {
                return Ok((0, Entry::fetched(Remote::of(now), meta, hash.to_string())));
            }
        }
        Err(Error::Conflict {
            path: path.to_owned(),
            why: why.to_owned(),
        })
    }

    /// BLAKE3 of the remote copy of `path`.
    async fn remote_hash(&self, path: &str) -> Result<snapsync_core::Checksum> {
        let mut got = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::from_store(path, e))?;
        let mut hasher = blake3::Hasher::new();
        while let Some(piece) = got
            .stream
            .try_next()
            .await
            .map_err(|e| Error::from_store(path, e))?
        {
            hasher.update(&piece);
        }
        Ok(snapsync_core::Checksum::from(hasher.finalize()))
    }

    /// Every cached or queued file.
    ///
    /// # Errors
    /// When the state cannot be read.
    pub fn status(&self) -> Result<Vec<FileStatus>> {
        let locked = self.locked()?;
        let state = &locked.state;
        let mut paths: Vec<&String> = state.files.keys().chain(&state.queue).collect();
        paths.sort();
        paths.dedup();
        Ok(paths
            .into_iter()
            .map(|path| {
                let size = fs::metadata(self.root.join(path)).map_or(0, |m| m.len());
                let is_stale = state
                    .files
                    .get(path)
                    .is_some_and(|e| self.options.max_age.is_some_and(|age| e.fetched_age() > age));
                FileStatus {
                    path: path.clone(),
                    size,
                    queued: state.queue.contains(path),
                    stale: is_stale,
                    conflict: state.conflicts.get(path).cloned(),
                }
            })
            .collect())
    }

    /// Removes cached files, least recently fetched first, until the cache holds at most `max_bytes`;
    /// queued files and files edited since they were fetched are never removed. The paths removed.
    ///
    /// # Errors
    /// When the state cannot be read or written.
    pub fn evict(&self, max_bytes: u64) -> Result<Vec<String>> {
        let mut locked = self.locked()?;
        let mut held: Vec<(String, u64, i128, bool)> = locked
            .state
            .files
            .iter()
            .map(|(path, entry)| {
                let meta = fs::symlink_metadata(self.root.join(path)).ok();
                let size = meta.as_ref().map_or(0, fs::Metadata::len);
                let removable = !locked.state.queue.contains(path)
                    && meta.as_ref().is_some_and(|m| entry.local_matches(m));
                (path.clone(), size, entry.fetched_ns, removable)
            })
            .collect();
        let mut total: u64 = held.iter().map(|h| h.1).sum();
        held.sort_by_key(|h| h.2);
        let mut removed = Vec::new();
        for (path, size, _, removable) in held {
            if total <= max_bytes {
                break;
            }
            if !removable {
                continue;
            }
            let local = self.root.join(&path);
            match fs::remove_file(&local) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&local, e)),
            }
            locked.state.files.remove(&path);
            total -= size;
            removed.push(path);
        }
        locked.save()?;
        Ok(removed)
    }
}

/// Removes the temporary files a killed write of `target` (a fetch, or the state) left beside it
/// (`.NAME.snapsync-PID-N.tmp` whose process is gone); those of a live process, and every other file,
/// are left alone.
fn remove_dead_temporaries(dir: &Path, target: &Path) {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.snapsync-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(text) = file_name.to_str() else {
            continue;
        };
        let pid = Some(text)
            .filter(|text| text.starts_with(&prefix))
            .and_then(snapsync_core::atomic::temp_pid);
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// BLAKE3 of a local file.
fn local_hash(file: &Path) -> Result<snapsync_core::Checksum> {
    Ok(snapsync_core::hash_file(file).map_err(|e| Error::io(file, e))?.0)
}

/// `SystemTime` as signed nanoseconds since the epoch.
fn to_ns(time: SystemTime) -> i128 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}
