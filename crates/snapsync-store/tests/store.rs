//! Every backend against the conformance suite, with real servers for S3 (moto) and Azure (Azurite);
//! the wrappers; and failure behaviour.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use snapsync_store::conformance::{self, Options};
use snapsync_store::{
    Capabilities, ConnectOptions, DryRunStore, Error, GetStream, LocalDurability, ObjectMeta, PrefixStore,
    PutMode, PutSource, RetryPolicy, RetryStore, Store, StoreExt, StoreUrl,
};
use snapsync_testkit::{Azurite, S3Server};

#[path = "store/ftp.rs"]
mod ftp;
#[path = "store/netfault.rs"]
mod netfault;
#[path = "store/sftp.rs"]
mod sftp;

/// Options without retries (a test sees each failure as it happens) and without the process's
/// environment.
fn bare() -> ConnectOptions {
    ConnectOptions::default().with_retry(None)
}

/// Options from an environment (a test server's variables), without retries.
fn from_vars(vars: Vec<(&'static str, String)>) -> ConnectOptions {
    ConnectOptions::from_vars(vars).with_retry(None)
}

fn open(url: &StoreUrl) -> snapsync_store::Result<Arc<dyn Store>> {
    snapsync_store::open(url, &bare())
}

async fn suite(store: Arc<dyn Store>, options: &Options) {
    if let Err(failure) = conformance::run_all(store, options).await {
        panic!("conformance: {failure}");
    }
}

/// The root checks of the conformance suite, on stores that `base` and `options` open (`base/path`).
async fn roots(base: &str, options: &ConnectOptions, directories: bool) {
    let (base, options) = (base.trim_end_matches('/').to_owned(), options.clone());
    let open = move |path: &str| snapsync_store::open(&StoreUrl::parse(&format!("{base}/{path}"))?, &options);
    if let Err(failure) = conformance::root_existence(&open, directories).await {
        panic!("root_existence: {failure}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_filesystem_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap()).unwrap();
    suite(store, &Options::default()).await;
    // As a plain path and as a file:// URL.
    roots(&dir.path().join("plain").display().to_string(), &bare(), true).await;
    roots(&format!("file://{}/url", dir.path().display()), &bare(), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_local_filesystem_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let batched = bare().with_local_durability(LocalDurability::Batched);
    let store = snapsync_store::open(&StoreUrl::local(dir.path()), &batched).unwrap();
    suite(Arc::clone(&store), &Options::default()).await;
    store.persist().await.unwrap();
    // A root that vanished under the store (an unmounted disk) is an error, never a barrier passed:
    // a push then writes no manifest naming objects that are not there.
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let store = snapsync_store::open(&StoreUrl::local(&gone), &batched).unwrap();
    store
        .put(
            "a",
            PutSource::Bytes(Bytes::from_static(b"a")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    std::fs::remove_dir_all(&gone).unwrap();
    assert!(
        store.persist().await.is_err(),
        "persist passed on a root that is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_passes_the_conformance_suite() {
    let store = open(&StoreUrl::parse("memory://conformance").unwrap()).unwrap();
    suite(store, &Options::default()).await;
    roots("memory://conformance-roots", &bare(), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_passes_the_conformance_suite_against_a_real_server() {
    let server = S3Server::start();
    server.create_bucket("conformance");
    // Configured from the standard variables, given rather than read from the process.
    let options = from_vars(server.env());
    let store = snapsync_store::open(
        &StoreUrl::parse("s3://conformance/some/prefix").unwrap(),
        &options,
    )
    .unwrap();
    suite(Arc::clone(&store), &Options::default()).await;
    // The URL's prefix is where everything went.
    let whole = snapsync_store::open(&StoreUrl::parse("s3://conformance").unwrap(), &options).unwrap();
    let all = whole.list_all("").await.unwrap();
    assert!(
        !all.is_empty() && all.iter().all(|m| m.key.starts_with("some/prefix/")),
        "{:?}",
        &all[..3.min(all.len())]
    );
    roots("s3://conformance/roots", &options, false).await;
    // The same server through `object_store` options instead of variables.
    let mut explicit = bare();
    for (key, value) in server.config() {
        explicit = explicit.with_object_store_option(key, value);
    }
    let store = snapsync_store::open(
        &StoreUrl::parse("s3://conformance/some/prefix").unwrap(),
        &explicit,
    )
    .unwrap();
    assert!(!store.list_all("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_passes_the_conformance_suite_against_azurite() {
    let server = Azurite::start();
    server.create_container("conformance");
    let options = from_vars(server.env());
    let store = snapsync_store::open(&StoreUrl::parse("az://conformance/prefix").unwrap(), &options).unwrap();
    suite(store, &Options::default()).await;
    roots("az://conformance/roots", &options, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_with_a_wrong_key_is_permission_denied() {
    let server = Azurite::start();
    server.create_container("locked");
    let mut env = server.env();
    assert_eq!(env[1].0, "AZURE_STORAGE_ACCOUNT_KEY");
    env[1].1 = "d3JvbmcgcGFzc3dvcmQgZm9yIGF6dXJpdGUgdGVzdHMgdGhhdCBpcyBsb25nIGVub3VnaA==".into();
    let store = snapsync_store::open(&StoreUrl::parse("az://locked").unwrap(), &from_vars(env)).unwrap();
    let err = store
        .put(
            "x",
            PutSource::Bytes(Bytes::from_static(b"x")),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert_eq!(err.to_string(), "az://locked/x: access denied");
    // A listing reports the refusal differently inside object_store; it is the same error here.
    let err = store.list_all("").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("credentials"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_named_as_such() {
    let server = S3Server::start();
    let store = snapsync_store::open(
        &StoreUrl::parse("s3://no-such-bucket/x").unwrap(),
        &from_vars(server.env()),
    )
    .unwrap();
    let err = store.list_all("").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "s3://no-such-bucket/x: the bucket or container does not exist"
    );
    // A HEAD answer has no body, so only a GET or PUT can tell the two apart.
    let err = store.get("key").await.unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("create it first"));
    let err = store
        .put(
            "key",
            PutSource::Bytes(Bytes::from_static(b"x")),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_transient_error_naming_the_url() {
    let port = snapsync_testkit::free_port();
    let options = bare()
        .with_object_store_option("aws_endpoint", format!("http://127.0.0.1:{port}"))
        .with_object_store_option("aws_allow_http", "true")
        .with_object_store_option("aws_access_key_id", "k")
        .with_object_store_option("aws_secret_access_key", "s");
    let store = snapsync_store::open(&StoreUrl::parse("s3://nobody/home").unwrap(), &options).unwrap();
    let err = store.head("key").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.to_string(), "s3://nobody/home/key: temporary failure");
}

#[test]
fn gcs_urls_and_configuration_parse() {
    // No GCS emulator works offline here: check what can be checked without a server.
    let url = StoreUrl::parse("gs://my-bucket/snapshots/prod").unwrap();
    assert_eq!(
        (url.bucket(), url.prefix().as_str()),
        (Some("my-bucket"), "snapshots/prod")
    );
    let option = |key: &str, value: &str| bare().with_object_store_option(key, value);
    let err =
        snapsync_store::open(&url, &option("google_service_account", "/nonexistent/key.json")).unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("invalid store URL gs://my-bucket/snapshots/prod: "),
        "{err}"
    );
    // The same from the environment's variable; a variable the client does not know is skipped, as
    // object_store's `from_env` skips it, but an explicit option it does not know is an error.
    let env = ConnectOptions::from_vars([("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/key.json")]);
    let err = snapsync_store::open(&url, &env).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/key.json"), "{err}");
    let err = snapsync_store::open(&url, &option("google_no_such_option", "x")).unwrap_err();
    assert!(err.to_string().contains("unknown configuration key"), "{err}");
    // With credentials that need no network (anonymous access), the client builds.
    snapsync_store::open(&url, &option("google_skip_signature", "true")).unwrap();
    let env = ConnectOptions::from_vars([("GOOGLE_SKIP_SIGNATURE", "true"), ("GOOGLE_NO_SUCH_OPTION", "x")]);
    snapsync_store::open(&url, &env).unwrap();
}

#[tokio::test]
async fn local_listings_skip_leftover_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/.obj.snapsync-123-0.tmp"), b"half written").unwrap();
    std::fs::write(dir.path().join("a/obj"), b"whole").unwrap();
    let store = open(&StoreUrl::local(dir.path())).unwrap();
    let keys: Vec<String> = store
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["a/obj"]);
}

#[tokio::test]
async fn local_store_refuses_keys_that_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::local(&dir.path().join("store"))).unwrap();
    for key in ["../escape", "a/../../b", "/abs", "a//b", ""] {
        let err = store
            .put(key, PutSource::Bytes(Bytes::new()), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{key:?}: {err:?}");
    }
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn a_read_only_local_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::local(dir.path())).unwrap();
    store
        .put(
            "a",
            PutSource::Bytes(Bytes::from_static(b"1")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    // Root ignores permissions; a read-only bind is not available here, so use a file where a
    // directory is needed.
    std::fs::write(dir.path().join("blocker"), b"").unwrap();
    let err = store
        .put("blocker/x", PutSource::Bytes(Bytes::new()), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}/blocker/x", dir.path().display())),
        "{err}"
    );
}

/// Makes file permissions apply to this thread, and to the threads it starts from now on, although the
/// tests run as root: drops `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` (capabilities are per thread
/// on Linux, and a new thread inherits its creator's). Nothing to drop for a user who is not root.
fn obey_file_permissions() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let mut caps = capabilities(None).unwrap();
    let dac = CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
    caps.effective.remove(dac);
    caps.permitted.remove(dac);
    caps.inheritable.remove(dac);
    set_capabilities(None, caps).unwrap();
}

pub(crate) fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory that cannot be listed is an error naming it, never an empty directory (which a folder
/// sync would take for deleted files). Really exercised: the listing runs on threads without the
/// capabilities that let root read anything (checked first), against a directory with mode 000.
#[test]
fn a_local_directory_that_cannot_be_listed_is_an_error_not_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("locked/inner")).unwrap();
    std::fs::write(root.join("locked/inner/precious.txt"), b"data").unwrap();
    std::fs::write(root.join("kept.txt"), b"kept").unwrap();
    chmod(&root.join("locked"), 0o000);
    let checked = std::thread::spawn({
        let root = root.clone();
        move || {
            obey_file_permissions();
            assert!(
                std::fs::read_dir(root.join("locked")).is_err(),
                "the test cannot make a directory unreadable to itself"
            );
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let store = open(&StoreUrl::local(&root)).unwrap();
                // Below the prefix asked for, and the prefix itself.
                for prefix in ["", "locked"] {
                    let err = store.list_all(prefix).await.unwrap_err();
                    assert!(
                        matches!(err, Error::PermissionDenied { .. }),
                        "{prefix:?}: {err:?}"
                    );
                    assert_eq!(
                        err.to_string(),
                        format!("{}/locked: access denied", root.display())
                    );
                    let hint = err.hint().unwrap();
                    assert!(hint.contains("permissions of the files"), "{hint}");
                }
                // A prefix that is not there still lists as empty.
                assert!(store.list_all("missing").await.unwrap().is_empty());
                assert!(store.root_exists().await.unwrap());
                // A root inside the locked directory: whether it exists cannot be told.
                let inside = open(&StoreUrl::local(&root.join("locked/inner"))).unwrap();
                let err = inside.root_exists().await.unwrap_err();
                assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
                // A lock cannot be taken there either, and says why.
                let err = inside
                    .lock_create(".lock", Bytes::from_static(b"me"))
                    .await
                    .unwrap_err();
                assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
            });
        }
    })
    .join();
    chmod(&root.join("locked"), 0o755);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// A full disk is said to be one. Really exercised: the store is on a tmpfs of 64 KiB.
#[tokio::test]
async fn a_full_local_disk_says_no_space_left() {
    let dir = tempfile::tempdir().unwrap();
    let small = snapsync_testkit::Tmpfs::mount(&dir.path().join("small"), 64 * 1024);
    let store = open(&StoreUrl::local(small.path())).unwrap();
    let err = store
        .put(
            "big",
            PutSource::Bytes(Bytes::from(vec![7u8; 1024 * 1024])),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StorageFull { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}/big: no space left on device", small.path().display())
    );
    assert!(!err.is_transient());
    assert!(err.hint().unwrap().contains("free some space"));
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = futures::StreamExt::collect(store.list_leftovers()).await;
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn prefix_store_confines_keys() {
    let inner = open(&StoreUrl::parse("memory://prefix-test").unwrap()).unwrap();
    let store = PrefixStore::new(Arc::clone(&inner), "tenant/a").unwrap();
    store
        .put(
            "x/y",
            PutSource::Bytes(Bytes::from_static(b"1")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert!(inner.exists("tenant/a/x/y").await.unwrap());
    let keys: Vec<String> = store
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["x/y"]);
    assert_eq!(store.head("x/y").await.unwrap().key, "x/y");
    assert_eq!(store.url().to_string(), "memory://prefix-test/tenant/a");
}

#[tokio::test]
async fn dry_run_records_writes_and_performs_none() {
    let inner = open(&StoreUrl::parse("memory://dry-run-test").unwrap()).unwrap();
    inner
        .put(
            "existing",
            PutSource::Bytes(Bytes::from_static(b"1")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let dry = DryRunStore::new(Arc::clone(&inner));
    dry.put(
        "new",
        PutSource::Bytes(Bytes::from_static(b"2")),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    dry.delete("existing").await.unwrap();
    dry.copy("existing", "elsewhere").await.unwrap();
    assert!(matches!(
        dry.put("existing", PutSource::Bytes(Bytes::new()), PutMode::Create)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        dry.actions(),
        ["put new", "delete existing", "copy existing elsewhere"]
    );
    let keys: Vec<String> = inner
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["existing"], "nothing was written");
    assert_eq!(dry.get_bytes("existing").await.unwrap(), "1", "reads go through");
}

/// A store whose operations fail a given number of times first, to test the retry wrapper's logic.
/// (The real-server tests above and in the snapshot crate test real failures.)
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Store>,
    failures_left: AtomicU32,
    calls: AtomicU32,
}

impl Flaky {
    fn fail(&self) -> snapsync_store::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Transient {
                location: "flaky".into(),
                source: "connection reset".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, snapsync_store::Result<ObjectMeta>> {
        match self.fail() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => Box::pin(futures::stream::once(async { Err(e) })),
        }
    }
    async fn head(&self, key: &str) -> snapsync_store::Result<ObjectMeta> {
        self.fail()?;
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> snapsync_store::Result<GetStream> {
        self.fail()?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> snapsync_store::Result<Bytes> {
        self.fail()?;
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> snapsync_store::Result<()> {
        self.fail()?;
        self.inner.put(key, source, mode).await
    }
    async fn delete(&self, key: &str) -> snapsync_store::Result<()> {
        self.fail()?;
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> snapsync_store::Result<()> {
        self.fail()?;
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> snapsync_store::Result<()> {
        self.fail()?;
        self.inner.rename(from, to).await
    }
    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> snapsync_store::Result<()> {
        self.fail()?;
        self.inner.set_mtime(key, mtime).await
    }
}

#[tokio::test]
async fn retry_store_retries_transient_failures_then_gives_up() {
    let inner = open(&StoreUrl::parse("memory://retry-test").unwrap()).unwrap();
    let policy = RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    };
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&inner),
        failures_left: AtomicU32::new(3),
        calls: AtomicU32::new(0),
    });
    let store = RetryStore::new(Arc::clone(&flaky) as Arc<dyn Store>, policy);
    store
        .put(
            "k",
            PutSource::Bytes(Bytes::from_static(b"v")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );
    flaky.failures_left.store(3, Ordering::SeqCst);
    assert_eq!(
        store.list_all("").await.unwrap().len(),
        1,
        "listings are retried too"
    );

    flaky.failures_left.store(10, Ordering::SeqCst);
    flaky.calls.store(0, Ordering::SeqCst);
    let err = store.head("k").await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        4,
        "gives up after the policy's attempts"
    );

    // Errors that are not transient are not retried.
    flaky.failures_left.store(0, Ordering::SeqCst);
    flaky.calls.store(0, Ordering::SeqCst);
    assert!(store.head("missing").await.unwrap_err().is_not_found());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
}

/// A local store whose listing of leftovers, or whose removals, fail.
#[derive(Debug)]
struct Broken {
    inner: Arc<dyn Store>,
    listing_fails: bool,
    delete_fails: bool,
}

impl Broken {
    fn refused() -> Error {
        Error::Transient {
            location: "broken".into(),
            source: "connection reset".into(),
        }
    }
}

#[async_trait]
impl Store for Broken {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, snapsync_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_leftovers(&self) -> BoxStream<'static, snapsync_store::Result<ObjectMeta>> {
        if !self.listing_fails {
            return self.inner.list_leftovers();
        }
        // Part of a listing, then the failure: what was listed must not be taken for all there is.
        let error = Broken::refused();
        self.inner
            .list_leftovers()
            .take(1)
            .chain(futures::stream::once(async { Err(error) }))
            .boxed()
    }
    async fn head(&self, key: &str) -> snapsync_store::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> snapsync_store::Result<GetStream> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> snapsync_store::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> snapsync_store::Result<()> {
        self.inner.put(key, source, mode).await
    }
    async fn delete(&self, key: &str) -> snapsync_store::Result<()> {
        if self.delete_fails {
            return Err(Broken::refused());
        }
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> snapsync_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> snapsync_store::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> snapsync_store::Result<()> {
        self.inner.set_mtime(key, mtime).await
    }
}

/// A run's mark finds the marks of killed runs of its kind; when the run finishes, the killed runs'
/// temporary files go and then their marks, and nothing else: not a live process's temporary file,
/// not another kind's mark. When the listing of leftovers or a removal fails, the marks stay for the
/// next run (a failed listing is never read as "nothing left").
#[tokio::test]
async fn run_marks_remove_only_killed_runs_files_and_keep_their_marks_when_that_fails() {
    use snapsync_store::RunMark;
    let (dead, live, me) = (snapsync_testkit::dead_pid(), 1u32, std::process::id());
    for (listing_fails, delete_fails) in [(false, false), (true, false), (false, true)] {
        let case = format!("listing fails: {listing_fails}, delete fails: {delete_fails}");
        let root = tempfile::tempdir().unwrap();
        let marks = tempfile::tempdir().unwrap();
        let dead_temp = root.path().join(format!("sub/.b.txt.snapsync-{dead}-0.tmp"));
        let live_temp = root.path().join(format!(".c.txt.snapsync-{live}-3.tmp"));
        std::fs::create_dir_all(root.path().join("sub")).unwrap();
        for file in [root.path().join("a.txt"), dead_temp.clone(), live_temp.clone()] {
            std::fs::write(file, b"bytes").unwrap();
        }
        for mark in [
            format!("push-{dead}"),
            format!("push-{live}"),
            format!("other-{dead}"),
        ] {
            std::fs::write(marks.path().join(mark), b"").unwrap();
        }
        let mark = RunMark::start(marks.path(), "push-").unwrap();
        assert_eq!(mark.dead_pids(), [dead], "{case}");
        assert!(marks.path().join(format!("push-{me}")).exists(), "{case}");
        let url = StoreUrl::parse(&format!("file://{}", root.path().display())).unwrap();
        let store = Broken {
            inner: open(&url).unwrap(),
            listing_fails,
            delete_fails,
        };
        let removed = mark.finish(&store).await;
        let cleaned = !listing_fails && !delete_fails;
        // A listing that failed part-way may have given the dead run's file before it failed.
        if !listing_fails {
            assert_eq!(removed, usize::from(cleaned), "{case}");
            assert_eq!(dead_temp.exists(), !cleaned, "{case}");
        }
        assert_eq!(
            marks.path().join(format!("push-{dead}")).exists(),
            !cleaned,
            "{case}"
        );
        assert!(live_temp.exists() && root.path().join("a.txt").exists(), "{case}");
        assert!(marks.path().join(format!("push-{live}")).exists(), "{case}");
        assert!(marks.path().join(format!("other-{dead}")).exists(), "{case}");
        assert!(!marks.path().join(format!("push-{me}")).exists(), "{case}");
    }
}
