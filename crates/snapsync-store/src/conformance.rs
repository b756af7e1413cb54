//! The conformance suite: what every [`Store`] backend must do, checked the same way for all of them.
//!
//! Each check takes a store that is empty (or a fresh prefix of one, see [`crate::PrefixStore`]) and
//! returns `Err` with a description of the first thing that was wrong. [`run_all`] runs every check,
//! each under its own prefix. The tests of this crate run it against the local filesystem and memory,
//! against a real S3-compatible server and against Azurite; a new backend runs it too.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::source::Point;
use crate::{Error, PrefixStore, PutMode, PutSource, Store, StoreExt};

/// The outcome of one check.
pub type Check = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

fn fail(context: &str) -> impl FnOnce(Error) -> String + '_ {
    move |e| {
        use std::fmt::Write;
        let mut text = format!("{context}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let _ = write!(text, ": {s}");
            source = s.source();
        }
        text
    }
}

/// Options for [`run_all`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Size of the large object (100 MiB in the issue's suite; smaller where a backend is slow).
    pub large_object: u64,
    /// Keys written for the pagination check.
    pub many_keys: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            large_object: 100 * 1024 * 1024,
            many_keys: 5000,
        }
    }
}

/// Runs every check, each under its own prefix of `store`.
///
/// # Errors
/// The name and failure of the first check that fails.
pub async fn run_all(store: Arc<dyn Store>, options: &Options) -> Check {
    let sub = |name: &str| -> std::result::Result<Arc<dyn Store>, String> {
        Ok(Arc::new(
            PrefixStore::new(Arc::clone(&store), name).map_err(|e| e.to_string())?,
        ))
    };
    // Each check under its own prefix; a failure names the check.
    macro_rules! check {
        ($name:ident($($arg:expr),*)) => {
            $name($($arg),*)
                .await
                .map_err(|e| format!("{}: {e}", stringify!($name)))?
        };
    }
    check!(zero_byte_object(&*sub("zero")?));
    check!(odd_names(&*sub("names")?));
    check!(nested_prefixes(&*sub("nested")?));
    check!(overwrite(&*sub("overwrite")?));
    check!(create_if_absent(&*sub("create")?));
    check!(create_race(sub("race")?));
    check!(range_reads(&*sub("range")?));
    check!(missing_keys(&*sub("missing")?));
    check!(concurrent_puts(sub("concurrent")?));
    check!(copy_and_rename(&*sub("copy")?));
    check!(modification_times(&*sub("mtime")?));
    check!(put_meta_is_head(&*sub("put-meta")?));
    check!(empty_directories(&*sub("dirs")?));
    check!(listed_directories(&*sub("listed-dirs")?));
    check!(lock_round_trip(&*sub("lock")?));
    check!(lock_race(sub("lock-race")?, 30));
    check!(many_keys(sub("many")?, options.many_keys));
    check!(large_object(&*sub("large")?, options.large_object));
    check!(changing_source(&*sub("changing")?));
    check!(expected_source(&*sub("expected")?));
    Ok(())
}

/// `create_dir` makes an empty directory (and its parents) where the store has directories, and
/// `list_with_dirs` shows it as `key/` besides the objects, which `list` alone does not; for object
/// stores both are the objects only. Making one that exists is fine; a file in the way is an error.
///
/// # Errors
/// What was wrong.
pub async fn listed_directories(store: &dyn Store) -> Check {
    put(store, "a/file", b"x", PutMode::Create).await?;
    store
        .create_dir("a/empty/deeper")
        .await
        .map_err(fail("create_dir"))?;
    store
        .create_dir("a/empty/deeper")
        .await
        .map_err(fail("create_dir again"))?;
    let with_dirs: BTreeSet<String> = store
        .list_with_dirs("")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .map_err(fail("list_with_dirs"))?;
    let objects = keys(store, "").await?;
    ensure!(
        objects == BTreeSet::from(["a/file".to_owned()]),
        "list shows {objects:?}"
    );
    let dirs = BTreeSet::from([
        "a/".to_owned(),
        "a/empty/".to_owned(),
        "a/empty/deeper/".to_owned(),
    ]);
    let expected: BTreeSet<String> = objects.union(&dirs).cloned().collect();
    ensure!(
        with_dirs == expected || with_dirs == objects,
        "list_with_dirs shows {with_dirs:?}"
    );
    if with_dirs == expected {
        ensure!(
            store.create_dir("a/file").await.is_err(),
            "create_dir over a file succeeded"
        );
        // The empty ones are removed again, deepest first.
        for dir in ["a/empty/deeper", "a/empty"] {
            ensure!(
                store.remove_empty_dir(dir).await.map_err(fail(dir))?,
                "{dir} was not removed"
            );
        }
    }
    store.delete("a/file").await.map_err(fail("delete"))?;
    Ok(())
}

