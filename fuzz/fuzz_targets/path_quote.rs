//! Any byte string survives quoting: rendered on one line, parsed back to the same bytes, and a second
//! quoted form of it is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_core::escape;

fuzz_target!(|data: &[u8]| {
    let rendered = escape::render(data);
    assert!(!rendered.contains('\n') && !rendered.contains('\r'));
    let back = escape::parse(&rendered).expect("rendered path parses");
    assert_eq!(back.as_ref(), data);
    if let Ok(text) = std::str::from_utf8(data) {
        // Arbitrary text is either refused or is the canonical form of what it decodes to.
        if let Ok(decoded) = escape::parse(text) {
            assert_eq!(escape::render(&decoded), text);
        }
    }
});
