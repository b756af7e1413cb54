//! Carrying out one item of the plan: an upload through the store's `put` (a temporary name, checked,
//! renamed; published only if the local file is still the version scanned), a download into a hashed
//! temporary file beside the target (checked, flushed, renamed; never over a file that appeared or
//! changed meanwhile), a deletion only of what the scan saw.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use snapsync_core::atomic::{CheckedFile, WriteOptions};
use snapsync_store::{PutMode, PutSource};

use super::compare::hash_file;
use super::journal::{self, Journal, hex};
use super::{Event, Pair, Report, blocking};
use crate::decide::{Action, Observed};
use crate::error::{Error, Result};
use crate::plan::Item;
use crate::scan;
use crate::state::{BaseEntry, to_ns};

impl Pair {
    /// The local path of `path`, refusing one that would leave the folder through a symlinked
    /// directory.
    pub(super) fn local_path(&self, path: &str) -> Result<PathBuf> {
        let unsafe_path = |reason: String| Error::Unsafe {
            path: path.to_owned(),
            reason,
        };
        snapsync_store::check_key(path).map_err(|e| match e {
            snapsync_store::Error::InvalidKey { reason, .. } => unsafe_path(reason.to_owned()),
            other => unsafe_path(other.to_string()),
        })?;
        let relative = Path::new(path);
        snapsync_core::pathsafe::check_no_symlink_parents(&self.local, relative).map_err(|e| match e {
            snapsync_core::Error::UnsafePath { reason, .. } => unsafe_path(reason.to_owned()),
            other => unsafe_path(other.to_string()),
        })?;
        Ok(self.local.join(relative))
    }

