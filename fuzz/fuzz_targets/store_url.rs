//! Store URLs and the redaction of passwords. Arbitrary text: `StoreUrl::parse` and `redact_text` never
//! panic, and a URL that parses with a password never shows it (`Display`, `Debug`, `with_key`). Then
//! the same text read as the parts of a URL with a password, `SCHEME://USER:PASSWORD@HOST` and a rest
//! (the parts separated by NUL bytes): `redact_text` replaces exactly that password with `***`, and
//! neither the parsed URL nor the parse error shows it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use snapsync_store::{StoreUrl, redact_text};

const SCHEMES: [&str; 10] = [
    "ftp", "ftps", "sftp", "s3", "gs", "az", "memory", "file", "https", "ftpx",
];

/// Text with its `%XX` escapes decoded (lossily) and the tabs and line breaks a URL parser drops taken
/// out, so that a password and a path compare the same whichever of them was escaped.
fn plain(text: &str) -> String {
    percent_decode_str(text)
        .decode_utf8_lossy()
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Whether `shown` shows `secret` as a password (`:SECRET@`) more often than `text`'s path holds that
/// same text (a path may: it is not a password). Compared decoded: the parser escapes a path's bytes
/// (and the password it reports) in its own way.
fn leaks(shown: &str, text: &str, secret: &str) -> bool {
    let pattern = format!(":{}@", plain(secret));
    let path = text
        .split_once("://")
        .map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    plain(shown).matches(&pattern).count() > plain(path).matches(&pattern).count()
}

fn check_parsed(text: &str, password: Option<&str>) {
    let shown = |s: String| {
        if let Some(password) = password {
            assert!(
                !leaks(&s, text, password),
                "{s:?} shows the password of {text:?}"
            );
        }
    };
    match StoreUrl::parse(text) {
        Ok(url) => {
            // A password that is itself `***` is shown as what replaces it: nothing leaks.
            if let Some(secret) = url
                .secret_url()
                .and_then(|u| u.password())
                .filter(|p| *p != "***")
            {
                for s in [url.to_string(), format!("{url:?}"), url.with_key("k")] {
                    assert!(
                        !leaks(&s, text, secret),
                        "{s:?} shows the password of {text:?}"
                    );
                }
            }
            shown(url.to_string());
            shown(format!("{url:?}"));
            let _ = (url.prefix(), url.bucket(), url.local_path());
        }
        Err(error) => shown(error.to_string()),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_parsed(&text, None);
    let _ = redact_text(&text);

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let scheme = SCHEMES[usize::from(first) % SCHEMES.len()];
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(4, '\0');
    let (Some(user), Some(password), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let tail = parts.next().unwrap_or("");
    let ends_authority = |c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace();
    if password.is_empty()
        || [user, password, host].iter().any(|p| p.contains(ends_authority))
        || user.contains(':')
    {
        return;
    }
    // What follows the host starts a path (or is nothing), so the authority ends at the host. (A tail
    // starting with `@` would make it part of the user information: the authority ends at its last `@`.)
    let starts_path = |c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace();
    let tail = if tail.is_empty() || tail.starts_with(starts_path) {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    let url = format!("{scheme}://{user}:{password}@{host}{tail}");
    assert_eq!(
        redact_text(&url),
        format!("{scheme}://{user}:***@{host}{}", redact_text(&tail)),
        "{url:?}"
    );
    if !tail.contains(password) && !user.contains(password) && !host.contains(password) && password != "***" {
        check_parsed(&url, Some(password));
    }
});
