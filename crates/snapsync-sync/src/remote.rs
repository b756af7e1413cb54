//! The remote of a pair, named the same way by every front end: the sync state is kept per remote URL,
//! so a relative local path is made absolute (it names the same folder from any working directory).

use snapsync_store::StoreUrl;

use crate::error::{Error, Result};

/// The remote `text` names (a store URL or a local path), as the identity the sync state is keyed by:
/// a relative local path made absolute.
///
/// # Errors
/// [`Error::Store`] for a URL that does not parse; [`Error::Io`] when a relative path cannot be
/// resolved (no working directory).
pub fn remote_url(text: &str) -> Result<StoreUrl> {
    let url = StoreUrl::parse(text)?;
    match url.local_path().filter(|p| p.is_relative()) {
        Some(path) => {
            let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
            Ok(StoreUrl::local(&absolute))
        }
        None => Ok(url),
    }
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
}
