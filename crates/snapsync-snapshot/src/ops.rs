//! Looking at snapshots: verify, diff, size, and collecting garbage.
//!
//! **The gc rule.** `gc` deletes an object only if no manifest in the store references it **and** it is
//! older than the grace period (default 24 hours), judged by the store's modification time. A push writes
//! its objects before its manifest, so an unreferenced young object may belong to a push in progress and
//! is kept. A push that found an *old* object present and relied on it could lose it to a concurrent gc;
//! two checks close most of that window: gc lists the manifests again just before deleting and spares
//! what new ones reference, and a push that counted objects as present lists them again after writing
//! its manifest and sends any that vanished (see `push.rs`). What remains is a gc whose deletions are
//! under way while such a push writes its manifest and checks: `verify` finds the loss and pushing the
//! snapshot again repairs it. If any manifest cannot be read or parsed, gc deletes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt, TryStreamExt};
use snapsync_core::{Checksum, Entry, Manifest};

use crate::error::{Error, Result};
use crate::layout::object_key;
use crate::push::{first_paths, object_sizes};
use crate::repo::{Progress, Repository};

/// A problem `verify` found with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not in the store.
    Missing {
        /// The object.
        checksum: Checksum,
        /// A path of the snapshot with this content.
        path: String,
    },
    /// Its content does not hash to its key.
    Corrupt {
        /// The object.
        checksum: Checksum,
        /// A path of the snapshot with this content.
        path: String,
        /// What it hashes to.
        actual: Checksum,
    },
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects checked.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Every bad object.
    pub problems: Vec<Problem>,
}

/// Re-hashes every object of snapshot `id` in the store.
///
/// Problems with objects are collected in the report; a manifest that is missing or corrupt is an error.
///
/// # Errors
/// [`Error::SnapshotNotFound`], [`Error::CorruptManifest`], store errors other than a missing object.
pub async fn verify(
    id: &Checksum,
    repo: &Repository,
    jobs: usize,
    progress: Option<&Progress>,
) -> Result<VerifyReport> {
    let manifest = repo.manifest(id).await?;
    let paths = first_paths(&manifest);
    let sizes = &object_sizes(&manifest);
    if let Some(progress) = progress {
        progress.plan(paths.len() as u64, sizes.values().sum());
    }
    let results: Vec<(u64, Option<Problem>)> = stream::iter(paths)
        .map(|(checksum, path)| async move {
            let tracked = Progress::track(progress, sizes[&checksum], false);
            let Some((bytes, actual)) = hash_object(repo, &checksum, tracked.counter()).await? else {
                tracked.finish(0);
                return Ok::<_, Error>((0, Some(Problem::Missing { checksum, path })));
            };
            tracked.finish(bytes);
            Ok((
                bytes,
                (actual != checksum).then_some(Problem::Corrupt {
                    checksum,
                    path,
                    actual,
                }),
            ))
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    let mut report = VerifyReport {
        objects: results.len() as u64,
        ..VerifyReport::default()
    };
    for (bytes, problem) in results {
        report.bytes += bytes;
        report.problems.extend(problem);
    }
    report
        .problems
        .sort_by(|a, b| problem_path(a).cmp(problem_path(b)));
    Ok(report)
}

/// Reads the object `checksum` and hashes it: its size and what it hashes to, or `None` when it is not
/// in the store. Bytes read are added to `counter`.
async fn hash_object(
    repo: &Repository,
    checksum: &Checksum,
    counter: &AtomicU64,
) -> Result<Option<(u64, Checksum)>> {
    let mut got = match repo.store().get(&object_key(checksum)).await {
        Ok(got) => got,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(Error::from(e)),
    };
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    while let Some(piece) = got.stream.next().await {
        let piece = piece?;
        bytes += piece.len() as u64;
        hasher.update(&piece);
        counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
    }
    Ok(Some((bytes, Checksum::from(hasher.finalize()))))
}

impl VerifyReport {
    /// The objects found corrupt, in the report's order.
    pub fn corrupt(&self) -> impl Iterator<Item = &Checksum> {
        self.problems.iter().filter_map(|problem| match problem {
            Problem::Corrupt { checksum, .. } => Some(checksum),
            Problem::Missing { .. } => None,
        })
    }
}

/// What [`remove_corrupt`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Objects deleted: they still did not hash to their checksums.
    pub removed: Vec<Checksum>,
    /// Objects kept: they hash to their checksums now (replaced since the report was made), or are
    /// gone already.
    pub kept: Vec<Checksum>,
}

/// Deletes from the store the objects `report` (of [`verify`] on `repo`) found corrupt, so that pushing
/// the snapshot again from a good copy sends them anew (a push skips objects the store has, corrupt
/// or not).
///
/// Each object is read and hashed again first, and deleted only if it still does not hash to its
/// checksum: a report is a past look at the store, and an object repaired since must not be lost.
///
/// # Errors
/// Store errors reading or deleting an object; the objects removed before it stay removed.
pub async fn remove_corrupt(repo: &Repository, report: &VerifyReport) -> Result<RemoveReport> {
    let mut done = RemoveReport::default();
    for checksum in report.corrupt() {
        match hash_object(repo, checksum, &AtomicU64::new(0)).await? {
            Some((_, actual)) if actual != *checksum => {
                repo.store().delete(&object_key(checksum)).await?;
                done.removed.push(*checksum);
            }
            _ => done.kept.push(*checksum),
        }
    }
    Ok(done)
}

fn problem_path(problem: &Problem) -> &str {
    match problem {
        Problem::Missing { path, .. } | Problem::Corrupt { path, .. } => path,
    }
}

/// A difference between two manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the second.
    Added(Entry),
    /// Only in the first.
    Removed(Entry),
    /// In both, different: a file's content, type or permissions; a directory's permissions.
    Modified {
        /// In the first.
        before: Entry,
        /// In the second.
        after: Entry,
    },
}

