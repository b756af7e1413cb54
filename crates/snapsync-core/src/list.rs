//! The listing walk: every entry of a tree with its own metadata, without hashing and without
//! following links, for callers that compare trees rather than snapshot them (folder sync's scan).
//!
//! It reads directories the way [`crate::walk()`] does (one directory per task, subdirectories in
//! parallel, entries classified by the same rules) but never fails part-way: a directory that cannot
//! be listed, a listing that breaks off, or an entry whose metadata cannot be read is reported in
//! [`TreeListing::unreadable`] with its error, so the caller can treat what lies below it as unknown —
//! never as absent. Only an unreadable root is an error.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::walk::{child_relative, special_kind};

/// What an entry is, seen without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A socket, FIFO or device: `socket`, `FIFO`, `block device` or `character device`.
    Special(&'static str),
}

impl EntryType {
    /// The type of an entry from its own metadata (`lstat`).
    #[must_use]
    pub fn of(meta: &Metadata) -> EntryType {
        let t = meta.file_type();
        if t.is_symlink() {
            EntryType::Symlink
        } else if t.is_dir() {
            EntryType::Dir
        } else if t.is_file() {
            EntryType::File
        } else {
            EntryType::Special(special_kind(meta))
        }
    }
}

/// One entry the listing found.
#[derive(Debug)]
pub struct ListedEntry {
    /// The path below the root, `/`-separated, as bytes (names need not be UTF-8).
    pub relative: Vec<u8>,
    /// What it is.
    pub kind: EntryType,
    /// Its own metadata (`lstat`).
    pub metadata: Metadata,
}

impl ListedEntry {
    /// [`ListedEntry::relative`] for messages (bytes that are not UTF-8 replaced).
    #[must_use]
    pub fn relative_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.relative)
    }

    /// The entry's name (the last part of [`ListedEntry::relative`]).
    #[must_use]
    pub fn name(&self) -> &[u8] {
        self.relative
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(&self.relative)
    }
}

/// Something the listing could not read; what lies below it is unknown.
#[derive(Debug)]
pub struct Unreadable {
    /// The path below the root (empty: the root's own listing broke off).
    pub relative: Vec<u8>,
    /// What failed: `listed` for a directory that could not be opened or whose listing broke off,
    /// `read` for an entry whose metadata could not be read.
    pub what: &'static str,
    /// Why.
    pub error: io::Error,
}

/// The result of [`list_tree`].
#[derive(Debug, Default)]
pub struct TreeListing {
    /// Every entry found, directories included (also those not entered), in no particular order.
    pub entries: Vec<ListedEntry>,
    /// What could not be read, in no particular order.
    pub unreadable: Vec<Unreadable>,
}

/// Lists the tree below `root` without following links. A directory is descended into only when
/// `enter(relative, name)` says so (it is listed either way).
///
/// # Errors
/// When `root` itself cannot be listed.
pub fn list_tree(root: &Path, enter: &(dyn Fn(&[u8], &[u8]) -> bool + Sync)) -> io::Result<TreeListing> {
    let top = fs::read_dir(root)?;
    let lister = Lister {
        enter,
        out: Mutex::new(TreeListing::default()),
    };
    lister.visit(top, root, &[]);
    Ok(lister
        .out
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

struct Lister<'a> {
    enter: &'a (dyn Fn(&[u8], &[u8]) -> bool + Sync),
    out: Mutex<TreeListing>,
}

impl Lister<'_> {
    fn visit(&self, entries: fs::ReadDir, dir: &Path, relative: &[u8]) {
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        let mut subdirs: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    // The listing broke off: what the directory holds is unknown, not absent.
                    unreadable.push(Unreadable {
                        relative: relative.to_vec(),
                        what: "listed",
                        error,
                    });
                    break;
                }
            };
            let name = entry.file_name();
            let child = child_relative(relative, name.as_bytes());
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) => {
                    unreadable.push(Unreadable {
                        relative: child,
                        what: "read",
                        error,
                    });
                    continue;
                }
            };
            let kind = EntryType::of(&metadata);
            if kind == EntryType::Dir && (self.enter)(&child, name.as_bytes()) {
                subdirs.push((dir.join(&name), child.clone()));
            }
            found.push(ListedEntry {
                relative: child,
                kind,
                metadata,
            });
        }
        {
            let mut out = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            out.entries.append(&mut found);
            out.unreadable.append(&mut unreadable);
        }
        subdirs
            .into_par_iter()
            .for_each(|(path, child)| match fs::read_dir(&path) {
                Ok(entries) => self.visit(entries, &path, &child),
                Err(error) => self
                    .out
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .unreadable
                    .push(Unreadable {
                        relative: child,
                        what: "listed",
                        error,
                    }),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(listing: &TreeListing) -> Vec<(String, EntryType)> {
        let mut out: Vec<(String, EntryType)> = listing
            .entries
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.relative).into_owned(), e.kind))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn lists_every_entry_without_following_links_and_enters_only_where_told() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("skip/inner")).unwrap();
        fs::write(root.join("a/b/f.txt"), "x").unwrap();
        fs::write(root.join("top.txt"), "y").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let listing = list_tree(root, &|_, name| name != b"skip").unwrap();
        assert!(listing.unreadable.is_empty());
        assert_eq!(
            sorted(&listing),
            [
                ("a".to_owned(), EntryType::Dir),
                ("a/b".to_owned(), EntryType::Dir),
                ("a/b/f.txt".to_owned(), EntryType::File),
                ("link".to_owned(), EntryType::Symlink),
                ("skip".to_owned(), EntryType::Dir),
                ("top.txt".to_owned(), EntryType::File),
            ]
        );
        let file = listing
            .entries
            .iter()
            .find(|e| e.relative == b"a/b/f.txt")
            .unwrap();
        assert_eq!((file.name(), file.metadata.len()), (&b"f.txt"[..], 1));
    }

    #[test]
    fn only_an_unreadable_root_is_an_error() {
        // Folders refused below the root are reported, not fatal: the sync tests stage them
        // (`chmod 000` without root's override, in tests/cli/sync_safety.rs).
        let dir = tempfile::tempdir().unwrap();
        assert!(list_tree(&dir.path().join("missing"), &|_, _| true).is_err());
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(list_tree(&file, &|_, _| true).is_err());
    }
}
