//! Reading a local file for a put without ever publishing a torn copy; every backend goes through here.
//!
//! When a [`PutSource::File`] (or [`PutSource::FileExpecting`]) is opened, the open handle's metadata
//! (fstat) is stamped: size, modification and change times (to the nanosecond), inode and device. The
//! bytes are read through fresh handles that must show the same stamp. After the last byte was read and
//! sent, and before the backend publishes the object (rename, link, multipart completion, single put),
//! [`OpenSource::check`] stamps the held handle again and the path as well (it may have been replaced
//! by a rename) and compares them, and the number of bytes read, with the first stamp. Any difference
//! is [`Error::SourceChanged`]: the backend removes its temporary object (or aborts the upload) and
//! stores nothing. An edit rewrites the change time even when it keeps the size and the modification
//! time, so a file rewritten in place is caught too. File times have the kernel clock's granularity:
//! a file changed less than [`SETTLE`] before it is opened is read only once the clock has moved on
//! (and must still show its stamp then), so that any later write shows in its times.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncReadExt};

use crate::PutSource;
use crate::error::{Error, Result};

/// What tells one version of a file from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// More than the granularity of file times (they come from the kernel's clock tick, 10 ms at most):
/// a change made this long after another one gets another change time.
const SETTLE: Duration = Duration::from_millis(20);

/// Whether the file's change time is less than [`SETTLE`] ago (or in the future).
fn changed_recently(meta: &Metadata) -> bool {
    let ctime = u64::try_from(meta.ctime()).ok().and_then(|secs| {
        UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(meta.ctime_nsec()).unwrap_or(0)))
    });
    // A time before 1970 (or beyond what the clock holds) is no recent change.
    ctime.is_some_and(|ctime| {
        SystemTime::now()
            .duration_since(ctime)
            .map_or(true, |age| age < SETTLE)
    })
}

/// A put's source, opened: bytes, or a stamped local file.
#[derive(Clone, Debug)]
pub(crate) enum OpenSource {
    Bytes(Bytes),
    File(SourceFile),
}

impl OpenSource {
    /// Opens `source` for a put at `location` (the store URL and key, named by its errors). A file is
    /// stamped; [`PutSource::FileExpecting`] is refused here, before anything is sent, when the file
    /// is not the expected one. Blocks: for the blocking parts of a backend.
    pub(crate) fn open_blocking(source: PutSource, location: &str) -> Result<OpenSource> {
        match source {
            PutSource::Bytes(bytes) => Ok(OpenSource::Bytes(bytes)),
            PutSource::File(path) => SourceFile::open(path, None, None, location).map(OpenSource::File),
            PutSource::FileExpecting {
                path,
                size,
                mtime,
                progress,
            } => SourceFile::open(path, Some((size, mtime)), progress, location).map(OpenSource::File),
        }
    }

    /// [`OpenSource::open_blocking`], off the async threads.
    pub(crate) async fn open(source: PutSource, location: &str) -> Result<OpenSource> {
        match source {
            PutSource::Bytes(bytes) => Ok(OpenSource::Bytes(bytes)),
            source => {
                let location = location.to_owned();
                blocking(move || OpenSource::open_blocking(source, &location)).await
            }
        }
    }

    /// The number of bytes to store.
    pub(crate) fn len(&self) -> u64 {
        match self {
            OpenSource::Bytes(bytes) => bytes.len() as u64,
            OpenSource::File(file) => file.len(),
        }
    }

    /// Its bytes from the start, buffered by up to `capacity` for a file (one reader per attempt):
    /// no more than the file's size, since the buffer (and the runtime's own, as large) is zeroed
    /// for every file, which for small files cost more than sending them.
    pub(crate) async fn reader(&self, capacity: usize) -> io::Result<Box<dyn AsyncBufRead + Send + Unpin>> {
        Ok(match self {
            OpenSource::Bytes(bytes) => Box::new(io::Cursor::new(bytes.clone())),
            OpenSource::File(file) => {
                let size = usize::try_from(file.len()).unwrap_or(usize::MAX);
                Box::new(tokio::io::BufReader::with_capacity(
                    capacity.min(size.max(1)),
                    file.reader().await?,
                ))
            }
        })
    }

    /// Before publishing: [`SourceFile::check`] for a file, nothing to check for bytes.
    pub(crate) async fn check(&self, read: Option<u64>) -> Result<()> {
        match self {
            OpenSource::Bytes(_) => Ok(()),
            OpenSource::File(file) => file.check(read).await,
        }
    }
}

