//! Tests of the `snapsync` binary, run as a user would run it.

mod basics;
mod cache;
mod delta;
mod interop_rdiff;
mod interop_snapdir;
mod interop_stores;
mod pkg;
mod remote_stores;
mod run;
mod scan;
mod snapshot_failures;
mod snapshots;
mod sync;
mod sync_safety;
mod util;
