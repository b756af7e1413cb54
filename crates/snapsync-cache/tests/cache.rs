//! The cache agent over a local folder as its remote (the other real-server runs come with the CLI):
//! misses, hits, missing files, pushes that would clobber, concurrent opens, freshness, eviction,
//! hostile paths; and over the S3 server, where only the `ETag` tells two versions apart.

use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use snapsync_cache::{CacheAgent, CacheOptions, Error, Opened, Pushed};
use snapsync_store::{
    Capabilities, ConnectOptions, GetStream, ObjectMeta, PutMode, PutSource, Result as StoreResult, Store,
    StoreExt, StoreUrl,
};

/// Counts downloads, and can slow them so that callers overlap.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    gets: AtomicUsize,
    delay: Duration,
    /// Makes every `head` hang, as a stalled server does.
    stall_heads: AtomicBool,
    puts: AtomicUsize,
    /// At this put (counted from 0), the token is cancelled (Ctrl-C) and the put hangs, a transfer
    /// in flight.
    cancel_at_put: std::sync::Mutex<Option<(usize, snapsync_core::Cancel)>>,
}

#[async_trait]
impl Store for Counting {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        if self.stall_heads.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_hours(1)).await;
        }
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetStream> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> StoreResult<()> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        let cancel = self.cancel_at_put.lock().unwrap().clone();
        if let Some((at, cancel)) = cancel
            && at == n
        {
            cancel.cancel();
            futures::future::pending::<()>().await;
        }
        self.inner.put(key, source, mode).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
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
}

struct Setup {
    _dirs: tempfile::TempDir,
    remote: std::path::PathBuf,
    cache: std::path::PathBuf,
    store: Arc<Counting>,
}

fn setup(delay: Duration) -> Setup {
    let dirs = tempfile::tempdir().unwrap();
    let (remote, cache) = (dirs.path().join("remote"), dirs.path().join("cache"));
    fs::create_dir_all(remote.join("docs")).unwrap();
    fs::write(remote.join("docs/a.txt"), "remote a").unwrap();
    fs::write(remote.join("b.bin"), vec![7u8; 300_000]).unwrap();
    let inner = snapsync_store::open(
        &StoreUrl::local(&remote),
        &ConnectOptions::default().with_retry(None),
    )
    .unwrap();
    Setup {
        _dirs: dirs,
        remote,
        cache,
        store: Arc::new(Counting {
            inner,
            gets: AtomicUsize::new(0),
            delay,
            stall_heads: AtomicBool::new(false),
            puts: AtomicUsize::new(0),
            cancel_at_put: std::sync::Mutex::new(None),
        }),
    }
}

impl Setup {
    fn agent(&self, options: CacheOptions) -> CacheAgent {
        CacheAgent::open(Arc::clone(&self.store) as Arc<dyn Store>, &self.cache, options).unwrap()
    }
    fn gets(&self) -> usize {
        self.store.gets.load(Ordering::SeqCst)
    }
}

