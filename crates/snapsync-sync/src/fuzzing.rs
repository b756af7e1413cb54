//! Entry points for the fuzz targets in `fuzz/`: the sync state's readers and writers (`base.json` and
//! `journal.jsonl`) on bytes in memory instead of files. Not an API for other programs (hidden from
//! the docs); it calls the functions [`crate::state`] reads and writes its files with.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use crate::state::{BaseEntry, StateError};

/// A base: its entries by path, and its folders.
pub type Base = (BTreeMap<String, BaseEntry>, BTreeSet<String>);

/// Reads the text of a `base.json` kept for `remote`, as loading a state does.
///
/// # Errors
/// [`StateError::Corrupt`] or [`StateError::OtherRemote`], as loading the file would give.
pub fn parse_base(bytes: &[u8], remote: &str) -> Result<Base, StateError> {
    crate::state::parse_base(bytes, remote, Path::new("base.json"))
}

/// The text of `base.json` for a base, as a finished run writes it.
///
/// # Errors
/// When the base cannot be written as JSON.
pub fn render_base(remote: &str, base: &Base) -> io::Result<Vec<u8>> {
    crate::state::render_base(remote, &base.0, &base.1)
}

/// Applies the records of a journal's text to `entries` as loading a state does; how many applied.
///
/// # Errors
/// Never for bytes in memory (reading the file is what can fail).
pub fn replay_journal(journal: &[u8], entries: &mut BTreeMap<String, BaseEntry>) -> io::Result<usize> {
    crate::state::replay_journal(journal, entries)
}

/// One journal line (newline included) as a run appends it: `path` set to `entry`, or removed.
///
/// # Errors
/// When the record cannot be written as JSON.
pub fn journal_line(path: &str, entry: Option<&BaseEntry>) -> io::Result<Vec<u8>> {
    crate::state::journal_line(path, entry)
}