/// `remove_empty_dir` never removes a directory that holds a file; once its files are deleted it
/// removes it (where the store has directories), and a new file can then be written there again.
///
/// # Errors
/// What was wrong.
pub async fn empty_directories(store: &dyn Store) -> Check {
    put(store, "d/sub/file", b"kept", PutMode::Create).await?;
    for dir in ["d/sub", "d"] {
        ensure!(
            !store.remove_empty_dir(dir).await.map_err(fail(dir))?,
            "{dir} was removed while it held a file"
        );
    }
    ensure!(
        store.get_bytes("d/sub/file").await.map_err(fail("get"))?.as_ref() == b"kept",
        "the file changed"
    );
    ensure!(
        !store.remove_empty_dir("d/sub/file").await.map_err(fail("file"))?,
        "a file was removed as a directory"
    );
    ensure!(
        store.exists("d/sub/file").await.map_err(fail("head"))?,
        "the file is gone"
    );
    store.delete("d/sub/file").await.map_err(fail("delete"))?;
    let removed = store.remove_empty_dir("d/sub").await.map_err(fail("d/sub"))?;
    let parent = store.remove_empty_dir("d").await.map_err(fail("d"))?;
    ensure!(removed == parent, "d/sub removed: {removed}, then d: {parent}");
    ensure!(
        !store.remove_empty_dir("missing").await.map_err(fail("missing"))?,
        "a missing directory was reported removed"
    );
    // The store must not think a removed directory still exists.
    put(store, "d/sub/again", b"again", PutMode::Create).await?;
    ensure!(
        keys(store, "").await? == BTreeSet::from(["d/sub/again".to_owned()]),
        "listing after writing into a removed directory"
    );
    Ok(())
}

/// A store's root: a store opened on a directory that does not exist says so (where the store has
/// directories: `directories`), lists as empty, and exists once [`Store::create_root`] made it (which
/// may be done again); a store whose root is a file is an error that says it is not a directory.
///
/// `open(path)` opens a store of the backend under test at its URL followed by `/path` (these checks
/// need stores at other URLs than one store and its prefixes give). Everything is written below
/// `root-check`.
///
/// # Errors
/// What was wrong.
pub async fn root_existence(
    open: &(dyn Fn(&str) -> crate::Result<Arc<dyn Store>> + Send + Sync),
    directories: bool,
) -> Check {
    let missing = open("root-check/a b/missing").map_err(fail("open"))?;
    let exists = missing
        .root_exists()
        .await
        .map_err(fail("root_exists of a missing root"))?;
    ensure!(
        exists != directories,
        "a missing root: root_exists says {exists} (the store has directories: {directories})"
    );
    ensure!(
        keys(&*missing, "").await?.is_empty(),
        "a missing root does not list as empty"
    );
    missing.create_root().await.map_err(fail("create_root"))?;
    ensure!(
        missing
            .root_exists()
            .await
            .map_err(fail("root_exists after create_root"))?,
        "create_root did not make the root"
    );
    missing.create_root().await.map_err(fail("create_root again"))?;
    put(&*missing, "file", b"not a directory", PutMode::Create).await?;
    let parent = open("root-check/a b").map_err(fail("open the parent"))?;
    ensure!(
        parent
            .root_exists()
            .await
            .map_err(fail("root_exists of the parent"))?,
        "the parent of a made root does not exist"
    );
    let file = open("root-check/a b/missing/file").map_err(fail("open a file as the root"))?;
    match file.root_exists().await {
        Err(Error::NotADirectory { .. }) if directories => {}
        Ok(true) if !directories => {}
        other => return Err(format!("a root that is a file: root_exists gave {other:?}")),
    }
    if directories {
        match file.create_root().await {
            Err(Error::NotADirectory { .. }) => {}
            other => return Err(format!("a root that is a file: create_root gave {other:?}")),
        }
        let below = open("root-check/a b/missing/file/below").map_err(fail("open below a file"))?;
        ensure!(
            !below
                .root_exists()
                .await
                .map_err(fail("root_exists below a file"))?,
            "a root below a file exists"
        );
        match below.create_root().await {
            Err(Error::NotADirectory { location }) if location.contains("missing/file") => {}
            other => return Err(format!("a root below a file: create_root gave {other:?}")),
        }
    }
    ensure!(
        keys(&*missing, "").await? == BTreeSet::from(["file".to_owned()]),
        "the root's listing after the checks"
    );
    Ok(())
}

