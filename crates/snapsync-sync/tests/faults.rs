//! The sync library driven on its own, against an in-process `memory://` store behind a wrapper that
//! injects faults: a run "crashed" (its future dropped, as a killed process stops) at every step it
//! takes on the remote, before and after the step reaches the store and halfway through a download,
//! each followed by a recovery run; a local file changed between the scan and its transfer; a failed
//! upload in the middle of a plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use snapsync_store::{
    Capabilities, Error as StoreError, GetStream, ObjectMeta, PutMode, PutSource, Result as StoreResult,
    Store, StoreUrl,
};
use snapsync_sync::{Error, Mode, Options, Pair, Summary};

/// Where a [`Faulty`] store stops a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The step never reaches the store.
    Before,
    /// The step is done on the store; its answer never comes back.
    After,
    /// A download stops after its first piece.
    Midway,
}

type Hook = Box<dyn Fn(&str) + Send + Sync>;

/// A store that logs the steps a run takes on it (`get`, `put`, `delete`; lock operations and listings
/// pass through unlogged) and can hang at one of them (the run is then dropped: a crash), fail one,
/// or call a hook before one.
struct Faulty {
    inner: Arc<dyn Store>,
    steps: Mutex<Vec<(&'static str, String)>>,
    crash_at: Option<(usize, Crash)>,
    fail_put: Option<usize>,
    puts: AtomicUsize,
    crashed: tokio::sync::Notify,
    before_put: Option<Hook>,
    before_get: Option<Hook>,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Faulty {
    fn new(inner: Arc<dyn Store>) -> Faulty {
        Faulty {
            inner,
            steps: Mutex::new(Vec::new()),
            crash_at: None,
            fail_put: None,
            puts: AtomicUsize::new(0),
            crashed: tokio::sync::Notify::new(),
            before_put: None,
            before_get: None,
        }
    }

    /// Logs a step; whether the run crashes at it, and how.
    fn step(&self, op: &'static str, key: &str) -> Option<Crash> {
        let mut steps = self.steps.lock().unwrap();
        steps.push((op, key.to_owned()));
        let n = steps.len() - 1;
        self.crash_at.filter(|(at, _)| *at == n).map(|(_, how)| how)
    }

    async fn hang(&self) -> ! {
        self.crashed.notify_one();
        futures::future::pending().await
    }

    fn steps(&self) -> Vec<(&'static str, String)> {
        self.steps.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for Faulty {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list_with_dirs(prefix)
    }
    fn list_leftovers(&self) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list_leftovers()
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetStream> {
        if let Some(hook) = &self.before_get {
            hook(key);
        }
        match self.step("get", key) {
            Some(Crash::Before | Crash::After) => self.hang().await,
            Some(Crash::Midway) => {
                let mut got = self.inner.get(key).await?;
                let first = got.stream.try_next().await?.unwrap_or_default();
                let half = first.slice(..first.len() / 2);
                self.crashed.notify_one();
                got.stream = futures::stream::once(async move { Ok(half) })
                    .chain(futures::stream::pending())
                    .boxed();
                Ok(got)
            }
            None => self.inner.get(key).await,
        }
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> StoreResult<()> {
        if let Some(hook) = &self.before_put {
            hook(key);
        }
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        let crash = self.step("put", key);
        if self.fail_put == Some(n) {
            return Err(StoreError::PermissionDenied {
                location: self.inner.url().with_key(key),
                source: "injected: the server refused this file".into(),
            });
        }
        if crash == Some(Crash::Before) {
            self.hang().await;
        }
        self.inner.put(key, source, mode).await?;
        if crash.is_some() {
            self.hang().await;
        }
        Ok(())
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        let crash = self.step("delete", key);
        if crash == Some(Crash::Before) {
            self.hang().await;
        }
        self.inner.delete(key).await?;
        if crash.is_some() {
            self.hang().await;
        }
        Ok(())
    }
    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.rename(from, to).await
    }
    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> StoreResult<()> {
        self.inner.set_mtime(key, mtime).await
    }
    async fn create_dir(&self, key: &str) -> StoreResult<()> {
        self.inner.create_dir(key).await
    }
    async fn remove_empty_dir(&self, key: &str) -> StoreResult<bool> {
        self.inner.remove_empty_dir(key).await
    }
    async fn root_exists(&self) -> StoreResult<bool> {
        self.inner.root_exists().await
    }
    async fn create_root(&self) -> StoreResult<()> {
        self.inner.create_root().await
    }
    async fn lock_create(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.inner.lock_create(key, body).await
    }
    async fn lock_read(&self, key: &str) -> StoreResult<Bytes> {
        self.inner.lock_read(key).await
    }
    async fn lock_update(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.inner.lock_update(key, body).await
    }
    async fn lock_remove(&self, key: &str) -> StoreResult<()> {
        self.inner.lock_remove(key).await
    }
    async fn lock_rename(&self, key: &str, to: &str) -> StoreResult<()> {
        self.inner.lock_rename(key, to).await
    }
}

/// A lock that goes stale quickly once its run is gone, so the recovery run can follow at once.
const LOCK_TIMEOUT: Duration = Duration::from_millis(300);

fn options(mode: Mode) -> Options {
    // One transfer at a time: the steps come in plan order, so a crash point names one state.
    Options::builder(mode)
        .jobs(std::num::NonZeroUsize::new(1))
        .lock_timeout(LOCK_TIMEOUT)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn memory(name: &str) -> Arc<dyn Store> {
    // No retries: a fault the wrapper injects must reach the run as it is.
    let options = snapsync_store::ConnectOptions::default().with_retry(None);
    snapsync_store::open(&StoreUrl::parse(&format!("memory://{name}")).unwrap(), &options).unwrap()
}

/// One pair: a local folder (and the state directory, both in a temporary directory) and a memory
/// remote.
struct Setup {
    dir: tempfile::TempDir,
    remote: Arc<dyn Store>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("local")).unwrap();
        Setup {
            dir,
            remote: memory(name),
        }
    }

    fn local(&self) -> std::path::PathBuf {
        self.dir.path().join("local")
    }

    /// Runs `mode` through `store` (the remote, or a wrapper of it), to the end.
    async fn run(&self, store: Arc<dyn Store>, options: Options) -> snapsync_sync::Result<Summary> {
        // The state lives outside the folder, under this test's own directory.
        let pair = Pair::new(self.local(), store, options);
        let prepared = pair.prepare().await?;
        pair.execute(prepared, None, &|_| {}).await
    }

    async fn remote_tree(&self) -> BTreeMap<String, Vec<u8>> {
        let mut tree = BTreeMap::new();
        let listed: Vec<ObjectMeta> = self.remote.list("").try_collect().await.unwrap();
        for meta in listed {
            if meta.key.starts_with(snapsync_store::LOCK_PREFIX) {
                continue;
            }
            let got = self.remote.get(&meta.key).await.unwrap();
            let bytes: Vec<Bytes> = got.stream.try_collect().await.unwrap();
            tree.insert(meta.key, bytes.concat());
        }
        tree
    }

    fn local_tree(&self) -> BTreeMap<String, Vec<u8>> {
        let mut tree = BTreeMap::new();
        for entry in fs::read_dir(self.local()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            match fs::read(entry.path()) {
                Ok(bytes) => drop(tree.insert(name, bytes)),
                // The dropped run's blocking task may still be making or removing its temporary
                // file (a killed process's would stay): gone between the listing and the read.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && snapsync_store::is_temp_name(std::ffi::OsStr::new(&name)) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
        tree
    }
}

/// Every path's acceptable contents after a crash: its version before the run and after it (`None`:
/// no file).
type Versions = BTreeMap<&'static str, [Option<&'static str>; 2]>;

/// A pair synced once, then changed on both sides: the next run deletes one file on each side,
/// uploads an edit and a new file, and downloads an edit and a new file.
async fn changed_on_both_sides(setup: &Setup) -> Versions {
    let local = setup.local();
    for name in ["keep", "edit-here", "edit-there", "delete-here", "delete-there"] {
        fs::write(local.join(format!("{name}.txt")), format!("v1 of {name}")).unwrap();
    }
    setup
        .run(Arc::clone(&setup.remote), options(Mode::Sync))
        .await
        .unwrap();
    fs::write(local.join("edit-here.txt"), "v2 of edit-here, edited locally").unwrap();
    fs::write(local.join("new-here.txt"), "new here").unwrap();
    fs::remove_file(local.join("delete-here.txt")).unwrap();
    let put = |key: &'static str, text: &'static str| {
        setup
            .remote
            .put(key, PutSource::Bytes(Bytes::from(text)), PutMode::Overwrite)
    };
    put("edit-there.txt", "v2 of edit-there, edited remotely")
        .await
        .unwrap();
    put("new-there.txt", "new there").await.unwrap();
    setup.remote.delete("delete-there.txt").await.unwrap();
    BTreeMap::from([
        ("keep.txt", [Some("v1 of keep"), Some("v1 of keep")]),
        (
            "edit-here.txt",
            [Some("v1 of edit-here"), Some("v2 of edit-here, edited locally")],
        ),
        (
            "edit-there.txt",
            [
                Some("v1 of edit-there"),
                Some("v2 of edit-there, edited remotely"),
            ],
        ),
        ("new-here.txt", [None, Some("new here")]),
        ("new-there.txt", [None, Some("new there")]),
        ("delete-here.txt", [Some("v1 of delete-here"), None]),
        ("delete-there.txt", [Some("v1 of delete-there"), None]),
    ])
}

/// Checks that every file under a final name on `tree` is its old or its new version, and that no
/// other file is there but temporary ones (`temp_ok`).
fn old_or_new(side: &str, tree: &BTreeMap<String, Vec<u8>>, versions: &Versions, temp_ok: bool) {
    for (path, bytes) in tree {
        if temp_ok && snapsync_store::is_temp_name(std::ffi::OsStr::new(path)) {
            continue;
        }
        let allowed = versions
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{side}: unexpected file {path}"));
        assert!(
            allowed.iter().flatten().any(|v| v.as_bytes() == bytes.as_slice()),
            "{side}: {path} is neither its old nor its new version: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn finished(versions: &Versions) -> BTreeMap<String, Vec<u8>> {
    versions
        .iter()
        .filter_map(|(path, [_, new])| new.map(|v| ((*path).to_owned(), v.as_bytes().to_vec())))
        .collect()
}

fn nothing_done(summary: &Summary) -> bool {
    summary.uploaded + summary.downloaded + summary.deleted_local + summary.deleted_remote == 0
        && summary.conflicts.is_empty()
        && summary.failed.is_empty()
}

#[test]
fn a_run_crashed_at_any_step_leaves_files_old_or_new_and_the_next_run_replays_its_journal() {
    let rt = runtime();
    // The steps of an uninterrupted run, to crash at each in turn.
    let steps = rt.block_on(async {
        let setup = Setup::new("steps");
        changed_on_both_sides(&setup).await;
        let faulty = Arc::new(Faulty::new(Arc::clone(&setup.remote)));
        let summary = setup
            .run(Arc::clone(&faulty) as Arc<dyn Store>, options(Mode::Sync))
            .await
            .unwrap();
        assert_eq!(
            (
                summary.uploaded,
                summary.downloaded,
                summary.deleted_local,
                summary.deleted_remote
            ),
            (2, 2, 1, 1)
        );
        faulty.steps()
    });
    assert_eq!(
        steps.iter().map(|(op, _)| *op).collect::<Vec<_>>(),
        ["delete", "put", "get", "put", "get"],
        "{steps:?}"
    );
    let mut crashes = Vec::new();
    for (at, (op, _)) in steps.iter().enumerate() {
        let ways: &[Crash] = if *op == "get" {
            &[Crash::Before, Crash::Midway]
        } else {
            &[Crash::Before, Crash::After]
        };
        crashes.extend(ways.iter().map(|how| (at, *how)));
    }
    for (at, how) in crashes {
        let context = format!("crash at step {at} ({:?}) {how:?}", steps[at]);
        rt.block_on(async {
            let setup = Setup::new(&format!("crash-{at}-{how:?}"));
            let versions = changed_on_both_sides(&setup).await;
            let mut faulty = Faulty::new(Arc::clone(&setup.remote));
            faulty.crash_at = Some((at, how));
            let faulty = Arc::new(faulty);
            let run = setup.run(Arc::clone(&faulty) as Arc<dyn Store>, options(Mode::Sync));
            tokio::select! {
                outcome = run => panic!("{context}: the run ended ({outcome:?}) instead of hanging"),
                () = faulty.crashed.notified() => {}
            }
            // The run is gone (its future dropped, as a killed process stops). Every file is old or
            // new; only a download cut short may leave a temporary file.
            old_or_new("local", &setup.local_tree(), &versions, true);
            old_or_new("remote", &setup.remote_tree().await, &versions, false);
            // The steps the crashed run finished are in its journal: the recovery run does not
            // touch those paths again (without the journal it would compare them, reading them).
            let done: BTreeSet<String> = faulty.steps()[..at].iter().map(|(_, k)| k.clone()).collect();
            tokio::time::sleep(LOCK_TIMEOUT * 2).await;
            let recovery = Arc::new(Faulty::new(Arc::clone(&setup.remote)));
            let summary = setup
                .run(Arc::clone(&recovery) as Arc<dyn Store>, options(Mode::Sync))
                .await
                .unwrap_or_else(|e| panic!("{context}: the recovery run failed: {e}"));
            assert!(
                summary.failed.is_empty() && summary.conflicts.is_empty(),
                "{context}: {summary:?}"
            );
            for (op, key) in recovery.steps() {
                assert!(
                    !done.contains(&key),
                    "{context}: the recovery run did {op} {key} again"
                );
            }
            let expected = finished(&versions);
            let local: BTreeMap<String, Vec<u8>> = setup
                .local_tree()
                .into_iter()
                .filter(|(p, _)| !snapsync_store::is_temp_name(std::ffi::OsStr::new(p)))
                .collect();
            assert_eq!(local, expected, "{context}: local");
            assert_eq!(setup.remote_tree().await, expected, "{context}: remote");
            let again = setup
                .run(Arc::clone(&setup.remote), options(Mode::Sync))
                .await
                .unwrap();
            assert!(
                nothing_done(&again),
                "{context}: a third run still had work: {again:?}"
            );
        });
    }
}

#[test]
fn a_local_file_changed_between_scan_and_upload_is_not_published() {
    let rt = runtime();
    rt.block_on(async {
        let setup = Setup::new("changed-before-upload");
        let file = setup.local().join("doc.txt");
        fs::write(&file, "version 1").unwrap();
        setup
            .run(Arc::clone(&setup.remote), options(Mode::Upload))
            .await
            .unwrap();
        fs::write(&file, "version 2").unwrap();
        let mut faulty = Faulty::new(Arc::clone(&setup.remote));
        let edited = file.clone();
        // The user saves again after the scan, just before the upload starts.
        faulty.before_put = Some(Box::new(move |_| {
            fs::write(&edited, "version 3, longer").unwrap();
        }));
        let summary = setup.run(Arc::new(faulty), options(Mode::Upload)).await.unwrap();
        assert_eq!(summary.uploaded, 0, "{summary:?}");
        let [failure] = summary.failed.as_slice() else {
            panic!("{summary:?}")
        };
        assert_eq!(failure.path, "doc.txt");
        assert!(
            matches!(*failure.error, Error::Changed { side: "local", .. }),
            "{}",
            failure.error
        );
        assert_eq!(setup.remote_tree().await["doc.txt"], b"version 1");
        // The next run sends the version the user ended with.
        let summary = setup
            .run(Arc::clone(&setup.remote), options(Mode::Upload))
            .await
            .unwrap();
        assert_eq!(summary.uploaded, 1);
        assert_eq!(setup.remote_tree().await["doc.txt"], b"version 3, longer");
    });
}

#[test]
fn a_local_file_changed_while_its_download_runs_is_kept_and_becomes_a_conflict() {
    let rt = runtime();
    rt.block_on(async {
        let setup = Setup::new("changed-during-download");
        let file = setup.local().join("doc.txt");
        fs::write(&file, "version 1").unwrap();
        setup
            .run(Arc::clone(&setup.remote), options(Mode::Sync))
            .await
            .unwrap();
        setup
            .remote
            .put(
                "doc.txt",
                PutSource::Bytes(Bytes::from("remote version 2")),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let mut faulty = Faulty::new(Arc::clone(&setup.remote));
        let edited = file.clone();
        faulty.before_get = Some(Box::new(move |_| {
            fs::write(&edited, "local edit made during the run").unwrap();
        }));
        let summary = setup.run(Arc::new(faulty), options(Mode::Sync)).await.unwrap();
        assert_eq!(summary.downloaded, 0, "{summary:?}");
        assert_eq!(summary.failed.len(), 1, "{summary:?}");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "local edit made during the run"
        );
        // Both sides changed since the last sync: the next run calls it a conflict, loses neither.
        let summary = setup
            .run(Arc::clone(&setup.remote), options(Mode::Sync))
            .await
            .unwrap();
        assert_eq!(summary.conflicts.len(), 1, "{summary:?}");
        assert_eq!(summary.conflicts[0].path, "doc.txt");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "local edit made during the run"
        );
        assert_eq!(setup.remote_tree().await["doc.txt"], b"remote version 2");
    });
}

#[test]
fn a_failed_upload_in_the_middle_of_a_plan_fails_alone_and_is_retried_next_run() {
    let rt = runtime();
    rt.block_on(async {
        let setup = Setup::new("failed-upload");
        for i in 0..5 {
            fs::write(setup.local().join(format!("f{i}.txt")), format!("file {i}")).unwrap();
        }
        let mut faulty = Faulty::new(Arc::clone(&setup.remote));
        faulty.fail_put = Some(2);
        let summary = setup.run(Arc::new(faulty), options(Mode::Upload)).await.unwrap();
        assert_eq!(summary.uploaded, 4, "{summary:?}");
        let [failure] = summary.failed.as_slice() else {
            panic!("{summary:?}")
        };
        assert_eq!(failure.path, "f2.txt");
        assert!(
            matches!(*failure.error, Error::Store(StoreError::PermissionDenied { .. })),
            "{}",
            failure.error
        );
        let remote = setup.remote_tree().await;
        assert_eq!(
            remote.keys().map(String::as_str).collect::<Vec<_>>(),
            ["f0.txt", "f1.txt", "f3.txt", "f4.txt"]
        );
        // The others were recorded: the next run sends only the one that failed.
        let retry = Arc::new(Faulty::new(Arc::clone(&setup.remote)));
        let summary = setup
            .run(Arc::clone(&retry) as Arc<dyn Store>, options(Mode::Upload))
            .await
            .unwrap();
        assert_eq!(summary.uploaded, 1, "{summary:?}");
        assert_eq!(retry.steps(), [("put", "f2.txt".to_owned())]);
        assert_eq!(setup.remote_tree().await.len(), 5);
    });
}

#[test]
fn a_remote_missing_at_the_start_is_an_error_and_nothing_is_changed() {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), "a").unwrap();
        let missing: Arc<dyn Store> = Arc::new(snapsync_store::LocalStore::new(StoreUrl::local(
            &dir.path().join("not-there"),
        )));
        let pair = Pair::new(dir.path().to_owned(), missing, options(Mode::Sync));
        let error = pair.prepare().await.unwrap_err();
        assert!(matches!(error, Error::MissingRemote { .. }), "{error}");
        assert!(dir.path().join("a.txt").exists());
        assert!(!Path::new(&dir.path().join("not-there")).exists());
    });
}

