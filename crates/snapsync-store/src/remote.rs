//! The FTP and SFTP stores, in two layers: [`RemoteFs`], the protocol (implemented in `ftp.rs` and
//! `sftp.rs`: connections, commands, what the server's answers mean), and [`RemoteStore`], one
//! [`Store`] above it for both.
//!
//! [`RemoteStore`] holds everything that does not depend on the protocol: a put goes to a temporary
//! name beside its key, the source is checked against its stamp and the size the server holds against
//! the size sent, and only then is it renamed over the key (or linked, for a create where the protocol
//! has an atomic create); listings walk the directories in parallel, never enter a lock directory, and
//! take only the prefix asked for as possibly missing; directories are made once per store; `copy` goes
//! through a local temporary file (neither protocol copies on the server); locks are files where the
//! protocol creates atomically (SFTP) and directories where it does not (FTP). Where a server's refusal
//! may mean a missing path (FTP's `550`), the protocol says so ([`Fault::Refused`]) and this layer looks
//! at the path. Also here: the parts of the URLs both protocols take.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::source::OpenSource;
use crate::{Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Store, StoreExt, StoreUrl, check_key};

/// Bytes per piece of a download, and the buffer of an upload.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// The parts of an `ftp://`, `ftps://` or `sftp://` URL, percent-decoded.
pub(crate) struct UrlParts {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// `None` when the URL names no user.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// The path, decoded, as written (leading `/` included).
    pub(crate) path: String,
}

/// Splits a remote URL; `example` is shown in the error for a URL without a host.
pub(crate) fn url_parts(url: &StoreUrl, example: &str) -> Result<UrlParts> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = url
        .secret_url()
        .ok_or_else(|| invalid(format!("not a URL like {example}")))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(format!("needs a host: {example}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Ok(UrlParts {
        host,
        port: parsed.port(),
        user: (!parsed.username().is_empty()).then(|| decode(parsed.username())),
        password: parsed.password().map(decode),
        path: decode(parsed.path()),
    })
}

/// A temporary failure at `location`.
pub(crate) fn transient(
    location: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Transient {
        location: location.to_owned(),
        source: source.into(),
    }
}