/// The lock methods: a lock is created once ([`Error::AlreadyExists`] the second time), read back,
/// updated, moved aside and removed; a missing lock is [`Error::NotFound`] to read, update and rename,
/// and removing it is not an error.
///
/// # Errors
/// What was wrong.
pub async fn lock_round_trip(store: &dyn Store) -> Check {
    let body = |text: &'static str| Bytes::from_static(text.as_bytes());
    let not_found = |what: &str, result: crate::Result<()>| match result {
        Err(Error::NotFound { .. }) => Ok(()),
        other => Err(format!("{what} of a missing lock gave {other:?}, not NotFound")),
    };
    not_found("lock_read", store.lock_read("locks/l").await.map(drop))?;
    not_found("lock_update", store.lock_update("locks/l", body("x")).await)?;
    not_found("lock_rename", store.lock_rename("locks/l", "locks/aside").await)?;
    store
        .lock_remove("locks/l")
        .await
        .map_err(fail("lock_remove of a missing lock"))?;
    store
        .lock_create("locks/l", body("first holder"))
        .await
        .map_err(fail("lock_create"))?;
    match store.lock_create("locks/l", body("second")).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => return Err(format!("a second lock_create gave {other:?}, not AlreadyExists")),
    }
    let read = |key: &'static str| async move { store.lock_read(key).await.map_err(fail(key)) };
    ensure!(
        read("locks/l").await? == "first holder",
        "lock_read after lock_create"
    );
    // A listing shows the lock (as the key, or as key/owner on FTP): it is not hidden.
    let listed = keys(store, "locks").await?;
    ensure!(
        listed == BTreeSet::from(["locks/l".to_owned()])
            || listed == BTreeSet::from(["locks/l/owner".to_owned()]),
        "the listing shows the lock as {listed:?}"
    );
    store
        .lock_update("locks/l", body("heartbeat"))
        .await
        .map_err(fail("lock_update"))?;
    ensure!(
        read("locks/l").await? == "heartbeat",
        "lock_read after lock_update"
    );
    store
        .lock_rename("locks/l", "locks/l.stale-1")
        .await
        .map_err(fail("lock_rename"))?;
    not_found(
        "lock_read after lock_rename",
        store.lock_read("locks/l").await.map(drop),
    )?;
    ensure!(
        read("locks/l.stale-1").await? == "heartbeat",
        "the moved lock does not read back"
    );
    store
        .lock_create("locks/l", body("taken over"))
        .await
        .map_err(fail("lock_create after the lock was moved aside"))?;
    ensure!(
        read("locks/l").await? == "taken over",
        "lock_read of the new lock"
    );
    for key in ["locks/l.stale-1", "locks/l"] {
        store.lock_remove(key).await.map_err(fail(key))?;
        not_found(
            "lock_read after lock_remove",
            store.lock_read(key).await.map(drop),
        )?;
    }
    store
        .lock_remove("locks/l")
        .await
        .map_err(fail("lock_remove again"))?;
    ensure!(
        keys(store, "locks").await?.is_empty(),
        "something is left after the locks were removed"
    );
    Ok(())
}

/// Two callers take one lock at the same moment, `rounds` times: exactly one gets it each time, the
/// other gets [`Error::AlreadyExists`], and the lock holds the winner's body.
///
/// # Errors
/// What was wrong.
pub async fn lock_race(store: Arc<dyn Store>, rounds: usize) -> Check {
    let racers = 2;
    for round in 0..rounds {
        let barrier = Arc::new(tokio::sync::Barrier::new(racers));
        let results: Vec<(usize, crate::Result<()>)> = stream::iter(0..racers)
            .map(|i| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                async move {
                    barrier.wait().await;
                    let body = Bytes::from(format!("racer {i} of round {round}"));
                    (i, store.lock_create(".lock", body).await)
                }
            })
            .buffer_unordered(racers)
            .collect()
            .await;
        let mut winners = Vec::new();
        for (i, result) in results {
            match result {
                Ok(()) => winners.push(i),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(format!("round {round}: racer {i} failed with {}", fail("")(e))),
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} racers took the lock (exactly one must)",
            winners.len()
        );
        let body = store.lock_read(".lock").await.map_err(fail("lock_read"))?;
        ensure!(
            body == format!("racer {} of round {round}", winners[0]),
            "round {round}: the lock holds {body:?}, not the winner's body"
        );
        store.lock_remove(".lock").await.map_err(fail("lock_remove"))?;
    }
    Ok(())
}

