//! Object stores through the `object_store` crate: S3, Google Cloud Storage, Azure Blob, memory.
//!
//! Configuration comes from each cloud's standard environment variables, as the [`ConnectOptions`]
//! holds them (applied as `AmazonS3Builder::from_env` and its Azure and Google counterparts would,
//! but never read from the process here; see `docs/stores.md`), and `object_store` options on top. Files larger than
//! [`SINGLE_PUT_MAX`] are uploaded in parts of that size, a few at a time, so memory stays bounded
//! whatever the file size.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutMode as OsPutMode, PutOptions, PutPayload, RetryConfig};
use tokio::io::AsyncReadExt;

use crate::connect::ConnectOptions;
use crate::error::{Error, Result};
use crate::source::{OpenSource, SourceFile};
use crate::{Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Scheme, Store, StoreUrl, check_key};

/// Objects up to this size go up in one request; larger files in parts of this size.
pub const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PART_CONCURRENCY: usize = 4;

/// `memory://NAME` stores, shared by name within the process.
static MEMORY: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> = LazyLock::new(Mutex::default);

/// A store backed by an `object_store` implementation, under the URL's prefix.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    url: StoreUrl,
    inner: Arc<dyn ObjectStore>,
    /// The URL's prefix, as decoded parts.
    prefix: Vec<String>,
    capabilities: Capabilities,
}

/// Client timeouts, applied over the environment's and under the caller's configuration: a stalled
/// connection must end in an error, but a large download may legitimately take long.
const CLIENT_DEFAULTS: [(&str, &str); 2] = [("connect_timeout", "10s"), ("timeout", "15m")];

