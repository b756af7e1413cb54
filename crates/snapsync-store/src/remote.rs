//! What the FTP and SFTP backends share: the parts of their URLs, temporary names, the parallel
//! directory walk behind `list`, the bookkeeping of directories already made, and copying through a local temporary file (neither protocol copies on the server).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::{GetStream, ObjectMeta, PutMode, PutSource, Store, StoreUrl};

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

/// What a listing yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    /// The objects ([`crate::Store::list`]).
    Objects,
    /// The temporary files interrupted writes left ([`crate::Store::list_leftovers`]).
    Leftovers,
    /// The objects and the directories, a directory as its key and a `/` ([`crate::Store::list_with_dirs`]).
    ObjectsAndDirs,
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
                        if listed == Listed::ObjectsAndDirs {
                            let meta = ObjectMeta {
                                key: format!("{}/", path.get(key_offset..).unwrap_or_default()),
                                size: 0,
                                modified: entry.modified,
                            };
                            if futures::SinkExt::send(&mut sender, Ok(meta)).await.is_err() {
                                return;
                            }
                        }
                        pending.push_back((path, false));
                    }
                    Kind::File if listed.takes_file(&entry.name) => {
                        let meta = ObjectMeta {
                            key: path.get(key_offset..).unwrap_or_default().to_owned(),
                            size: entry.size,
                            modified: entry.modified,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn missing_dirs_are_listed_top_down_once() {
        let made = Mutex::new(HashSet::from(["/a".to_owned()]));
        assert_eq!(missing_dirs(&made, "/a/b/c"), ["/a/b", "/a/b/c"]);
        assert_eq!(missing_dirs(&made, "rel/x"), ["rel", "rel/x"]);
        assert!(missing_dirs(&made, "").is_empty());
        assert_eq!((parent("/a/b"), parent("a"), parent("/a")), ("/a", "", ""));
    }
}