async fn put(store: &dyn Store, key: &str, data: &'static [u8], mode: PutMode) -> Check {
    store
        .put(key, PutSource::Bytes(Bytes::from_static(data)), mode)
        .await
        .map_err(fail(key))
}

async fn keys(store: &dyn Store, prefix: &str) -> std::result::Result<BTreeSet<String>, String> {
    Ok(store
        .list_all(prefix)
        .await
        .map_err(fail("list"))?
        .into_iter()
        .map(|m| m.key)
        .collect())
}

/// An empty object can be written, listed, read, and has size 0.
///
/// # Errors
/// What was wrong.
pub async fn zero_byte_object(store: &dyn Store) -> Check {
    put(store, "empty", b"", PutMode::Create).await?;
    ensure!(
        store.head("empty").await.map_err(fail("head"))?.size == 0,
        "head size is not 0"
    );
    ensure!(
        store.get_bytes("empty").await.map_err(fail("get"))?.is_empty(),
        "content is not empty"
    );
    ensure!(
        keys(store, "").await? == BTreeSet::from(["empty".to_owned()]),
        "listing does not show it"
    );
    Ok(())
}

/// Keys with spaces, unicode and `#?%+&=` round-trip through put, list and get.
///
/// # Errors
/// What was wrong.
pub async fn odd_names(store: &dyn Store) -> Check {
    let names = [
        "with space",
        "ünïcödé/ファイル.txt",
        "hash#q?pct%plus+",
        "a+b=c&d;e",
        "dir with space/x y",
    ];
    for name in names {
        store
            .put(
                name,
                PutSource::Bytes(Bytes::from(name.to_owned())),
                PutMode::Overwrite,
            )
            .await
            .map_err(fail(name))?;
    }
    let listed = keys(store, "").await?;
    let expected: BTreeSet<String> = names.iter().map(ToString::to_string).collect();
    ensure!(listed == expected, "listing {listed:?} is not {expected:?}");
    for name in names {
        let got = store.get_bytes(name).await.map_err(fail(name))?;
        ensure!(got == name.as_bytes(), "{name:?} reads back as {got:?}");
    }
    Ok(())
}

/// Listing is by whole path parts: `a` lists `a/b/c` and `a/bc`, not `ab/c`.
///
/// # Errors
/// What was wrong.
pub async fn nested_prefixes(store: &dyn Store) -> Check {
    for key in ["a/b/c", "a/bc", "ab/c", "a/b/d/e"] {
        put(store, key, b"x", PutMode::Overwrite).await?;
    }
    let set = |items: &[&str]| items.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
    ensure!(
        keys(store, "a").await? == set(&["a/b/c", "a/bc", "a/b/d/e"]),
        "list(a) = {:?}",
        keys(store, "a").await?
    );
    ensure!(
        keys(store, "a/").await? == set(&["a/b/c", "a/bc", "a/b/d/e"]),
        "list(a/) differs from list(a)"
    );
    ensure!(
        keys(store, "a/b").await? == set(&["a/b/c", "a/b/d/e"]),
        "list(a/b) = {:?}",
        keys(store, "a/b").await?
    );
    ensure!(
        keys(store, "a/b/c").await?.is_empty(),
        "listing an object's own key must list nothing below it"
    );
    ensure!(
        keys(store, "nothing").await?.is_empty(),
        "listing a missing prefix must be empty"
    );
    Ok(())
}

/// `Overwrite` replaces an object.
///
/// # Errors
/// What was wrong.
pub async fn overwrite(store: &dyn Store) -> Check {
    put(store, "k", b"first", PutMode::Overwrite).await?;
    put(store, "k", b"second version", PutMode::Overwrite).await?;
    ensure!(
        store.get_bytes("k").await.map_err(fail("get"))? == "second version",
        "the second put did not replace"
    );
    ensure!(
        store.head("k").await.map_err(fail("head"))?.size == 14,
        "head size is stale"
    );
    Ok(())
}