    /// Carries out one item; the bytes transferred.
    pub(super) async fn one(
        &self,
        item: &Item,
        l: Option<&Observed>,
        r: Option<&Observed>,
        hash: Option<[u8; 32]>,
        (journal, report): (&Journal, Report<'_>),
    ) -> Result<u64> {
        let path = item.path.as_str();
        let record = |entry: Option<BaseEntry>| journal.record(path, entry);
        match item.action {
            Action::Conflict(_) | Action::Compare(_) => Ok(0),
            Action::Nothing => {
                match (l, r) {
                    (Some(l), Some(r)) => record(Some(journal::agreed(l, r, hash)))?,
                    (None, None) => record(None)?,
                    // One way without --delete: the base keeps what it knew.
                    _ => {}
                }
                Ok(0)
            }
            Action::Upload => {
                let l = l.ok_or_else(|| changed(path, "local"))?;
                // The store counts what it reads; reported a few times a second while it sends.
                let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let upload = self.upload(path, l, r, hash, Arc::clone(&sent));
                tokio::pin!(upload);
                let mut reported = 0;
                let mut report_sent = || {
                    let now = sent.load(std::sync::atomic::Ordering::Relaxed).min(l.size);
                    if now > reported {
                        report(Event::Moved {
                            item,
                            bytes: now - reported,
                        });
                        reported = now;
                    }
                };
                let entry = loop {
                    tokio::select! {
                        done = &mut upload => break done?,
                        () = tokio::time::sleep(Duration::from_millis(200)) => report_sent(),
                    }
                };
                report_sent();
                let bytes = entry.size;
                record(Some(entry))?;
                Ok(bytes)
            }
            Action::Download => {
                let r = r.ok_or_else(|| changed(path, "remote"))?;
                let received = |bytes| report(Event::Moved { item, bytes });
                let entry = self.download(path, r, l, &received).await?;
                let bytes = entry.size;
                record(Some(entry))?;
                Ok(bytes)
            }
            Action::DeleteLocal => {
                let l = l.ok_or_else(|| changed(path, "local"))?;
                let file = self.local_path(path)?;
                let expected = l.clone();
                let owned = path.to_owned();
                blocking(&self.local, move || {
                    check_local(&file, Some(&expected), &owned)?;
                    fs::remove_file(&file).map_err(|e| Error::io(&file, e))
                })
                .await?;
                record(None)?;
                Ok(0)
            }
            Action::DeleteRemote => {
                let r = r.ok_or_else(|| changed(path, "remote"))?;
                self.check_remote(path, r).await?;
                self.store.delete(path).await?;
                record(None)?;
                Ok(0)
            }
        }
    }

    async fn check_remote(&self, path: &str, expected: &Observed) -> Result<()> {
        match self.store.head(path).await {
            Ok(meta) if meta.size == expected.size => Ok(()),
            Ok(_) | Err(snapsync_store::Error::NotFound { .. }) => Err(changed(path, "remote")),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload(
        &self,
        path: &str,
        l: &Observed,
        r: Option<&Observed>,
        hash: Option<[u8; 32]>,
        sent: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<BaseEntry> {
        let file = self.local_path(path)?;
        let (checked, expected, owned) = (file.clone(), l.clone(), path.to_owned());
        let hash = blocking(&self.local, move || {
            check_local(&checked, Some(&expected), &owned)?;
            match hash {
                Some(hash) => Ok(hash),
                None => hash_file(&checked),
            }
        })
        .await?;
        let mode = if let Some(r) = r {
            self.check_remote(path, r).await?;
            PutMode::Overwrite
        } else if self.store.capabilities().atomic_create {
            // A file that appeared remotely since the scan is not replaced.
            PutMode::Create
        } else {
            // Without an atomic create (FTP), checking first would cost two round trips per file and
            // still leave a window; the lock keeps other snapsync runs out meanwhile.
            PutMode::Overwrite
        };
        // The store publishes the file only if, when opened, it is the version scanned and hashed
        // (size and time) and it did not change while it was read: what goes up is what was hashed,
        // and an edit made meanwhile leaves the remote as it was (the next run uploads the edit).
        let source = PutSource::FileExpecting {
            path: file.clone(),
            size: l.size,
            mtime: l.mtime,
            progress: Some(sent),
        };
        match self.store.put(path, source, mode).await {
            Ok(()) => {}
            Err(snapsync_store::Error::AlreadyExists { .. }) => return Err(changed(path, "remote")),
            Err(snapsync_store::Error::SourceChanged { .. }) => return Err(changed(path, "local")),
            Err(e) => return Err(e.into()),
        }
        if let Some(mtime) = l.mtime
            && self.store.capabilities().set_mtime
        {
            match self.store.set_mtime(path, mtime).await {
                Ok(()) | Err(snapsync_store::Error::Unsupported { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(BaseEntry {
            size: l.size,
            local_mtime_ns: l.mtime.and_then(to_ns),
            remote_size: l.size,
            // Pending: filled in from the listing at the end of the run (or the next run's).
            remote_mtime_ns: None,
            blake3: Some(hex(hash)),
        })
    }

    async fn download(
        &self,
        path: &str,
        r: &Observed,
        l: Option<&Observed>,
        received: &(dyn Fn(u64) + Sync),
    ) -> Result<BaseEntry> {
        let target = self.local_path(path)?;
        if let Some(parent) = target.parent() {
            let parent = parent.to_owned();
            blocking(&self.local, move || {
                fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))
            })
            .await?;
        }
        let mut got = self.store.get(path).await?;
        if got.meta.size != r.size {
            return Err(changed(path, "remote"));
        }
        // The core's checked temporary file beside the target: hashed as it is written, flushed,
        // given the remote's time, and published only at the size the remote listed — over the old
        // file when the scan saw one, never over a file that appeared during the run.
        let options = WriteOptions {
            replace: l.is_some(),
            sync_file: true,
            sync_dir: false,
        };
        let created = target.clone();
        let file = blocking(&self.local, move || {
            CheckedFile::create_for(&created, options).map_err(|e| Error::io(&created, e))
        })
        .await?;
        // Written a batch at a time on a blocking thread; more than the remote listed stops it.
        let file = snapsync_store::stream_into(&mut got.stream, file, Some(r.size), received)
            .await
            .map_err(|e| match e {
                snapsync_store::StreamError::Store(e) => e.into(),
                snapsync_store::StreamError::Write { path, source } => Error::io(&path, source),
                // More bytes than the remote listed.
                other => Error::Verify {
                    path: path.to_owned(),
                    what: other.to_string(),
                },
            })?;
        let (expected, owned, mtime, size) = (l.cloned(), path.to_owned(), r.mtime, r.size);
        let placed = target.clone();
        let published = blocking(&self.local, move || {
            if let Some(mtime) = mtime {
                file.set_modified(mtime).map_err(|e| Error::io(&placed, e))?;
            }
            check_local(&placed, expected.as_ref(), &owned)?;
            file.persist_if(&placed, Some(size), None).map_err(|e| match e {
                snapsync_core::Error::SizeMismatch { expected, actual, .. } => Error::Verify {
                    path: owned.clone(),
                    what: format!("{actual} bytes arrived, the remote listed {expected}"),
                },
                snapsync_core::Error::Write { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    changed(&owned, "local")
                }
                snapsync_core::Error::Write { source, .. } => Error::io(&placed, source),
                other => Error::io(&placed, std::io::Error::other(other)),
            })
        })
        .await?;
        let meta = published.file.metadata().map_err(|e| Error::io(&target, e))?;
        let now = scan::observed(&meta);
        Ok(BaseEntry {
            size: now.size,
            local_mtime_ns: now.mtime.and_then(to_ns),
            remote_size: r.size,
            remote_mtime_ns: r.mtime.and_then(to_ns),
            blake3: Some(hex(*published.checksum.as_bytes())),
        })
    }
}

fn changed(path: &str, side: &'static str) -> Error {
    Error::Changed {
        path: path.to_owned(),
        side,
    }
}

/// Checks that the local file is still what the scan saw (`None`: that there is none).
fn check_local(file: &Path, expected: Option<&Observed>, path: &str) -> Result<()> {
    match (fs::symlink_metadata(file), expected) {
        (Ok(meta), Some(expected))
            if meta.is_file() && meta.len() == expected.size && meta.modified().ok() == expected.mtime =>
        {
            Ok(())
        }
        (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        (Err(e), Some(_)) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(file, e)),
        _ => Err(changed(path, "local")),
    }
}
