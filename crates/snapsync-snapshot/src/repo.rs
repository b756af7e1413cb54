//! A snapshot repository: any store, holding objects and manifests in snapdir's layout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use snapsync_core::atomic::CheckedFile;
use snapsync_core::{Checksum, Manifest};
use snapsync_store::{ObjectMeta, PutMode, PutSource, Store, StoreExt};

use crate::error::{Error, Result};
use crate::layout::{MANIFESTS, OBJECTS, manifest_key, object_key, parse_key};

/// Counters of a transfer in progress, for a progress display: read them with [`Progress::counts`]
/// while the work runs (from another thread).
///
/// Totals are known once the work has planned (which objects are missing, which files differ), before
/// the first byte moves. Bytes are counted as they move, also inside an object still under way; an
/// object that is sent again (a retried upload, a second source after a corrupt one) is counted once.
#[derive(Debug, Default)]
pub struct Progress {
    items_total: AtomicU64,
    items_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    /// Objects under way: their byte counters, read when the display asks.
    in_flight: Mutex<Vec<Arc<InFlight>>>,
}

/// What a [`Progress`] has counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects (or files) done.
    pub items_done: u64,
    /// Objects (or files) to do, as far as planned.
    pub items_total: u64,
    /// Bytes moved, including those of objects still under way.
    pub bytes_done: u64,
    /// Bytes to move, as far as planned.
    pub bytes_total: u64,
}

/// The byte counters of one object under way. A copy between stores counts its download and its
/// upload, each half of the object.
#[derive(Debug)]
pub(crate) struct InFlight {
    size: u64,
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) written: Option<Arc<AtomicU64>>,
}

impl InFlight {
    fn moved(&self) -> u64 {
        let read = self.read.load(Ordering::Relaxed).min(self.size);
        match &self.written {
            None => read,
            Some(written) => u64::midpoint(read, written.load(Ordering::Relaxed).min(self.size)),
        }
    }
}

/// One object's counters, registered with a [`Progress`] until dropped.
#[derive(Debug)]
pub(crate) struct Tracked<'a> {
    progress: Option<&'a Progress>,
    counters: Arc<InFlight>,
}

impl Tracked<'_> {
    /// The counter of bytes read (or, for a plain upload, sent).
    pub(crate) fn read(&self) -> &Arc<AtomicU64> {
        &self.counters.read
    }

    /// [`Tracked::read`], for a caller that only adds to it.
    pub(crate) fn counter(&self) -> &AtomicU64 {
        &self.counters.read
    }

    /// The counter of bytes written, for a copy's upload half; `None` unless tracked with one.
    pub(crate) fn written(&self) -> Option<&Arc<AtomicU64>> {
        self.counters.written.as_ref()
    }

    /// The object is done: its bytes (`bytes`, which may differ from the size first given) counted.
    pub(crate) fn finish(mut self, bytes: u64) {
        self.untrack();
        if let Some(progress) = self.progress {
            progress.done(1, bytes);
        }
    }

    fn untrack(&mut self) {
        if let Some(progress) = self.progress {
            let mut in_flight = progress.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            in_flight.retain(|c| !Arc::ptr_eq(c, &self.counters));
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.untrack();
    }
}

impl Progress {
    /// What has been counted so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let moving: u64 = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.moved())
            .sum();
        Counts {
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: self.items_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed) + moving,
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn plan(&self, items: u64, bytes: u64) {
        self.items_total.fetch_add(items, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn done(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Starts counting the bytes of one object of `size` bytes; `copy` counts a download and an upload.
    pub(crate) fn track(progress: Option<&Progress>, size: u64, copy: bool) -> Tracked<'_> {
        let counters = Arc::new(InFlight {
            size,
            read: Arc::new(AtomicU64::new(0)),
            written: copy.then(|| Arc::new(AtomicU64::new(0))),
        });
        if let Some(progress) = progress {
            progress
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&counters));
        }
        Tracked { progress, counters }
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
        counter: Option<&AtomicU64>,
    ) -> Result<CheckedFile> {
        let mut got = self.store.get(&object_key(sum)).await?;
        let limit = got.meta.size;
        snapsync_store::stream_into(&mut got.stream, file, Some(limit), |n| {
            if let Some(counter) = counter {
                counter.fetch_add(n, Ordering::Relaxed);
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

    /// The object `sum` in memory, checked against its checksum (for objects that fit); the bytes are
    /// added to `counter` as they arrive.
    pub(crate) async fn read_object_checked(
        &self,
        sum: &Checksum,
        path: &str,
        counter: Option<&AtomicU64>,
    ) -> Result<Bytes> {
        let missing = || Error::ObjectMissing {
            checksum: *sum,
            path: path.to_owned(),
            store: self.url(),
        };
        let mut got = match self.store.get(&object_key(sum)).await {
            Ok(got) => got,
            Err(e) if e.is_not_found() => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0).min(1 << 24));
        while let Some(piece) = got.stream.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) if e.is_not_found() => return Err(missing()),
                Err(e) => return Err(e.into()),
            };
            if let Some(counter) = counter {
                counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            out.extend_from_slice(&piece);
        }
        let bytes = Bytes::from(out);
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