fn later(path: &Path) {
    // A different time than the one recorded, whatever the clock's resolution.
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_fetches_a_hit_asks_nothing_and_a_missing_file_is_not_found() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    let (local, how) = agent.path("docs/a.txt").await.unwrap();
    assert_eq!(
        (fs::read_to_string(&local).unwrap().as_str(), how),
        ("remote a", Opened::Fetched)
    );
    assert_eq!(local, s.cache.canonicalize().unwrap().join("docs/a.txt"));
    // Cached: the remote is not asked again, even when the remote file is gone.
    fs::remove_file(s.remote.join("docs/a.txt")).unwrap();
    let (_, how) = agent.path("docs/a.txt").await.unwrap();
    assert_eq!((how, s.gets()), (Opened::Cached, 1));
    let err = agent.path("nope.txt").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let mut file = agent.open_file("b.bin").await.unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    assert_eq!(bytes, vec![7u8; 300_000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn push_sends_new_and_edited_files_but_never_over_a_remote_edit_unless_forced() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    let (local, _) = agent.path("docs/a.txt").await.unwrap();
    fs::write(&local, "edited in the cache").unwrap();
    fs::write(s.cache.join("new.txt"), "brand new").unwrap();
    agent.add("docs/a.txt").unwrap();
    agent
        .add(
            &agent
                .key_of(&s.cache.canonicalize().unwrap().join("new.txt"))
                .unwrap(),
        )
        .unwrap();
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["docs/a.txt"], Pushed::Uploaded(19)), "{pushed:?}");
    assert!(matches!(pushed["new.txt"], Pushed::Uploaded(9)), "{pushed:?}");
    assert_eq!(
        fs::read_to_string(s.remote.join("docs/a.txt")).unwrap(),
        "edited in the cache"
    );
    assert_eq!(fs::read_to_string(s.remote.join("new.txt")).unwrap(), "brand new");
    assert!(agent.status().unwrap().iter().all(|f| !f.queued));

    // Someone edits the remote copy; the cache's next edit must not clobber it.
    fs::write(s.remote.join("docs/a.txt"), "edited on the remote").unwrap();
    later(&s.remote.join("docs/a.txt"));
    fs::write(&local, "second cache edit").unwrap();
    agent.add("docs/a.txt").unwrap();
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["docs/a.txt"], Pushed::Conflict(_)), "{pushed:?}");
    assert_eq!(
        fs::read_to_string(s.remote.join("docs/a.txt")).unwrap(),
        "edited on the remote"
    );
    let status = agent.status().unwrap();
    let a = status.iter().find(|f| f.path == "docs/a.txt").unwrap();
    assert!(a.queued && a.conflict.is_some(), "{a:?}");
    // A file the cache never fetched but the remote has is a conflict too.
    fs::write(s.cache.join("b.bin"), "mine").unwrap();
    agent.add("b.bin").unwrap();
    assert!(matches!(
        agent.push(false).await.unwrap()["b.bin"],
        Pushed::Conflict(_)
    ));
    // Forced, both go.
    let pushed = agent.push(true).await.unwrap();
    assert!(
        pushed.values().all(|p| matches!(p, Pushed::Uploaded(_))),
        "{pushed:?}"
    );
    assert_eq!(
        fs::read_to_string(s.remote.join("docs/a.txt")).unwrap(),
        "second cache edit"
    );
    assert!(
        agent
            .status()
            .unwrap()
            .iter()
            .all(|f| !f.queued && f.conflict.is_none())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locally_edited_file_is_never_replaced_by_a_fetch() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions {
        max_age: Some(Duration::ZERO),
        ..CacheOptions::default()
    });
    let (local, _) = agent.path("docs/a.txt").await.unwrap();
    fs::write(&local, "local edit, not added").unwrap();
    fs::write(s.remote.join("docs/a.txt"), "remote edit").unwrap();
    later(&s.remote.join("docs/a.txt"));
    let (_, how) = agent.path("docs/a.txt").await.unwrap();
    assert_eq!(how, Opened::LocalEdit);
    assert_eq!(fs::read_to_string(&local).unwrap(), "local edit, not added");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_max_age_a_cached_file_is_revalidated_and_fetched_only_when_it_changed() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions {
        max_age: Some(Duration::ZERO),
        ..CacheOptions::default()
    });
    agent.path("docs/a.txt").await.unwrap();
    let (_, how) = agent.path("docs/a.txt").await.unwrap();
    assert_eq!((how, s.gets()), (Opened::Revalidated, 1));
    fs::write(s.remote.join("docs/a.txt"), "remote, changed").unwrap();
    later(&s.remote.join("docs/a.txt"));
    let (local, how) = agent.path("docs/a.txt").await.unwrap();
    assert_eq!((how, s.gets()), (Opened::Fetched, 2));
    assert_eq!(fs::read_to_string(local).unwrap(), "remote, changed");
    // Without a max age, nothing is asked.
    let plain = s.agent(CacheOptions::default());
    assert_eq!(plain.path("docs/a.txt").await.unwrap().1, Opened::Cached);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_remote_costs_a_revalidation_only_its_offline_wait() {
    let s = setup(Duration::ZERO);
    s.agent(CacheOptions::default()).path("docs/a.txt").await.unwrap();
    s.store.stall_heads.store(true, Ordering::SeqCst);
    let agent = s.agent(CacheOptions {
        max_age: Some(Duration::ZERO),
        offline_after: Duration::from_millis(200),
        ..CacheOptions::default()
    });
    let (local, opened) = tokio::time::timeout(Duration::from_mins(1), agent.path("docs/a.txt"))
        .await
        .expect("the open waited for the stalled remote")
        .unwrap();
    let Opened::Offline(warning) = opened else {
        panic!("{opened:?}");
    };
    assert!(warning.contains("no answer within 200ms"), "{warning}");
    assert_eq!(fs::read_to_string(local).unwrap(), "remote a");
}

