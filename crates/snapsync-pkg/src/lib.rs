//! snapsync-pkg: copy Python distributions between package indexes — the successor of pkgsync.
//!
//! * **Read** a simple index: [`Index`] over HTTP (PEP 691 JSON or PEP 503 HTML by content negotiation,
//!   with `data-requires-python`, `data-yanked`, `#sha256=` fragments and PEP 658/714 metadata links)
//!   or over a PEP 503 tree in any snapsync store ([`StoreIndex`]: `file://`, `s3://`, `sftp://`…).
//! * **Select** with PEP 508 requirements ([`Selector`], through `pep508_rs`/`pep440_rs`):
//!   pre-releases only when asked, yanked files only when pinned, `requires-python` against a target.
//! * **Read metadata from the file** ([`read_metadata`]): wheel `METADATA`, sdist `PKG-INFO` in
//!   `.tar.gz` and `.zip`, the file name for old-style sdists, with size caps against hostile archives.
//! * **Upload** with the standard upload API ([`Uploader`]), or into a store tree.
//! * **Mirror**: [`plan`] then [`execute`] (or [`mirror`]), skipping what the destination has by file
//!   name and sha256, checking every download's sha256 before anything is uploaded.
//!
//! Credentials come from snapsync-store's resolver, in its order: a user and password in a URL
//! (percent-decoded), a netrc file ([`ClientOptions::from_env`] names `$NETRC` or `~/.netrc`), a keyring
//! and a prompt when the store options carry them; API tokens as user `__token__`. Passwords are never
//! in a message or in `Debug` output ([`Credentials`]).
//!
//! ```
//! use snapsync_pkg::{Location, Selector};
//!
//! let selector = Selector::new(&["celery>=3.0.15"])?.with_pre(false);
//! assert_eq!(selector.projects(), Some(vec!["celery".to_owned()]));
//! let location = Location::parse("https://user:secret@pypi.example/simple/")?;
//! assert_eq!(location.to_string(), "https://user:***@pypi.example/simple/");
//! # Ok::<(), snapsync_pkg::Error>(())
//! ```
//!
//! # Security
//!
//! Pages are read up to a size limit; archives are never extracted, and their metadata members are
//! read with caps ([`dist`]); a password given for one host is never sent to another (file URLs on other
//! hosts get that host's netrc entry or nothing).

#![forbid(unsafe_code)]

pub mod auth;
pub mod dist;
mod error;
mod hashes;
mod http;
mod index;
mod mirror;
pub mod page;
mod select;
mod tree;
mod upload;

pub use crate::auth::{Credentials, Netrc};
pub use crate::dist::{DistFilename, DistKind, Metadata, SdistFormat, normalize, read_metadata};
pub use crate::error::{Error, Result};
pub use crate::hashes::{Hashes, hash_file};
pub use crate::http::ClientOptions;
pub use crate::index::{Destination, Download, HttpIndex, Index, Location};
pub use crate::mirror::{
    Action, MirrorOptions, Outcome, Plan, PlanItem, Skipped, Summary, execute, mirror, plan, upload_files,
};
pub use crate::page::{CoreMetadata, DistFile};
pub use crate::select::{Selector, SkipReason};
pub use crate::tree::StoreIndex;
pub use crate::upload::{Uploader, upload_fields};
pub use pep440_rs::Version;