/// A reader that adds what it reads to a progress counter, if there is one.
#[derive(Debug)]
pub(crate) struct Counted<R> {
    inner: R,
    progress: Option<Arc<AtomicU64>>,
    /// Bytes read so far (for the crash harness's `mid-file` point).
    read: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let n = (buf.filled().len() - before) as u64;
            if let Some(progress) = &self.progress {
                progress.fetch_add(n, Ordering::Relaxed);
            }
            // A later chunk is read: the earlier ones went to the put's temporary name.
            if n > 0 && self.read > 0 {
                snapsync_core::chaos::point("mid-file");
            }
            self.read += n;
        }
        polled
    }
}

/// A local file opened for a put, with the stamp it had when it was opened.
#[derive(Clone, Debug)]
pub(crate) struct SourceFile(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Held open until the end check, so that its inode is the one stamped.
    file: File,
    stamp: Stamp,
    /// Where it is being stored (store URL and key).
    location: String,
    /// Where the bytes read are counted, if the caller asked.
    progress: Option<Arc<AtomicU64>>,
}

impl SourceFile {
    /// Opens and stamps `path`; with `expect`, the file's size and (when given) modification time
    /// must be those, or it is [`Error::SourceChanged`]. Blocks.
    fn open(
        path: PathBuf,
        expect: Option<(u64, Option<SystemTime>)>,
        progress: Option<Arc<AtomicU64>>,
        location: &str,
    ) -> Result<SourceFile> {
        let io_error = |e| Error::from_io(path.display().to_string(), e);
        let file = File::open(&path).map_err(io_error)?;
        let meta = file.metadata().map_err(io_error)?;
        let source = SourceFile(Arc::new(Inner {
            stamp: Stamp::of(&meta),
            file,
            path,
            location: location.to_owned(),
            progress,
        }));
        if let Some((size, mtime)) = expect {
            let mtime_differs = mtime.is_some_and(|mtime| meta.modified().ok() != Some(mtime));
            if meta.len() != size || mtime_differs {
                return Err(source.changed());
            }
        }
        // A write within the same clock tick as the stamp would leave the times as they are: for a file
        // changed that recently, wait until the clock has moved on, and it must not have changed since.
        if changed_recently(&meta) {
            std::thread::sleep(SETTLE);
            let now = source
                .0
                .file
                .metadata()
                .map_err(|e| Error::from_io(source.0.path.display().to_string(), e))?;
            if Stamp::of(&now) != source.0.stamp {
                return Err(source.changed());
            }
        }
        Ok(source)
    }

    /// The size it had when it was opened: what is stored.
    pub(crate) fn len(&self) -> u64 {
        self.0.stamp.size
    }

    /// The local path.
    pub(crate) fn path(&self) -> &Path {
        &self.0.path
    }

    /// The error that says this file changed.
    pub(crate) fn changed(&self) -> Error {
        Error::SourceChanged {
            location: self.0.location.clone(),
            path: self.0.path.clone(),
        }
    }

    /// A new handle on the file, at its start (one per attempt: each has its own position), which
    /// must still show the stamp. Blocks.
    pub(crate) fn reader_blocking(&self) -> io::Result<File> {
        hook(&self.0.path, Point::Read);
        let file = File::open(&self.0.path)?;
        if Stamp::of(&file.metadata()?) == self.0.stamp {
            Ok(file)
        } else {
            Err(io::Error::other(format!(
                "{} changed after it was opened",
                self.0.path.display()
            )))
        }
    }

    /// [`SourceFile::reader_blocking`], as an async reader that counts what it reads (see
    /// [`SourceFile::count`]).
    pub(crate) async fn reader(&self) -> io::Result<Counted<tokio::fs::File>> {
        let this = self.clone();
        let file = tokio::task::spawn_blocking(move || this.reader_blocking())
            .await
            .map_err(io::Error::other)??;
        Ok(Counted {
            inner: tokio::fs::File::from_std(file),
            progress: self.0.progress.clone(),
            read: 0,
        })
    }

    /// Copies the file from its start into `to` (blocking), counting the bytes read where the caller
    /// asked for progress (the plain copy otherwise, which the kernel may do by itself); the bytes
    /// copied.
    pub(crate) fn copy_blocking(&self, to: &mut File) -> io::Result<u64> {
        let mut from = self.reader_blocking()?;
        match &self.0.progress {
            None => io::copy(&mut from, to),
            Some(progress) => {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = match io::Read::read(&mut from, &mut buf) {
                        Ok(0) => return Ok(total),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    io::Write::write_all(to, &buf[..n])?;
                    total += n as u64;
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    snapsync_core::chaos::point("mid-file");
                }
            }
        }
    }

