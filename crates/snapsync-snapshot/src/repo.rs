//! A snapshot repository: any store, holding objects and manifests in snapdir's layout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use snapsync_core::atomic::CheckedFile;
use snapsync_core::{Checksum, Manifest};
use snapsync_store::{ObjectMeta, PutMode, PutSource, Store, StoreExt};

use crate::error::{Error, Result};
use crate::layout::{MANIFESTS, OBJECTS, manifest_key, object_key, parse_key};

/// Counters of a transfer in progress, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Objects (or files) to do.
    pub items_total: AtomicU64,
    /// Objects (or files) done.
    pub items_done: AtomicU64,
    /// Bytes to move.
    pub bytes_total: AtomicU64,
    /// Bytes moved.
    pub bytes_done: AtomicU64,
}

impl Progress {
    pub(crate) fn plan(&self, items: u64, bytes: u64) {
        self.items_total.fetch_add(items, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn done(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A store that holds snapshots.
#[derive(Clone, Debug)]
pub struct Repository {
    store: Arc<dyn Store>,
}

impl Repository {
    /// Snapshots in `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Repository {
        Repository { store }
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store's URL, for messages.
    #[must_use]
    pub fn url(&self) -> String {
        self.store.url().to_string()
    }

    /// Reads a manifest and checks it: its text hashes to `id`, it parses, and its entries agree with
    /// each other.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::CorruptManifest`], store errors.
    pub async fn manifest(&self, id: &Checksum) -> Result<Manifest> {
        let text = match self.store.get_bytes(&manifest_key(id)).await {
            Ok(text) => text,
            Err(e) if e.is_not_found() => {
                return Err(Error::SnapshotNotFound {
                    id: *id,
                    store: self.url(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| Error::CorruptManifest {
            id: *id,
            store: self.url(),
            reason,
        };
        let actual = Checksum::of(&text);
        if actual != *id {
            return Err(corrupt(format!("its text hashes to {actual}")));
        }
        let manifest = Manifest::parse(&text).map_err(|e| corrupt(e.to_string()))?;
        // The text must be exactly the canonical rendering plus a newline, or the id would not be its id.
        if manifest.id() != *id {
            return Err(corrupt("its text is not in canonical form".into()));
        }
        manifest.check_consistency().map_err(|e| corrupt(e.to_string()))?;
        Ok(manifest)
    }

    /// Whether the store has the manifest `id`.
    ///
    /// # Errors
    /// Store errors other than not-found.
    pub async fn has_manifest(&self, id: &Checksum) -> Result<bool> {
        Ok(self.store.exists(&manifest_key(id)).await?)
    }

    /// Writes a manifest (text plus a newline, so its BLAKE3 is the id). One that is there already is
    /// the same manifest, since the id is its hash.
    ///
    /// # Errors
    /// Store errors.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<Checksum> {
        let id = manifest.id();
        let mut text = manifest.render().into_bytes();
        text.push(b'\n');
        match self
            .store
            .put(
                &manifest_key(&id),
                PutSource::Bytes(Bytes::from(text)),
                PutMode::Create,
            )
            .await
        {
            Ok(()) | Err(snapsync_store::Error::AlreadyExists { .. }) => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object in the store, by checksum: one listing.
    ///
    /// # Errors
    /// Store errors.
    pub async fn objects(&self) -> Result<HashMap<Checksum, ObjectMeta>> {
        let mut found = HashMap::new();
        let mut listing = self.store.list(OBJECTS);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if let Some(sum) = parse_key(OBJECTS, &meta.key) {
                found.insert(sum, meta);
            }
        }
        Ok(found)
    }

    /// Every snapshot in the store: its id and the manifest's metadata.
    ///
    /// # Errors
    /// Store errors.
    pub async fn snapshots(&self) -> Result<Vec<(Checksum, ObjectMeta)>> {
        let mut found: Vec<(Checksum, ObjectMeta)> = self
            .store
            .list_all(MANIFESTS)
            .await?
            .into_iter()
            .filter_map(|meta| parse_key(MANIFESTS, &meta.key).map(|id| (id, meta)))
            .collect();
        found.sort_by(|a, b| a.1.modified.cmp(&b.1.modified).then(a.0.cmp(&b.0)));
        Ok(found)
    }

    /// Streams the object `sum` into `file`, which counts and hashes what is written; the caller checks
    /// it (and publishes it, or drops it, which removes it). Returns the file.
    pub(crate) async fn read_object_to(
        &self,
        sum: &Checksum,
        file: CheckedFile,
        progress: Option<&Progress>,
    ) -> Result<CheckedFile> {
        let mut got = self.store.get(&object_key(sum)).await?;
        let limit = got.meta.size;
        snapsync_store::stream_into(&mut got.stream, file, Some(limit), |n| {
            if let Some(progress) = progress {
                progress.done(0, n);
            }
        })
        .await
        .map_err(|e| match e {
            snapsync_store::StreamError::Store(e) => e.into(),
            snapsync_store::StreamError::Write { path, source } => Error::io(&path)(source),
            // More bytes than the store listed.
            e => Error::Store(snapsync_store::Error::Other {
                location: self.store.url().with_key(&object_key(sum)),
                source: Box::new(e),
            }),
        })
    }

    /// The object `sum` in memory, checked against its checksum (for objects that fit).
    pub(crate) async fn read_object_checked(&self, sum: &Checksum, path: &str) -> Result<Bytes> {
        let bytes = match self.store.get_bytes(&object_key(sum)).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Err(Error::ObjectMissing {
                    checksum: *sum,
                    path: path.to_owned(),
                    store: self.url(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let actual = Checksum::of(&bytes);
        if actual != *sum {
            return Err(Error::ObjectCorrupt {
                checksum: *sum,
                path: path.to_owned(),
                store: self.url(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// Runs blocking filesystem work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Io {
        path: std::path::PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}