/// Reads from `reader` until `buf` holds `want` bytes or the reader ends.
pub(crate) async fn fill(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    want: usize,
) -> std::io::Result<()> {
    while buf.len() < want {
        if reader.read_buf(buf).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// When a transfer last moved. A transfer's timeout is a limit on silence, not on its length: a
/// large file over a slow link takes as long as it takes, while a server that stops taking or
/// sending bytes fails it once nothing has moved for the timeout ([`unless_silent`]).
#[derive(Clone, Debug)]
pub(crate) struct Activity(Arc<Mutex<tokio::time::Instant>>);

impl Activity {
    /// Moving as of now.
    pub(crate) fn new() -> Activity {
        Activity(Arc::new(Mutex::new(tokio::time::Instant::now())))
    }

    /// Something moved.
    pub(crate) fn touch(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = tokio::time::Instant::now();
    }

    /// Something is expected to take up to `extra` more than the silence limit without a sign of
    /// life (a server making `extra`'s worth of bytes durable): the limit counts from `extra` ahead.
    pub(crate) fn allow(&self, extra: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = tokio::time::Instant::now() + extra;
    }

    fn last(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `work` to its end, or until `activity` has not moved for `limit` (then `None`).
pub(crate) async fn unless_silent<T>(
    limit: Duration,
    activity: &Activity,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    loop {
        match tokio::time::timeout_at(activity.last() + limit, &mut work).await {
            Ok(done) => return Some(done),
            Err(_) if activity.last() + limit <= tokio::time::Instant::now() => return None,
            Err(_) => {}
        }
    }
}

/// A buffered reader that marks an [`Activity`] each time bytes it gave are consumed (an upload's
/// source: consumed once the connection took them).
pub(crate) struct Touching<R> {
    inner: R,
    activity: Activity,
}

impl<R> Touching<R> {
    pub(crate) fn new(inner: R, activity: Activity) -> Touching<R> {
        Touching { inner, activity }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Touching<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<R: tokio::io::AsyncBufRead + Unpin> tokio::io::AsyncBufRead for Touching<R> {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: std::pin::Pin<&mut Self>, amt: usize) {
        if amt > 0 {
            self.activity.touch();
        }
        std::pin::Pin::new(&mut self.inner).consume(amt);
    }
}

/// A temporary name beside `path` (`dir/.NAME.snapsync-PID-XN.tmp`, recognised by
/// [`crate::is_temp_name`]); unique across processes and machines writing the same directory.
pub(crate) fn temp_name(path: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (dir, name) = path.rsplit_once('/').map_or((None, path), |(d, n)| (Some(d), n));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = format!(".{name}.snapsync-{}-{nanos:x}{n}.tmp", std::process::id());
    match dir {
        Some(dir) => format!("{dir}/{temp}"),
        None => temp,
    }
}

/// How a server path that is not below the store's root is named in messages: the store's URL with
/// that path (password hidden; a relative path is below the user's home, `/~/`).
pub(crate) fn path_location(url: &StoreUrl, path: &str) -> String {
    let Some(mut shown) = url.secret_url().cloned() else {
        return path.to_owned();
    };
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if path.starts_with('/') {
        shown.set_path(path);
    } else {
        shown.set_path(&format!("/~/{path}"));
    }
    shown.to_string()
}

/// The directory part of a `/`-separated path (`""` for none).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The directories from the top down to `dir` that are not in `made` (each is made once per store).
pub(crate) fn missing_dirs(made: &Mutex<HashSet<String>>, dir: &str) -> Vec<String> {
    let made = made.lock().unwrap_or_else(PoisonError::into_inner);
    dir.match_indices('/')
        .map(|(i, _)| &dir[..i])
        .chain([dir])
        .filter(|d| !d.is_empty() && !made.contains(*d))
        .map(str::to_owned)
        .collect()
}

/// Forgets `dir` and everything below it in `made` (after the directory was removed).
pub(crate) fn forget_dirs(made: &Mutex<HashSet<String>>, dir: &str) {
    let below = format!("{dir}/");
    made.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|d| d != dir && !d.starts_with(&below));
}

/// What a directory listing says about one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// Links and anything else: neither listed nor followed.
    Other,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub(crate) struct DirEntry {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) modified: Option<SystemTime>,
}

/// What a write left on the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    /// The bytes sent.
    pub(crate) sent: u64,
    /// The size the server then gives the file.
    pub(crate) size: u64,
    /// Its modification time, where the protocol told it without another round trip.
    pub(crate) modified: Option<SystemTime>,
}

/// What a listing yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    /// The objects ([`crate::Store::list`]).
    Objects,
    /// The temporary files interrupted writes left ([`crate::Store::list_leftovers`]).
    Leftovers,
    /// The objects and the directories, a directory as its key and a `/` ([`crate::Store::list_with_dirs`]).
    ObjectsAndDirs,
    /// Like [`Listed::ObjectsAndDirs`], of the top directory only: directories are not entered
    /// ([`crate::Store::list_top`]).
    TopLevel,
}

impl Listed {
    /// Whether a file of this name is listed.
    pub(crate) fn takes_file(self, name: &str) -> bool {
        crate::is_temp_name(std::ffi::OsStr::new(name)) == (self == Listed::Leftovers)
    }
}

/// The listing behind `Store::list`: walks the directories from `start` with up to `jobs` listings at
/// once (a failed one is tried twice more when the failure is temporary: listings are harmless to
/// repeat), and yields every file as a key (its path without the first `key_offset` bytes). Temporary
/// files (or, for [`Listed::Leftovers`], everything but them), `.`, `..` and links are left out;
/// [`Listed::ObjectsAndDirs`] also yields each directory as its key and a `/`. The walk runs in
/// its own task and stops when the stream is dropped, or after the first error.
///
/// `list_dir(dir, top)` lists one directory; `top` is true for `start` only, the prefix the caller
/// asked for, which alone may be missing (an empty listing). A directory found in a listing that then
/// cannot be listed must be an error: the walk never takes it for an empty one.
pub(crate) fn walk<F, Fut>(
    start: String,
    key_offset: usize,
    jobs: usize,
    listed: Listed,
    list_dir: F,
) -> BoxStream<'static, Result<ObjectMeta>>
where
    F: Fn(String, bool) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<DirEntry>>> + Send + 'static,
{
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<ObjectMeta>>(256);
    tokio::spawn(async move {
        let list_dir = &list_dir;
        let mut pending = VecDeque::from([(start, true)]);
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < jobs
                && let Some((dir, top)) = pending.pop_front()
            {
                running.push(async move {
                    let mut attempt = 0;
                    loop {
                        match list_dir(dir.clone(), top).await {
                            Err(e) if e.is_transient() && attempt < 2 => attempt += 1,
                            entries => break (dir, entries),
                        }
                    }
                });
            }
            let Some((dir, entries)) = running.next().await else {
                break;
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => {
                    let _ = futures::SinkExt::send(&mut sender, Err(e)).await;
                    return;
                }
            };
            for entry in entries {
                if matches!(entry.name.as_str(), "." | "..") || entry.name.contains('/') {
                    continue;
                }
                let path = match dir.as_str() {
                    "" => entry.name.clone(),
                    "/" => format!("/{}", entry.name),
                    dir => format!("{dir}/{}", entry.name),
                };
                match entry.kind {
                    Kind::Dir if entry.name.starts_with(crate::LOCK_PREFIX) => {}
                    Kind::Dir => {
                        if matches!(listed, Listed::ObjectsAndDirs | Listed::TopLevel) {
                            let meta = ObjectMeta {
                                key: format!("{}/", path.get(key_offset..).unwrap_or_default()),
                                size: 0,
                                modified: entry.modified,
                                etag: None,
                            };
                            if futures::SinkExt::send(&mut sender, Ok(meta)).await.is_err() {
                                return;
                            }
                        }
                        if listed != Listed::TopLevel {
                            pending.push_back((path, false));
                        }
                    }
                    Kind::File if listed.takes_file(&entry.name) => {
                        let meta = ObjectMeta {
                            key: path.get(key_offset..).unwrap_or_default().to_owned(),
                            size: entry.size,
                            modified: entry.modified,
                            etag: None,
                        };
                        if futures::SinkExt::send(&mut sender, Ok(meta)).await.is_err() {
                            return; // nobody listens any more
                        }
                    }
                    Kind::File | Kind::Other => {}
                }
            }
        }
    });
    receiver.boxed()
}