/// The differences from `before` to `after`, in path order. A directory whose contents changed is not
/// reported itself; its changed contents are.
#[must_use]
pub fn diff(before: &Manifest, after: &Manifest) -> Vec<Change> {
    let old: HashMap<&[u8], &Entry> = before.entries().iter().map(|e| (e.path(), e)).collect();
    let new: HashMap<&[u8], &Entry> = after.entries().iter().map(|e| (e.path(), e)).collect();
    let mut changes = Vec::new();
    let mut all: Vec<&Entry> = before.entries().iter().chain(after.entries()).collect();
    all.sort_by(|a, b| a.rendered_path().cmp(&b.rendered_path()));
    all.dedup_by(|a, b| a.path() == b.path());
    for entry in all {
        match (old.get(entry.path()), new.get(entry.path())) {
            (Some(&a), None) => changes.push(Change::Removed(a.clone())),
            (None, Some(&b)) => changes.push(Change::Added(b.clone())),
            (Some(&a), Some(&b)) => {
                let differs = a.kind() != b.kind()
                    || a.mode() != b.mode()
                    || (!a.is_dir() && (a.checksum() != b.checksum() || a.size() != b.size()));
                if differs {
                    changes.push(Change::Modified {
                        before: a.clone(),
                        after: b.clone(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    changes
}

/// How big a snapshot is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeReport {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot, the root included.
    pub directories: u64,
    /// Bytes of all files, as the manifest records them.
    pub bytes: u64,
    /// Distinct objects (files with the same content share one).
    pub objects: u64,
    /// Bytes of those objects in the store.
    pub object_bytes: u64,
}

/// The size of snapshot `id`, its objects measured in the store.
///
/// # Errors
/// As [`Repository::manifest`], and store errors.
pub async fn size(id: &Checksum, repo: &Repository) -> Result<SizeReport> {
    let manifest = repo.manifest(id).await?;
    let present = repo.objects().await?;
    let unique: HashSet<Checksum> = manifest
        .entries()
        .iter()
        .filter(|e| !e.is_dir())
        .map(Entry::checksum)
        .collect();
    Ok(SizeReport {
        files: manifest.entries().iter().filter(|e| !e.is_dir()).count() as u64,
        directories: manifest.entries().iter().filter(|e| e.is_dir()).count() as u64,
        bytes: manifest.root().map_or(0, Entry::size),
        objects: unique.len() as u64,
        object_bytes: unique
            .iter()
            .filter_map(|sum| present.get(sum))
            .map(|m| m.size)
            .sum(),
    })
}

/// How `gc` runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Unreferenced objects younger than this are kept (they may belong to a push in progress).
    pub grace: Duration,
    /// Deletions in flight at once.
    pub jobs: usize,
    /// Counters to update: the manifests read, then the objects deleted (and their bytes).
    pub progress: Option<Arc<Progress>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Duration::from_hours(24),
            jobs: 16,
            progress: None,
        }
    }
}

/// What `gc` did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Snapshots read.
    pub snapshots: u64,
    /// Objects in the store.
    pub objects: u64,
    /// Objects some snapshot references.
    pub referenced: u64,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub kept_recent: u64,
    /// Unreferenced objects deleted (or to delete): checksum and size.
    pub deleted: Vec<(Checksum, u64)>,
}

/// Deletes objects no snapshot references and older than the grace period (see the module's rule).
///
/// # Errors
/// [`Error::GcAborted`] when a manifest cannot be read (nothing is deleted then), store errors.
pub async fn gc(repo: &Repository, options: GcOptions) -> Result<GcReport> {
    let progress = options.progress.as_deref();
    let snapshots = repo.snapshots().await?;
    if let Some(progress) = progress {
        progress.plan(snapshots.len() as u64, 0);
    }
    let mut referenced: HashSet<Checksum> = HashSet::new();
    let mut read: HashSet<Checksum> = HashSet::new();
    for (id, _) in &snapshots {
        reference(repo, id, &mut referenced).await?;
        read.insert(*id);
        if let Some(progress) = progress {
            progress.done(1, 0);
        }
    }
    let objects = repo.objects().await?;
    let now = SystemTime::now();
    let mut report = GcReport {
        snapshots: snapshots.len() as u64,
        objects: objects.len() as u64,
        referenced: objects.keys().filter(|sum| referenced.contains(sum)).count() as u64,
        ..GcReport::default()
    };
    for (sum, meta) in &objects {
        if referenced.contains(sum) {
            continue;
        }
        let old_enough = meta
            .modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= options.grace);
        if old_enough {
            report.deleted.push((*sum, meta.size));
        } else {
            report.kept_recent += 1;
        }
    }
    // Snapshots pushed while this gc ran may need what it was about to delete: look again, last thing
    // before deleting.
    for (id, _) in repo.snapshots().await? {
        if read.insert(id) {
            reference(repo, &id, &mut referenced).await?;
            report.snapshots += 1;
        }
    }
    let before = report.deleted.len();
    report.deleted.retain(|(sum, _)| !referenced.contains(sum));
    report.referenced += (before - report.deleted.len()) as u64;
    report.deleted.sort();
    if !options.dry_run {
        if let Some(progress) = progress {
            let bytes: u64 = report.deleted.iter().map(|(_, size)| size).sum();
            progress.plan(report.deleted.len() as u64, bytes);
        }
        stream::iter(report.deleted.iter())
            .map(|(sum, size)| async move {
                repo.store().delete(&object_key(sum)).await?;
                if let Some(progress) = progress {
                    progress.done(1, *size);
                }
                Ok::<_, snapsync_store::Error>(())
            })
            .buffer_unordered(options.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(report)
}

/// Adds the objects snapshot `id` references to `referenced`; an unreadable manifest stops gc.
async fn reference(repo: &Repository, id: &Checksum, referenced: &mut HashSet<Checksum>) -> Result<()> {
    let manifest = repo.manifest(id).await.map_err(|e| Error::GcAborted {
        reason: format!("snapshot {id} cannot be read: {e}"),
    })?;
    referenced.extend(
        manifest
            .entries()
            .iter()
            .filter(|e| !e.is_dir())
            .map(Entry::checksum),
    );
    Ok(())
}
