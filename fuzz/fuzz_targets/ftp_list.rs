//! Arbitrary text as the lines of a `LIST -a` answer (Unix style as vsftpd and pyftpdlib send it, DOS
//! style as IIS does): the FTP store's parser never panics, and every entry it keeps has a name that can
//! be a name in the listed directory (not empty, no `/`). Each file or folder it read, written again as
//! a Unix line and as a DOS line, reads back with the same name, kind and size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_store::fuzzing::{Listed, ListedKind, ftp_listing};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for entry in ftp_listing(&lines, false) {
        assert!(!entry.name.is_empty() && !entry.name.contains('/'), "{entry:?}");
        if entry.kind == ListedKind::Other || entry.name != entry.name.trim() || entry.name.contains(" -> ") {
            continue;
        }
        let unix = match entry.kind {
            ListedKind::Dir => format!(
                "drwxr-xr-x    2 0        0     {:>10} Jan 02  2020 {}",
                entry.size, entry.name
            ),
            _ => format!(
                "-rw-r--r--    1 0        0     {:>10} Nov 23 10:00 {}",
                entry.size, entry.name
            ),
        };
        let dos = match entry.kind {
            ListedKind::Dir => format!("10-19-20  03:19PM       <DIR>          {}", entry.name),
            _ => format!("10-19-20  03:19PM       {:>14} {}", entry.size, entry.name),
        };
        for line in [unix, dos] {
            let again = ftp_listing(&[line.clone()], false);
            let same = |e: &Listed| e.name == entry.name && e.kind == entry.kind;
            assert!(
                again.len() == 1
                    && same(&again[0])
                    && (entry.kind == ListedKind::Dir || again[0].size == entry.size),
                "{line:?} read back as {again:?}, not {entry:?}"
            );
        }
    }
});
