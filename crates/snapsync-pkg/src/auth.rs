//! Credentials for indexes: snapsync-store's resolver ([`snapsync_store::credentials`]) — a user and
//! password in the URL (percent-decoded), a netrc file, the keyring, a prompt — and API tokens (the
//! user `__token__` with the token as the password, as PyPI and devpi take them).
//!
//! A password is kept only in [`Credentials`], whose `Debug` shows `***`; URLs are stripped of their
//! password ([`strip`]) before any request is made, and shown only through [`redact`] (the store
//! crate's [`snapsync_store::redact_url`]), so no error can carry it.

use url::Url;

pub use snapsync_store::{Credentials, Netrc};

/// The URL without user or password (what is requested; credentials go in a header).
#[must_use]
pub fn strip(url: &Url) -> Url {
    let mut url = url.clone();
    // Only URLs that cannot have a user ("cannot-be-a-base") refuse these, and they have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The URL as it may be shown: the password replaced by `***`, the user kept.
#[must_use]
pub fn redact(url: &Url) -> String {
    snapsync_store::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_percent_decoded_and_never_shown() {
        let url = Url::parse("https://al%40ce:p%3Ass@example.com/simple/").unwrap();
        let creds = Credentials::from_url(&url).unwrap();
        assert_eq!(creds.username(), "al@ce");
        assert_eq!(creds.password(), Some("p:ss"));
        assert!(!format!("{creds:?}").contains("p:ss"));
        assert_eq!(redact(&url), "https://al%40ce:***@example.com/simple/");
        assert_eq!(strip(&url).as_str(), "https://example.com/simple/");
        assert_eq!(Credentials::from_url(&strip(&url)), None);
    }
}