fn cancellable(mode: Mode, cancel: &snapsync_sync::Cancel) -> Options {
    Options::builder(mode)
        .jobs(std::num::NonZeroUsize::new(1))
        .lock_timeout(LOCK_TIMEOUT)
        .cancel(cancel.clone())
        .build()
        .unwrap()
}

/// Keys of the remote's lock (none once a run let go of it).
async fn lock_keys(store: &dyn Store) -> Vec<String> {
    let listed: Vec<ObjectMeta> = store.list("").try_collect().await.unwrap();
    listed
        .into_iter()
        .map(|m| m.key)
        .filter(|k| k.starts_with(snapsync_store::LOCK_PREFIX))
        .collect()
}

#[test]
fn a_run_cancelled_at_any_step_stops_cleanly_and_the_next_run_sends_only_the_rest() {
    let rt = runtime();
    // The same five steps as above: delete, put, get, put, get.
    for at in 0..5 {
        let how = if at % 2 == 0 { Crash::Midway } else { Crash::After };
        let context = format!("cancelled at step {at} ({how:?})");
        rt.block_on(async {
            let setup = Setup::new(&format!("cancel-{at}"));
            let versions = changed_on_both_sides(&setup).await;
            let mut faulty = Faulty::new(Arc::clone(&setup.remote));
            // A delete has no midway: it stops after the store did it, as a put does.
            faulty.crash_at = Some((at, if at == 0 { Crash::After } else { how }));
            let faulty = Arc::new(faulty);
            let cancel = snapsync_sync::Cancel::new();
            let run = setup.run(
                Arc::clone(&faulty) as Arc<dyn Store>,
                cancellable(Mode::Sync, &cancel),
            );
            tokio::pin!(run);
            // The run hangs in its step (a slow transfer); Ctrl-C comes.
            tokio::select! {
                outcome = &mut run => panic!("{context}: the run ended ({outcome:?}) before its step"),
                () = faulty.crashed.notified() => {}
            }
            cancel.cancel();
            let outcome = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .unwrap_or_else(|_| panic!("{context}: the cancelled run did not stop"));
            assert!(matches!(outcome, Err(Error::Cancelled)), "{context}: {outcome:?}");
            // No temporary file anywhere, every file old or new, no lock.
            old_or_new("local", &setup.local_tree(), &versions, false);
            old_or_new("remote", &setup.remote_tree().await, &versions, false);
            assert_eq!(lock_keys(&*setup.remote).await, Vec::<String>::new(), "{context}");
            // The steps it finished are recorded: the next run, started at once (the lock is free),
            // does not touch them again, and converges.
            let done: BTreeSet<String> = faulty.steps()[..at].iter().map(|(_, k)| k.clone()).collect();
            let next = Arc::new(Faulty::new(Arc::clone(&setup.remote)));
            let summary = setup
                .run(Arc::clone(&next) as Arc<dyn Store>, options(Mode::Sync))
                .await
                .unwrap_or_else(|e| panic!("{context}: the next run failed: {e}"));
            assert!(
                summary.failed.is_empty() && summary.conflicts.is_empty(),
                "{context}: {summary:?}"
            );
            for (op, key) in next.steps() {
                assert!(
                    !done.contains(&key),
                    "{context}: the next run did {op} {key} again"
                );
            }
            let expected = finished(&versions);
            assert_eq!(setup.local_tree(), expected, "{context}: local");
            assert_eq!(setup.remote_tree().await, expected, "{context}: remote");
        });
    }
}

#[test]
fn a_run_cancelled_before_it_starts_changes_nothing_and_holds_no_lock() {
    runtime().block_on(async {
        let setup = Setup::new("cancel-early");
        let versions = changed_on_both_sides(&setup).await;
        let cancel = snapsync_sync::Cancel::new();
        cancel.cancel();
        let faulty = Arc::new(Faulty::new(Arc::clone(&setup.remote)));
        let outcome = setup
            .run(
                Arc::clone(&faulty) as Arc<dyn Store>,
                cancellable(Mode::Sync, &cancel),
            )
            .await;
        assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
        assert_eq!(faulty.steps(), Vec::new());
        assert_eq!(lock_keys(&*setup.remote).await, Vec::<String>::new());
        // Nothing was done: the next run has all of it to do.
        let summary = setup
            .run(Arc::clone(&setup.remote), options(Mode::Sync))
            .await
            .unwrap();
        assert_eq!(
            (
                summary.uploaded,
                summary.downloaded,
                summary.deleted_local,
                summary.deleted_remote
            ),
            (2, 2, 1, 1)
        );
        let expected = finished(&versions);
        assert_eq!(setup.local_tree(), expected);
        assert_eq!(setup.remote_tree().await, expected);
    });
}
