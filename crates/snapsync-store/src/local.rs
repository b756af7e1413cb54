//! A local directory as a store.
//!
//! Keys map to paths below the root. Every write is a [`snapsync_core::atomic::AtomicFile`]: it goes
//! to a temporary file in the destination directory (`.NAME.snapsync-PID-N.tmp`), is flushed to disk,
//! then renamed over the key (overwrite) or hard-linked to it (create-if-absent: the link fails if the
//! key exists, atomically). Readers therefore see the old object or the new one, never part of one; a
//! killed writer leaves only a temporary file, which listings ignore and which a later write to the same
//! directory may remove.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use snapsync_core::atomic::{AtomicFile, WriteOptions};

use crate::error::{Error, Result};
use crate::remote::Listed;
use crate::source::OpenSource;
use crate::{Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Store, StoreUrl, check_key};

/// Bytes per piece when streaming a file out.
const READ_CHUNK: usize = 1024 * 1024;

/// A directory holding objects as files.
#[derive(Debug, Clone)]
pub struct LocalStore {
    url: StoreUrl,
    root: PathBuf,
    /// Flush each object to disk before it is renamed into place (otherwise [`Store::persist`] flushes
    /// all of them at once).
    sync_each: bool,
}

impl LocalStore {
    /// The store at `url`, which must be a local one (a path or `file://`). The directory is created
    /// by the first write.
    #[must_use]
    pub fn new(url: StoreUrl) -> LocalStore {
        let root = url.local_path().map(Path::to_path_buf).unwrap_or_default();
        LocalStore {
            url,
            root,
            sync_each: true,
        }
    }

    /// Like [`LocalStore::new`], but objects are not flushed to disk one by one: [`Store::persist`]
    /// flushes the whole filesystem once, as a barrier before writing what refers to them. Writes are
    /// still atomic against a killed process (temporary name, then rename).
    #[must_use]
    pub fn batched(url: StoreUrl) -> LocalStore {
        LocalStore {
            sync_each: false,
            ..LocalStore::new(url)
        }
    }

    /// The store's directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn location(&self, key: &str) -> String {
        self.url.with_key(key)
    }
}

pub use snapsync_core::atomic::{is_temp_name, temp_path};

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Other {
            location: "local store".into(),
            source: Box::new(e),
        })?
}

/// Writes a new file at `path` through a temporary name; `fill` writes the contents.
pub(crate) fn write_atomically(
    path: &Path,
    location: &str,
    mode: PutMode,
    sync: bool,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    write_checked(path, location, mode, sync, fill, || Ok(()))
}

/// [`write_atomically`], with `check` run once the contents were written (or failed to be), before
/// the file is published: its error wins over a failed write, and nothing is published.
fn write_checked(
    path: &Path,
    location: &str,
    mode: PutMode,
    sync: bool,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    check: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::from_io(location.to_owned(), e))?;
    }
    if mode == PutMode::Create && fs::symlink_metadata(path).is_ok() {
        return Err(Error::AlreadyExists {
            location: location.to_owned(),
        });
    }
    let options = WriteOptions {
        replace: mode == PutMode::Overwrite,
        sync_file: sync,
        // Objects are found by listing, not by a name that must survive a power cut on its own; and a
        // batched store's `persist` flushes the whole filesystem.
        sync_dir: false,
    };
    let written = AtomicFile::create_for(path, options).and_then(|mut file| {
        fill(file.as_file_mut())?;
        // Written under the temporary name, not published.
        snapsync_core::chaos::point("mid-file");
        Ok(file)
    });
    // On an error the temporary file is dropped, which removes it.
    check()?;
    written
        .and_then(|file| file.persist(path))
        .map(drop)
        .map_err(|e| Error::from_io(location.to_owned(), e))
}

fn meta_of(key: String, meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        modified: meta.modified().ok(),
        etag: None,
    }
}

/// Every file below `dir` (not following symlinked directories), as keys relative to `root`: the
/// objects, or (`temps`) the temporary files interrupted writes left.
///
/// Only `dir` itself (`top`: the prefix asked for) may be missing or a file, and then there is nothing
/// below it. A directory that a listing found and that cannot be listed in turn (no permission, gone
/// meanwhile) is an error naming it, never an empty directory: a caller must not take it for one.
fn walk(
    url: &StoreUrl,
    root: &Path,
    dir: &Path,
    top: bool,
    listed: Listed,
    out: &mut Vec<ObjectMeta>,
) -> Result<()> {
    let location = |path: &Path| url.with_key(&path.strip_prefix(root).unwrap_or(path).to_string_lossy());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return if top {
                Ok(())
            } else {
                Err(Error::Other {
                    location: location(dir),
                    source: format!("it was in its parent's listing, then could not be listed: {e}").into(),
                })
            };
        }
        Err(e) => return Err(Error::from_io(location(dir), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::from_io(location(dir), e))?;
        let name = entry.file_name();
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| Error::from_io(location(&path), e))?;
        if file_type.is_dir() {
            if matches!(listed, Listed::ObjectsAndDirs | Listed::TopLevel)
                && let Some(key) = path.strip_prefix(root).ok().and_then(Path::to_str)
            {
                out.push(ObjectMeta {
                    key: format!("{key}/"),
                    size: 0,
                    modified: None,
                    etag: None,
                });
            }
            if listed != Listed::TopLevel {
                walk(url, root, &path, false, listed, out)?;
            }
            continue;
        }
        if is_temp_name(&name) != (listed == Listed::Leftovers) {
            continue;
        }
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                let key = path.strip_prefix(root).unwrap_or(&path);
                if let Some(key) = key.to_str() {
                    out.push(meta_of(key.to_owned(), &meta));
                }
            }
            Ok(_) => {}
            // Deleted since the directory was read, or a symbolic link to nothing (or to itself):
            // no file there.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
                    || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {}
            // Cannot tell whether a file is there: not a missing file.
            Err(e) => return Err(Error::from_io(location(&path), e)),
        }
    }
    Ok(())
}