/// Copies `from` to `to` in `store` through a local temporary file (for stores without a server-side
/// copy); a missing `from` is [`Error::NotFound`] naming it.
pub(crate) async fn copy_through_local(store: &dyn Store, from: &str, to: &str) -> Result<()> {
    let local = std::env::temp_dir().join(temp_name(&format!("snapsync-copy-{}", from.replace('/', "_"))));
    let local_error = |e| Error::from_io(local.display().to_string(), e);
    let result = async {
        let GetStream { mut stream, .. } = store.get(from).await?;
        let mut file = tokio::fs::File::create(&local).await.map_err(local_error)?;
        while let Some(piece) = stream.next().await {
            file.write_all(&piece?).await.map_err(local_error)?;
        }
        file.flush().await.map_err(local_error)?;
        drop(file);
        store
            .put(to, PutSource::File(local.clone()), PutMode::Overwrite)
            .await
    }
    .await;
    let _ = tokio::fs::remove_file(&local).await;
    result
}

/// How a protocol operation failed, where [`RemoteStore`] decides by it.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The server refused, in the words it also uses for a path that is missing (or of another kind,
    /// or a directory that is not empty): FTP's `550`, an SFTP status. The error is the refusal as
    /// it is reported when the path turns out to be there; the caller looks to tell.
    Refused(Error),
    /// Anything else: no connection, a timeout, another reply.
    Failed(Error),
}

impl Fault {
    /// The error, whatever it was.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Fault::Refused(e) | Fault::Failed(e) => e,
        }
    }
}

/// What is at a server path, as [`RemoteFs::probe`] finds out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Missing,
    Dir,
    File,
    /// A link, or another kind of entry.
    Other,
}

/// The protocol under a [`RemoteStore`]: what FTP and SFTP do differently, and nothing else.
///
/// Paths are server paths (see [`RemoteFs::root_path`]); `location` is what errors name (the store
/// URL and the key). Every method has the connection handling of its protocol (pooled FTP
/// connections checked with `NOOP`, the SSH session reopened) and a timeout; what a reply means
/// is decided here, except where the answer needs a look at the path, which [`Fault::Refused`]
/// leaves to the caller.
#[async_trait]
pub(crate) trait RemoteFs: Send + Sync + 'static {
    /// An open download: its bytes, then [`RemoteFs::finish_read`].
    type Reader: AsyncRead + Send + Unpin + 'static;

    /// How `Debug` names the store.
    const NAME: &'static str;

    /// The store's URL.
    fn url(&self) -> &StoreUrl;

    /// What the store does natively.
    fn capabilities(&self) -> Capabilities;

    /// The per-operation timeout.
    fn timeout(&self) -> Duration;

    /// The store's directory as the server names it, without a trailing `/` (but `/` itself); `""`
    /// is the login directory. A key's path is this, a `/` and the key ([`join`]).
    fn root_path(&self) -> &str;

    /// The server path of `key`, checked.
    fn path(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(join(self.root_path(), key))
    }

    /// The entries of the directory `dir` (`.` and `..` left out).
    ///
    /// Only the prefix a listing asked for (`top`) may be missing or not a directory: its listing is
    /// then empty. A directory that the walk found in its parent's listing and that cannot be listed
    /// (gone meanwhile, refused) is an error, never an empty directory; how to tell a missing
    /// directory from a refused one is the protocol's part.
    async fn list_dir(&self, dir: &str, top: bool, location: &str) -> Result<Vec<DirEntry>>;

    /// What is at `path`; an error when that cannot be told.
    async fn probe(&self, path: &str, location: &str) -> Result<Probe>;

    /// The size and time of the file at `path` (`key` left empty); [`Error::NotFound`] when there is
    /// no file there (nothing, or a directory or a link).
    async fn stat(&self, path: &str, location: &str) -> Result<ObjectMeta>;

    /// Makes the directory `path` (not its parents).
    async fn mkdir(&self, path: &str, location: &str) -> Result<(), Fault>;

    /// Removes the empty directory `path`.
    async fn rmdir(&self, path: &str, location: &str) -> Result<(), Fault>;

    /// Removes the file `path`: `Ok` as well when the server says plainly there is none.
    async fn remove_file(&self, path: &str, location: &str) -> Result<(), Fault>;

    /// Moves `from` to `to`, replacing a file there.
    async fn rename(&self, from: &str, to: &str, location: &str) -> Result<(), Fault>;

    /// Links `to` to the file `from` if nothing is at `to` (atomic: of racing links one wins), for
    /// protocols that have [`Capabilities::atomic_create`]; `Ok(false)` when the server cannot link.
    async fn hard_link(&self, from: &str, to: &str, location: &str) -> Result<bool> {
        let _ = (from, to, location);
        Ok(false)
    }

    /// Writes `source` to the file `path` (made or truncated; the directory exists). Each attempt
    /// reads `source` from its start.
    async fn write(&self, path: &str, source: &OpenSource, location: &str) -> Result<Written>;

    /// Opens the file `path` for reading from its start.
    async fn open_read(&self, path: &str, location: &str) -> Result<Self::Reader>;

    /// Ends a download whose bytes were all read (the server confirms it where it does).
    async fn finish_read(&self, reader: Self::Reader, location: &str) -> Result<()>;

    /// The bytes `range` of the file `path` (fewer where it ends).
    async fn read_range(&self, path: &str, range: Range<u64>, location: &str) -> Result<Bytes>;

    /// Sets the modification time of the file `path`.
    async fn set_mtime(&self, path: &str, mtime: SystemTime, location: &str) -> Result<()>;
}

