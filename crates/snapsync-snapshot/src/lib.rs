//! snapsync-snapshot: content-addressed directory snapshots over any [`snapsync_store::Store`].
//!
//! A snapshot is a manifest ([`snapsync_core::Manifest`]) plus one object per distinct file content,
//! stored in snapdir's layout (see [`layout`]), so snapdir and snapsync read each other's stores. The
//! local cache is a store too, with the same layout.
//!
//! | operation | what it does |
//! |---|---|
//! | [`push_walk`] | sends a walked directory's missing objects (read where the files are), then its manifest |
//! | [`copy`] | copies a snapshot between stores (fetching into the cache and pushing from it are copies) |
//! | [`pull`] / [`checkout`] | writes a snapshot into a directory, each file verified before it is moved into place |
//! | [`verify`] | re-hashes every object of a snapshot in a store |
//! | [`remove_corrupt`] | deletes the objects a verify found corrupt (if they still are), so a push sends them again |
//! | [`diff`] | compares two manifests |
//! | [`size`] | counts a snapshot's files and objects |
//! | [`gc`] | deletes objects no snapshot references (see the rule in `ops.rs`) |
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use snapsync_core::{walk, WalkOptions};
//! use snapsync_snapshot::{pull, push_walk, MaterializeOptions, Repository, TransferOptions};
//! use snapsync_store::{ConnectOptions, StoreUrl};
//!
//! let source = tempfile::tempdir()?;
//! std::fs::write(source.path().join("notes.txt"), "remember the milk\n")?;
//! let walked = walk(source.path(), &WalkOptions { record_sources: true, ..WalkOptions::default() })?;
//!
//! let url = StoreUrl::parse("memory://doc-example")?;
//! let store = Repository::new(snapsync_store::open(&url, &ConnectOptions::default())?);
//! let pushed = push_walk(&walked, &store, &TransferOptions::default()).await?;
//! assert_eq!(pushed.id, walked.manifest.id());
//!
//! let copy = tempfile::tempdir()?;
//! pull(&pushed.id, &store, None, copy.path(), &MaterializeOptions::default()).await?;
//! assert_eq!(std::fs::read_to_string(copy.path().join("notes.txt"))?, "remember the milk\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]

mod error;
pub mod layout;
mod marks;
mod materialize;
mod ops;
mod push;
mod repo;

pub use error::{Error, Result};
pub use marks::PushMark;
pub use materialize::{MaterializeOptions, MaterializeReport, checkout, materialize, pull};
pub use ops::{
    Change, GcOptions, GcReport, Problem, RemoveReport, SizeReport, VerifyReport, diff, gc, remove_corrupt,
    size, verify,
};
pub use push::{PushReport, TransferOptions, copy, push_walk};
pub use repo::{Counts, Progress, Repository};
