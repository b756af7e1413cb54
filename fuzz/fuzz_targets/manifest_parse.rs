//! Arbitrary bytes as manifest text: parsing never panics, and whatever parses renders to text that
//! parses back to the same manifest with the same id (one canonical text per manifest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_core::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else { return };
    let text = manifest.render();
    let again = Manifest::parse(text.as_bytes()).expect("rendered text parses");
    assert_eq!(again, manifest);
    assert_eq!(again.render(), text);
    assert_eq!(again.id(), manifest.id());
    // Hostile but well-formed input: the consistency check must answer, not panic.
    let _ = manifest.check_consistency();
    for entry in manifest.entries() {
        let _ = snapsync_core::pathsafe::safe_relative_path(entry.path());
    }
});