    /// The check before publishing: the held handle and the path must still show the stamp, and
    /// `read` (the bytes read and sent; `None` after a failed transfer) must be the stamped size.
    /// [`Error::SourceChanged`] otherwise. Blocks.
    pub(crate) fn check_blocking(&self, read: Option<u64>) -> Result<()> {
        hook(&self.0.path, Point::Check);
        let inner = &self.0;
        let held = inner
            .file
            .metadata()
            .map_err(|e| Error::from_io(inner.path.display().to_string(), e))?;
        // The path may name another file by now (an editor saves by renaming a new file over it);
        // a symlink is judged by the file it leads to.
        let at_path = fs::symlink_metadata(&inner.path).and_then(|meta| {
            if meta.file_type().is_symlink() {
                fs::metadata(&inner.path)
            } else {
                Ok(meta)
            }
        });
        let same = Stamp::of(&held) == inner.stamp
            && at_path.is_ok_and(|meta| Stamp::of(&meta) == inner.stamp)
            && read.is_none_or(|read| read == inner.stamp.size);
        if same { Ok(()) } else { Err(self.changed()) }
    }

    /// [`SourceFile::check_blocking`], off the async threads.
    pub(crate) async fn check(&self, read: Option<u64>) -> Result<()> {
        let this = self.clone();
        blocking(move || this.check_blocking(read)).await
    }

    /// The whole file in memory, checked (for a store that sends it in one request). Reads one byte
    /// more than the stamped size at most, so a file that grows does not fill the memory.
    pub(crate) async fn read_checked(&self) -> Result<Bytes> {
        let size = self.len();
        let read = async {
            let reader = self.reader().await?;
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            reader.take(size.saturating_add(1)).read_to_end(&mut data).await?;
            Ok::<_, io::Error>(data)
        }
        .await;
        match read {
            Ok(data) => {
                self.check(Some(data.len() as u64)).await?;
                Ok(Bytes::from(data))
            }
            Err(e) => Err(self.read_failed(e).await),
        }
    }

    /// The error for a failed read of the file: [`Error::SourceChanged`] when it changed (a read
    /// fails when the file is no longer the stamped one), the read's error otherwise.
    pub(crate) async fn read_failed(&self, error: io::Error) -> Error {
        match self.check(None).await {
            Err(changed @ Error::SourceChanged { .. }) => changed,
            _ => Error::from_io(self.path().display().to_string(), error),
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Other {
            location: "reading a local file".into(),
            source: Box::new(e),
        })?
}

/// Where a put stands when a [`watch`]ed source file is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Point {
    /// A reader is about to be opened (the file was opened and stamped before).
    Read,
    /// Every byte was read and sent; the end check is next, then the object is published.
    Check,
}

type Hook = Arc<dyn Fn(Point) + Send + Sync>;

/// Any hooks at all (so that puts pay nothing when there are none).
static WATCHING: AtomicBool = AtomicBool::new(false);
static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

/// Calls `hook` (on a blocking thread) whenever a put of the file at `path`, named exactly so, reaches
/// a [`Point`], until the returned guard is dropped: how the conformance suite changes a file at a
/// known moment of its upload.
pub(crate) fn watch(path: &Path, hook: impl Fn(Point) + Send + Sync + 'static) -> Watch {
    let mut hooks = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
    hooks.push((path.to_owned(), Arc::new(hook)));
    WATCHING.store(true, Ordering::SeqCst);
    Watch(path.to_owned())
}

/// Removes its [`watch`] hooks when dropped.
#[derive(Debug)]
pub(crate) struct Watch(PathBuf);

impl Drop for Watch {
    fn drop(&mut self) {
        let mut hooks = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
        hooks.retain(|(path, _)| *path != self.0);
        WATCHING.store(!hooks.is_empty(), Ordering::SeqCst);
    }
}