/// The server path of `key` below the directory `root` (see [`RemoteFs::root_path`]).
pub(crate) fn join(root: &str, key: &str) -> String {
    if root.is_empty() {
        key.to_owned()
    } else if root.ends_with('/') {
        format!("{root}{key}")
    } else {
        format!("{root}/{key}")
    }
}

/// An FTP or SFTP server as a [`Store`]: everything above the protocol, once. See the module
/// documentation.
pub struct RemoteStore<F> {
    pub(crate) fs: Arc<F>,
    /// Directories known to exist (made or seen), so each is made once.
    made_dirs: Mutex<HashSet<String>>,
    /// Temporary names of puts dropped before they finished, for [`Store::remove_abandoned`].
    abandoned: Mutex<Vec<String>>,
}

/// A put's temporary name, remembered as abandoned if the put is dropped before [`Pending::finish`].
struct Pending<'a> {
    abandoned: &'a Mutex<Vec<String>>,
    temp: Option<String>,
}

impl Pending<'_> {
    fn finish(mut self) {
        self.temp = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            self.abandoned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(temp);
        }
    }
}

impl<F: RemoteFs> fmt::Debug for RemoteStore<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(F::NAME)
            .field("url", self.fs.url())
            .finish_non_exhaustive()
    }
}

/// The name of the file that holds a directory lock's body, inside the lock's directory.
const LOCK_OWNER: &str = "owner";

// `RemoteStore` is public only as `FtpStore` and `SftpStore`; the protocol trait stays the crate's own.
#[allow(private_bounds)]
impl<F: RemoteFs> RemoteStore<F> {
    pub(crate) fn new(fs: F) -> RemoteStore<F> {
        RemoteStore {
            fs: Arc::new(fs),
            made_dirs: Mutex::default(),
            abandoned: Mutex::default(),
        }
    }

    fn location(&self, key: &str) -> String {
        self.fs.url().with_key(key)
    }

    fn atomic_create(&self) -> bool {
        self.fs.capabilities().atomic_create
    }

    /// Whether a file is at `path`.
    async fn exists(&self, path: &str, location: &str) -> Result<bool> {
        match self.fs.stat(path, location).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the directories down to `dir` that are not known to exist, the root and its parents
    /// included. One that is refused (it exists, most often) is passed over: a real problem shows in
    /// the write that follows.
    async fn make_dirs(&self, dir: &str, location: &str) -> Result<()> {
        for dir in missing_dirs(&self.made_dirs, dir) {
            match self.fs.mkdir(&dir, location).await {
                Ok(()) | Err(Fault::Refused(_)) => {}
                Err(Fault::Failed(e)) => return Err(e),
            }
            self.made_dirs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dir);
        }
        Ok(())
    }

