//! Putting snapshots into stores: from a directory that was just walked, or from another store.
//!
//! Order is what keeps a store consistent: objects first (only the missing ones, found by one listing),
//! then a durability barrier, then the manifest. A reader that finds a manifest therefore finds every
//! object it names. Then, because a concurrent `gc` may have removed an old object this push found
//! present and relied on, the objects are listed once more and any missing one is sent again (see
//! `gc.rs` for the rule).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, StreamExt, TryStreamExt};
use snapsync_core::atomic::{CheckedFile, WriteOptions};
use snapsync_core::{Cancel, Checksum, Fingerprint, Manifest, Source, Walk};
use snapsync_store::{PutMode, PutSource};

use crate::error::{Error, Result};
use crate::layout::object_key;
use crate::repo::{Progress, Repository};

/// How transfers run.
#[derive(Clone, Debug)]
pub struct TransferOptions {
    /// Transfers in flight at once.
    pub jobs: usize,
    /// Counters to update.
    pub progress: Option<Arc<Progress>>,
    /// Stops the transfer early ([`Error::Cancelled`]): no object starts after it is cancelled, those
    /// in flight are abandoned (their temporary files removed), and no manifest is written.
    pub cancel: Cancel,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            jobs: 8,
            progress: None,
            cancel: Cancel::new(),
        }
    }
}

/// What a push or copy did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// The snapshot's id.
    pub id: Checksum,
    /// Objects sent.
    pub objects_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Objects the store had already.
    pub objects_present: u64,
}

/// Objects larger than this are staged in a temporary file when copied between stores.
const IN_MEMORY_MAX: u64 = 8 * 1024 * 1024;

/// Pushes a walked directory (walked with `record_sources`) to `to`, reading files where they are.
///
/// Each file is checked against the fingerprint it had when it was hashed, before and after its upload,
/// so a file changed since the walk fails the push ([`Error::SourceChanged`]) instead of storing content
/// under the wrong checksum; the object is removed again in that case.
///
/// # Errors
/// [`Error::SourceChanged`], store errors.
pub async fn push_walk(walk: &Walk, to: &Repository, options: &TransferOptions) -> Result<PushReport> {
    let mut sources: HashMap<Checksum, &Source> = HashMap::new();
    for source in &walk.sources {
        sources.entry(source.checksum).or_insert(source);
    }
    let upload = |sum: Checksum| {
        let source = sources[&sum];
        async move { upload_source(to, source, options.progress.as_deref()).await }
    };
    let sizes: HashMap<Checksum, u64> = sources
        .iter()
        .map(|(sum, source)| (*sum, source.fingerprint.len))
        .collect();
    send_missing(to, &sizes, &walk.manifest, options, upload).await
}

async fn upload_source(to: &Repository, source: &Source, progress: Option<&Progress>) -> Result<u64> {
    let unchanged = || Fingerprint::current(&source.path).ok() == Some(source.fingerprint);
    if !unchanged() {
        return Err(Error::SourceChanged {
            path: source.path.clone(),
        });
    }
    let key = object_key(&source.checksum);
    let size = source.fingerprint.len;
    // The bytes are counted as the store reads them, so a big file moves the display while it goes.
    let tracked = Progress::track(progress, size, false);
    let put = PutSource::FileExpecting {
        path: source.path.clone(),
        size,
        mtime: None,
        progress: Some(Arc::clone(tracked.read())),
    };
    to.store().put(&key, put, PutMode::Overwrite).await?;
    if !unchanged() {
        let _ = to.store().delete(&key).await;
        return Err(Error::SourceChanged {
            path: source.path.clone(),
        });
    }
    tracked.finish(size);
    Ok(size)
}

/// Copies snapshot `id` from one store to another: the objects `to` lacks, checked against their
/// checksums on the way, then the manifest. Fetching into the cache and pushing from it are copies.
///
/// # Errors
/// [`Error::SnapshotNotFound`], [`Error::CorruptManifest`], [`Error::ObjectMissing`],
/// [`Error::ObjectCorrupt`], store errors.
pub async fn copy(
    id: &Checksum,
    from: &Repository,
    to: &Repository,
    options: &TransferOptions,
) -> Result<PushReport> {
    let manifest = from.manifest(id).await?;
    let paths = first_paths(&manifest);
    let sizes = object_sizes(&manifest);
    let transfer = |sum: Checksum| {
        let path = paths[&sum].clone();
        async move { transfer_object(from, to, &sum, &path, options.progress.as_deref()).await }
    };
    send_missing(to, &sizes, &manifest, options, transfer).await
}

/// The size of each object a manifest uses (a file's size; for progress totals only: a followed
/// symlink is recorded with the link's length).
pub(crate) fn object_sizes(manifest: &Manifest) -> HashMap<Checksum, u64> {
    manifest
        .entries()
        .iter()
        .filter(|e| !e.is_dir())
        .map(|e| (e.checksum(), e.size()))
        .collect()
}

