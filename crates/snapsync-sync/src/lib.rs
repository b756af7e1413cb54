//! snapsync-sync: folder sync between a local directory and any store (`upload`, `download`, two-way
//! `sync`).
//!
//! This crate grows in steps. Here now: [`decide`], the two-way decision table — how each side changed
//! since the base (what both sides agreed on at the end of the last sync), and what to do about it,
//! conflicts and `--resolve` strategies included. The planner (scan both sides, read the base, build a
//! printable plan), the executor (bounded parallel transfers, temp-name writes checked and renamed, the
//! base saved as it goes) and the sync state file come next; see `docs/sync.md`.

#![forbid(unsafe_code)]

pub mod decide;

pub use decide::{Action, Class, Conflict, Observed, Recorded, Resolve, classify, decide, resolve};