    /// Stores `source` at `path` without ever showing a torn object: written to a temporary name
    /// beside it, the source checked against its stamp and the size the server holds against the
    /// size sent, then renamed over `path` (or, for a create where the protocol has an atomic create,
    /// linked to it). The temporary file is removed when anything fails. `make_parents`: make the
    /// missing directories first (otherwise a missing one is an error). What the write left: the
    /// published object's size, and its time where the protocol told it (a link or a rename keeps it).
    async fn put_path(
        &self,
        path: &str,
        location: &str,
        source: OpenSource,
        mode: PutMode,
        make_parents: bool,
    ) -> Result<Written> {
        let atomic = self.atomic_create();
        // Where a create cannot be atomic, it is checked before and after the upload. Where it can,
        // the link below fails when the key exists: no round trip per new file.
        if mode == PutMode::Create && !atomic && self.exists(path, location).await? {
            return Err(Error::AlreadyExists {
                location: location.to_owned(),
            });
        }
        if make_parents {
            self.make_dirs(parent(path), location).await?;
        }
        let expected = source.len();
        let temp = temp_name(path);
        // Dropped from here on (a cancelled run), the temporary name is left for `remove_abandoned`.
        let pending = Pending {
            abandoned: &self.abandoned,
            temp: Some(temp.clone()),
        };
        let upload = self.fs.write(&temp, &source, location).await;
        // Before anything is published: the source must still be what was stamped, and all of it sent.
        let checked = source
            .check(upload.as_ref().ok().map(|written| written.sent))
            .await;
        let result = match (checked, upload) {
            (Err(changed), _) => Err(changed),
            (Ok(()), Ok(written)) if written.size == expected => {
                let published = self.publish(&temp, path, location, mode).await.map(|()| written);
                if published.is_ok() {
                    snapsync_core::chaos::point("after-rename");
                }
                published
            }
            (Ok(()), Ok(written)) => Err(transient(
                location,
                format!("the server holds {} of the {expected} bytes sent", written.size),
            )),
            (Ok(()), Err(e)) => Err(e),
        };
        // After a rename the temporary name is gone; after a link or a failure it is removed.
        if result.is_err() || (mode == PutMode::Create && atomic) {
            let _ = self.fs.remove_file(&temp, location).await;
        }
        pending.finish();
        result
    }

    /// Gives the uploaded `temp` the name `path`: a rename over it, or for a create a link where the
    /// protocol has an atomic create (the rename otherwise, once `path` was found free).
    async fn publish(&self, temp: &str, path: &str, location: &str, mode: PutMode) -> Result<()> {
        let taken = || Error::AlreadyExists {
            location: location.to_owned(),
        };
        if mode == PutMode::Create {
            if self.atomic_create() {
                match self.fs.hard_link(temp, path, location).await {
                    Ok(true) => return Ok(()),
                    // The link fails when the key exists: the race was lost.
                    Ok(false) | Err(Error::Other { .. }) if self.fs.stat(path, location).await.is_ok() => {
                        return Err(taken());
                    }
                    // A server without links.
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            } else if self.exists(path, location).await? {
                return Err(taken());
            }
        }
        self.fs
            .rename(temp, path, location)
            .await
            .map_err(Fault::into_error)
    }

    /// What is below `prefix`: the objects (and directories), or the temporary files interrupted
    /// writes left.
    fn listing(&self, prefix: &str, listed: Listed) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.trim_matches('/');
        let root = self.fs.root_path();
        let start = if prefix.is_empty() {
            root.to_owned()
        } else {
            match self.fs.path(prefix) {
                Ok(path) => path,
                Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
            }
        };
        // The bytes of a path before its key: the root and a `/`.
        let key_offset = join(root, "k").len() - 1;
        let jobs = self.fs.capabilities().default_jobs;
        let fs = Arc::clone(&self.fs);
        walk(start, key_offset, jobs, listed, move |dir, top| {
            let fs = Arc::clone(&fs);
            let key = dir.get(key_offset..).unwrap_or_default();
            let location = format!("{}/", fs.url().with_key(key).trim_end_matches('/'));
            async move { fs.list_dir(&dir, top, &location).await }
        })
    }
}

