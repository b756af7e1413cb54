//! snapsync-sync: folder sync between a local directory and any store (`upload`, `download`, two-way
//! `sync`).
//!
//! This crate grows in steps. Here now: [`mod@decide`], the two-way decision table — how each side changed
//! since the base (what both sides agreed on at the end of the last sync), and what to do about it,
//! conflicts and `--resolve` strategies included; and [`state`], the base on disk (a whole file plus a
//! journal of the run under way, so a killed run loses nothing); and [`mod@plan`], which turns two
//! listings and the base into a [`Plan`] for `sync`, `upload` or `download`. Scanning both sides into
//! those listings and the executor (bounded parallel transfers, temp-name writes checked and renamed,
//! the base recorded as it goes) come next; see `docs/sync.md`.

#![forbid(unsafe_code)]

pub mod decide;
mod error;
pub mod plan;
pub mod run;
pub mod scan;
pub mod state;

pub use decide::{Action, Class, Conflict, Observed, Recorded, Resolve, classify, decide, resolve};
pub use error::{Error, Result};
pub use plan::{Item, Mode, Options, Plan, plan};
pub use run::{Ask, Config, Event, Pair, Prepared, Report, Summary, conflict_name};
pub use scan::{DEFAULT_EXCLUDES, Filter, Listing, Verdict};
pub use state::{BaseEntry, State, StateDir, StateError};