/// `Create` fails with `AlreadyExists` on an existing key and leaves it as it was.
///
/// # Errors
/// What was wrong.
pub async fn create_if_absent(store: &dyn Store) -> Check {
    put(store, "once", b"original", PutMode::Create).await?;
    match store
        .put(
            "once",
            PutSource::Bytes(Bytes::from_static(b"intruder")),
            PutMode::Create,
        )
        .await
    {
        Err(Error::AlreadyExists { .. }) => {}
        other => return Err(format!("a second create gave {other:?}, not AlreadyExists")),
    }
    ensure!(
        store.get_bytes("once").await.map_err(fail("get"))? == "original",
        "a failed create changed the object"
    );
    Ok(())
}

/// Of racing creates of one key, exactly one wins (where creates are atomic), and the object is the
/// winner's.
///
/// # Errors
/// What was wrong.
pub async fn create_race(store: Arc<dyn Store>) -> Check {
    let racers = 8;
    let results: Vec<(usize, crate::Result<()>)> = stream::iter(0..racers)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                (
                    i,
                    store
                        .put(
                            "contested",
                            PutSource::Bytes(Bytes::from(format!("racer {i}"))),
                            PutMode::Create,
                        )
                        .await,
                )
            }
        })
        .buffer_unordered(racers)
        .collect()
        .await;
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    for (i, result) in &results {
        if let Err(e) = result
            && !matches!(e, Error::AlreadyExists { .. })
        {
            return Err(format!("racer {i} failed with {e}, not AlreadyExists"));
        }
    }
    let content = store.get_bytes("contested").await.map_err(fail("get"))?;
    if store.capabilities().atomic_create {
        ensure!(
            winners.len() == 1,
            "{} racers won (exactly one must)",
            winners.len()
        );
        ensure!(
            content == format!("racer {}", winners[0]),
            "the object is not the winner's"
        );
    } else {
        ensure!(!winners.is_empty(), "nobody won");
    }
    Ok(())
}

/// Byte ranges read the right bytes.
///
/// # Errors
/// What was wrong.
pub async fn range_reads(store: &dyn Store) -> Check {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put(
            "r",
            PutSource::Bytes(Bytes::from(data.clone())),
            PutMode::Overwrite,
        )
        .await
        .map_err(fail("put"))?;
    for range in [0..1u64, 0..10_000, 5000..5001, 1234..8765, 9999..10_000] {
        let got = store
            .get_range("r", range.clone())
            .await
            .map_err(fail("get_range"))?;
        ensure!(
            got == data[range.start as usize..range.end as usize],
            "range {range:?} read wrong bytes"
        );
    }
    Ok(())
}

/// A missing key is `NotFound` for head, get and range reads; deleting it succeeds.
///
/// # Errors
/// What was wrong.
pub async fn missing_keys(store: &dyn Store) -> Check {
    ensure!(
        matches!(store.head("nope").await, Err(Error::NotFound { .. })),
        "head of a missing key"
    );
    ensure!(
        matches!(store.get("nope").await, Err(Error::NotFound { .. })),
        "get of a missing key"
    );
    ensure!(
        matches!(store.get_range("nope", 0..1).await, Err(Error::NotFound { .. })),
        "range of a missing key"
    );
    store
        .delete("nope")
        .await
        .map_err(fail("delete of a missing key"))?;
    put(store, "here", b"x", PutMode::Overwrite).await?;
    store.delete("here").await.map_err(fail("delete"))?;
    ensure!(
        !store.exists("here").await.map_err(fail("exists"))?,
        "deleted object still exists"
    );
    Ok(())
}