#[async_trait]
impl<F: RemoteFs> Store for RemoteStore<F> {
    fn url(&self) -> &StoreUrl {
        self.fs.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.fs.capabilities()
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::Objects)
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::ObjectsAndDirs)
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        let (path, location) = (self.fs.path(key)?, self.location(key));
        self.make_dirs(&path, &location).await?;
        // make_dirs leaves refusals to the write that follows; here nothing follows: look.
        match self.fs.probe(&path, &location).await? {
            Probe::Dir => Ok(()),
            Probe::Missing => Err(Error::PermissionDenied {
                location,
                source: "the server did not make the folder".into(),
            }),
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
        }
    }

    fn list_top(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", Listed::TopLevel)
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", Listed::Leftovers)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.fs.path(key)?;
        let mut meta = self.fs.stat(&path, &self.location(key)).await?;
        key.clone_into(&mut meta.key);
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        let meta = self.head(key).await?;
        let path = self.fs.path(key)?;
        let location = self.location(key);
        let reader = self.fs.open_read(&path, &location).await?;
        let (fs, size, timeout) = (Arc::clone(&self.fs), meta.size, self.fs.timeout());
        let state = Some((reader, 0u64, location));
        let stream = futures::stream::unfold(state, move |state| {
            let fs = Arc::clone(&fs);
            async move {
                let (mut reader, got, location) = state?;
                let fault = |what: String| transient(&location, what);
                let mut buf = BytesMut::with_capacity(READ_CHUNK);
                let activity = Activity::new();
                let mut touching = Touching::new(&mut reader, activity.clone());
                let filling = fill(&mut touching, &mut buf, READ_CHUNK);
                match unless_silent(timeout, &activity, filling).await.ok_or(()) {
                    Err(()) => Some((
                        Err(fault(format!("download stalled: no answer within {timeout:?}"))),
                        None,
                    )),
                    Ok(Err(e)) => Some((Err(fault(format!("download broke off: {e}"))), None)),
                    Ok(Ok(())) if buf.is_empty() => {
                        if got != size {
                            let ended = format!("download ended after {got} of {size} bytes");
                            return Some((Err(fault(ended)), None));
                        }
                        match tokio::time::timeout(timeout, fs.finish_read(reader, &location)).await {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some((Err(e), None)),
                            Err(_) => {
                                Some((Err(fault("the server did not confirm the download".into())), None))
                            }
                        }
                    }
                    Ok(Ok(())) => {
                        let got = got + buf.len() as u64;
                        if got > size {
                            let more = format!("the server sent more than the {size} bytes it listed");
                            return Some((Err(fault(more)), None));
                        }
                        Some((Ok(buf.freeze()), Some((reader, got, location))))
                    }
                }
            }
        });
        Ok(GetStream {
            meta,
            stream: stream.boxed(),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.fs.path(key)?;
        self.fs.read_range(&path, range, &self.location(key)).await
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        let path = self.fs.path(key)?;
        let location = self.location(key);
        // A local file is opened (and stamped) first: a wrong one is refused before anything is sent.
        let source = OpenSource::open(source, &location).await?;
        self.put_path(&path, &location, source, mode, true)
            .await
            .map(drop)
    }

    async fn put_meta(&self, key: &str, source: PutSource, mode: PutMode) -> Result<ObjectMeta> {
        let path = self.fs.path(key)?;
        let location = self.location(key);
        let source = OpenSource::open(source, &location).await?;
        let written = self.put_path(&path, &location, source, mode, true).await?;
        match written.modified {
            Some(modified) => Ok(ObjectMeta {
                key: key.to_owned(),
                size: written.size,
                modified: Some(modified),
                etag: None,
            }),
            None => self.head(key).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.fs.path(key)?;
        let location = self.location(key);
        match self.fs.remove_file(&path, &location).await {
            Ok(()) => Ok(()),
            // Gone already is fine; a refusal of a file that is there is not.
            Err(Fault::Refused(e)) => {
                if self.exists(&path, &location).await? {
                    Err(e)
                } else {
                    Ok(())
                }
            }
            Err(Fault::Failed(e)) => Err(e),
        }
    }

    async fn remove_abandoned(&self) -> Result<()> {
        let temps = std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(PoisonError::into_inner));
        let mut first_error = None;
        for temp in temps {
            let location = path_location(self.fs.url(), &temp);
            match self.fs.remove_file(&temp, &location).await {
                Ok(()) => {}
                // Gone already (the upload never began) is fine; a file still there is kept in mind.
                Err(Fault::Refused(e) | Fault::Failed(e)) => {
                    if matches!(self.fs.probe(&temp, &location).await, Ok(Probe::Missing)) {
                        continue;
                    }
                    self.abandoned
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(temp);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        // Neither protocol copies on the server.
        copy_through_local(self, from, to).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.fs.path(from)?, self.fs.path(to)?);
        let location = self.location(from);
        // An object, not a directory; a missing one makes no directories for its target.
        self.fs.stat(&source, &location).await?;
        self.make_dirs(parent(&target), &self.location(to)).await?;
        match self.fs.rename(&source, &target, &location).await {
            Ok(()) => Ok(()),
            // A source that vanished meanwhile, or a refused rename.
            Err(Fault::Refused(e)) => {
                if self.exists(&source, &location).await? {
                    Err(e)
                } else {
                    Err(Error::NotFound { location })
                }
            }
            Err(Fault::Failed(e)) => Err(e),
        }
    }

    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()> {
        let path = self.fs.path(key)?;
        self.fs.set_mtime(&path, mtime, &self.location(key)).await
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        let path = self.fs.path(key)?;
        match self.fs.rmdir(&path, &self.location(key)).await {
            Ok(()) => {
                forget_dirs(&self.made_dirs, &path);
                Ok(true)
            }
            // Not empty, missing, or not a directory: servers answer all three alike.
            Err(Fault::Refused(_)) => Ok(false),
            Err(Fault::Failed(e)) => Err(e),
        }
    }

    async fn root_exists(&self) -> Result<bool> {
        let location = self.fs.url().to_string();
        match self.fs.probe(self.fs.root_path(), &location).await? {
            Probe::Dir => Ok(true),
            Probe::Missing => Ok(false),
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
        }
    }

    async fn create_root(&self) -> Result<()> {
        let location = self.fs.url().to_string();
        let root = self.fs.root_path();
        // Every part from the top (the login directory, for a relative root, is there): those that
        // exist refuse, which is fine.
        let parts = missing_dirs(&Mutex::default(), root.trim_end_matches('/'));
        let mut refusal = None;
        for dir in &parts {
            match self.fs.mkdir(dir, &location).await {
                Ok(()) => {}
                Err(Fault::Refused(e)) => refusal = Some(e),
                Err(Fault::Failed(e)) => return Err(e),
            }
        }
        match self.fs.probe(root, &location).await? {
            Probe::Dir => {
                self.made_dirs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(parts);
                Ok(())
            }
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
            Probe::Missing => {
                // A file in the way of a part, or a refusal.
                for dir in &parts {
                    if matches!(self.fs.probe(dir, &location).await?, Probe::File | Probe::Other) {
                        return Err(Error::NotADirectory {
                            location: path_location(self.fs.url(), dir),
                        });
                    }
                }
                Err(refusal.unwrap_or(Error::NotFound { location }))
            }
        }
    }

    // Where the protocol creates atomically (SFTP), a lock is a file, as on a local disk. Where it
    // cannot (FTP), no file operation is exclusive but making a directory is (the second client's
    // fails): the lock is the directory `key`, its body in `key/owner`. A lock directory without
    // `owner` is a lock being made; a plain file at `key` is a lock left by an older version.

    async fn lock_create(&self, key: &str, body: Bytes) -> Result<()> {
        if self.atomic_create() {
            return self.put(key, PutSource::Bytes(body), PutMode::Create).await;
        }
        let path = self.fs.path(key)?;
        let location = self.location(key);
        self.make_dirs(parent(&path), &location).await?;
        // Of racing clients, one makes the directory.
        let mut attempt = 0;
        loop {
            match self.fs.mkdir(&path, &location).await {
                Ok(()) => break,
                Err(Fault::Refused(refusal)) => match self.fs.probe(&path, &location).await? {
                    // Refused, or made and removed again in between: once more, then it is a refusal.
                    Probe::Missing if attempt < 2 => attempt += 1,
                    Probe::Missing => return Err(refusal),
                    Probe::Dir | Probe::File | Probe::Other => return Err(Error::AlreadyExists { location }),
                },
                Err(Fault::Failed(e)) => return Err(e),
            }
        }
        // The lock is ours; until its body is in, a reader sees an empty one (being created).
        let owner = format!("{path}/{LOCK_OWNER}");
        let body = OpenSource::Bytes(body);
        if let Err(e) = self
            .put_path(&owner, &location, body, PutMode::Overwrite, false)
            .await
        {
            let _ = self.lock_remove(key).await;
            return Err(e);
        }
        Ok(())
    }

    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        if self.atomic_create() {
            return self.get_bytes(key).await;
        }
        let path = self.fs.path(key)?;
        let location = self.location(key);
        match self.get_bytes(&format!("{key}/{LOCK_OWNER}")).await {
            Ok(body) => Ok(body),
            Err(Error::NotFound { .. }) => match self.fs.probe(&path, &location).await? {
                // Made, its body not stored yet: held, by somebody who has not said who yet.
                Probe::Dir => Ok(Bytes::new()),
                // A lock file (written with a create-if-absent put, as older versions did).
                Probe::File => self.get_bytes(key).await,
                Probe::Missing | Probe::Other => Err(Error::NotFound { location }),
            },
            Err(e) => Err(e),
        }
    }

    async fn lock_update(&self, key: &str, body: Bytes) -> Result<()> {
        if self.atomic_create() {
            self.head(key).await?;
            return self.put(key, PutSource::Bytes(body), PutMode::Overwrite).await;
        }
        let path = self.fs.path(key)?;
        let location = self.location(key);
        let owner = format!("{path}/{LOCK_OWNER}");
        // Never makes the directory: a lock that is gone stays gone.
        let body = OpenSource::Bytes(body);
        match self
            .put_path(&owner, &location, body, PutMode::Overwrite, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e @ (Error::PermissionDenied { .. } | Error::NotFound { .. })) => {
                match self.fs.probe(&path, &location).await? {
                    Probe::Dir => Err(e),
                    Probe::Missing | Probe::File | Probe::Other => Err(Error::NotFound { location }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn lock_remove(&self, key: &str) -> Result<()> {
        if self.atomic_create() {
            return self.delete(key).await;
        }
        let path = self.fs.path(key)?;
        let location = self.location(key);
        let removed = async {
            // The body, and whatever an interrupted write left beside it (a missing lock or a lock
            // file lists as empty, and is told below).
            let entries = self.fs.list_dir(&path, true, &location).await;
            for entry in entries.map_err(Fault::Failed)? {
                if entry.kind == Kind::File {
                    let file = format!("{path}/{}", entry.name);
                    match self.fs.remove_file(&file, &location).await {
                        Ok(()) | Err(Fault::Refused(_)) => {}
                        Err(failed @ Fault::Failed(_)) => return Err(failed),
                    }
                }
            }
            self.fs.rmdir(&path, &location).await
        }
        .await;
        forget_dirs(&self.made_dirs, &path);
        match removed {
            Ok(()) => Ok(()),
            Err(Fault::Refused(refusal)) => match self.fs.probe(&path, &location).await? {
                Probe::Missing => Ok(()),
                // A lock file (older versions).
                Probe::File => self.delete(key).await,
                Probe::Dir | Probe::Other => Err(refusal),
            },
            Err(Fault::Failed(e)) => Err(e),
        }
    }

    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        if self.atomic_create() {
            return self.rename(key, to).await;
        }
        let (source, target) = (self.fs.path(key)?, self.fs.path(to)?);
        let location = self.location(key);
        self.make_dirs(parent(&target), &self.location(to)).await?;
        // The whole directory, body and all, in one rename.
        let renamed = self.fs.rename(&source, &target, &location).await;
        forget_dirs(&self.made_dirs, &source);
        match renamed {
            Ok(()) => Ok(()),
            Err(Fault::Refused(refusal)) => match self.fs.probe(&source, &location).await? {
                Probe::Missing => Err(Error::NotFound { location }),
                Probe::Dir | Probe::File | Probe::Other => Err(refusal),
            },
            Err(Fault::Failed(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A silence longer than the limit ends the work, unless it was allowed for; then the limit
    /// counts from the end of the allowance, and a silence past both still ends it.
    #[tokio::test(start_paused = true)]
    async fn silence_ends_work_unless_allowed_for() {
        let limit = Duration::from_secs(45);
        let silent_for = |d: Duration| tokio::time::sleep(d);
        let activity = Activity::new();
        assert!(
            unless_silent(limit, &activity, silent_for(limit * 2))
                .await
                .is_none()
        );
        let activity = Activity::new();
        activity.allow(limit * 3);
        assert!(
            unless_silent(limit, &activity, silent_for(limit * 3))
                .await
                .is_some()
        );
        let activity = Activity::new();
        activity.allow(limit * 3);
        let started = tokio::time::Instant::now();
        assert!(
            unless_silent(limit, &activity, silent_for(limit * 10))
                .await
                .is_none()
        );
        assert_eq!(started.elapsed(), limit * 4);
    }

    #[test]
    fn temp_names_stay_beside_their_target_and_are_recognised() {
        for (path, prefix) in [
            ("/root/dir/file.txt", "/root/dir/.file.txt.snapsync-"),
            ("file", ".file.snapsync-"),
        ] {
            let temp = temp_name(path);
            assert!(temp.starts_with(prefix), "{temp}");
            let name = temp.rsplit('/').next().unwrap();
            assert!(crate::is_temp_name(std::ffi::OsStr::new(name)), "{temp}");
        }
        assert_ne!(temp_name("a/b"), temp_name("a/b"));
    }

    #[test]
    fn keys_join_the_root_as_each_protocol_names_it() {
        // FTP: absolute, `/` for the top of the server.
        assert_eq!(join("/", "a/b"), "/a/b");
        assert_eq!(join("/data", "a"), "/data/a");
        // SFTP: `""` for the login directory, or a path relative to it.
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("backups", "a"), "backups/a");
    }

    #[test]
    fn missing_dirs_are_listed_top_down_once() {
        let made = Mutex::new(HashSet::from(["/a".to_owned()]));
        assert_eq!(missing_dirs(&made, "/a/b/c"), ["/a/b", "/a/b/c"]);
        assert_eq!(missing_dirs(&made, "rel/x"), ["rel", "rel/x"]);
        assert!(missing_dirs(&made, "").is_empty());
        assert_eq!((parent("/a/b"), parent("a"), parent("/a")), ("/a", "", ""));
    }
}
