//! Entry points for the fuzz targets in `fuzz/`: the FTP listing parsers, which are private to the
//! FTP backend, reached without a server. Not an API for other programs (hidden from the docs); it
//! calls the parsers the store uses, it has none of its own.

use std::time::SystemTime;

use crate::remote::Kind;

/// What kind of entry a listing line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListedKind {
    /// A file.
    File,
    /// A directory.
    Dir,
    /// A link or anything else (neither listed nor followed).
    Other,
}

/// One entry of a listing, as the FTP store reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The name in its directory.
    pub name: String,
    /// What it is.
    pub kind: ListedKind,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, where the line gives one.
    pub modified: Option<SystemTime>,
}

/// The entries the FTP store takes from a listing's lines: `MLSD` lines (or an `MLST` answer) when
/// `machine`, else `LIST -a` lines in Unix or DOS style. The same function the store lists with.
#[must_use]
pub fn ftp_listing(lines: &[String], machine: bool) -> Vec<Listed> {
    crate::ftp::parse_listing(lines, machine)
        .into_iter()
        .map(|entry| Listed {
            name: entry.name,
            kind: match entry.kind {
                Kind::File => ListedKind::File,
                Kind::Dir => ListedKind::Dir,
                Kind::Other => ListedKind::Other,
            },
            size: entry.size,
            modified: entry.modified,
        })
        .collect()
}
