//! Streaming an object into a local [`CheckedFile`]: the one way the crates above this one write what
//! they get from a store (sync downloads, snapshot pulls, cache fetches).

use std::io::{self, Write as _};
use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use snapsync_core::atomic::CheckedFile;

use crate::Error;

/// Bytes gathered from the stream before they are written, in one blocking task: a hand-off to a
/// blocking thread per network piece would cost more than the write itself.
const WRITE_BATCH: usize = 8 << 20;

/// What went wrong in [`stream_into`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading from the store.
    #[error(transparent)]
    Store(#[from] Error),
    /// Writing the local file.
    #[error("cannot write {}", path.display())]
    Write {
        /// The temporary file being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The store sent more bytes than the caller's limit (the size it listed): stopped there, before
    /// a hostile or confused server fills the disk.
    #[error("the store sent more than the {limit} bytes expected")]
    TooLong {
        /// The limit.
        limit: u64,
    },
}

/// Writes what `stream` yields into `file` (which hashes and counts it) off the async threads, a
/// batch at a time, calling `progress` with each piece's length as it arrives, and hands the file
/// back for the caller to check and publish. More than `limit` bytes is [`StreamError::TooLong`]. On
/// any error the file is dropped, which removes it.
///
/// # Errors
/// See [`StreamError`].
pub async fn stream_into(
    stream: &mut BoxStream<'static, crate::Result<Bytes>>,
    mut file: CheckedFile,
    limit: Option<u64>,
    mut progress: impl FnMut(u64) + Send,
) -> Result<CheckedFile, StreamError> {
    let mut batch: Vec<Bytes> = Vec::new();
    let (mut batched, mut total) = (0usize, 0u64);
    loop {
        let piece = stream.try_next().await?;
        let last = piece.is_none();
        if let Some(piece) = piece {
            total += piece.len() as u64;
            if let Some(limit) = limit
                && total > limit
            {
                return Err(StreamError::TooLong { limit });
            }
            progress(piece.len() as u64);
            batched += piece.len();
            batch.push(piece);
        }
        if batched >= WRITE_BATCH || (last && !batch.is_empty()) {
            file = write_batch(file, std::mem::take(&mut batch)).await?;
            batched = 0;
        }
        if last {
            return Ok(file);
        }
    }
}

/// Writes `pieces` to `file` on a blocking thread and hands the file back (if this is cancelled, the
/// file is dropped on that thread, which removes it).
async fn write_batch(mut file: CheckedFile, pieces: Vec<Bytes>) -> Result<CheckedFile, StreamError> {
    let path = file.temp_path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        for piece in &pieces {
            file.write_all(piece).map_err(|source| StreamError::Write {
                path: file.temp_path().to_path_buf(),
                source,
            })?;
        }
        Ok(file)
    })
    .await
    .map_err(|e| StreamError::Write {
        path,
        source: io::Error::other(e),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use snapsync_core::atomic::WriteOptions;

    fn pieces(n: usize, size: usize) -> BoxStream<'static, crate::Result<Bytes>> {
        futures::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size])))).boxed()
    }

    #[tokio::test]
    async fn writes_every_piece_in_order_and_reports_each() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let file = CheckedFile::create_for(&target, WriteOptions::UNSYNCED).unwrap();
        let mut seen = 0;
        // 3 MiB pieces: more than one batch.
        let file = stream_into(&mut pieces(5, 3 << 20), file, Some(15 << 20), |n| seen += n)
            .await
            .unwrap();
        assert_eq!(seen, 15 << 20);
        file.persist_if(&target, Some(15 << 20), None).unwrap();
        let written = std::fs::read(&target).unwrap();
        assert!(
            written
                .chunks(3 << 20)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8))
        );
    }

    #[tokio::test]
    async fn more_than_the_limit_stops_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let file = CheckedFile::create_for(&target, WriteOptions::UNSYNCED).unwrap();
        let err = stream_into(&mut pieces(4, 1000), file, Some(3500), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, StreamError::TooLong { limit: 3500 }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_store_error_mid_stream_is_passed_on_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let file = CheckedFile::create_for(&target, WriteOptions::UNSYNCED).unwrap();
        let mut stream = futures::stream::iter([
            Ok(Bytes::from_static(b"first")),
            Err(crate::remote::transient("x", "reset")),
        ])
        .boxed();
        let err = stream_into(&mut stream, file, None, |_| {}).await.unwrap_err();
        assert!(
            matches!(err, StreamError::Store(Error::Transient { .. })),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