/// Many puts at once all land.
///
/// # Errors
/// What was wrong.
pub async fn concurrent_puts(store: Arc<dyn Store>) -> Check {
    let n = 64;
    stream::iter(0..n)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                store
                    .put(
                        &format!("c/{i:03}"),
                        PutSource::Bytes(Bytes::from(vec![i as u8; i * 10])),
                        PutMode::Overwrite,
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .map_err(fail("concurrent put"))?;
    let listed = store.list_all("c").await.map_err(fail("list"))?;
    ensure!(listed.len() == n, "{} of {n} objects listed", listed.len());
    for meta in listed {
        let i: usize = meta
            .key
            .trim_start_matches("c/")
            .parse()
            .map_err(|_| format!("odd key {}", meta.key))?;
        ensure!(
            meta.size == (i * 10) as u64,
            "{} has size {}",
            meta.key,
            meta.size
        );
    }
    Ok(())
}

/// Copy duplicates, rename moves (and replaces the target).
///
/// # Errors
/// What was wrong.
pub async fn copy_and_rename(store: &dyn Store) -> Check {
    put(store, "from", b"payload", PutMode::Overwrite).await?;
    store.copy("from", "sub/copy").await.map_err(fail("copy"))?;
    ensure!(
        store.get_bytes("sub/copy").await.map_err(fail("get copy"))? == "payload",
        "copy content"
    );
    ensure!(
        store.exists("from").await.map_err(fail("exists"))?,
        "copy removed the source"
    );
    put(store, "target", b"old", PutMode::Overwrite).await?;
    store.rename("sub/copy", "target").await.map_err(fail("rename"))?;
    ensure!(
        store.get_bytes("target").await.map_err(fail("get target"))? == "payload",
        "rename content"
    );
    ensure!(
        !store.exists("sub/copy").await.map_err(fail("exists"))?,
        "rename left the source"
    );
    ensure!(
        matches!(store.rename("gone", "x").await, Err(Error::NotFound { .. })),
        "rename of a missing key"
    );
    Ok(())
}

/// Where the backend says it can, `set_mtime` sets what `head` reports; where not, it says so.
///
/// # Errors
/// What was wrong.
pub async fn modification_times(store: &dyn Store) -> Check {
    put(store, "m", b"x", PutMode::Overwrite).await?;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let result = store.set_mtime("m", when).await;
    if store.capabilities().set_mtime {
        result.map_err(fail("set_mtime"))?;
        let modified = store.head("m").await.map_err(fail("head"))?.modified;
        ensure!(
            modified == Some(when),
            "head reports {modified:?} after setting {when:?}"
        );
    } else {
        ensure!(
            matches!(result, Err(Error::Unsupported { .. })),
            "set_mtime must say Unsupported, said {result:?}"
        );
    }
    Ok(())
}

/// `put_meta` stores like `put` and reports what `head` then reports (size, time, tag), for a new
/// object in a new directory and for a replaced one; a create over an object is refused.
///
/// # Errors
/// What was wrong.
pub async fn put_meta_is_head(store: &dyn Store) -> Check {
    let bytes = |data: &'static [u8]| PutSource::Bytes(Bytes::from_static(data));
    for (data, mode) in [
        (&b"first"[..], PutMode::Create),
        (&b"second!"[..], PutMode::Overwrite),
    ] {
        let meta = store
            .put_meta("d/m", bytes(data), mode)
            .await
            .map_err(fail("put_meta"))?;
        let head = store.head("d/m").await.map_err(fail("head"))?;
        ensure!(meta == head, "put_meta said {meta:?}, head then said {head:?}");
        ensure!(
            meta.size == data.len() as u64,
            "put_meta said {meta:?} for {} bytes",
            data.len()
        );
        let got = store.get_bytes("d/m").await.map_err(fail("get"))?;
        ensure!(got == data, "put_meta stored {got:?}, not {data:?}");
    }
    let again = store.put_meta("d/m", bytes(b"third"), PutMode::Create).await;
    ensure!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "a put_meta create over an object must be AlreadyExists, was {again:?}"
    );
    Ok(())
}

/// Listing returns every one of `n` keys (more than one page of an S3 listing).
///
/// # Errors
/// What was wrong.
pub async fn many_keys(store: Arc<dyn Store>, n: usize) -> Check {
    stream::iter(0..n)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                store
                    .put(
                        &format!("k/{:02}/{i:05}", i % 7),
                        PutSource::Bytes(Bytes::new()),
                        PutMode::Overwrite,
                    )
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .map_err(fail("put"))?;
    let listed = keys(&*store, "k").await?;
    ensure!(listed.len() == n, "listed {} of {n} keys", listed.len());
    let sub = keys(&*store, "k/03").await?;
    ensure!(
        sub.len() == (0..n).filter(|i| i % 7 == 3).count(),
        "sub-prefix listed {}",
        sub.len()
    );
    Ok(())
}

