//! snapsync-store: one async, object-style [`Store`] over every place snapsync keeps data.
//!
//! A store holds objects under `/`-separated keys: put (from bytes or a file, overwriting or
//! create-if-absent), get (as a stream, or a byte range), head, list under a prefix (as a stream),
//! delete, copy, rename, and set a modification time where the backend can. Backends:
//!
//! | URL | backend |
//! |---|---|
//! | a path, `file:///abs/path` | [`LocalStore`]: a directory; every write goes to a temporary name, is flushed, and renamed |
//! | `memory://NAME` | `object_store`'s in-memory store, shared by name within the process |
//! | `s3://bucket/prefix` | `object_store`'s S3 client (AWS or any S3-compatible server) |
//! | `gs://bucket/prefix` | `object_store`'s Google Cloud Storage client |
//! | `az://container/prefix` | `object_store`'s Azure Blob client |
//! | `ftp://user:pass@host/path`, `ftps://…` | [`FtpStore`]: FTP, or FTP with explicit TLS (suppaftp + rustls) |
//! | `sftp://user@host/path` | [`SftpStore`]: SFTP over SSH (russh + russh-sftp), host keys checked |
//!
//! [`open`] opens the store a URL names, reached as a [`ConnectOptions`] value says: connection limits
//! and timeouts, TLS and SSH files, retries, how a local directory flushes, and the environment
//! variables the stores honour, all read in one place ([`ConnectOptions::from_env`]; the table is in
//! its module's documentation and in `docs/stores.md`).
//!
//! Each backend states what it can do natively in its [`Capabilities`]; the rest falls back to generic
//! implementations. Wrappers change any store's behaviour without touching the backends:
//! [`PrefixStore`], [`RetryStore`] (exponential backoff on [`Error::Transient`]) and [`DryRunStore`]
//! (records writes, performs none). [`conformance`] is the suite every backend passes.
//!
//! Where "missing" and "empty" must not be confused (a folder sync deletes what it believes gone):
//!
//! * **Listings.** Only the prefix asked for may be missing: its listing is then empty, as in S3. A
//!   directory that a listing found below it and then cannot list (no permission, gone meanwhile) is
//!   an error naming it, never an empty directory.
//! * **The root.** [`Store::root_exists`] tells a missing root (`Ok(false)`) from an empty one, and
//!   errs when it cannot tell; [`Store::create_root`] makes it. Object stores have no directories: for
//!   them the root always exists.
//! * **Locks.** [`Store::lock_create`] is exclusive on every backend, FTP included (there the lock is
//!   a directory made with `MKD`, its body in `key/owner`: listings show an FTP lock as `key/owner`,
//!   except that they never enter a directory named [`LOCK_PREFIX`]…); [`Store::lock_read`], [`Store::lock_update`], [`Store::lock_rename`] and
//!   [`Store::lock_remove`] handle it the same way on every backend.
//!
//! | | local | SFTP | FTP | object stores |
//! |---|---|---|---|---|
//! | `root_exists` | `stat` of the directory | `STAT` of the directory | `CWD`, else the parent's listing (see [`FtpStore`]) | always `true` |
//! | `create_root` | `mkdir -p` | `MKDIR` of each missing part | `MKD` of each missing part | nothing |
//! | `lock_create` | hard link of a temporary file (atomic create) | `hardlink@openssh.com` (atomic create) | `MKD key`, then `key/owner` | `put` if-none-match |
//! | `lock_rename` | `rename` | `posix-rename@openssh.com` | `RNFR`/`RNTO` of the directory | copy + delete |
//!
//! Errors say what happened in a way a user can act on: a full disk or server is
//! [`Error::StorageFull`] ("no space left on device", "the server is out of space (452 …)"), never a
//! temporary failure; an FTP server that refuses a write (`550` to `STOR`, `RNTO`, `MKD`, `DELE`) is
//! [`Error::PermissionDenied`] with the server's words, while `550` to a read is
//! [`Error::NotFound`].
//!
//! ```
//! # tokio_test_block_on(async {
//! use snapsync_store::{ConnectOptions, PutMode, PutSource, StoreExt, StoreUrl};
//!
//! let store = snapsync_store::open(&StoreUrl::parse("memory://example")?, &ConnectOptions::default())?;
//! store.put("docs/hello.txt", PutSource::Bytes("hello".into()), PutMode::Create).await?;
//! assert_eq!(store.get_bytes("docs/hello.txt").await?, "hello");
//! let keys: Vec<String> = store.list_all("docs").await?.into_iter().map(|m| m.key).collect();
//! assert_eq!(keys, ["docs/hello.txt"]);
//! # Ok::<(), snapsync_store::Error>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod conformance;
mod connect;
pub mod credentials;
mod download;
mod error;
mod ftp;
#[doc(hidden)]
pub mod fuzzing;
mod local;
mod object;
mod remote;
mod runmark;
mod sftp;
mod source;
mod url;
mod wrap;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

