//! The sync state's files: `base.json`, then a NUL byte, then `journal.jsonl`. Reading never panics; a
//! base (of any remote) that reads is written back by the writer a finished run uses to text that reads
//! back to the same base, and writes the same again (one text per base); each entry's times and hash
//! convert without a panic, and a hash is taken only from the hex of its bytes. The journal replays on
//! top of the base; a torn last record (a run killed mid-write) changes nothing, and the entries written
//! as journal lines by the run's own writer replay to the same entries.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use snapsync_sync::fuzzing::{journal_line, parse_base, render_base, replay_journal};
use snapsync_sync::state::StateError;

const REMOTE: &str = "sftp://me@example.com/site";

fuzz_target!(|data: &[u8]| {
    let (base, journal) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
    let mut entries = BTreeMap::new();
    // A base kept for another remote is refused by name; read as that remote's, it goes on.
    let (read, remote) = match parse_base(base, REMOTE) {
        Err(StateError::OtherRemote { found, .. }) => (parse_base(base, &found), found),
        read => (read, REMOTE.to_owned()),
    };
    if let Ok(read) = read {
        let text = render_base(&remote, &read).expect("a base renders");
        let again = parse_base(&text, &remote).expect("a rendered base reads back");
        assert_eq!(again, read);
        assert_eq!(render_base(&remote, &again).unwrap(), text);
        for entry in read.0.values() {
            let (local, remote) = (entry.local(), entry.remote());
            if let Some(hash) = local.hash {
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                // Upper-case digits name the same hash (a hand-edited state); anything else is not it.
                assert!(
                    entry.blake3.as_deref().is_some_and(|text| text.eq_ignore_ascii_case(&hex)),
                    "a hash {hex} read from other text {:?}",
                    entry.blake3
                );
            }
            assert_eq!(local.hash, remote.hash);
        }
        entries = read.0;
    }
    let mut replayed = entries.clone();
    let count = replay_journal(journal, &mut replayed).expect("bytes in memory read");
    assert!(count <= journal.split(|&b| b == b'\n').count());

    // A record torn by a kill after the journal's last whole line is ignored.
    let mut torn = journal.to_vec();
    if torn.last().is_some_and(|&b| b == b'\n') {
        let record = journal_line("torn/by a kill", replayed.values().next()).unwrap();
        torn.extend_from_slice(&record[..record.len() / 2]);
        let mut again = entries.clone();
        assert_eq!(replay_journal(&torn, &mut again).unwrap(), count);
        assert_eq!(again, replayed);
    }

    // What the writer writes, the reader reads.
    let mut lines = Vec::new();
    for (path, entry) in &replayed {
        lines.extend(journal_line(path, Some(entry)).unwrap());
    }
    for path in entries.keys().filter(|p| !replayed.contains_key(*p)) {
        lines.extend(journal_line(path, None).unwrap());
    }
    let mut rebuilt = entries.clone();
    let records = replay_journal(&lines[..], &mut rebuilt).unwrap();
    assert_eq!(records, lines.iter().filter(|&&b| b == b'\n').count());
    assert_eq!(rebuilt, replayed);
});
