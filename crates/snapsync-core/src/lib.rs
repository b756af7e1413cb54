//! snapsync-core: content-addressed descriptions of directory trees.
//!
//! - [`walk`] lists and hashes a directory in parallel and returns its [`Manifest`];
//! - a [`Manifest`] renders to and parses from snapdir's text format, byte for byte;
//! - [`Manifest::id`] is the snapshot id (BLAKE3 of the text plus a newline), equal to snapdir's;
//! - [`pathsafe`] turns untrusted manifest paths into paths that cannot leave a destination;
//! - [`atomic`] writes a file so that readers see the old content or the new, never a part (temporary
//!   name, flush, rename), and publishes a download only once its size and BLAKE3 are checked;
//! - [`Cancel`] is the token a caller passes in an operation's options to stop it early (Ctrl-C).
//!
//! This crate does no network I/O and reads no environment variables (except, built with the `chaos`
//! feature for the crash harness, the two that choose a [`chaos::point`]).
//!
//! ```
//! use snapsync_core::{walk, WalkOptions};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("hello.txt"), "hello\n")?;
//! let walked = walk(dir.path(), &WalkOptions::default())?;
//! let lines: Vec<String> = walked.manifest.entries().iter().map(ToString::to_string).collect();
//! assert!(lines[1].ends_with(" 6 ./hello.txt"));
//! assert_eq!(walked.manifest.id().to_string().len(), 64);
//!
//! // The text parses back to the same manifest and id.
//! let again = snapsync_core::Manifest::parse(walked.manifest.render().as_bytes())?;
//! assert_eq!(again.id(), walked.manifest.id());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
mod cancel;
pub mod chaos;
mod error;
pub mod escape;
mod exclude;
mod hash;
mod list;
mod manifest;
pub mod pathsafe;
mod sigbus;
mod walk;

pub use cancel::{Cancel, Cancelled};
pub use error::{Error, Result};
pub use exclude::{COMMON_EXCLUDE_DIRS, Exclude, Globs, MacroContext, SYSTEM_EXCLUDE_DIRS};
pub use hash::{
    Checksum, Hex, MMAP_THRESHOLD, directory_checksum, hash_file, hash_read, is_truncated_while_mapped,
};
pub use list::{EntryType, ListedEntry, TreeListing, Unreadable, list_tree};
pub use manifest::{Entry, EntryKind, Manifest};
pub use sigbus::install_sigbus_guard;
pub use walk::{Fingerprint, Progress, Source, Walk, WalkOptions, Warning, walk};
