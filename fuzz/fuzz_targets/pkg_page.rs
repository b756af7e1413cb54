//! Arbitrary bytes as a simple-index page, PEP 691 JSON when it starts with `{` and PEP 503 HTML
//! otherwise (as a page served without a content type is read), parsed as a project page and as the
//! root page: never a panic, and what a project page lists is safe to use: a file name that is a name
//! (not empty, no `/` or `\`, not `.` or `..`), a link without a fragment or credentials, every sha256
//! 64 lowercase hex digits, and a metadata URL made without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_pkg::page::{Format, parse_project, parse_root};
use url::Url;

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fuzz_target!(|data: &[u8]| {
    let format = Format::from_content_type(None, data).expect("no content type: by the first byte");
    let page = Url::parse("https://index.example/simple/project/").unwrap();
    if let Ok(files) = parse_project(data, format, &page) {
        for file in &files {
            let name = file.filename.as_str();
            assert!(
                !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
                "file name {name:?} is not a name"
            );
            assert!(file.url.fragment().is_none(), "{}", file.url);
            assert!(file.url.password().is_none(), "{}", file.url);
            assert!(file.sha256.as_deref().is_none_or(is_sha256), "{:?}", file.sha256);
            if let Some(core) = &file.core_metadata {
                assert!(core.sha256.as_deref().is_none_or(is_sha256), "{:?}", core.sha256);
            }
            let _ = file.metadata_url();
        }
    }
    if let Ok(names) = parse_root(data, format, &page) {
        let _ = names.len();
    }
});