pub use crate::connect::{ConnectOptions, HostKeyPolicy, LocalDurability, open};
#[cfg(feature = "keyring")]
pub use crate::credentials::OsKeyring;
pub use crate::credentials::{
    CredentialOptions, Credentials, Keyring, LoginRefused, Netrc, PasswordPrompt, PasswordSource,
    PromptRequest, Target,
};
pub use crate::download::{StreamError, stream_into};
pub use crate::error::{Error, Result};
pub use crate::ftp::{DEFAULT_MAX_LISTING_BYTES, FtpStore};
pub use crate::local::{LocalStore, is_temp_name, temp_path};
pub use crate::object::{ObjectStoreBackend, SINGLE_PUT_MAX};
pub use crate::runmark::{RunMark, remove_temporaries_of};
pub use crate::sftp::SftpStore;
pub use crate::url::{Scheme, StoreUrl, redact_text, redact_url};
pub use crate::wrap::{DryRunStore, GaveUp, PrefixStore, RetryPolicy, RetryStore};

/// Names that start with this are locks (see [`Store::lock_create`]): listings never enter a
/// directory so named (an FTP lock is one, and a lock being moved aside or removed by another run
/// vanishes while a listing walks; that is not a folder that failed to list).
pub const LOCK_PREFIX: &str = ".snapsync-lock";

/// What a listing or `head` says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, where the store reports one.
    pub modified: Option<SystemTime>,
    /// An opaque tag that changes whenever the object's content does, where the store gives one
    /// (object stores' `ETag`); `None` for local, FTP and SFTP.
    pub etag: Option<String>,
}

/// What `put` does when the key already has an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it.
    Overwrite,
    /// Fail with [`Error::AlreadyExists`] (atomically where [`Capabilities::atomic_create`]).
    Create,
}

/// What to store.
///
/// A local file is never published torn: every backend stamps the file when it opens it (size,
/// modification and change times, inode, device of the open handle) and, after the last byte was sent
/// and before the object is published, checks that the handle and the path still show that stamp and
/// that exactly that many bytes were read. A file that changed while it was being read is
/// [`Error::SourceChanged`]: its temporary object is removed (or its upload aborted) and the key keeps
/// what it held.
#[derive(Clone, Debug)]
pub enum PutSource {
    /// Bytes in memory.
    Bytes(Bytes),
    /// The contents of a local file, streamed (large files go up in parts where the store has them).
    File(PathBuf),
    /// Like [`PutSource::File`], for a caller that knows which version of the file it means (the one it
    /// scanned and hashed): when the file is opened its size, and its modification time if given, must
    /// equal these (exactly, as [`std::fs::Metadata::modified`] reports it), or the put is
    /// [`Error::SourceChanged`] before anything is sent.
    FileExpecting {
        /// The local file.
        path: PathBuf,
        /// Its expected size in bytes.
        size: u64,
        /// Its expected modification time; `None` checks the size only.
        mtime: Option<SystemTime>,
        /// Where the bytes read so far are added as the file is sent, for a progress bar (an attempt
        /// that is retried counts again).
        progress: Option<Arc<std::sync::atomic::AtomicU64>>,
    },
}

/// An object being read.
pub struct GetStream {
    /// Its metadata.
    pub meta: ObjectMeta,
    /// Its bytes, in pieces.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl fmt::Debug for GetStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// What a backend does natively; everything else works through generic fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
// Independent yes/no facts about a backend: flags are what they are.
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// `rename` is a single atomic operation (otherwise copy + delete).
    pub native_rename: bool,
    /// `copy` happens inside the store (otherwise download + upload).
    pub server_side_copy: bool,
    /// `set_mtime` works (otherwise [`Error::Unsupported`]).
    pub set_mtime: bool,
    /// [`PutMode::Create`] is atomic: of two racing creates exactly one wins.
    pub atomic_create: bool,
    /// The store has directories (local, FTP, SFTP): [`Store::list_with_dirs`] shows them and
    /// [`Store::create_dir`] makes them. Object stores have none.
    pub directories: bool,
    /// Parallel transfers that suit this backend.
    pub default_jobs: usize,
}

