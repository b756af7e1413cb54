//! Wrappers that change how any store behaves: a key prefix, retries, a dry run.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::{Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Store, StoreUrl, check_key};

/// Every key of the inner store, below a fixed prefix.
#[derive(Debug)]
pub struct PrefixStore {
    inner: Arc<dyn Store>,
    prefix: String,
    url: StoreUrl,
}

impl PrefixStore {
    /// Wraps `inner`, so that key `k` is `prefix/k` there.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when `prefix` is not a valid key.
    pub fn new(inner: Arc<dyn Store>, prefix: &str) -> Result<PrefixStore> {
        let prefix = prefix.trim_matches('/').to_owned();
        check_key(&prefix)?;
        let url = StoreUrl::parse(&inner.url().with_key(&prefix)).unwrap_or_else(|_| inner.url().clone());
        Ok(PrefixStore { inner, prefix, url })
    }

    fn key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}/{key}", self.prefix))
    }

    /// A listing of the inner store (`list` or `list_with_dirs`) under the prefix, keys made relative.
    fn listing(
        &self,
        prefix: &str,
        list: impl FnOnce(&dyn Store, &str) -> BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.trim_end_matches('/');
        let full = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = format!("{}/", self.prefix);
        list(&*self.inner, &full)
            .map_ok(move |mut meta| {
                meta.key = meta.key.strip_prefix(&strip).unwrap_or(&meta.key).to_owned();
                meta
            })
            .boxed()
    }
}

#[async_trait]
impl Store for PrefixStore {
    fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(&self.key(key).ok()?)
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, |inner, full| inner.list(full))
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, |inner, full| inner.list_with_dirs(full))
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let strip = format!("{}/", self.prefix);
        self.inner
            .list_leftovers()
            .try_filter_map(move |mut meta| {
                let inside = meta.key.strip_prefix(&strip).map(str::to_owned);
                futures::future::ready(Ok(inside.map(|key| {
                    meta.key = key;
                    meta
                })))
            })
            .boxed()
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let mut meta = self.inner.head(&self.key(key)?).await?;
        key.clone_into(&mut meta.key);
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        let mut got = self.inner.get(&self.key(key)?).await?;
        key.clone_into(&mut got.meta.key);
        Ok(got)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(&self.key(key)?, range).await
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        self.inner.put(&self.key(key)?, source, mode).await
    }

    async fn put_meta(&self, key: &str, source: PutSource, mode: PutMode) -> Result<ObjectMeta> {
        let mut meta = self.inner.put_meta(&self.key(key)?, source, mode).await?;
        key.clone_into(&mut meta.key);
        Ok(meta)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(&self.key(key)?).await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.copy(&self.key(from)?, &self.key(to)?).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(&self.key(from)?, &self.key(to)?).await
    }

    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()> {
        self.inner.set_mtime(&self.key(key)?, mtime).await
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        self.inner.remove_empty_dir(&self.key(key)?).await
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        self.inner.create_dir(&self.key(key)?).await
    }

    async fn persist(&self) -> Result<()> {
        self.inner.persist().await
    }

    async fn remove_abandoned(&self) -> Result<()> {
        self.inner.remove_abandoned().await
    }

    /// The inner store's root: the prefix is a key prefix, not a directory of its own (open a store
    /// at the longer URL to ask about that directory).
    async fn root_exists(&self) -> Result<bool> {
        self.inner.root_exists().await
    }

    /// The inner store's root (see [`PrefixStore::root_exists`]).
    async fn create_root(&self) -> Result<()> {
        self.inner.create_root().await
    }

    async fn lock_create(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner.lock_create(&self.key(key)?, body).await
    }

    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        self.inner.lock_read(&self.key(key)?).await
    }

    async fn lock_update(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner.lock_update(&self.key(key)?, body).await
    }

    async fn lock_remove(&self, key: &str) -> Result<()> {
        self.inner.lock_remove(&self.key(key)?).await
    }

    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        self.inner.lock_rename(&self.key(key)?, &self.key(to)?).await
    }
}

