//! Arbitrary text as the lines of an `MLSD` answer (or an `MLST` one, whose name is a path): the FTP
//! store's parser never panics, and every entry it keeps has a name that can be a name in the listed
//! directory (not empty, no `/`). Each file or folder it read, written again as an RFC 3659 line, reads
//! back the same: name, kind, size and time (to the second).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use snapsync_store::fuzzing::{ListedKind, ftp_listing};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for entry in ftp_listing(&lines, true) {
        assert!(!entry.name.is_empty() && !entry.name.contains('/'), "{entry:?}");
        let kind = match entry.kind {
            ListedKind::File => "file",
            ListedKind::Dir => "dir",
            ListedKind::Other => continue,
        };
        // The time to the second, in the RFC 3659 form, where it has one.
        let seconds = entry
            .modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let modify = seconds
            .and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
            .map(|t| t.format("%Y%m%d%H%M%S").to_string())
            .filter(|t| t.len() == 14);
        let line = match &modify {
            Some(time) => format!(
                "modify={time};perm=r;size={};type={kind};unique=801g4804; {}",
                entry.size, entry.name
            ),
            None => format!("perm=r;size={};type={kind}; {}", entry.size, entry.name),
        };
        let again = ftp_listing(&[line.clone()], true);
        assert_eq!(again.len(), 1, "{line:?} read back as {again:?}");
        let back = &again[0];
        assert_eq!(
            (&back.name, back.kind, back.size),
            (&entry.name, entry.kind, entry.size),
            "{line:?}"
        );
        if modify.is_some() {
            let expected = seconds.map(|s| UNIX_EPOCH + Duration::from_secs(s));
            assert_eq!(back.modified, expected, "{line:?}");
        }
    }
});
