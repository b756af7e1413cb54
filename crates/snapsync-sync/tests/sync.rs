//! The sync library driven directly: runs racing for one remote's lock (through a store wrapper that
//! widens the race), a lock that is renewed while its run lives, and the plan's guards against
//! deleting what a run could not see.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use snapsync_store::{
    Capabilities, GetStream, LocalStore, ObjectMeta, PutMode, PutSource, Result as StoreResult, Store,
    StoreUrl,
};
use snapsync_sync::{Error, Mode, Options, Pair};

/// A store that sleeps before every lock operation and rename, for a time that varies from call to
/// call (0 to 4 times `delay`), so that runs taking the lock at the same moment interleave at every
/// step, in ever other orders.
#[derive(Debug)]
struct Slow {
    inner: Arc<dyn Store>,
    delay: Duration,
    calls: std::sync::atomic::AtomicU32,
}

impl Slow {
    fn new(inner: Arc<dyn Store>, delay: Duration) -> Slow {
        Slow {
            inner,
            delay,
            calls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    async fn pause(&self) {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.delay * (call.wrapping_mul(2_654_435_761) >> 29 & 3)).await;
    }
}

#[async_trait]
impl Store for Slow {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_leftovers(&self) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list_leftovers()
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetStream> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> StoreResult<()> {
        self.inner.put(key, source, mode).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        self.pause().await;
        self.inner.rename(from, to).await
    }
    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> StoreResult<()> {
        self.inner.set_mtime(key, mtime).await
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
        self.pause().await;
        self.inner.lock_create(key, body).await
    }
    async fn lock_read(&self, key: &str) -> StoreResult<Bytes> {
        self.pause().await;
        self.inner.lock_read(key).await
    }
    async fn lock_update(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.pause().await;
        self.inner.lock_update(key, body).await
    }
    async fn lock_remove(&self, key: &str) -> StoreResult<()> {
        self.pause().await;
        self.inner.lock_remove(key).await
    }
    async fn lock_rename(&self, key: &str, to: &str) -> StoreResult<()> {
        self.pause().await;
        self.inner.lock_rename(key, to).await
    }
}

fn config(mode: Mode) -> Options {
    Options::new(mode)
}

fn with_lock_timeout(mode: Mode, timeout: Duration, break_lock: bool) -> Options {
    Options::builder(mode)
        .lock_timeout(timeout)
        .break_lock(break_lock)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn local_store(root: &Path) -> Arc<dyn Store> {
    Arc::new(LocalStore::new(StoreUrl::local(root)))
}

/// Two local folders with a file each, syncing to one remote folder.
struct Race {
    _dirs: tempfile::TempDir,
    remote: PathBuf,
    locals: [PathBuf; 2],
}

fn race() -> Race {
    let dirs = tempfile::tempdir().unwrap();
    let remote = dirs.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    let locals = [dirs.path().join("a"), dirs.path().join("b")];
    for (i, local) in locals.iter().enumerate() {
        fs::create_dir_all(local).unwrap();
        fs::write(local.join(format!("from-{i}.txt")), "x").unwrap();
    }
    Race {
        _dirs: dirs,
        remote,
        locals,
    }
}

/// Prepares both runs at once and counts how many got the lock; the winners' runs are carried out.
async fn both_prepare(store: &Arc<dyn Store>, race: &Race, config: &Options) -> usize {
    let pairs: Vec<Pair> = race
        .locals
        .iter()
        .map(|local| Pair::new(local.clone(), Arc::clone(store), config.clone()))
        .collect();
    let (a, b) = tokio::join!(pairs[0].prepare(), pairs[1].prepare());
    let mut winners = 0;
    for (pair, outcome) in pairs.iter().zip([a, b]) {
        match outcome {
            Ok(prepared) => {
                winners += 1;
                pair.execute(prepared, None, &|_| {}).await.unwrap();
            }
            Err(Error::Locked { .. }) => {}
            Err(other) => panic!("neither locked nor run: {other}"),
        }
    }
    winners
}

#[test]
fn of_two_runs_started_at_once_exactly_one_proceeds() {
    let rt = runtime();
    for iteration in 0..25 {
        let race = race();
        let store: Arc<dyn Store> = Arc::new(Slow::new(
            local_store(&race.remote),
            Duration::from_millis(1 + iteration % 5),
        ));
        let winners = rt.block_on(both_prepare(&store, &race, &config(Mode::Sync)));
        assert_eq!(winners, 1, "iteration {iteration}");
        assert!(!race.remote.join(".snapsync-lock").exists(), "the lock was left");
    }
}

#[test]
fn of_two_runs_taking_over_a_stale_lock_exactly_one_proceeds() {
    let rt = runtime();
    for iteration in 0..25 {
        let race = race();
        // A lock of a run on another machine, not renewed for two hours.
        let old = SystemTime::now() - Duration::from_hours(2);
        let ns = old.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        fs::write(
            race.remote.join(".snapsync-lock"),
            format!(r#"{{"token":"dead","host":"elsewhere","pid":1,"started_ns":{ns},"renewed_ns":{ns}}}"#),
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(Slow::new(
            local_store(&race.remote),
            Duration::from_millis(1 + iteration % 7),
        ));
        let winners = rt.block_on(both_prepare(&store, &race, &config(Mode::Sync)));
        assert_eq!(winners, 1, "iteration {iteration}");
        let left: Vec<String> = fs::read_dir(&race.remote)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".snapsync-lock"))
            .collect();
        assert!(left.is_empty(), "locks left behind: {left:?}");
    }
}

#[test]
fn a_live_run_renews_its_lock_so_it_is_never_taken_over_as_stale() {
    let rt = runtime();
    let race = race();
    let store = local_store(&race.remote);
    let short = with_lock_timeout(Mode::Sync, Duration::from_millis(800), false);
    rt.block_on(async {
        let first = Pair::new(race.locals[0].clone(), Arc::clone(&store), short.clone());
        let prepared = first.prepare().await.unwrap();
        // Longer than the timeout: without renewal the lock would be stale by now.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let second = Pair::new(race.locals[1].clone(), Arc::clone(&store), short.clone());
        match second.prepare().await {
            Err(Error::Locked { holder, .. }) => assert!(holder.contains("renewed"), "{holder}"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a live run's lock was taken over"),
        }
        first.execute(prepared, None, &|_| {}).await.unwrap();
    });
    assert!(race.remote.join("from-0.txt").exists());
}

#[test]
fn a_run_whose_lock_was_taken_over_starts_nothing_more() {
    let rt = runtime();
    let race = race();
    let store = local_store(&race.remote);
    let short = with_lock_timeout(Mode::Upload, Duration::from_millis(400), false);
    rt.block_on(async {
        let first = Pair::new(race.locals[0].clone(), Arc::clone(&store), short.clone());
        let prepared = first.prepare().await.unwrap();
        // Another run breaks the lock (as --break-lock does).
        let breaking = with_lock_timeout(Mode::Upload, Duration::from_millis(400), true);
        let second = Pair::new(race.locals[1].clone(), Arc::clone(&store), breaking);
        let taken = second.prepare().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        match first.execute(prepared, None, &|_| {}).await {
            Err(Error::LockLost { .. }) => {}
            other => panic!("the first run went on: {other:?}"),
        }
        assert!(
            !race.remote.join("from-0.txt").exists(),
            "it uploaded without the lock"
        );
        second.execute(taken, None, &|_| {}).await.unwrap();
    });
    assert!(race.remote.join("from-1.txt").exists());
}

/// The same races against real FTP servers, where the lock is a directory made with `MKD`.
#[test]
fn over_ftp_of_two_runs_exactly_one_proceeds() {
    use snapsync_testkit::{FtpFlavor, FtpServer};
    let rt = runtime();
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start(flavor, false);
        for iteration in 0..10 {
            let race = race();
            let site = format!("site{iteration}");
            fs::create_dir_all(server.root().join(&site)).unwrap();
            if iteration % 2 == 1 {
                // A stale lock of a run on another machine, to be taken over by one of the two.
                let lock = server.root().join(&site).join(".snapsync-lock");
                fs::create_dir_all(&lock).unwrap();
                fs::write(
                    lock.join("owner"),
                    r#"{"token":"dead","host":"elsewhere","pid":1,"started_ns":1,"renewed_ns":1}"#,
                )
                .unwrap();
            }
            server.give(&server.root().join(&site));
            let url = StoreUrl::parse(&server.url(&site)).unwrap();
            let options = snapsync_store::ConnectOptions::default().with_retry(None);
            let inner = snapsync_store::open(&url, &options).unwrap();
            let store: Arc<dyn Store> = Arc::new(Slow::new(inner, Duration::from_millis(1 + iteration % 3)));
            let winners = rt.block_on(both_prepare(&store, &race, &config(Mode::Sync)));
            assert_eq!(winners, 1, "{flavor:?}, iteration {iteration}");
            let left: Vec<String> = fs::read_dir(server.root().join(&site))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".snapsync-lock"))
                .collect();
            assert!(left.is_empty(), "{flavor:?}: locks left behind: {left:?}");
        }
    }
}