/// For each object a manifest uses, one path that uses it (for messages).
pub(crate) fn first_paths(manifest: &Manifest) -> HashMap<Checksum, String> {
    let mut paths = HashMap::new();
    for entry in manifest.entries().iter().filter(|e| !e.is_dir()) {
        paths
            .entry(entry.checksum())
            .or_insert_with(|| entry.rendered_path().into_owned());
    }
    paths
}

/// Sends what `to` lacks of `needed` (the objects, with their sizes) with `send`, then the barrier and
/// the manifest, then repairs what a concurrent gc took away.
async fn send_missing<F, Fut>(
    to: &Repository,
    needed: &HashMap<Checksum, u64>,
    manifest: &Manifest,
    options: &TransferOptions,
    send: F,
) -> Result<PushReport>
where
    F: Fn(Checksum) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let present = to.objects().await?;
    let missing: Vec<Checksum> = needed
        .keys()
        .filter(|sum| !present.contains_key(sum))
        .copied()
        .collect();
    let mut report = PushReport {
        id: manifest.id(),
        objects_sent: 0,
        bytes_sent: 0,
        objects_present: (needed.len() - missing.len()) as u64,
    };
    let plan = |sums: &[Checksum]| {
        if let Some(progress) = &options.progress {
            progress.plan(sums.len() as u64, sums.iter().map(|sum| needed[sum]).sum());
        }
    };
    plan(&missing);
    let bytes = AtomicU64::new(0);
    let send_all = |sums: Vec<Checksum>| {
        stream::iter(sums)
            .map(|sum| {
                let send = &send;
                let bytes = &bytes;
                async move {
                    if options.cancel.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    bytes.fetch_add(send(sum).await?, Ordering::Relaxed);
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(options.jobs.max(1))
            .try_collect::<Vec<()>>()
    };
    report.objects_sent = missing.len() as u64;
    // The durability barrier covers what this push wrote: with nothing sent there is nothing to flush
    // (and a snapshot with no files may go into a store folder that does not exist yet, which the
    // manifest's put makes).
    let sent_any = !missing.is_empty();
    // Cancelled, the objects in flight are dropped; the ones that arrived stay (the next push finds
    // them), and without its manifest the snapshot does not exist.
    let outcome = tokio::select! {
        biased;
        outcome = send_all(missing) => outcome,
        () = options.cancel.cancelled() => Err(Error::Cancelled),
    };
    if matches!(outcome, Err(Error::Cancelled)) {
        let _ = to.store().remove_abandoned().await;
    }
    outcome?;
    if sent_any {
        to.store().persist().await?;
    }
    if options.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    to.put_manifest(manifest).await?;
    // A concurrent gc may have deleted an old object this push counted as present: put it back. (What
    // this push sent itself is younger than gc's grace period; with nothing counted as present, there
    // is nothing to check, and no second listing.)
    let counted_present: Vec<Checksum> = needed
        .keys()
        .filter(|sum| present.contains_key(sum))
        .copied()
        .collect();
    for _ in 0..3 {
        if counted_present.is_empty() {
            break;
        }
        let after = to.objects().await?;
        let lost: Vec<Checksum> = counted_present
            .iter()
            .filter(|sum| !after.contains_key(sum))
            .copied()
            .collect();
        if lost.is_empty() {
            break;
        }
        report.objects_sent += lost.len() as u64;
        plan(&lost);
        send_all(lost).await?;
        to.store().persist().await?;
    }
    report.bytes_sent = bytes.load(Ordering::Relaxed);
    Ok(report)
}

/// Copies one object between stores, verifying its checksum before it is written to `to`.
async fn transfer_object(
    from: &Repository,
    to: &Repository,
    sum: &Checksum,
    path: &str,
    progress: Option<&Progress>,
) -> Result<u64> {
    let key = object_key(sum);
    let size = match from.store().head(&key).await {
        Ok(meta) => meta.size,
        Err(e) if e.is_not_found() => {
            return Err(Error::ObjectMissing {
                checksum: *sum,
                path: path.to_owned(),
                store: from.url(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if size <= IN_MEMORY_MAX {
        let tracked = Progress::track(progress, size, false);
        let bytes = from
            .read_object_checked(sum, path, Some(tracked.counter()))
            .await?;
        to.store()
            .put(&key, PutSource::Bytes(bytes), PutMode::Overwrite)
            .await?;
        tracked.finish(size);
    } else {
        // Counted half as it is read, half as it is sent.
        let tracked = Progress::track(progress, size, true);
        // A scratch file, never published: dropping it removes it.
        let scratch = std::env::temp_dir();
        let file = CheckedFile::create_in(&scratch, WriteOptions::UNSYNCED).map_err(Error::io(&scratch))?;
        let file = from.read_object_to(sum, file, Some(tracked.counter())).await?;
        let actual = file.checksum();
        if actual != *sum {
            return Err(Error::ObjectCorrupt {
                checksum: *sum,
                path: path.to_owned(),
                store: from.url(),
                actual,
            });
        }
        let put = PutSource::FileExpecting {
            path: file.temp_path().to_path_buf(),
            size: file.size(),
            mtime: None,
            progress: tracked.written().map(Arc::clone),
        };
        to.store().put(&key, put, PutMode::Overwrite).await?;
        tracked.finish(size);
    }
    Ok(size)
}
