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

/// 2014-01-01 12:00:00 UTC: old enough for any safety age.
const OLD: u64 = 1_388_577_600;

/// Writes `rel` below `root` with `content`, dated `time` seconds after 1970 (now when `None`).
fn put_file(root: &Path, rel: &str, content: &str, time: Option<u64>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    if let Some(time) = time {
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(time))
            .unwrap();
    }
}

/// A remote tree as a killed run leaves it: files, folders, an excluded `.git`, two temporary files
/// (an old one of a killed upload, one being written now) and a lock.
fn leave_a_tree(root: &Path) {
    put_file(root, "a.txt", "aaa", Some(OLD));
    put_file(root, "sub/b.txt", "bb", Some(OLD));
    put_file(root, "sub/deep/c.html", "<p>", Some(OLD));
    put_file(root, ".git/HEAD", "ref", Some(OLD));
    put_file(root, "sub/.b.txt.snapsync-4242-1f.tmp", "torn", Some(OLD));
    put_file(root, ".a.txt.snapsync-4243-2.tmp", "in flight", None);
    // Named like a temporary file, but without a process id: not unambiguously snapsync's.
    put_file(root, ".mine.snapsync-x-1.tmp", "user's", Some(OLD));
}

fn paths(entries: &[snapsync_sync::RemoteEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match e.kind {
            snapsync_sync::EntryKind::Dir => format!("{}/", e.path),
            snapsync_sync::EntryKind::File => e.path.clone(),
        })
        .collect()
}

/// Lists the remote (top level, recursive, matched), removes its leftovers and locks as `scan` does,
/// and checks what is left on disk in `root`; `lock` is where a lock's body is written (a file, or
/// FTP's `owner` file in a directory), `settle` makes written files the server user's.
async fn scan_and_clean(store: &dyn Store, root: &Path, lock: &Path, settle: &dyn Fn()) {
    let filter = Options::new(Mode::Upload).filter().clone();
    leave_a_tree(root);
    settle();
    let top = snapsync_sync::list_remote(store, &filter, false).await.unwrap();
    assert_eq!(paths(&top), ["a.txt", "sub/"]);
    assert_eq!(top[0].size, 3);
    assert_eq!(
        top[0]
            .modified
            .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()),
        Some(OLD)
    );
    let all = snapsync_sync::list_remote(store, &filter, true).await.unwrap();
    assert_eq!(
        paths(&all),
        ["a.txt", "sub/", "sub/b.txt", "sub/deep/", "sub/deep/c.html"]
    );
    let html = Options::builder(Mode::Upload)
        .matches(["*.html"])
        .build()
        .unwrap();
    let top_matched = snapsync_sync::list_remote(store, html.filter(), false)
        .await
        .unwrap();
    assert_eq!(
        paths(&top_matched),
        ["sub/"],
        "a folder's content is not listed at the top"
    );
    let matched = snapsync_sync::list_remote(store, html.filter(), true)
        .await
        .unwrap();
    assert_eq!(paths(&matched), ["sub/", "sub/deep/", "sub/deep/c.html"]);

    // Temporary files: only the old one of a killed write goes; a dry run removes nothing.
    let hour = Duration::from_hours(1);
    let planned = snapsync_sync::remove_leftovers(store, hour, true).await.unwrap();
    assert_eq!(
        planned
            .removed
            .iter()
            .map(|l| l.path.as_str())
            .collect::<Vec<_>>(),
        ["sub/.b.txt.snapsync-4242-1f.tmp"]
    );
    assert_eq!(planned.removed[0].pid, 4242);
    assert!(root.join("sub/.b.txt.snapsync-4242-1f.tmp").exists());
    let done = snapsync_sync::remove_leftovers(store, hour, false).await.unwrap();
    assert_eq!(done, planned);
    assert_eq!(done.kept.len(), 1, "{:?}", done.kept);
    assert_eq!(done.kept[0].0.path, ".a.txt.snapsync-4243-2.tmp");
    assert!(!root.join("sub/.b.txt.snapsync-4242-1f.tmp").exists());
    assert!(root.join(".a.txt.snapsync-4243-2.tmp").exists());
    assert!(root.join(".mine.snapsync-x-1.tmp").exists());
    assert!(root.join("a.txt").exists() && root.join("sub/b.txt").exists());

    // No lock: nothing to do.
    assert_eq!(
        snapsync_sync::remove_stale(store, DEFAULT_TIMEOUT, false)
            .await
            .unwrap(),
        None
    );
    // A live run's lock (this process, renewed now) is refused and left.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let live = format!(
        r#"{{"token":"live","host":"{}","pid":{},"started_ns":{now}}}"#,
        host.trim(),
        std::process::id()
    );
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(lock, &live).unwrap();
    settle();
    let refused = snapsync_sync::remove_stale(store, DEFAULT_TIMEOUT, false).await;
    assert!(matches!(refused, Err(Error::Locked { .. })), "{refused:?}");
    assert_eq!(fs::read_to_string(lock).unwrap(), live);
    // A dead run's lock (not renewed for longer than the timeout) goes; a dry run leaves it.
    fs::write(
        lock,
        r#"{"token":"dead","host":"elsewhere","pid":42,"started_ns":1000}"#,
    )
    .unwrap();
    settle();
    let planned = snapsync_sync::remove_stale(store, DEFAULT_TIMEOUT, true)
        .await
        .unwrap();
    assert!(lock.exists());
    let removed = snapsync_sync::remove_stale(store, DEFAULT_TIMEOUT, false)
        .await
        .unwrap();
    let removed = removed.expect("the lock was removed");
    let planned = planned.expect("a dry run says it would remove the lock");
    assert_eq!(
        (&removed.location, &removed.holder, &removed.reason),
        (&planned.location, &planned.holder, &planned.reason)
    );
    assert_eq!(
        removed.holder.map(|h| (h.host, h.pid)),
        Some(("elsewhere".into(), 42))
    );
    assert!(removed.reason.contains("not renewed"), "{}", removed.reason);
    let left: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".snapsync-lock"))
        .collect();
    assert!(left.is_empty(), "locks left behind: {left:?}");
}

