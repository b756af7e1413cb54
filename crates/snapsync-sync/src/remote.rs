//! The remote of a pair, named and opened the same way by every front end: the sync state is kept per
//! remote URL, so a relative local path is made absolute (it names the same folder from any working
//! directory); a local remote flushes every write (a sync has no final flush of its own); `--jobs` is
//! also the number of connections an FTP or SFTP remote opens.

use std::path::Path;
use std::sync::Arc;

use snapsync_store::{ConnectOptions, LocalDurability, Store, StoreUrl};

use crate::error::{Error, Result};
use crate::options::Options;

/// Opens the remote `text` names for a run with `options`, reached as `connect` says (credentials,
/// timeouts, retries…): the URL as [`remote_url`] makes it, local writes flushed one by one, and
/// [`Options::jobs`] connections where the store has a connection pool.
///
/// # Errors
/// As [`remote_url`], and [`Error::Store`] when the store cannot be opened.
pub fn open_remote(text: &str, options: &Options, connect: &ConnectOptions) -> Result<Arc<dyn Store>> {
    let url = remote_url(text)?;
    let mut connect = connect
        .clone()
        .with_local_durability(LocalDurability::FlushEachWrite);
    if let Some(jobs) = options.jobs() {
        connect = connect.with_connections(jobs);
    }
    Ok(snapsync_store::open(&url, &connect)?)
}

/// The remote `text` names (a store URL or a local path), as the identity the sync state is keyed by:
/// a relative local path made absolute.
///
/// # Errors
/// [`Error::Store`] for a URL that does not parse; [`Error::Io`] when a relative path cannot be
/// resolved (no working directory).
pub fn remote_url(text: &str) -> Result<StoreUrl> {
    let url = StoreUrl::parse(text)?;
    url.absolute()
        .map_err(|e| Error::io(url.local_path().unwrap_or(Path::new(text)), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_folder_is_named_by_its_absolute_path() {
        let url = remote_url("some/folder").unwrap();
        let expected = std::env::current_dir().unwrap().join("some/folder");
        assert_eq!(url.local_path(), Some(expected.as_path()));
        let absolute = remote_url("/srv/site").unwrap();
        assert_eq!(absolute.local_path(), Some(std::path::Path::new("/srv/site")));
        let remote = remote_url("sftp://me@example.com/www").unwrap();
        assert_eq!(remote.to_string(), "sftp://me@example.com/www");
        assert!(remote_url("s3:bucket").is_err());
    }

    #[test]
    fn jobs_are_the_connections_of_an_ftp_or_sftp_remote() {
        let connect = ConnectOptions::default();
        let jobs = |n| {
            Options::builder(crate::Mode::Sync)
                .jobs(std::num::NonZeroUsize::new(n))
                .build()
                .unwrap()
        };
        // Opening connects to nothing yet; the pool's size is what the store offers callers.
        for url in ["ftp://me@example.com/site", "sftp://me@example.com/site"] {
            let store = open_remote(url, &jobs(3), &connect).unwrap();
            assert_eq!(store.capabilities().default_jobs, 3, "{url}");
            let default = open_remote(url, &Options::new(crate::Mode::Sync), &connect).unwrap();
            assert_ne!(default.capabilities().default_jobs, 3, "{url}");
        }
        let dir = tempfile::tempdir().unwrap();
        let local = open_remote(dir.path().to_str().unwrap(), &jobs(3), &connect).unwrap();
        assert_eq!(local.url().local_path(), Some(dir.path()));
    }
}