/// The nearest of `path` and its parents that exists, when it is not a directory (the file that
/// stands where a directory must be).
fn file_in_the_way(path: &Path) -> Option<&Path> {
    path.ancestors()
        .find_map(|p| fs::metadata(p).ok().map(|meta| (p, meta)))
        .filter(|(_, meta)| !meta.is_dir())
        .map(|(p, _)| p)
}

impl LocalStore {
    /// Files below `prefix`: the objects, or (`temps`) the temporary files interrupted writes left.
    fn listing(&self, prefix: &str, listed: Listed) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.trim_end_matches('/').to_owned();
        if !prefix.is_empty()
            && let Err(e) = check_key(&prefix)
        {
            return stream::once(async { Err(e) }).boxed();
        }
        let (root, url) = (self.root.clone(), self.url.clone());
        stream::once(async move {
            blocking(move || {
                let mut out = Vec::new();
                let dir = if prefix.is_empty() {
                    root.clone()
                } else {
                    root.join(&prefix)
                };
                walk(&url, &root, &dir, true, listed, &mut out)?;
                Ok(out)
            })
            .await
        })
        .flat_map(|listed| match listed {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(e) => stream::once(async { Err(e) }).boxed(),
        })
        .boxed()
    }
}

#[async_trait]
impl Store for LocalStore {
    fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_rename: true,
            server_side_copy: true,
            set_mtime: true,
            atomic_create: true,
            directories: true,
            default_jobs: 8,
        }
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    async fn root_exists(&self) -> Result<bool> {
        let (root, location) = (self.root.clone(), self.url.to_string());
        blocking(move || match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => Ok(true),
            Ok(_) => Err(Error::NotADirectory { location }),
            // Missing, or below a file: there is no such directory.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
            Err(e) => Err(Error::from_io(location, e)),
        })
        .await
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let (dir, location) = (self.root.join(key), self.url.with_key(key));
        blocking(move || match fs::create_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(_) if file_in_the_way(&dir).is_some() => Err(Error::NotADirectory { location }),
            Err(e) => Err(Error::from_io(location, e)),
        })
        .await
    }

    async fn create_root(&self) -> Result<()> {
        let (root, location) = (self.root.clone(), self.url.to_string());
        blocking(move || match fs::create_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(e) => match file_in_the_way(&root) {
                Some(file) if file == root => Err(Error::NotADirectory { location }),
                Some(file) => Err(Error::NotADirectory {
                    location: file.display().to_string(),
                }),
                None => Err(Error::from_io(location, e)),
            },
        })
        .await
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::Objects)
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::ObjectsAndDirs)
    }

    fn list_top(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", Listed::TopLevel)
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", Listed::Leftovers)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let (key, location) = (key.to_owned(), self.location(key));
        blocking(move || match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(meta_of(key, &meta)),
            Ok(_) => Err(Error::NotFound { location }),
            Err(e) => Err(Error::from_io(location, e)),
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        let path = self.path(key)?;
        let location = self.location(key);
        let key = key.to_owned();
        let (file, meta) = {
            let location = location.clone();
            blocking(move || {
                let file = File::open(&path).map_err(|e| Error::from_io(location.clone(), e))?;
                let meta = file.metadata().map_err(|e| Error::from_io(location.clone(), e))?;
                if !meta.is_file() {
                    return Err(Error::NotFound { location });
                }
                Ok((file, meta_of(key, &meta)))
            })
            .await?
        };
        let chunks = stream::unfold(Some(file), move |state| {
            let location = location.clone();
            async move {
                let mut file = state?;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::zeroed(READ_CHUNK);
                    let n = loop {
                        match file.read(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => break other,
                        }
                    }?;
                    buf.truncate(n);
                    Ok::<_, io::Error>((buf.freeze(), file))
                })
                .await;
                match read {
                    Ok(Ok((bytes, _))) if bytes.is_empty() => None,
                    Ok(Ok((bytes, file))) => Some((Ok(bytes), Some(file))),
                    Ok(Err(e)) => Some((Err(Error::from_io(location, e)), None)),
                    Err(e) => Some((
                        Err(Error::Other {
                            location,
                            source: Box::new(e),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(GetStream {
            meta,
            stream: chunks.boxed(),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key)?;
        let location = self.location(key);
        blocking(move || {
            let mut file = File::open(&path).map_err(|e| Error::from_io(location.clone(), e))?;
            let size = file
                .metadata()
                .map_err(|e| Error::from_io(location.clone(), e))?
                .len();
            let end = range.end.min(size);
            if range.start > end {
                return Err(Error::Other {
                    location,
                    source: format!(
                        "range {}..{} starts past the end ({size} bytes)",
                        range.start, range.end
                    )
                    .into(),
                });
            }
            let mut buf = vec![0u8; usize::try_from(end - range.start).unwrap_or(0)];
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| Error::from_io(location, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        let path = self.path(key)?;
        let location = self.location(key);
        let sync = self.sync_each;
        blocking(move || {
            let source = OpenSource::open_blocking(source, &location)?;
            let read = std::cell::Cell::new(None);
            let fill = |file: &mut File| match &source {
                OpenSource::Bytes(bytes) => file.write_all(bytes),
                // io::copy between files uses copy_file_range where the kernel has it.
                OpenSource::File(from) => {
                    read.set(Some(from.copy_blocking(file)?));
                    Ok(())
                }
            };
            let check = || match &source {
                OpenSource::Bytes(_) => Ok(()),
                OpenSource::File(from) => from.check_blocking(read.get()),
            };
            write_checked(&path, &location, mode, sync, fill, check)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let location = self.location(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io(location, e)),
        })
        .await
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        let location = self.location(key);
        blocking(move || match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => match fs::remove_dir(&path) {
                Ok(()) => Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(Error::from_io(location, e)),
            },
            Ok(_) => Ok(false),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
            Err(e) => Err(Error::from_io(location, e)),
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.path(from)?, self.path(to)?);
        let (from_location, to_location) = (self.location(from), self.location(to));
        let sync = self.sync_each;
        blocking(move || {
            let mut input = File::open(&source).map_err(|e| Error::from_io(from_location, e))?;
            write_atomically(&target, &to_location, PutMode::Overwrite, sync, |file| {
                io::copy(&mut input, file).map(drop)
            })
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.path(from)?, self.path(to)?);
        let (from_location, to_location) = (self.location(from), self.location(to));
        blocking(move || {
            if !source.is_file() {
                return Err(Error::NotFound {
                    location: from_location,
                });
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::from_io(to_location.clone(), e))?;
            }
            fs::rename(&source, &target).map_err(|e| Error::from_io(to_location, e))
        })
        .await
    }

    async fn persist(&self) -> Result<()> {
        if self.sync_each {
            return Ok(());
        }
        let (root, location) = (self.root.clone(), self.url.to_string());
        blocking(move || {
            let dir = File::open(&root).map_err(|e| Error::from_io(location.clone(), e))?;
            rustix::fs::syncfs(&dir).map_err(|e| Error::from_io(location, e.into()))
        })
        .await
    }

    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()> {
        let path = self.path(key)?;
        let location = self.location(key);
        blocking(move || {
            File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(mtime))
                .map_err(|e| Error::from_io(location, e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_prefix_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let url = StoreUrl::local(root);
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        fs::write(root.join("file"), b"x").unwrap();
        let mut out = Vec::new();
        // The prefix asked for: missing, or a file, lists nothing.
        walk(&url, root, &root.join("missing"), true, Listed::Objects, &mut out).unwrap();
        walk(&url, root, &root.join("file"), true, Listed::Objects, &mut out).unwrap();
        assert!(out.is_empty(), "{out:?}");
        // A directory the walk found, gone before it was listed (the same call, as the walk makes it
        // for a directory below the prefix): an error naming it, not an empty directory.
        for gone in ["vanished", "file"] {
            let err = walk(&url, root, &root.join(gone), false, Listed::Objects, &mut out).unwrap_err();
            assert!(matches!(err, Error::Other { .. }), "{err:?}");
            assert_eq!(err.to_string(), format!("{}/{gone}: store error", root.display()));
            assert!(
                std::error::Error::source(&err)
                    .unwrap()
                    .to_string()
                    .contains("could not be listed"),
                "{err:?}"
            );
        }
        walk(&url, root, root, true, Listed::Objects, &mut out).unwrap();
        let keys: Vec<&str> = out.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&"a/b/f") && keys.contains(&"file"), "{keys:?}");
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        assert_eq!(
            file_in_the_way(&dir.path().join("f/sub/deeper")),
            Some(dir.path().join("f").as_path())
        );
        assert_eq!(file_in_the_way(&dir.path().join("d/sub")), None);
        assert_eq!(file_in_the_way(dir.path()), None);
    }
}
