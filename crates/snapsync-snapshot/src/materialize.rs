//! Writing a snapshot into a directory: `checkout` (from the cache) and `pull` (from a store).
//!
//! Every path is checked before anything is written: a manifest entry with `..`, an absolute path or an
//! empty part is refused, and no existing directory on the way to a file may be a symlink (which could
//! lead out of the destination). Each file is written to a temporary name beside its final one (a
//! [`CheckedFile`]), its BLAKE3 compared with the manifest's, its permissions set, and only then renamed
//! into place: a corrupt
//! object is never materialised, and a run killed at any point leaves each file old or new. The next run
//! removes leftover temporary files and completes. Files already there with the right content are left
//! as they are (their permissions fixed); files outside the snapshot stay unless `delete` is set.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{self, StreamExt};
use snapsync_core::atomic::{CheckedFile, WriteOptions, is_temp_name};
use snapsync_core::pathsafe::{check_no_symlink_parents, safe_relative_path};
use snapsync_core::{Cancel, Checksum, Entry, Manifest};

use crate::error::{Error, Result};
use crate::layout::object_key;
use crate::repo::{Progress, Repository, blocking};

/// How to write a snapshot into a directory.
#[derive(Clone, Debug)]
pub struct MaterializeOptions {
    /// Remove what the directory has beyond the snapshot (an exact copy).
    pub delete: bool,
    /// Files written at once.
    pub jobs: usize,
    /// Counters to update.
    pub progress: Option<Arc<Progress>>,
    /// Stops the pull early ([`Error::Cancelled`]): no file starts after it is cancelled, and those
    /// being written are abandoned (their temporary files removed); every file is old or new.
    pub cancel: Cancel,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            delete: false,
            jobs: 8,
            progress: None,
            cancel: Cancel::new(),
        }
    }
}

/// What a checkout or pull did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaterializeReport {
    /// Files written.
    pub files_written: u64,
    /// Files that had the right content already.
    pub files_unchanged: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Files and directories removed (with `delete`).
    pub removed: u64,
}

/// Writes the snapshot `id` (from `store`, using objects from `cache` first when given) into `dest`.
///
/// # Errors
/// See [`materialize`]; also [`Error::SnapshotNotFound`] and [`Error::CorruptManifest`].
pub async fn pull(
    id: &Checksum,
    store: &Repository,
    cache: Option<&Repository>,
    dest: &Path,
    options: &MaterializeOptions,
) -> Result<MaterializeReport> {
    let manifest = store.manifest(id).await?;
    let sources: Vec<&Repository> = cache.into_iter().chain([store]).collect();
    materialize(id, &manifest, &sources, dest, options).await
}

/// Writes the snapshot `id` from the cache into `dest`.
///
/// # Errors
/// See [`materialize`].
pub async fn checkout(
    id: &Checksum,
    cache: &Repository,
    dest: &Path,
    options: &MaterializeOptions,
) -> Result<MaterializeReport> {
    let manifest = cache.manifest(id).await?;
    materialize(id, &manifest, &[cache], dest, options).await
}