/// How [`RetryStore`] retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Retries operations that fail with [`Error::Transient`], waiting longer each time.
///
/// What is retried is each whole operation: a `put` sends its source again (a file is reopened), a `get`
/// retries until the stream starts, a listing is collected and retried as a whole. A create-if-absent that
/// succeeded but whose answer was lost fails its retry with `AlreadyExists`; callers storing
/// content-addressed data treat that as success.
#[derive(Debug)]
pub struct RetryStore {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
}

impl RetryStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> RetryStore {
        RetryStore { inner, policy }
    }

    async fn retry<T, F, Fut>(&self, what: &'static str, mut operation: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
        T: Send,
    {
        retry(self.policy, what, &mut operation).await
    }

    /// A whole listing of the inner store (`list` or `list_with_dirs`), retried as one operation.
    fn listing(
        &self,
        prefix: &str,
        list: fn(&dyn Store, &str) -> BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, policy, prefix) = (Arc::clone(&self.inner), self.policy, prefix.to_owned());
        stream::once(async move {
            retry(policy, "listing", &mut || {
                list(&*inner, &prefix).try_collect::<Vec<_>>()
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

/// Runs `operation` (called `what` in the error) until it succeeds, fails with an error that is not
/// transient, or has used the policy's attempts: the last temporary failure then says what was
/// tried and how often ([`GaveUp`]).
async fn retry<T, F, Fut>(policy: RetryPolicy, what: &'static str, operation: &mut F) -> Result<T>
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>> + Send,
{
    let mut delay = policy.first_delay;
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(e) if e.is_transient() && attempt < policy.attempts => {
                log::debug!(
                    "{e}: {what} failed, retrying in {delay:?} (attempt {} of {})",
                    attempt + 1,
                    policy.attempts
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            Err(e) => return Err(gave_up(e, what, attempt)),
            other => return other,
        }
    }
}

/// A temporary failure that was retried until the policy's attempts were used up: names the
/// operation and the attempts, its source is what the last attempt met.
#[derive(Debug)]
pub struct GaveUp {
    /// What was tried: `upload`, `download`, `listing`, ….
    pub operation: &'static str,
    /// Attempts made, the first included.
    pub attempts: u32,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.attempts {
            1 => write!(f, "{} failed (not retried)", self.operation),
            n => write!(f, "{} failed {n} times", self.operation),
        }
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// `error` as the end of `attempts` tries of `what`, when it is a temporary failure.
fn gave_up(error: Error, what: &'static str, attempts: u32) -> Error {
    match error {
        Error::Transient { location, source } => Error::Transient {
            location,
            source: Box::new(GaveUp {
                operation: what,
                attempts,
                source,
            }),
        },
        other => other,
    }
}

#[async_trait]
impl Store for RetryStore {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(key)
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_leftovers()
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, |inner, prefix| inner.list(prefix))
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, |inner, prefix| inner.list_with_dirs(prefix))
    }

    fn list_top(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", |inner, _| inner.list_top())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry("lookup", || self.inner.head(key)).await
    }

    /// Retried until the stream starts. A stream that then breaks with a temporary failure is taken
    /// up again (the policy's attempts in all, for the whole stream): the object is opened anew, and
    /// must be the one that was being read (same size, time and `ETag`, or the error says it changed);
    /// the bytes already given are skipped and the rest follow.
    async fn get(&self, key: &str) -> Result<GetStream> {
        let GetStream { meta, stream } = self.retry("download", || self.inner.get(key)).await?;
        let resume = Resume {
            inner: Arc::clone(&self.inner),
            key: key.to_owned(),
            policy: self.policy,
            meta: meta.clone(),
            stream: Some(stream),
            read: 0,
            given: 0,
            attempts: 1,
            delay: self.policy.first_delay,
        };
        Ok(GetStream {
            meta,
            stream: stream::unfold(resume, Resume::next).boxed(),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.retry("download", || self.inner.get_range(key, range.clone()))
            .await
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        self.retry("upload", || self.inner.put(key, source.clone(), mode))
            .await
    }

    async fn put_meta(&self, key: &str, source: PutSource, mode: PutMode) -> Result<ObjectMeta> {
        self.retry("upload", || self.inner.put_meta(key, source.clone(), mode))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.retry("delete", || self.inner.delete(key)).await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.retry("copy", || self.inner.copy(from, to)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.retry("rename", || self.inner.rename(from, to)).await
    }

    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()> {
        self.retry("setting the modification time", || {
            self.inner.set_mtime(key, mtime)
        })
        .await
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        self.retry("folder removal", || self.inner.remove_empty_dir(key))
            .await
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        self.retry("folder creation", || self.inner.create_dir(key)).await
    }

    async fn persist(&self) -> Result<()> {
        self.retry("flush", || self.inner.persist()).await
    }

    async fn remove_abandoned(&self) -> Result<()> {
        self.retry("clean-up of abandoned uploads", || self.inner.remove_abandoned())
            .await
    }

    async fn root_exists(&self) -> Result<bool> {
        self.retry("lookup of the root", || self.inner.root_exists())
            .await
    }

    async fn create_root(&self) -> Result<()> {
        self.retry("creation of the root", || self.inner.create_root())
            .await
    }

    /// Retried like a create-if-absent put: an attempt that took the lock but whose answer was lost
    /// makes the retry fail with [`Error::AlreadyExists`], and [`Store::lock_read`] then shows the
    /// caller's own body (or an empty one, on FTP, when the body was not stored).
    async fn lock_create(&self, key: &str, body: Bytes) -> Result<()> {
        self.retry("lock creation", || self.inner.lock_create(key, body.clone()))
            .await
    }

    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        self.retry("lock read", || self.inner.lock_read(key)).await
    }

    async fn lock_update(&self, key: &str, body: Bytes) -> Result<()> {
        self.retry("lock renewal", || self.inner.lock_update(key, body.clone()))
            .await
    }

    async fn lock_remove(&self, key: &str) -> Result<()> {
        self.retry("lock removal", || self.inner.lock_remove(key)).await
    }

    /// Retried: an attempt that moved the lock but whose answer was lost makes the retry fail with
    /// [`Error::NotFound`]; the caller finds the lock at `to`.
    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        self.retry("lock takeover", || self.inner.lock_rename(key, to))
            .await
    }
}

/// A download that is taken up again where it broke off ([`RetryStore::get`]).
struct Resume {
    inner: Arc<dyn Store>,
    key: String,
    policy: RetryPolicy,
    /// The object as it was when the download began.
    meta: ObjectMeta,
    /// The current stream; `None` once it ended or failed for good.
    stream: Option<BoxStream<'static, Result<Bytes>>>,
    /// Bytes of the current stream read so far.
    read: u64,
    /// Bytes given to the caller so far.
    given: u64,
    attempts: u32,
    delay: Duration,
}

impl Resume {
    async fn next(mut self) -> Option<(Result<Bytes>, Resume)> {
        loop {
            let piece = self.stream.as_mut()?.next().await;
            let error = match piece {
                None => return None,
                Some(Ok(mut bytes)) => {
                    let len = bytes.len() as u64;
                    let end = self.read + len;
                    if end <= self.given {
                        // Given before the stream broke off.
                        self.read = end;
                        continue;
                    }
                    if self.read < self.given {
                        bytes = bytes.slice(usize::try_from(self.given - self.read).unwrap_or(0)..);
                    }
                    (self.read, self.given) = (end, end);
                    return Some((Ok(bytes), self));
                }
                Some(Err(e)) => e,
            };
            match self.reopen(error).await {
                Ok(()) => {}
                Err(e) => {
                    self.stream = None;
                    return Some((Err(e), self));
                }
            }
        }
    }

    /// After `error`: a new stream of the same object, if the policy allows another attempt.
    async fn reopen(&mut self, mut error: Error) -> Result<()> {
        loop {
            if !error.is_transient() || self.attempts >= self.policy.attempts {
                return Err(gave_up(error, "download", self.attempts));
            }
            log::debug!(
                "{error}: the download broke off after {} bytes, taking it up again in {:?} (attempt {} of {})",
                self.given,
                self.delay,
                self.attempts + 1,
                self.policy.attempts
            );
            tokio::time::sleep(self.delay).await;
            self.delay = (self.delay * 2).min(self.policy.max_delay);
            self.attempts += 1;
            match self.inner.get(&self.key).await {
                Ok(got) => {
                    let same = got.meta.size == self.meta.size
                        && got.meta.modified == self.meta.modified
                        && got.meta.etag == self.meta.etag;
                    if !same {
                        return Err(Error::Other {
                            location: self.inner.url().with_key(&self.key),
                            source: "the object changed while it was being downloaded".into(),
                        });
                    }
                    self.stream = Some(got.stream);
                    self.read = 0;
                    return Ok(());
                }
                Err(e) => error = e,
            }
        }
    }
}

/// Reads from the inner store; records every write and performs none.
#[derive(Debug)]
pub struct DryRunStore {
    inner: Arc<dyn Store>,
    actions: Mutex<Vec<String>>,
}

impl DryRunStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>) -> DryRunStore {
        DryRunStore {
            inner,
            actions: Mutex::default(),
        }
    }

    /// The writes that would have happened, in order: `put KEY`, `delete KEY`, `copy A B`, ….
    #[must_use]
    pub fn actions(&self) -> Vec<String> {
        self.actions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, action: String) {
        self.actions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(action);
    }
}

#[async_trait]
impl Store for DryRunStore {
    fn url(&self) -> &StoreUrl {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(key)
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_dirs(prefix)
    }

    fn list_top(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_top()
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_leftovers()
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn put(&self, key: &str, _source: PutSource, mode: PutMode) -> Result<()> {
        check_key(key)?;
        if mode == PutMode::Create && self.inner.head(key).await.is_ok() {
            return Err(Error::AlreadyExists {
                location: self.inner.url().with_key(key),
            });
        }
        self.record(format!("put {key}"));
        Ok(())
    }

    /// Records the put; the object it describes is the one that would have been stored (its size;
    /// no time, as none was stored).
    async fn put_meta(&self, key: &str, source: PutSource, mode: PutMode) -> Result<ObjectMeta> {
        let size = match &source {
            PutSource::Bytes(bytes) => bytes.len() as u64,
            PutSource::File(path) => tokio::fs::metadata(path)
                .await
                .map_err(|e| Error::from_io(path.display().to_string(), e))?
                .len(),
            PutSource::FileExpecting { size, .. } => *size,
        };
        self.put(key, source, mode).await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            modified: None,
            etag: None,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.record(format!("delete {key}"));
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.head(from).await?;
        self.record(format!("copy {from} {to}"));
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.head(from).await?;
        self.record(format!("rename {from} {to}"));
        Ok(())
    }

    async fn set_mtime(&self, key: &str, _mtime: SystemTime) -> Result<()> {
        check_key(key)?;
        self.record(format!("set-mtime {key}"));
        Ok(())
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.record(format!("remove-empty-dir {key}"));
        Ok(false)
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.record(format!("create-dir {key}"));
        Ok(())
    }

    async fn root_exists(&self) -> Result<bool> {
        self.inner.root_exists().await
    }

    async fn create_root(&self) -> Result<()> {
        self.record("create-root".to_owned());
        Ok(())
    }

    /// Fails as the real one would where a lock is there; records the creation otherwise.
    async fn lock_create(&self, key: &str, _body: Bytes) -> Result<()> {
        check_key(key)?;
        match self.inner.lock_read(key).await {
            Ok(_) => Err(Error::AlreadyExists {
                location: self.inner.url().with_key(key),
            }),
            Err(Error::NotFound { .. }) => {
                self.record(format!("lock-create {key}"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        self.inner.lock_read(key).await
    }

    async fn lock_update(&self, key: &str, _body: Bytes) -> Result<()> {
        check_key(key)?;
        self.record(format!("lock-update {key}"));
        Ok(())
    }

    async fn lock_remove(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.record(format!("lock-remove {key}"));
        Ok(())
    }

    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        self.inner.lock_read(key).await?;
        check_key(to)?;
        self.record(format!("lock-rename {key} {to}"));
        Ok(())
    }
}