/// A large object (uploaded from a file, in parts where the backend has them) reads back intact.
///
/// # Errors
/// What was wrong.
pub async fn large_object(store: &dyn Store, size: u64) -> Check {
    let dir = std::env::temp_dir().join(format!("snapsync-conformance-{}-{size}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("large.bin");
    let mut expected = blake3::Hasher::new();
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut block = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            expected.update(&block[..n]);
            file.write_all(&block[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        file.flush().map_err(|e| e.to_string())?;
    }
    let result = async {
        store
            .put("big", PutSource::File(path.clone()), PutMode::Create)
            .await
            .map_err(fail("put"))?;
        ensure!(
            store.head("big").await.map_err(fail("head"))?.size == size,
            "head size differs"
        );
        let mut got = store.get("big").await.map_err(fail("get"))?;
        let mut actual = blake3::Hasher::new();
        let mut total = 0u64;
        while let Some(piece) = got.stream.next().await {
            let piece = piece.map_err(fail("read"))?;
            total += piece.len() as u64;
            actual.update(&piece);
        }
        ensure!(total == size, "read {total} of {size} bytes");
        ensure!(actual.finalize() == expected.finalize(), "content differs");
        let tail = store
            .get_range("big", size - 10..size)
            .await
            .map_err(fail("range"))?;
        ensure!(tail.len() == 10, "tail range");
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh local directory for a check's source files.
fn scratch_dir(name: &str) -> std::result::Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "snapsync-conformance-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `size` bytes of a pattern that depends on `seed`.
fn pattern(size: u64, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(89))
        .collect()
}

/// How [`changing_source`] changes a file while it is being put.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Bytes are appended.
    Append,
    /// Bytes are overwritten in place and the modification time is put back: same size, same mtime,
    /// only the change time tells.
    RewriteInPlace,
    /// A copy (same bytes, same mtime) is renamed over the path: only the inode tells.
    ReplaceByRename,
}

impl Change {
    fn apply(self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let before = std::fs::metadata(path)?;
        let mtime = before.modified()?;
        match self {
            Change::Append => std::fs::OpenOptions::new()
                .append(true)
                .open(path)?
                .write_all(b"appended"),
            Change::RewriteInPlace => {
                let ctime = |meta: &std::fs::Metadata| (meta.ctime(), meta.ctime_nsec());
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                let started = std::time::Instant::now();
                // The change time has the clock's granularity: write again until it moved.
                loop {
                    std::os::unix::fs::FileExt::write_all_at(&file, b"rewritten in place", 0)?;
                    file.set_modified(mtime)?;
                    if ctime(&file.metadata()?) != ctime(&before) {
                        return Ok(());
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        return Err(std::io::Error::other("the change time never moved"));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Change::ReplaceByRename => {
                let copy = path.with_extension("copy");
                std::fs::copy(path, &copy)?;
                std::fs::File::options()
                    .write(true)
                    .open(&copy)?
                    .set_modified(mtime)?;
                std::fs::rename(&copy, path)
            }
        }
    }
}

/// A local file that changes while it is being put is never published: the put is
/// [`Error::SourceChanged`], the key keeps its old content (or stays absent), and no temporary object
/// is left. The change is made at a known moment of the upload (just before the first byte is read, or
/// after the last byte was sent and before the object is published), for a small file and for one
/// large enough to go up in parts, so the check does not depend on timing.
///
/// # Errors
/// What was wrong.
pub async fn changing_source(store: &dyn Store) -> Check {
    let dir = scratch_dir("changing")?;
    let result = changing_source_in(store, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn changing_source_in(store: &dyn Store, dir: &Path) -> Check {
    let small = 100 * 1024;
    let large = crate::SINGLE_PUT_MAX + (1 << 20);
    put(store, "kept", b"old", PutMode::Create).await?;
    let cases = [
        (small, Point::Check, Change::Append, PutMode::Overwrite),
        (small, Point::Check, Change::RewriteInPlace, PutMode::Create),
        (small, Point::Check, Change::ReplaceByRename, PutMode::Overwrite),
        (small, Point::Read, Change::RewriteInPlace, PutMode::Overwrite),
        (small, Point::Read, Change::ReplaceByRename, PutMode::Create),
        (large, Point::Check, Change::Append, PutMode::Overwrite),
        (large, Point::Read, Change::Append, PutMode::Create),
    ];
    for (i, (size, point, change, mode)) in cases.into_iter().enumerate() {
        let case = format!("{change:?} at {point:?} of a {size}-byte file ({mode:?})");
        let key = match mode {
            PutMode::Overwrite => "kept",
            PutMode::Create => "absent",
        };
        let path = dir.join(format!("source-{i}"));
        std::fs::write(&path, pattern(size, 1)).map_err(|e| format!("{case}: {e}"))?;
        let applied: Arc<Mutex<Option<std::io::Result<()>>>> = Arc::default();
        let watch = {
            let (applied, path) = (Arc::clone(&applied), path.clone());
            crate::source::watch(&path.clone(), move |at| {
                let mut applied = applied.lock().unwrap_or_else(PoisonError::into_inner);
                if at == point && applied.is_none() {
                    *applied = Some(change.apply(&path));
                }
            })
        };
        let result = store.put(key, PutSource::File(path.clone()), mode).await;
        drop(watch);
        match applied.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("{case}: changing the file failed: {e}")),
            None => return Err(format!("{case}: the put never reached {point:?}")),
        }
        match result {
            Err(Error::SourceChanged {
                location,
                path: reported,
            }) => {
                ensure!(
                    reported == path && location.ends_with(key),
                    "{case}: the error names {location} and {}",
                    reported.display()
                );
            }
            other => return Err(format!("{case}: {other:?}, not SourceChanged")),
        }
        ensure!(
            store.get_bytes("kept").await.map_err(fail("get"))?.as_ref() == b"old",
            "{case}: the old object was replaced"
        );
        ensure!(
            keys(store, "").await? == BTreeSet::from(["kept".to_owned()]),
            "{case}: listing after the refused put"
        );
        let leftovers: Vec<_> = store
            .list_leftovers()
            .try_collect()
            .await
            .map_err(fail("leftovers"))?;
        ensure!(
            leftovers.is_empty(),
            "{case}: temporary files left: {leftovers:?}"
        );
    }
    // Once it stays still, the changed file goes up as it now is.
    let last = dir.join(format!("source-{}", cases.len() - 1));
    store
        .put("absent", PutSource::File(last.clone()), PutMode::Create)
        .await
        .map_err(fail("put of the settled file"))?;
    let expected = std::fs::read(&last).map_err(|e| e.to_string())?;
    ensure!(
        store.get_bytes("absent").await.map_err(fail("get"))?.as_ref() == expected.as_slice(),
        "the settled file reads back differently"
    );
    Ok(())
}

/// [`PutSource::FileExpecting`]: a file whose size or modification time is not the expected one is
/// refused with [`Error::SourceChanged`] before a byte of it is read or sent; the expected one is
/// stored.
///
/// # Errors
/// What was wrong.
pub async fn expected_source(store: &dyn Store) -> Check {
    let dir = scratch_dir("expected")?;
    let result = expected_source_in(store, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn expected_source_in(store: &dyn Store, dir: &Path) -> Check {
    let path = dir.join("source");
    let data = pattern(64 * 1024, 2);
    std::fs::write(&path, &data).map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
    let (size, mtime) = (meta.len(), meta.modified().map_err(|e| e.to_string())?);
    let seen: Arc<Mutex<Vec<Point>>> = Arc::default();
    let _watch = {
        let seen = Arc::clone(&seen);
        crate::source::watch(&path, move |at| {
            seen.lock().unwrap_or_else(PoisonError::into_inner).push(at);
        })
    };
    let expecting = |size, mtime| PutSource::FileExpecting {
        path: path.clone(),
        size,
        mtime,
        progress: None,
    };
    for (what, size, mtime) in [
        ("a larger size", size + 1, Some(mtime)),
        ("a smaller size, no mtime", size - 1, None),
        ("a later mtime", size, Some(mtime + Duration::from_secs(1))),
        ("an mtime 1 ns off", size, Some(mtime - Duration::from_nanos(1))),
    ] {
        match store.put("file", expecting(size, mtime), PutMode::Create).await {
            Err(Error::SourceChanged { path: reported, .. }) if reported == path => {}
            other => return Err(format!("{what}: {other:?}, not SourceChanged")),
        }
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        ensure!(seen.is_empty(), "{what}: the file was read ({seen:?})");
        ensure!(keys(store, "").await?.is_empty(), "{what}: something was stored");
        let leftovers: Vec<_> = store
            .list_leftovers()
            .try_collect()
            .await
            .map_err(fail("leftovers"))?;
        ensure!(
            leftovers.is_empty(),
            "{what}: temporary files left: {leftovers:?}"
        );
    }
    // The bytes are counted as they are read, for a progress bar.
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source = PutSource::FileExpecting {
        path: path.clone(),
        size,
        mtime: Some(mtime),
        progress: Some(Arc::clone(&counted)),
    };
    store
        .put("file", source, PutMode::Create)
        .await
        .map_err(fail("put as expected"))?;
    let counted = counted.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(counted >= size, "progress counted {counted} of {size} bytes");
    store
        .put("size-only", expecting(size, None), PutMode::Overwrite)
        .await
        .map_err(fail("put with the size only"))?;
    for key in ["file", "size-only"] {
        ensure!(
            store.get_bytes(key).await.map_err(fail(key))?.as_ref() == data.as_slice(),
            "{key} reads back differently"
        );
    }
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    ensure!(
        seen.contains(&Point::Read) && seen.last() == Some(&Point::Check),
        "the accepted puts were not checked: {seen:?}"
    );
    Ok(())
}