fn hook(path: &Path, point: Point) {
    if !WATCHING.load(Ordering::SeqCst) {
        return;
    }
    let found: Vec<Hook> = HOOKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, hook)| Arc::clone(hook))
        .collect();
    for hook in found {
        hook(point);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn opened(path: &Path) -> SourceFile {
        match OpenSource::open_blocking(PutSource::File(path.to_owned()), "memory://t/key").unwrap() {
            OpenSource::File(file) => file,
            OpenSource::Bytes(_) => unreachable!(),
        }
    }

    fn assert_changed(result: Result<()>, what: &str) {
        match result {
            Err(Error::SourceChanged { location, path }) => {
                assert_eq!(location, "memory://t/key", "{what}");
                assert!(path.ends_with("f"), "{what}: {path:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }

    /// Reads the file through a checked reader, as a backend does.
    fn read_all(source: &SourceFile) -> u64 {
        io::copy(&mut source.reader_blocking().unwrap(), &mut io::sink()).unwrap()
    }

    #[test]
    fn an_unchanged_file_passes_and_a_short_or_long_read_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let source = opened(&path);
        assert_eq!(source.len(), 5);
        assert_eq!(read_all(&source), 5);
        source.check_blocking(Some(5)).unwrap();
        source.check_blocking(None).unwrap();
        assert_changed(source.check_blocking(Some(4)), "short read");
        assert_changed(source.check_blocking(Some(6)), "long read");
    }

    #[test]
    fn a_file_changed_just_now_is_opened_once_the_clock_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let started = std::time::Instant::now();
        let source = opened(&path);
        assert!(started.elapsed() >= SETTLE, "{:?}", started.elapsed());
        source.check_blocking(Some(5)).unwrap();
    }

    #[test]
    fn appending_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let source = opened(&path);
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" world")
            .unwrap();
        assert_changed(source.check_blocking(Some(5)), "appended");
        assert!(source.reader_blocking().is_err(), "a reader on the changed file");
    }

    #[test]
    fn a_rewrite_in_place_with_the_same_size_and_mtime_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let ctime = |meta: &Metadata| (meta.ctime(), meta.ctime_nsec());
        let before = ctime(&fs::metadata(&path).unwrap());
        let source = opened(&path);
        // Only the change time tells; it has the clock's granularity: write until it moved.
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        while ctime(&file.metadata().unwrap()) == before {
            std::thread::sleep(Duration::from_millis(1));
            std::os::unix::fs::FileExt::write_all_at(&file, b"HELLO", 0).unwrap();
            file.set_modified(mtime).unwrap();
        }
        drop(file);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (5, mtime));
        assert_changed(source.check_blocking(Some(5)), "rewritten in place");
    }

    #[test]
    fn a_path_replaced_by_a_rename_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let source = opened(&path);
        let other = dir.path().join("g");
        fs::write(&other, b"HELLO").unwrap();
        fs::rename(&other, &path).unwrap();
        assert_changed(source.check_blocking(Some(5)), "replaced");
        fs::remove_file(&path).unwrap();
        assert_changed(source.check_blocking(Some(5)), "removed");
    }

    #[test]
    fn a_symlink_is_judged_by_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"hello").unwrap();
        let path = dir.path().join("f");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let source = opened(&path);
        assert_eq!(read_all(&source), 5);
        source.check_blocking(Some(5)).unwrap();
        fs::write(&target, b"hello, longer").unwrap();
        assert_changed(source.check_blocking(Some(5)), "target changed");
    }

    #[test]
    fn an_expectation_is_checked_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let expecting = |size, mtime| {
            OpenSource::open_blocking(
                PutSource::FileExpecting {
                    path: path.clone(),
                    size,
                    mtime,
                    progress: None,
                },
                "memory://t/key",
            )
            .map(drop)
        };
        expecting(5, Some(mtime)).unwrap();
        expecting(5, None).unwrap();
        assert_changed(expecting(4, Some(mtime)), "size");
        assert_changed(expecting(5, Some(mtime - Duration::from_nanos(1))), "mtime");
        assert!(matches!(
            expecting(5, None)
                .and(OpenSource::open_blocking(PutSource::File(dir.path().join("missing")), "x").map(drop)),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn hooks_run_for_their_path_only_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("f"), dir.path().join("other"));
        fs::write(&path, b"x").unwrap();
        fs::write(&other, b"y").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let guard = {
            let seen = Arc::clone(&seen);
            watch(&path, move |point| seen.lock().unwrap().push(point))
        };
        let source = opened(&path);
        read_all(&source);
        source.check_blocking(Some(1)).unwrap();
        let unwatched = match OpenSource::open_blocking(PutSource::File(other.clone()), "x").unwrap() {
            OpenSource::File(file) => file,
            OpenSource::Bytes(_) => unreachable!(),
        };
        unwatched.check_blocking(None).unwrap();
        drop(guard);
        source.check_blocking(None).unwrap();
        assert_eq!(*seen.lock().unwrap(), [Point::Read, Point::Check]);
    }
}