/// Writes `manifest` into `dest`, each object from the first of `sources` that has it intact.
///
/// # Errors
/// [`Error::NotMaterializable`] for an absolute manifest, [`snapsync_core::Error::UnsafePath`] for a
/// path that would leave `dest`, [`Error::InTheWay`], [`Error::ObjectMissing`], [`Error::ObjectCorrupt`],
/// [`Error::Io`].
pub async fn materialize(
    id: &Checksum,
    manifest: &Manifest,
    sources: &[&Repository],
    dest: &Path,
    options: &MaterializeOptions,
) -> Result<MaterializeReport> {
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut files: Vec<(PathBuf, Entry)> = Vec::new();
    for entry in manifest.entries() {
        if !entry.is_relative() {
            return Err(Error::NotMaterializable {
                id: *id,
                reason: "its paths are absolute (made with --absolute)",
            });
        }
        let relative = safe_relative_path(entry.path())?.to_path_buf();
        if entry.is_dir() {
            dirs.push((relative, entry.mode()));
        } else {
            files.push((relative, entry.clone()));
        }
    }
    let dest = dest.to_path_buf();
    {
        let (dest, dirs) = (dest.clone(), dirs.clone());
        blocking(move || prepare_directories(&dest, &dirs)).await?;
    }
    if let Some(progress) = &options.progress {
        progress.plan(files.len() as u64, files.iter().map(|(_, e)| e.size()).sum());
    }
    // After a failure no new file is started, but the files under way finish (each renamed into place or
    // removed), so that nothing is still writing into `dest` when this returns.
    let failed = AtomicBool::new(false);
    let outcomes: Vec<Result<Option<Written>>> = stream::iter(files.iter())
        .map(|(relative, entry)| {
            let (failed, dest) = (&failed, &dest);
            async move {
                if failed.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                if options.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                // Cancelled, a file being written is dropped: its temporary file goes with it (a
                // kernel copy under way finishes on its blocking thread and removes its own).
                let written = tokio::select! {
                    biased;
                    written = write_file(dest, relative, entry, sources, options) => written,
                    () = options.cancel.cancelled() => Err(Error::Cancelled),
                };
                if written.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                written.map(Some)
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    let mut report = MaterializeReport::default();
    for outcome in outcomes {
        match outcome? {
            Some(Written::New(bytes)) => {
                report.files_written += 1;
                report.bytes_written += bytes;
            }
            Some(Written::Unchanged) => report.files_unchanged += 1,
            None => {}
        }
    }
    let wanted: HashSet<PathBuf> = dirs
        .iter()
        .map(|(p, _)| p.clone())
        .chain(files.iter().map(|(p, _)| p.clone()))
        .collect();
    let delete = options.delete;
    report.removed = blocking(move || {
        let removed = if delete {
            remove_extras(&dest, Path::new(""), &wanted)?
        } else {
            0
        };
        // Directory permissions last, children before parents, so that a read-only directory does not stop
        // its own contents from being written.
        for (relative, mode) in dirs.iter().rev() {
            let path = dest.join(relative);
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).map_err(Error::io(&path))?;
        }
        let dir = fs::File::open(&dest).map_err(Error::io(&dest))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::Io {
            path: dest.clone(),
            source: e.into(),
        })?;
        Ok(removed)
    })
    .await?;
    Ok(report)
}

enum Written {
    New(u64),
    Unchanged,
}

/// Creates the snapshot's directories (parents first), replacing a file or symlink that stands where a
/// directory belongs, making existing ones writable for the run, and removing leftover temporary files.
fn prepare_directories(dest: &Path, dirs: &[(PathBuf, u32)]) -> Result<()> {
    fs::create_dir_all(dest).map_err(Error::io(dest))?;
    for (relative, _) in dirs {
        let path = dest.join(relative);
        if !relative.as_os_str().is_empty() {
            check_no_symlink_parents(dest, relative)?;
        }
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if meta.permissions().mode() & 0o700 != 0o700 {
                    fs::set_permissions(
                        &path,
                        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
                    )
                    .map_err(Error::io(&path))?;
                }
            }
            Ok(_) => {
                // A file or a symlink where the snapshot has a directory: the snapshot's version wins.
                // Removing a symlink removes the link, never what it points to.
                fs::remove_file(&path).map_err(Error::io(&path))?;
                fs::create_dir(&path).map_err(Error::io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(Error::io(&path))?;
            }
            Err(e) => return Err(Error::Io { path, source: e }),
        }
        for leftover in fs::read_dir(&path).map_err(Error::io(&path))? {
            let leftover = leftover.map_err(Error::io(&path))?;
            if is_temp_name(&leftover.file_name()) {
                let _ = fs::remove_file(leftover.path());
            }
        }
    }
    Ok(())
}