fn retry_config() -> RetryConfig {
    // A few quick retries here; `RetryStore` above adds longer, visible ones.
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

impl ObjectStoreBackend {
    /// Builds the client for an `s3://`, `gs://`, `az://` or `memory://` URL: from the cloud variables
    /// in `options` (`AWS_*`, `GOOGLE_*`, `AZURE_*`, …; see [`ConnectOptions::from_env`]), then
    /// snapsync's client timeouts, then the `object_store` options in `options`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the configuration does not build (a missing credential file, say) or
    /// an `object_store` option is unknown.
    pub fn open(url: &StoreUrl, options: &ConnectOptions) -> Result<ObjectStoreBackend> {
        let bucket = url.bucket().unwrap_or_default().to_owned();
        let invalid = |e: object_store::Error| Error::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let unknown = |key: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: format!("unknown configuration key {key:?}"),
        };
        let defaults = CLIENT_DEFAULTS.iter().map(|(k, v)| (*k, *v));
        // The caller's timeout bounds connecting and each wait for the server (for a response, then
        // between the pieces of its body); the whole request keeps its longer limit.
        let timeout = options.timeout.map(|t| format!("{}ms", t.as_millis().max(1)));
        let timeouts = timeout
            .iter()
            .flat_map(|t| [("connect_timeout", t.as_str()), ("read_timeout", t.as_str())]);
        let explicit = options
            .object_store_options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        // A cloud variable outside the prefix rule, as the `object_store` key it stands for.
        let renamed = |variable: &str, key: &str| {
            options
                .cloud_variable(variable)
                .map(|value| (key.to_owned(), value))
        };
        // The three cloud builders take the same steps with their own types: the environment's
        // variables in the order the client's `from_env` applies them (skipping names it does not
        // know, as it does), our client defaults and the caller's keys on top (an unknown one is an
        // error), the bucket (or container), the retry policy.
        macro_rules! build {
            ($builder:ty, $bucket:ident, $before:expr, $prefix:literal, $after:expr) => {{
                let mut builder = <$builder>::default();
                let environment = $before
                    .into_iter()
                    .chain(options.cloud_config($prefix))
                    .chain($after);
                for (key, value) in environment {
                    if let Ok(key) = key.parse() {
                        builder = builder.with_config(key, value);
                    }
                }
                for (key, value) in defaults.chain(timeouts).chain(explicit) {
                    builder = builder.with_config(key.parse().map_err(|_| unknown(key))?, value);
                }
                let store = builder
                    .$bucket(bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(invalid)?;
                Arc::new(store) as Arc<dyn ObjectStore>
            }};
        }
        let (inner, capabilities): (Arc<dyn ObjectStore>, Capabilities) = match url.scheme() {
            Scheme::Memory => {
                let mut stores = MEMORY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let store = Arc::clone(stores.entry(bucket).or_insert_with(|| Arc::new(InMemory::new())));
                (store, caps(false, 8))
            }
            Scheme::S3 => (
                build!(
                    object_store::aws::AmazonS3Builder,
                    with_bucket_name,
                    None,
                    "AWS_",
                    None
                ),
                caps(false, 16),
            ),
            Scheme::Gcs => (
                build!(
                    object_store::gcp::GoogleCloudStorageBuilder,
                    with_bucket_name,
                    renamed("SERVICE_ACCOUNT", "google_service_account"),
                    "GOOGLE_",
                    None
                ),
                caps(false, 16),
            ),
            Scheme::Azure => (
                build!(
                    object_store::azure::MicrosoftAzureBuilder,
                    with_container_name,
                    None,
                    "AZURE_",
                    renamed("IDENTITY_ENDPOINT", "azure_msi_endpoint")
                ),
                caps(false, 16),
            ),
            other => {
                return Err(Error::InvalidUrl {
                    url: url.to_string(),
                    reason: format!("{}:// is not an object store", other.name()),
                });
            }
        };
        let prefix = url
            .prefix()
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(ObjectStoreBackend {
            url: url.clone(),
            inner,
            prefix,
            capabilities,
        })
    }

    fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
        Ok(self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(key.split('/'))
            .map(PathPart::from)
            .collect())
    }

    fn prefix_path(&self, prefix: &str) -> Result<Option<Path>> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Ok((!self.prefix.is_empty())
                .then(|| self.prefix.iter().map(|p| PathPart::from(p.as_str())).collect()));
        }
        self.path(prefix).map(Some)
    }

    fn key_of(prefix_len: usize, path: &Path) -> Option<String> {
        let parts: Vec<String> = path
            .parts()
            .map(|part| {
                percent_encoding::percent_decode_str(part.as_ref())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        (parts.len() > prefix_len).then(|| parts[prefix_len..].join("/"))
    }

    fn location(&self, key: &str) -> String {
        self.url.with_key(key)
    }

    fn error(&self, key: &str) -> impl Fn(object_store::Error) -> Error + use<'_> {
        let location = self.location(key);
        move |e| Error::from_object_store(location.clone(), e)
    }

    fn meta(&self, meta: &object_store::ObjectMeta) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            key: Self::key_of(self.prefix.len(), &meta.location)?,
            size: meta.size,
            modified: Some(SystemTime::from(meta.last_modified)),
            etag: meta.e_tag.clone(),
        })
    }

    /// Uploads `source` in parts; the upload is completed only if the file did not change meanwhile
    /// (aborted otherwise).
    async fn put_large(&self, key: &str, source: &SourceFile, mode: PutMode) -> Result<()> {
        if mode == PutMode::Create && self.head(key).await.is_ok() {
            return Err(Error::AlreadyExists {
                location: self.location(key),
            });
        }
        let location = self.path(key)?;
        let upload = self
            .inner
            .put_multipart(&location)
            .await
            .map_err(self.error(key))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT_MAX as usize);
        let result: Result<()> = async {
            // One byte past the stamped size at most: a file that keeps growing is not read forever.
            let mut file = match source.reader().await {
                Ok(file) => file.take(source.len().saturating_add(1)),
                Err(e) => return Err(source.read_failed(e).await),
            };
            let mut buf = BytesMut::with_capacity(SINGLE_PUT_MAX as usize);
            let mut read = 0u64;
            loop {
                buf.clear();
                let n = match file.read_buf(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => return Err(source.read_failed(e).await),
                };
                if n == 0 {
                    break;
                }
                read += n as u64;
                writer
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(self.error(key))?;
                writer.write(&buf);
            }
            // Before the upload completes: the file must still be what was stamped, and all of it read.
            source.check(Some(read)).await
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(self.error(key))?;
                snapsync_core::chaos::point("after-rename");
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

fn caps(native_rename: bool, default_jobs: usize) -> Capabilities {
    Capabilities {
        native_rename,
        server_side_copy: true,
        set_mtime: false,
        atomic_create: true,
        directories: false,
        default_jobs,
    }
}

#[async_trait]
impl Store for ObjectStoreBackend {
    fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        let listed_prefix = prefix.trim_end_matches('/').to_owned();
        let location = self.location(&listed_prefix);
        let path = match self.prefix_path(prefix) {
            Ok(path) => path,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let prefix_len = self.prefix.len();
        self.inner
            .list(path.as_ref())
            .map_err(move |e| Error::from_object_store(location.clone(), e))
            .try_filter_map(move |meta| {
                let item = Self::key_of(prefix_len, &meta.location)
                    // Objects strictly below the prefix, not the one named by it.
                    .filter(|key| listed_prefix.is_empty() || key != &listed_prefix)
                    .map(|key| ObjectMeta {
                        key,
                        size: meta.size,
                        modified: Some(SystemTime::from(meta.last_modified)),
                        etag: meta.e_tag.clone(),
                    });
                futures::future::ready(Ok(item))
            })
            .boxed()
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let meta = self.inner.head(&self.path(key)?).await.map_err(self.error(key))?;
        self.meta(&meta).ok_or_else(|| Error::NotFound {
            location: self.location(key),
        })
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        let result = self.inner.get(&self.path(key)?).await.map_err(self.error(key))?;
        let meta = self.meta(&result.meta).ok_or_else(|| Error::NotFound {
            location: self.location(key),
        })?;
        let location = self.location(key);
        let stream = result
            .into_stream()
            .map_err(move |e| Error::from_object_store(location.clone(), e))
            .boxed();
        Ok(GetStream { meta, stream })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner
            .get_range(&self.path(key)?, range)
            .await
            .map_err(self.error(key))
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        check_key(key)?;
        let bytes = match OpenSource::open(source, &self.location(key)).await? {
            OpenSource::Bytes(bytes) => bytes,
            OpenSource::File(file) if file.len() > SINGLE_PUT_MAX => {
                return self.put_large(key, &file, mode).await;
            }
            // Read whole and checked before the one request that publishes it.
            OpenSource::File(file) => file.read_checked().await?,
        };
        let mode = match mode {
            PutMode::Overwrite => OsPutMode::Overwrite,
            PutMode::Create => OsPutMode::Create,
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        // The bytes read, the request that publishes them not sent.
        snapsync_core::chaos::point("mid-file");
        self.inner
            .put_opts(&self.path(key)?, PutPayload::from(bytes), options)
            .await
            .map(drop)
            .map_err(self.error(key))?;
        snapsync_core::chaos::point("after-rename");
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::from_object_store(self.location(key), e)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner
            .copy(&self.path(from)?, &self.path(to)?)
            .await
            .map_err(self.error(from))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner
            .rename(&self.path(from)?, &self.path(to)?)
            .await
            .map_err(self.error(from))
    }

    async fn set_mtime(&self, key: &str, _mtime: SystemTime) -> Result<()> {
        Err(Error::Unsupported {
            location: self.location(key),
            operation: "setting a modification time",
        })
    }
}