#[test]
fn two_threads_opening_one_missing_file_download_it_once() {
    let s = setup(Duration::from_millis(300));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let agents = [s.agent(CacheOptions::default()), s.agent(CacheOptions::default())];
    let results: Vec<(Opened, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .map(|agent| {
                let runtime = &runtime;
                scope.spawn(move || {
                    let (local, opened) = runtime.block_on(agent.path("b.bin")).unwrap();
                    (opened, fs::read(local).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(s.gets(), 1, "the file was downloaded more than once");
    assert!(results.iter().all(|(_, c)| *c == vec![7u8; 300_000]));
    let mut opened: Vec<Opened> = results.into_iter().map(|(o, _)| o).collect();
    opened.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(opened, [Opened::Cached, Opened::Fetched]);
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_removes_the_oldest_fetches_but_never_a_queued_or_edited_file() {
    let s = setup(Duration::ZERO);
    fs::write(s.remote.join("c.txt"), "c").unwrap();
    let agent = s.agent(CacheOptions::default());
    agent.path("b.bin").await.unwrap();
    agent.path("docs/a.txt").await.unwrap();
    agent.path("c.txt").await.unwrap();
    let (edited, _) = agent.path("docs/a.txt").await.unwrap();
    fs::write(&edited, "edited").unwrap();
    let removed = agent.evict(0).unwrap();
    assert_eq!(removed, ["b.bin", "c.txt"]);
    assert!(edited.exists());
    assert!(!s.cache.join("b.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_paths_are_refused() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), s.cache.join("escape")).unwrap();
    for path in [
        "../x",
        "/etc/passwd",
        "a//b",
        "escape/x",
        ".snapsync-cache/state.json",
        "",
    ] {
        let err = agent.path(path).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{path}: {err}");
    }
    assert!(agent.key_of(Path::new("/etc/passwd")).is_err());
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn a_cache_folder_belongs_to_one_remote() {
    let s = setup(Duration::ZERO);
    drop(s.agent(CacheOptions::default()));
    let other_dir = tempfile::tempdir().unwrap();
    let other = snapsync_store::open(&StoreUrl::local(other_dir.path()), &ConnectOptions::default()).unwrap();
    let err = CacheAgent::open(other, &s.cache, CacheOptions::default()).unwrap_err();
    assert!(matches!(err, Error::State { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_killed_after_its_upload_is_recorded_not_called_a_conflict() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    let (local, _) = agent.path("docs/a.txt").await.unwrap();
    fs::write(&local, "edited, uploaded, not recorded").unwrap();
    agent.add("docs/a.txt").unwrap();
    // What a push killed between its upload and its record leaves: the remote holds the local
    // content, the state still the old remote copy.
    fs::copy(&local, s.remote.join("docs/a.txt")).unwrap();
    later(&s.remote.join("docs/a.txt"));
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["docs/a.txt"], Pushed::Uploaded(0)), "{pushed:?}");
    assert!(
        agent
            .status()
            .unwrap()
            .iter()
            .all(|f| !f.queued && f.conflict.is_none())
    );
    // A remote edit of the same size but other content is still a conflict.
    fs::write(&local, "edited, uploaded, NOT recorded").unwrap();
    agent.add("docs/a.txt").unwrap();
    fs::write(s.remote.join("docs/a.txt"), "someone else's edit, same size").unwrap();
    later(&s.remote.join("docs/a.txt"));
    assert!(matches!(
        agent.push(false).await.unwrap()["docs/a.txt"],
        Pushed::Conflict(_)
    ));
}

/// The crash harness found a killed `cache push`'s temporary files left on the remote after the next
/// push: a push now marks itself under way in the cache folder, and the next push removes the
/// temporary files of a push whose process is gone — not those of a live one.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pushs_temporary_files_go_with_the_next_push_and_a_live_ones_stay() {
    let s = setup(Duration::ZERO);
    // The local store itself: the counting wrapper lists no leftovers.
    let agent = CacheAgent::open(Arc::clone(&s.store.inner), &s.cache, CacheOptions::default()).unwrap();
    let dead = snapsync_testkit::dead_pid();
    let live = std::process::id();
    // What a killed push leaves: its mark in the cache folder, a temporary file on the remote.
    fs::write(s.cache.join(format!(".snapsync-cache/push-{dead}")), "").unwrap();
    let killed = s.remote.join(format!("docs/.a.txt.snapsync-{dead}-1.tmp"));
    let running = s.remote.join(format!(".b.bin.snapsync-{live}-7.tmp"));
    fs::write(&killed, "half").unwrap();
    fs::write(&running, "under way").unwrap();
    fs::write(s.cache.join("new.txt"), "new").unwrap();
    agent.add("new.txt").unwrap();
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["new.txt"], Pushed::Uploaded(3)), "{pushed:?}");
    assert!(!killed.exists(), "the killed push's temporary file stayed");
    assert!(running.exists(), "a live push's temporary file was removed");
    let marks: Vec<String> = fs::read_dir(s.cache.join(".snapsync-cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("push-"))
        .collect();
    assert!(marks.is_empty(), "{marks:?}");
}

/// The crash harness found the temporary file of a state write that a kill interrupted left in the
/// cache folder for good: opening the cache now removes it (its process is gone), not a live one's.
#[test]
fn a_killed_state_writes_temporary_file_goes_when_the_cache_is_opened() {
    let s = setup(Duration::ZERO);
    drop(s.agent(CacheOptions::default()));
    let dead = snapsync_testkit::dead_pid();
    let meta = s.cache.join(".snapsync-cache");
    let killed = meta.join(format!(".state.json.snapsync-{dead}-0.tmp"));
    let live = meta.join(format!(".state.json.snapsync-{}-9.tmp", std::process::id()));
    fs::write(&killed, "{\"version\":").unwrap();
    fs::write(&live, "{").unwrap();
    drop(s.agent(CacheOptions::default()));
    assert!(!killed.exists(), "the killed write's temporary file stayed");
    assert!(live.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_file_whose_push_was_killed_after_its_upload_is_recorded_on_the_rerun() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    fs::write(s.cache.join("new.txt"), "uploaded, not recorded").unwrap();
    agent.add("new.txt").unwrap();
    fs::write(s.remote.join("new.txt"), "uploaded, not recorded").unwrap();
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["new.txt"], Pushed::Uploaded(0)), "{pushed:?}");
    // Recorded as the remote's copy: an edit now goes up over it, without a conflict.
    fs::write(s.cache.join("new.txt"), "edited after").unwrap();
    agent.add("new.txt").unwrap();
    let pushed = agent.push(false).await.unwrap();
    assert!(matches!(pushed["new.txt"], Pushed::Uploaded(12)), "{pushed:?}");
    assert_eq!(
        fs::read_to_string(s.remote.join("new.txt")).unwrap(),
        "edited after"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_on_the_remote_since_it_was_fetched_is_a_conflict_not_recreated() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    let (local, _) = agent.path("docs/a.txt").await.unwrap();
    fs::write(&local, "edited in the cache").unwrap();
    agent.add("docs/a.txt").unwrap();
    fs::remove_file(s.remote.join("docs/a.txt")).unwrap();
    let pushed = agent.push(false).await.unwrap();
    let Pushed::Conflict(e) = &pushed["docs/a.txt"] else {
        panic!("{pushed:?}");
    };
    assert!(e.to_string().contains("deleted"), "{e}");
    assert!(!s.remote.join("docs/a.txt").exists());
    let status = agent.status().unwrap();
    assert!(
        status
            .iter()
            .any(|f| f.path == "docs/a.txt" && f.queued && f.conflict.is_some())
    );
    // Forced, it is put back.
    assert!(matches!(
        agent.push(true).await.unwrap()["docs/a.txt"],
        Pushed::Uploaded(19)
    ));
    assert_eq!(
        fs::read_to_string(s.remote.join("docs/a.txt")).unwrap(),
        "edited in the cache"
    );
}

/// On S3, times have whole seconds: a rewrite of the same size within the second looks unchanged by
/// size and time. The `ETag` tells it apart, so the cache's push does not clobber it.
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_same_size_rewrite_within_the_second_is_a_conflict() {
    let server = snapsync_testkit::S3Server::start();
    server.create_bucket("etag");
    let store = snapsync_store::open(
        &StoreUrl::parse("s3://etag/team").unwrap(),
        &ConnectOptions::from_vars(server.env()),
    )
    .unwrap();
    let bytes = |text: &'static str| PutSource::Bytes(Bytes::from_static(text.as_bytes()));
    for attempt in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let agent = CacheAgent::open(Arc::clone(&store), dir.path(), CacheOptions::default()).unwrap();
        let key = format!("f{attempt}.txt");
        store
            .put(&key, bytes("version 1"), PutMode::Overwrite)
            .await
            .unwrap();
        let (local, _) = agent.path(&key).await.unwrap();
        let first = store.head(&key).await.unwrap();
        store
            .put(&key, bytes("version 2"), PutMode::Overwrite)
            .await
            .unwrap();
        let second = store.head(&key).await.unwrap();
        if first.modified != second.modified {
            continue; // The second changed in between: try again.
        }
        assert_ne!(first.etag, second.etag, "{first:?} {second:?}");
        fs::write(&local, "local edit").unwrap();
        agent.add(&key).unwrap();
        let pushed = agent.push(false).await.unwrap();
        assert!(matches!(pushed[&key], Pushed::Conflict(_)), "{pushed:?}");
        assert_eq!(&store.get_bytes(&key).await.unwrap()[..], b"version 2");
        return;
    }
    panic!("no rewrite within the same second in 10 attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_queued_files_are_pushed_and_recorded() {
    let s = setup(Duration::ZERO);
    let agent = s.agent(CacheOptions::default());
    fs::create_dir_all(s.cache.join("many")).unwrap();
    for i in 0..200 {
        let name = format!("many/f{i:03}.txt");
        fs::write(s.cache.join(&name), format!("file {i}")).unwrap();
        agent.add(&name).unwrap();
    }
    let pushed = agent.push(false).await.unwrap();
    assert_eq!(pushed.len(), 200);
    assert!(pushed.values().all(|p| matches!(p, Pushed::Uploaded(_))));
    assert_eq!(fs::read_dir(s.remote.join("many")).unwrap().count(), 200);
    assert!(agent.status().unwrap().iter().all(|f| !f.queued));
    // Recorded: a second push has nothing to do.
    assert!(agent.push(false).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_in_the_cache_while_it_is_fetched_is_kept() {
    // Downloads wait 300 ms before they start: time to write the file meanwhile.
    let s = setup(Duration::from_millis(300));
    let agent = s.agent(CacheOptions::default());
    let target = s.cache.canonicalize().unwrap().join("docs/a.txt");
    let writer = {
        let target = target.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::write(&target, "written by the user meanwhile").unwrap();
        })
    };
    let err = agent.path("docs/a.txt").await.unwrap_err();
    writer.await.unwrap();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "written by the user meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_push_records_what_went_up_and_keeps_the_rest_queued() {
    let s = setup(Duration::ZERO);
    let cancel = snapsync_core::Cancel::new();
    let agent = s.agent(CacheOptions {
        cancel: cancel.clone(),
        ..CacheOptions::default()
    });
    fs::create_dir_all(s.cache.join("many")).unwrap();
    for i in 0..40 {
        let name = format!("many/f{i:03}.txt");
        fs::write(s.cache.join(&name), format!("file {i}")).unwrap();
        agent.add(&name).unwrap();
    }
    *s.store.cancel_at_put.lock().unwrap() = Some((10, cancel.clone()));
    let outcome = tokio::time::timeout(Duration::from_secs(10), agent.push(false))
        .await
        .expect("the cancelled push stopped");
    assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
    // What the state calls pushed is on the remote with its content; the rest stays queued.
    let status = agent.status().unwrap();
    let pushed: Vec<_> = status
        .iter()
        .filter(|f| f.path.starts_with("many/") && !f.queued)
        .collect();
    let queued = status.iter().filter(|f| f.queued).count();
    // 8 at a time: the 11th put starts only once three have finished, and those are recorded.
    assert!(
        pushed.len() >= 3 && queued > 0,
        "{} pushed, {queued} queued",
        pushed.len()
    );
    for file in &pushed {
        assert_eq!(
            fs::read(s.remote.join(&file.path)).unwrap(),
            fs::read(s.cache.join(&file.path)).unwrap()
        );
    }
    // The next push sends the rest and conflicts with nothing the cancelled one sent.
    *s.store.cancel_at_put.lock().unwrap() = None;
    let agent = s.agent(CacheOptions::default());
    let pushed = agent.push(false).await.unwrap();
    assert!(
        pushed.values().all(|p| matches!(p, Pushed::Uploaded(_))),
        "{pushed:?}"
    );
    assert!(
        agent
            .status()
            .unwrap()
            .iter()
            .all(|f| !f.queued && f.conflict.is_none())
    );
    assert_eq!(fs::read_dir(s.remote.join("many")).unwrap().count(), 40);
}