async fn write_file(
    dest: &Path,
    relative: &Path,
    entry: &Entry,
    sources: &[&Repository],
    options: &MaterializeOptions,
) -> Result<Written> {
    let path = dest.join(relative);
    let sum = entry.checksum();
    let mode = entry.mode();
    // What is there already?
    let existing = fs::symlink_metadata(&path);
    match &existing {
        Ok(meta) if meta.is_dir() => {
            if !options.delete {
                return Err(Error::InTheWay {
                    path,
                    reason: "a directory is where the snapshot has a file",
                });
            }
            fs::remove_dir_all(&path).map_err(Error::io(&path))?;
        }
        // A followed symlink is recorded with the link's length, not the content's; 777 marks one.
        Ok(meta) if meta.is_file() && (meta.len() == entry.size() || mode == 0o777) => {
            let check = path.clone();
            let actual = blocking(move || snapsync_core::hash_file(&check).map_err(Error::io(&check)))
                .await?
                .0;
            if actual == sum {
                if meta.permissions().mode() & 0o7777 != mode {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(Error::io(&path))?;
                }
                if let Some(progress) = &options.progress {
                    progress.done(1, entry.size());
                }
                return Ok(Written::Unchanged);
            }
        }
        _ => {}
    }
    let mut last_error = None;
    for source in sources {
        let install = Install {
            path: path.clone(),
            sum,
            mode,
            rendered: entry.rendered_path().into_owned(),
            store: source.url(),
        };
        // Counted as it arrives; a source that fails takes its bytes back with it.
        let tracked = Progress::track(options.progress.as_deref(), entry.size(), false);
        let result = match source.store().local_path(&object_key(&sum)) {
            // One blocking task does it all, so that a pull cancelled mid-way (another file failed) never
            // leaves this one half done: it ends renamed into place, or removed.
            Some(object) => blocking(move || install.copy_local_object(&object)).await,
            None => {
                async {
                    // Each batch is written on a blocking thread that owns the file; if this future is
                    // dropped, the file is dropped with the batch, which removes it.
                    let file =
                        CheckedFile::create_for(&path, WriteOptions::UNSYNCED).map_err(Error::io(&path))?;
                    let file = source.read_object_to(&sum, file, Some(tracked.counter())).await?;
                    file.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(Error::io(file.temp_path()))?;
                    install.publish(file)
                }
                .await
            }
        };
        match result {
            Ok(written) => {
                tracked.finish(written);
                return Ok(Written::New(written));
            }
            Err(e) => {
                let missing = matches!(&e, Error::Store(s) if s.is_not_found());
                last_error = Some(if missing {
                    Error::ObjectMissing {
                        checksum: sum,
                        path: entry.rendered_path().into_owned(),
                        store: source.url(),
                    }
                } else {
                    e
                });
                // Anything but a missing or corrupt object (a disk error, say) stops here.
                if !matches!(
                    last_error,
                    Some(Error::ObjectMissing { .. } | Error::ObjectCorrupt { .. })
                ) {
                    break;
                }
            }
        }
    }
    Err(last_error.unwrap_or(Error::ObjectMissing {
        checksum: sum,
        path: entry.rendered_path().into_owned(),
        store: String::from("(no store)"),
    }))
}

/// Where and how one file of a snapshot is written.
struct Install {
    path: PathBuf,
    sum: Checksum,
    mode: u32,
    rendered: String,
    store: String,
}

impl Install {
    /// Copies the object, kept as a local file, to a temporary file beside the destination (the kernel
    /// copies, or shares blocks where the filesystem can), hashes what was written (the check is on the
    /// new file itself), then sets the mode and renames it into place. On any failure the temporary file
    /// is removed.
    fn copy_local_object(self, object: &Path) -> Result<u64> {
        let mut from = match fs::File::open(object) {
            Ok(file) => file,
            // The caller turns this into "object missing", naming the snapshot path.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Store(snapsync_store::Error::NotFound {
                    location: object.display().to_string(),
                }));
            }
            Err(e) => return Err(Error::io(object)(e)),
        };
        let mut to =
            CheckedFile::create_for(&self.path, WriteOptions::UNSYNCED).map_err(Error::io(&self.path))?;
        let temp = to.temp_path().to_path_buf();
        to.copy_from(&mut from).map_err(Error::io(&temp))?;
        to.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(Error::io(&temp))?;
        self.publish(to)
    }

    /// Renames `file` into place if its content is the object's, and returns its size; removes it
    /// otherwise. Not flushed: `materialize` flushes the whole filesystem once at the end.
    fn publish(self, file: CheckedFile) -> Result<u64> {
        match file.persist_if(&self.path, None, Some(&self.sum)) {
            Ok(published) => Ok(published.size),
            Err(snapsync_core::Error::HashMismatch { actual, .. }) => Err(Error::ObjectCorrupt {
                checksum: self.sum,
                path: self.rendered,
                store: self.store,
                actual,
            }),
            Err(snapsync_core::Error::Write { path, source }) => Err(Error::Io { path, source }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Removes everything below `dest/relative` that is not `wanted` (never following symlinks out).
fn remove_extras(dest: &Path, relative: &Path, wanted: &HashSet<PathBuf>) -> Result<u64> {
    let dir = dest.join(relative);
    let mut removed = 0;
    for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
        let entry = entry.map_err(Error::io(&dir))?;
        let child = relative.join(entry.file_name());
        let path = entry.path();
        let is_dir = entry.file_type().map_err(Error::io(&path))?.is_dir();
        if wanted.contains(&child) {
            if is_dir {
                removed += remove_extras(dest, &child, wanted)?;
            }
        } else {
            if is_dir {
                fs::remove_dir_all(&path).map_err(Error::io(&path))?;
            } else {
                fs::remove_file(&path).map_err(Error::io(&path))?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}