#[test]
fn transfers_report_their_bytes_as_they_move() {
    let dirs = tempfile::tempdir().unwrap();
    let (local, remote) = (dirs.path().join("local"), dirs.path().join("remote"));
    fs::create_dir_all(&local).unwrap();
    fs::create_dir_all(&remote).unwrap();
    let size = 12 << 20;
    fs::write(remote.join("big.bin"), vec![7u8; size]).unwrap();
    let pair = Pair::new(local.clone(), local_store(&remote), config(Mode::Download));
    let pieces = std::sync::Mutex::new(Vec::new());
    runtime().block_on(async {
        let prepared = pair.prepare().await.unwrap();
        let report = |event: snapsync_sync::Event<'_>| {
            if let snapsync_sync::Event::Moved { bytes, .. } = event {
                pieces.lock().unwrap().push(bytes);
            }
        };
        pair.execute(prepared, None, &report).await.unwrap();
    });
    let pieces = pieces.into_inner().unwrap();
    assert!(
        pieces.len() > 1,
        "the whole file was reported at once: {pieces:?}"
    );
    assert_eq!(pieces.iter().sum::<u64>(), size as u64);
    assert_eq!(fs::read(local.join("big.bin")).unwrap().len(), size);
    // An upload's bytes are counted by the store as it reads them, and add up to the file.
    fs::write(local.join("up.bin"), vec![9u8; size]).unwrap();
    let pair = Pair::new(local.clone(), local_store(&remote), config(Mode::Upload));
    let moved = std::sync::atomic::AtomicU64::new(0);
    runtime().block_on(async {
        let prepared = pair.prepare().await.unwrap();
        let report = |event: snapsync_sync::Event<'_>| {
            if let snapsync_sync::Event::Moved { item, bytes } = event {
                assert_eq!(item.path, "up.bin");
                moved.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            }
        };
        pair.execute(prepared, None, &report).await.unwrap();
    });
    assert_eq!(moved.into_inner(), size as u64);
}