const DEFAULT_TIMEOUT: Duration = snapsync_sync::DEFAULT_LOCK_TIMEOUT;

#[test]
fn scan_lists_a_local_remote_and_removes_only_what_dead_runs_left() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("remote");
    fs::create_dir_all(&root).unwrap();
    let store = local_store(&root);
    rt.block_on(scan_and_clean(
        &*store,
        &root,
        &root.join(".snapsync-lock"),
        &|| {},
    ));
    let missing = local_store(&dir.path().join("gone"));
    let filter = Options::new(Mode::Upload).filter().clone();
    let err = rt
        .block_on(snapsync_sync::list_remote(&*missing, &filter, true))
        .unwrap_err();
    assert!(matches!(err, Error::MissingRemote { .. }), "{err}");
}

#[test]
fn scan_lists_an_ftp_remote_and_removes_only_what_dead_runs_left() {
    use snapsync_testkit::{FtpFlavor, FtpOptions, FtpServer};
    let rt = runtime();
    // pyftpdlib without root's permission override, so a folder can be closed to it.
    let server = FtpServer::start_with(
        FtpFlavor::Pyftpdlib,
        FtpOptions {
            obey_permissions: true,
            ..FtpOptions::default()
        },
    );
    let root = server.root().join("site");
    fs::create_dir_all(&root).unwrap();
    let open = |path: &str| {
        let url = StoreUrl::parse(&server.url(path)).unwrap();
        snapsync_store::open(&url, &snapsync_store::ConnectOptions::default().with_retry(None)).unwrap()
    };
    let store = open("site");
    // FTP's lock is a directory holding the body in `owner`.
    let lock = root.join(".snapsync-lock/owner");
    rt.block_on(scan_and_clean(&*store, &root, &lock, &|| server.give(&root)));
    let filter = Options::new(Mode::Upload).filter().clone();
    let err = rt
        .block_on(snapsync_sync::list_remote(&*open("gone"), &filter, true))
        .unwrap_err();
    assert!(matches!(err, Error::MissingRemote { .. }), "{err}");
    // A folder the server refuses to list is an error naming it, never left out; the top level is
    // one listing of the root, which does not enter it.
    let closed = root.join("closed");
    fs::create_dir_all(closed.join("inside")).unwrap();
    fs::write(closed.join("inside/x.txt"), "x").unwrap();
    server.give(&root);
    fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let recursive = rt.block_on(snapsync_sync::list_remote(&*store, &filter, true));
    let top = rt.block_on(snapsync_sync::list_remote(&*store, &filter, false));
    fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = recursive.unwrap_err().to_string();
    assert!(err.contains("closed"), "{err}");
    assert_eq!(paths(&top.unwrap()), ["a.txt", "closed/", "sub/"]);
}

#[test]
fn scan_lists_an_sftp_remote_and_removes_only_what_dead_runs_left() {
    use snapsync_testkit::Sshd;
    let rt = runtime();
    let server = Sshd::start();
    let root = server.root().join("site");
    fs::create_dir_all(&root).unwrap();
    let url = StoreUrl::parse(&server.url("site")).unwrap();
    let connect = snapsync_store::ConnectOptions::default()
        .with_retry(None)
        .with_known_hosts(server.known_hosts());
    let store = snapsync_store::open(&url, &connect).unwrap();
    let settle = || {
        let status = std::process::Command::new("chown")
            .args(["-R", snapsync_testkit::SSH_USER])
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
    };
    rt.block_on(scan_and_clean(
        &*store,
        &root,
        &root.join(".snapsync-lock"),
        &settle,
    ));
}
