//! Snapshots end to end over real stores: push, pull, copy, verify, gc, and what goes wrong.

use std::fs;
use std::ops::Range;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use snapsync_core::{Checksum, Manifest, Walk, WalkOptions, walk};
use snapsync_snapshot::layout::{manifest_key, object_key};
use snapsync_snapshot::{
    Change, Error, GcOptions, MaterializeOptions, Problem, RemoveReport, Repository, TransferOptions, copy,
    diff, gc, pull, push_walk, remove_corrupt, verify,
};
use snapsync_store::{
    Capabilities, ConnectOptions, GetStream, ObjectMeta, PutMode, PutSource, Store, StoreExt, StoreUrl,
};
use snapsync_testkit::S3Server;

fn tree(root: &Path) {
    let files: &[(&str, &[u8], u32)] = &[
        ("a.txt", b"alpha\n", 0o644),
        ("same-as-a.txt", b"alpha\n", 0o600),
        ("empty", b"", 0o644),
        ("bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
        ("deep/er/est/file with spaces", b"deep", 0o640),
        ("setuid", b"s", 0o4755),
    ];
    for (path, content, mode) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::set_permissions(root.join("deep/er"), fs::Permissions::from_mode(0o700)).unwrap();
}

fn walked(root: &Path) -> Walk {
    walk(
        root,
        &WalkOptions {
            record_sources: true,
            ..WalkOptions::default()
        },
    )
    .unwrap()
}

fn id_of(root: &Path) -> Checksum {
    walk(root, &WalkOptions::default()).unwrap().manifest.id()
}

/// Opens a store as the tests always did: no retries, nothing from the process's environment.
fn open(url: &StoreUrl) -> snapsync_store::Result<Arc<dyn Store>> {
    snapsync_store::open(url, &ConnectOptions::default().with_retry(None))
}

fn local(dir: &Path) -> Repository {
    Repository::new(open(&StoreUrl::local(dir)).unwrap())
}

fn memory(name: &str) -> Repository {
    Repository::new(open(&StoreUrl::parse(&format!("memory://{name}")).unwrap()).unwrap())
}

fn options() -> TransferOptions {
    TransferOptions::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_pull_reproduces_the_tree_exactly() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = local(store_dir.path());
    let walk = walked(source.path());
    let report = push_walk(&walk, &store, &options()).await.unwrap();
    assert_eq!(report.id, walk.manifest.id());
    assert_eq!(
        (report.objects_sent, report.objects_present),
        (5, 0),
        "6 files, 5 distinct contents"
    );

    let dest = tempfile::tempdir().unwrap();
    let pulled = pull(
        &report.id,
        &store,
        None,
        dest.path(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.files_written, 6);
    // Same content, same permissions (setuid and 700 directories included): the same snapshot id.
    fs::set_permissions(dest.path(), fs::metadata(source.path()).unwrap().permissions()).unwrap();
    assert_eq!(id_of(dest.path()), report.id);

    // A second pull changes nothing; a second push sends nothing.
    let again = pull(
        &report.id,
        &store,
        None,
        dest.path(),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((again.files_written, again.files_unchanged), (0, 6));
    let again = push_walk(&walk, &store, &options()).await.unwrap();
    assert_eq!((again.objects_sent, again.objects_present), (0, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_layout_is_snapdirs() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store_dir = tempfile::tempdir().unwrap();
    let walk = walked(source.path());
    let id = push_walk(&walk, &local(store_dir.path()), &options())
        .await
        .unwrap()
        .id;
    let manifest_file = store_dir.path().join(manifest_key(&id));
    let text = fs::read(&manifest_file).unwrap();
    assert_eq!(
        text,
        format!("{}\n", walk.manifest.render()).into_bytes(),
        "manifest text plus a newline"
    );
    assert_eq!(Checksum::of(&text), id, "so the file hashes to the id");
    let a = Checksum::of(b"alpha\n");
    assert_eq!(
        fs::read(store_dir.path().join(object_key(&a))).unwrap(),
        b"alpha\n"
    );
    assert!(object_key(&a).starts_with(&format!(".objects/{}/", &a.to_hex()[..3])));
}

/// Counts listings and single-object lookups, to show a push finds what the store has by listing; can
/// play a concurrent gc that deletes an object just before a manifest is written.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    lists: AtomicU32,
    heads: AtomicU32,
    gc_before_manifest: std::sync::Mutex<Option<String>>,
    /// A manifest (key, text) that a concurrent push writes just before the second listing of
    /// manifests.
    push_before_second_manifest_listing: std::sync::Mutex<Option<(String, Bytes)>>,
    manifest_listings: AtomicU32,
}

impl Counting {
    fn new(inner: Arc<dyn Store>) -> Counting {
        Counting {
            inner,
            lists: AtomicU32::new(0),
            heads: AtomicU32::new(0),
            gc_before_manifest: std::sync::Mutex::new(None),
            push_before_second_manifest_listing: std::sync::Mutex::new(None),
            manifest_listings: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl Store for Counting {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, snapsync_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if prefix.starts_with(".manifests") && self.manifest_listings.fetch_add(1, Ordering::SeqCst) == 1 {
            let injected = self.push_before_second_manifest_listing.lock().unwrap().take();
            if let Some((key, text)) = injected {
                let (inner, prefix) = (Arc::clone(&self.inner), prefix.to_owned());
                return futures::stream::once(async move {
                    inner
                        .put(&key, PutSource::Bytes(text), PutMode::Create)
                        .await
                        .unwrap();
                    inner.list(&prefix)
                })
                .flatten()
                .boxed();
            }
        }
        self.inner.list(prefix)
    }
    async fn head(&self, key: &str) -> snapsync_store::Result<ObjectMeta> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> snapsync_store::Result<GetStream> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> snapsync_store::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> snapsync_store::Result<()> {
        if key.starts_with(".manifests/") {
            let victim = self.gc_before_manifest.lock().unwrap().take();
            if let Some(victim) = victim {
                self.inner.delete(&victim).await?;
            }
        }
        self.inner.put(key, source, mode).await
    }
    async fn delete(&self, key: &str) -> snapsync_store::Result<()> {
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

#[tokio::test(flavor = "multi_thread")]
async fn a_push_finds_present_objects_by_listing_not_by_asking_each() {
    let source = tempfile::tempdir().unwrap();
    for i in 0..200 {
        fs::write(source.path().join(format!("f{i}")), format!("content {i}")).unwrap();
    }
    let counting = Arc::new(Counting::new(
        open(&StoreUrl::parse("memory://counting").unwrap()).unwrap(),
    ));
    let store = Repository::new(Arc::clone(&counting) as Arc<dyn Store>);
    let report = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap();
    assert_eq!(report.objects_sent, 200);
    assert_eq!(counting.heads.load(Ordering::SeqCst), 0);
    assert_eq!(
        counting.lists.load(Ordering::SeqCst),
        1,
        "one listing; nothing was counted as present, so nothing to check after the manifest"
    );

    // Again, with a gc deleting an object this push counted as present just before the manifest: the
    // check after the manifest (a second listing) finds it gone and sends it again.
    fs::write(source.path().join("new"), "new").unwrap();
    let victim = object_key(&Checksum::of(b"content 7"));
    *counting.gc_before_manifest.lock().unwrap() = Some(victim.clone());
    counting.lists.store(0, Ordering::SeqCst);
    let report = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap();
    assert_eq!(report.objects_present, 200);
    assert_eq!(report.objects_sent, 2, "the new file, and the object gc took");
    assert_eq!(
        counting.lists.load(Ordering::SeqCst),
        3,
        "before; after the manifest, finding the loss; after sending it again, finding none"
    );
    assert_eq!(counting.heads.load(Ordering::SeqCst), 0);
    assert!(counting.exists(&victim).await.unwrap());
    let checked = verify(&report.id, &store, 4, None).await.unwrap();
    assert!(checked.problems.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_over_older_versions_replaces_them_and_delete_makes_an_exact_copy() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store = memory("replace");
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::write(d.join("a.txt"), b"an older version").unwrap();
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::write(d.join("bin/tool"), b"old tool").unwrap();
    fs::write(d.join("deep"), b"a file where the snapshot has a directory").unwrap();
    fs::write(d.join("extra.txt"), b"not in the snapshot").unwrap();
    fs::write(d.join(".a.txt.snapsync-999-0.tmp"), b"leftover of a killed run").unwrap();
    pull(&id, &store, None, d, &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(d.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(fs::read(d.join("bin/tool")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(fs::read(d.join("deep/er/est/file with spaces")).unwrap(), b"deep");
    assert_eq!(
        fs::read(d.join("extra.txt")).unwrap(),
        b"not in the snapshot",
        "kept without --delete"
    );
    assert!(
        !d.join(".a.txt.snapsync-999-0.tmp").exists(),
        "leftovers are cleaned"
    );

    let exact = MaterializeOptions {
        delete: true,
        ..MaterializeOptions::default()
    };
    let report = pull(&id, &store, None, d, &exact).await.unwrap();
    assert_eq!(report.removed, 1);
    assert!(!d.join("extra.txt").exists());
    fs::set_permissions(d, fs::metadata(source.path()).unwrap().permissions()).unwrap();
    assert_eq!(id_of(d), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_objects_fail_verify_and_are_never_materialised() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = local(store_dir.path());
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    let a = Checksum::of(b"alpha\n");
    fs::write(store_dir.path().join(object_key(&a)), b"ALPHA\n").unwrap();

    let report = verify(&id, &store, 4, None).await.unwrap();
    assert_eq!(report.objects, 5);
    assert_eq!(
        report.problems,
        [Problem::Corrupt {
            checksum: a,
            path: "./a.txt".into(),
            actual: Checksum::of(b"ALPHA\n")
        }]
    );

    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("a.txt"), b"the old version").unwrap();
    let err = pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ObjectCorrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("is corrupt: its content hashes to"),
        "{err}"
    );
    assert_eq!(
        fs::read(dest.path().join("a.txt")).unwrap(),
        b"the old version",
        "the old file is untouched"
    );
    assert_eq!(
        fs::read(dest.path().join("same-as-a.txt")).ok(),
        None,
        "nothing with that content was written"
    );
    let leftovers: Vec<_> = walkdir(dest.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".snapsync-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Objects from a store that has no local files (memory here, S3 or FTP in use) arrive through a
/// checked temporary file: a big one, pulled or copied, is published only if it hashes right; a corrupt
/// one is neither materialised nor forwarded, and no temporary file is left anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_objects_from_a_remote_store_are_neither_written_nor_forwarded() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    // Above what a copy holds in memory, so it goes through a scratch file.
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(source.path().join("big.bin"), &big).unwrap();
    let store = memory("corrupt-remote");
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    let scratch_files = || {
        let ours = format!(".snapsync-{}-", std::process::id());
        fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&ours)
            })
            .count()
    };

    let dest = tempfile::tempdir().unwrap();
    pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(dest.path().join("big.bin")).unwrap(), big);
    let to_dir = tempfile::tempdir().unwrap();
    copy(&id, &store, &local(to_dir.path()), &options())
        .await
        .unwrap();
    assert!(
        verify(&id, &local(to_dir.path()), 4, None)
            .await
            .unwrap()
            .problems
            .is_empty()
    );
    assert_eq!(scratch_files(), 0);

    let sum = Checksum::of(&big);
    let mut bad = big.clone();
    bad[5 << 20] ^= 0xff;
    store
        .store()
        .put(
            &object_key(&sum),
            PutSource::Bytes(Bytes::from(bad)),
            PutMode::Overwrite,
        )
        .await
        .unwrap();

    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("big.bin"), b"the old version").unwrap();
    let err = pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ObjectCorrupt { checksum, .. } if *checksum == sum),
        "{err}"
    );
    assert_eq!(fs::read(dest.path().join("big.bin")).unwrap(), b"the old version");
    let leftovers: Vec<_> = walkdir(dest.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".snapsync-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let to_dir = tempfile::tempdir().unwrap();
    let err = copy(&id, &store, &local(to_dir.path()), &options())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ObjectCorrupt { checksum, .. } if *checksum == sum),
        "{err}"
    );
    assert!(
        !to_dir.path().join(object_key(&sum)).exists(),
        "the corrupt object was forwarded"
    );
    assert_eq!(scratch_files(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_objects_are_removed_only_while_still_corrupt_and_a_push_then_repairs_them() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = local(store_dir.path());
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    let (a, deep) = (Checksum::of(b"alpha\n"), Checksum::of(b"deep"));
    fs::write(store_dir.path().join(object_key(&a)), b"ALPHA\n").unwrap();
    fs::write(store_dir.path().join(object_key(&deep)), b"DEEP").unwrap();
    let report = verify(&id, &store, 4, None).await.unwrap();
    assert_eq!(report.corrupt().collect::<Vec<_>>().len(), 2);
    // One of them is repaired after the verify: it is kept.
    fs::write(store_dir.path().join(object_key(&deep)), b"deep").unwrap();
    let removed = remove_corrupt(&store, &report).await.unwrap();
    assert_eq!(
        removed,
        RemoveReport {
            removed: vec![a],
            kept: vec![deep],
        }
    );
    assert!(!store_dir.path().join(object_key(&a)).exists());
    assert!(store_dir.path().join(object_key(&deep)).exists());
    // The snapshot now lacks the object; pushing again sends it, and it verifies.
    let report = verify(&id, &store, 4, None).await.unwrap();
    assert!(matches!(report.problems[..], [Problem::Missing { checksum, .. }] if checksum == a));
    assert_eq!(report.corrupt().count(), 0);
    assert_eq!(
        remove_corrupt(&store, &report).await.unwrap(),
        RemoveReport::default()
    );
    push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap();
    assert!(verify(&id, &store, 4, None).await.unwrap().problems.is_empty());
}

fn walkdir(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_objects_are_named() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store = memory("missing");
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    store
        .store()
        .delete(&object_key(&Checksum::of(b"deep")))
        .await
        .unwrap();
    let report = verify(&id, &store, 4, None).await.unwrap();
    assert_eq!(
        report.problems,
        [Problem::Missing {
            checksum: Checksum::of(b"deep"),
            path: "./deep/er/est/file with spaces".into()
        }]
    );
    let dest = tempfile::tempdir().unwrap();
    let err = pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "object {} (./deep/er/est/file with spaces) is missing from memory://missing",
            Checksum::of(b"deep")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_tampered_manifests_are_errors() {
    let store = memory("manifests");
    let nothing = Checksum::of(b"nothing");
    let err = pull(
        &nothing,
        &store,
        None,
        Path::new("/nonexistent"),
        &MaterializeOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("snapshot {nothing} is not in memory://manifests")
    );
    // A manifest stored under the wrong id.
    store
        .store()
        .put(
            &manifest_key(&nothing),
            PutSource::Bytes(Bytes::from_static(b"D 755 x 0 ./\n")),
            PutMode::Create,
        )
        .await
        .unwrap();
    let err = verify(&nothing, &store, 1, None).await.unwrap_err();
    assert!(
        err.to_string().contains("is corrupt: its text hashes to"),
        "{err}"
    );
}

/// A manifest is checked before anything is written: a hostile one cannot reach outside the destination.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_manifests_write_nothing_outside_the_destination() {
    let store = memory("hostile");
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let sum = Checksum::of(b"evil");
    store
        .store()
        .put(
            &object_key(&sum),
            PutSource::Bytes(Bytes::from_static(b"evil")),
            PutMode::Create,
        )
        .await
        .unwrap();
    let dir_sum = |children: &[Checksum]| snapsync_core::directory_checksum(children.iter().copied());
    let up = dir_sum(&[sum]);
    let text = format!(
        "D 755 {} 4 ./\nD 755 {up} 4 ./../\nF 644 {sum} 4 ./../evil",
        dir_sum(&[up])
    );
    let manifest = Manifest::parse(text.as_bytes()).unwrap();
    manifest.check_consistency().unwrap();
    let id = store.put_manifest(&manifest).await.unwrap();
    let err = pull(&id, &store, None, &dest, &MaterializeOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unsafe path ./../ in manifest: has a .. component"),
        "{err}"
    );
    assert!(!parent.path().join("evil").exists());
    assert!(!dest.exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_in_the_destination_is_replaced_not_followed() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let store = memory("symlinked-dest");
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    let dest = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), dest.path().join("bin")).unwrap();
    pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap();
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing was written through the link"
    );
    assert!(fs::symlink_metadata(dest.path().join("bin")).unwrap().is_dir());
    assert_eq!(
        fs::read(dest.path().join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_after_the_walk_fails_the_push() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let walk = walked(source.path());
    // (A file whose content another file shares may be read from the other one: change a unique one.)
    fs::write(source.path().join("bin/tool"), b"changed!").unwrap();
    let store = memory("changed");
    let err = push_walk(&walk, &store, &options()).await.unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert!(
        err.to_string().ends_with("bin/tool changed after it was hashed"),
        "{err}"
    );
    let tool = Checksum::of(b"#!/bin/sh\necho hi\n");
    assert!(!store.store().exists(&object_key(&tool)).await.unwrap());
    assert!(
        !store.has_manifest(&walk.manifest.id()).await.unwrap(),
        "no manifest for an incomplete push"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_between_stores_then_verify() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let from = memory("copy-from");
    let id = push_walk(&walked(source.path()), &from, &options())
        .await
        .unwrap()
        .id;
    let to_dir = tempfile::tempdir().unwrap();
    let to = local(to_dir.path());
    let report = copy(&id, &from, &to, &options()).await.unwrap();
    assert_eq!(report.objects_sent, 5);
    assert!(verify(&id, &to, 4, None).await.unwrap().problems.is_empty());
    assert_eq!(copy(&id, &from, &to, &options()).await.unwrap().objects_sent, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_deletes_only_old_unreferenced_objects() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = local(store_dir.path());
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap();
    let put = |data: &'static [u8]| {
        let store = store.clone();
        async move {
            let key = object_key(&Checksum::of(data));
            store
                .store()
                .put(
                    &key,
                    PutSource::Bytes(Bytes::from_static(data)),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            key
        }
    };
    let old = put(b"orphan from a deleted snapshot").await;
    store
        .store()
        .set_mtime(&old, SystemTime::now() - Duration::from_hours(48))
        .await
        .unwrap();
    let young = put(b"object of a push in progress").await;

    let dry = gc(
        &store,
        GcOptions {
            dry_run: true,
            ..GcOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.snapshots, dry.objects, dry.referenced, dry.kept_recent),
        (1, 7, 5, 1)
    );
    assert_eq!(dry.deleted.len(), 1);
    assert!(
        store.store().exists(&old).await.unwrap(),
        "a dry run deletes nothing"
    );

    gc(&store, GcOptions::default()).await.unwrap();
    assert!(!store.store().exists(&old).await.unwrap());
    assert!(
        store.store().exists(&young).await.unwrap(),
        "young objects are kept"
    );
    assert_eq!(store.objects().await.unwrap().len(), 6);

    // A manifest that cannot be read stops gc before it deletes anything.
    store
        .store()
        .set_mtime(&young, SystemTime::now() - Duration::from_hours(48))
        .await
        .unwrap();
    store
        .store()
        .put(
            &manifest_key(&Checksum::of(b"x")),
            PutSource::Bytes(Bytes::from_static(b"garbage")),
            PutMode::Create,
        )
        .await
        .unwrap();
    let err = gc(&store, GcOptions::default()).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("gc stopped, nothing was deleted: snapshot"),
        "{err}"
    );
    assert!(store.store().exists(&young).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_spares_objects_of_a_snapshot_pushed_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(Counting::new(open(&StoreUrl::local(dir.path())).unwrap()));
    let store = Repository::new(Arc::clone(&counting) as Arc<dyn Store>);
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap();
    // An old object no snapshot references yet...
    let shared = Checksum::of(b"shared content");
    let key = object_key(&shared);
    counting
        .put(
            &key,
            PutSource::Bytes(Bytes::from_static(b"shared content")),
            PutMode::Create,
        )
        .await
        .unwrap();
    counting
        .set_mtime(&key, SystemTime::now() - Duration::from_hours(48))
        .await
        .unwrap();
    // ...that a push in progress found present and references in the manifest it writes while gc runs.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("f"), b"shared content").unwrap();
    let manifest = walk(other.path(), &WalkOptions::default()).unwrap().manifest;
    *counting.push_before_second_manifest_listing.lock().unwrap() = Some((
        manifest_key(&manifest.id()),
        Bytes::from(format!("{}\n", manifest.render())),
    ));
    let report = gc(
        &store,
        GcOptions {
            grace: Duration::from_hours(1),
            ..GcOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");
    assert_eq!(report.snapshots, 2, "the snapshot that appeared was read");
    assert!(counting.exists(&key).await.unwrap());
    let checked = verify(&manifest.id(), &store, 4, None).await.unwrap();
    assert!(checked.problems.is_empty());
}

#[test]
fn diff_reports_added_removed_and_modified() {
    let one = tempfile::tempdir().unwrap();
    tree(one.path());
    let two = tempfile::tempdir().unwrap();
    tree(two.path());
    fs::write(two.path().join("a.txt"), b"changed").unwrap();
    fs::remove_file(two.path().join("empty")).unwrap();
    fs::write(two.path().join("new.txt"), b"new").unwrap();
    fs::set_permissions(two.path().join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    let a = walk(one.path(), &WalkOptions::default()).unwrap().manifest;
    let b = walk(two.path(), &WalkOptions::default()).unwrap().manifest;
    let changes: Vec<String> = diff(&a, &b)
        .iter()
        .map(|c| match c {
            Change::Added(e) => format!("A {}", e.rendered_path()),
            Change::Removed(e) => format!("D {}", e.rendered_path()),
            Change::Modified { after, .. } => format!("M {}", after.rendered_path()),
        })
        .collect();
    assert_eq!(changes, ["M ./a.txt", "M ./bin/tool", "D ./empty", "A ./new.txt"]);
    assert!(diff(&a, &a).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_round_trip_through_a_real_s3_server() {
    let server = S3Server::start();
    server.create_bucket("snapshots");
    let connect = ConnectOptions::from_vars(server.env()).with_retry(None);
    let store = Repository::new(
        snapsync_store::open(&StoreUrl::parse("s3://snapshots/team").unwrap(), &connect).unwrap(),
    );
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    fs::write(source.path().join("big.bin"), vec![7u8; 20 * 1024 * 1024]).unwrap();
    let id = push_walk(&walked(source.path()), &store, &options())
        .await
        .unwrap()
        .id;
    assert!(verify(&id, &store, 8, None).await.unwrap().problems.is_empty());
    let dest = tempfile::tempdir().unwrap();
    pull(&id, &store, None, dest.path(), &MaterializeOptions::default())
        .await
        .unwrap();
    fs::set_permissions(dest.path(), fs::metadata(source.path()).unwrap().permissions()).unwrap();
    assert_eq!(id_of(dest.path()), id);
    let snapshots: Vec<Checksum> = store
        .snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(snapshots, [id]);
    assert!(
        store
            .store()
            .list_all("")
            .await
            .unwrap()
            .iter()
            .all(|m| m.key.starts_with('.'))
    );
}

/// The progress counters reach their totals, counting every byte once: a push (read where the files
/// are), a copy (a big object through a scratch file, counted half read, half sent), a pull from a
/// store without local files (counted as it arrives), a verify.
#[tokio::test(flavor = "multi_thread")]
async fn progress_counts_every_byte_once_and_reaches_its_totals() {
    use snapsync_snapshot::{Counts, Progress};
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(source.path().join("big.bin"), &big).unwrap();
    // Distinct contents: alpha, empty, tool, deep, setuid, big.
    let objects_bytes = 6 + 18 + 4 + 1 + big.len() as u64;
    let complete = |progress: &Progress, items: u64, bytes: u64| {
        assert_eq!(
            progress.counts(),
            Counts {
                items_done: items,
                items_total: items,
                bytes_done: bytes,
                bytes_total: bytes,
            }
        );
    };
    let store_dir = tempfile::tempdir().unwrap();
    let store = local(store_dir.path());
    let progress = Arc::new(Progress::default());
    let with = |progress: &Arc<Progress>| TransferOptions {
        progress: Some(Arc::clone(progress)),
        ..options()
    };
    let report = push_walk(&walked(source.path()), &store, &with(&progress))
        .await
        .unwrap();
    complete(&progress, 6, objects_bytes);

    let remote = memory("progress-counts");
    let progress = Arc::new(Progress::default());
    copy(&report.id, &store, &remote, &with(&progress)).await.unwrap();
    complete(&progress, 6, objects_bytes);

    let dest = tempfile::tempdir().unwrap();
    let progress = Arc::new(Progress::default());
    let materialize = MaterializeOptions {
        progress: Some(Arc::clone(&progress)),
        ..MaterializeOptions::default()
    };
    pull(&report.id, &remote, None, dest.path(), &materialize)
        .await
        .unwrap();
    // Every file, the two with the same content each.
    complete(&progress, 7, objects_bytes + 6);

    let progress = Progress::default();
    verify(&report.id, &remote, 4, Some(&progress)).await.unwrap();
    complete(&progress, 6, objects_bytes);
}