/// A place that holds objects. See the crate documentation.
///
/// Keys are `/`-separated, without empty, `.` or `..` parts; any other characters (spaces, unicode,
/// `#?%+`) work. Listing a prefix lists everything below it as a directory (`a` lists `a/x` but not `ab`).
/// Deleting a missing key succeeds, as in S3.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The store's URL (prints without passwords).
    fn url(&self) -> &StoreUrl;

    /// What the backend does natively.
    fn capabilities(&self) -> Capabilities;

    /// Every object under `prefix` (`""` for all), in no particular order.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>>;

    /// Like [`Store::list`], with the directories too, for stores that have them (local, FTP, SFTP):
    /// a directory comes as its key and a `/` (`a/b/`), size 0, before what is below it. Object stores
    /// have no directories: the default is [`Store::list`].
    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.list(prefix)
    }

    /// The top level only: the objects and directories directly in the root, as
    /// [`Store::list_with_dirs`] gives them (a directory as its key and a `/`), without entering the
    /// directories (local, FTP, SFTP: one listing of the root, so a folder below it that cannot be
    /// listed is not an error here). The default lists everything and keeps the top level, a key
    /// below a first part (`a/b`) standing for the directory `a/` (object stores have no
    /// directories).
    fn list_top(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let all = self.list_with_dirs("");
        futures::stream::once(async move {
            let mut top = std::collections::BTreeMap::new();
            let mut all = all;
            while let Some(meta) = all.try_next().await? {
                match meta.key.split_once('/') {
                    Some((first, rest)) if !rest.is_empty() => {
                        let dir = format!("{first}/");
                        top.entry(dir.clone()).or_insert(ObjectMeta {
                            key: dir,
                            size: 0,
                            modified: None,
                            etag: None,
                        });
                    }
                    _ => {
                        top.insert(meta.key.clone(), meta);
                    }
                }
            }
            Ok::<_, Error>(top.into_values().collect::<Vec<_>>())
        })
        .flat_map(|listed| match listed {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        })
        .boxed()
    }

    /// Makes the directory `key` (and its parents) if it is not there, for stores that have
    /// directories; nothing for object stores (the default).
    async fn create_dir(&self, key: &str) -> Result<()> {
        check_key(key)
    }

    /// The temporary files that interrupted writes left behind (their keys can be deleted), for stores
    /// that write under a temporary name and rename (local, FTP, SFTP); empty for others (the default).
    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        futures::stream::empty().boxed()
    }

    /// The metadata of one object.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// An object's bytes, as a stream.
    async fn get(&self, key: &str) -> Result<GetStream>;

    /// A byte range of an object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Stores an object.
    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()>;

    /// Like [`Store::put`], and gives the stored object's metadata as [`Store::head`] would just
    /// after (for a caller that records what it wrote, to tell later whether somebody changed it).
    /// The default puts, then heads; backends that learn the metadata while writing (SFTP) save the
    /// round trip.
    async fn put_meta(&self, key: &str, source: PutSource, mode: PutMode) -> Result<ObjectMeta> {
        self.put(key, source, mode).await?;
        self.head(key).await
    }

    /// Removes an object; a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Copies an object to another key (replacing what is there).
    async fn copy(&self, from: &str, to: &str) -> Result<()>;

    /// Moves an object to another key (replacing what is there).
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Sets an object's modification time, where [`Capabilities::set_mtime`].
    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()>;

    /// Removes the directory `key` if it is empty, for stores that have directories (local, FTP,
    /// SFTP): `Ok(true)` when it was removed, `Ok(false)` when it is not empty, missing, or the store
    /// has no directories (object stores, the default). Never removes anything that holds a file.
    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(false)
    }

    /// Makes every write that has completed durable: a barrier before writing something that refers to
    /// them (a snapshot's manifest after its objects). Object stores are durable per write already.
    async fn persist(&self) -> Result<()> {
        Ok(())
    }

    /// Removes the temporary files of this store's writes that were abandoned: puts whose future was
    /// dropped before it finished (an operation cancelled with Ctrl-C drops the transfers in flight).
    /// Where a put goes through a temporary name on a server (FTP, SFTP), a dropped put cannot remove
    /// it itself; the store remembers it and this removes it. A local write's temporary file is
    /// removed when it is dropped, and an object store's put publishes all or nothing: for them this
    /// does nothing (the default).
    ///
    /// # Errors
    /// The server's refusal to remove one (the others are removed all the same; the ones left are
    /// tried again by the next call).
    async fn remove_abandoned(&self) -> Result<()> {
        Ok(())
    }

    /// Where the object `key` lives as a file on this machine, for stores that keep objects as local
    /// files (a reader may then copy it with the kernel's help instead of streaming it). `None` for any
    /// other store, and for an invalid key. The file may not exist.
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }

    /// Whether the store's root, the directory its URL names, exists.
    ///
    /// `Ok(false)` only when it is positively missing (make it with [`Store::create_root`]);
    /// [`Error::NotADirectory`] when it is a file; any other error (no permission, no connection, a
    /// server that will not tell) when it cannot be told. A listing of a missing root is empty, as that
    /// of any missing prefix: a caller to whom a missing root and an empty one differ asks this first.
    /// Object stores have no directories: the default says `Ok(true)` (a missing bucket is
    /// [`Error::NoSuchBucket`] at the first operation).
    async fn root_exists(&self) -> Result<bool> {
        Ok(true)
    }

    /// Creates the store's root directory, and its parents; nothing when it exists.
    /// [`Error::NotADirectory`] when a file is in the way. The default, for stores without
    /// directories, does nothing.
    async fn create_root(&self) -> Result<()> {
        Ok(())
    }

    /// Takes the lock `key`, holding `body` (who took it, and when): exclusive on every backend, so of
    /// any number of racing callers exactly one gets `Ok`, the others [`Error::AlreadyExists`].
    ///
    /// A lock is not an ordinary object: handle it with the `lock_*` methods only. The default creates
    /// an object with [`PutMode::Create`] where that is atomic ([`Capabilities::atomic_create`]: local,
    /// SFTP, object stores) and is [`Error::Unsupported`] elsewhere. FTP, where no file operation is
    /// exclusive, makes the directory `key` (`MKD`, which only one client can do) and stores the body
    /// in `key/owner`; listings show such a lock as `key/owner` (none when its name starts with
    /// [`LOCK_PREFIX`], which listings do not enter).
    async fn lock_create(&self, key: &str, body: Bytes) -> Result<()> {
        if self.capabilities().atomic_create {
            self.put(key, PutSource::Bytes(body), PutMode::Create).await
        } else {
            check_key(key)?;
            Err(Error::Unsupported {
                location: self.url().with_key(key),
                operation: "an exclusive lock",
            })
        }
    }

    /// The body of the lock `key`; [`Error::NotFound`] when there is no lock. An empty body means a
    /// lock being created this moment (FTP: its directory is made, its body not yet stored): it is
    /// held, by somebody who has not said who yet.
    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        self.get_bytes(key).await
    }

    /// Replaces the body of the lock `key` (a heartbeat); [`Error::NotFound`] when there is no lock
    /// (it was removed or moved aside: the caller no longer holds it). The body is replaced as a whole,
    /// but not conditionally: a holder checks with [`Store::lock_read`] that the lock is still its own.
    async fn lock_update(&self, key: &str, body: Bytes) -> Result<()> {
        self.head(key).await?;
        self.put(key, PutSource::Bytes(body), PutMode::Overwrite).await
    }

    /// Removes the lock `key`; a missing one is not an error.
    async fn lock_remove(&self, key: &str) -> Result<()> {
        self.delete(key).await
    }

    /// Moves the lock `key` to `to`, a name of the caller's own (for a takeover: move the stale lock
    /// aside, check with [`Store::lock_read`] on `to` that it is the one that was judged stale, remove
    /// it, then [`Store::lock_create`] again); [`Error::NotFound`] when there is no lock. Atomic where
    /// [`Capabilities::native_rename`] (local, SFTP, FTP: the lock's directory is renamed); a copy and a
    /// delete on object stores, where two callers may both move it: the `lock_create` that follows is
    /// what stays exclusive.
    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        self.rename(key, to).await
    }
}

/// Conveniences on every [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// The whole listing under `prefix`, collected.
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list(prefix).try_collect().await
    }

    /// An object's bytes, collected (for small objects).
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let GetStream { stream, meta } = self.get(key).await?;
        let mut out = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0).min(1 << 24));
        let mut stream = stream;
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(Bytes::from(out))
    }

    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// Checks that `key` can name an object.
///
/// # Errors
/// [`Error::InvalidKey`] for an empty key, an empty, `.` or `..` part, or a NUL.
pub fn check_key(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("it is empty");
    }
    if key.contains('\0') {
        return invalid("it contains a NUL");
    }
    for part in key.split('/') {
        match part {
            "" => return invalid("it has an empty part (a leading, trailing or double /)"),
            "." | ".." => return invalid("it has a . or .. part"),
            _ => {}
        }
    }
    Ok(())
}
