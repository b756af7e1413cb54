//! Tests of the `snapsync` binary, run as a user would run it.

mod basics;
mod cache;
mod credentials;
mod delta;
mod guide;
mod help;
mod hostile;
mod interop_rdiff;
mod interop_snapdir;
mod interop_stores;
mod interrupt;
mod json;
mod netfault;
mod pkg;
mod progress_tty;
mod readme;
mod remote_stores;
mod run;
mod scan;
mod snapshot_failures;
mod snapshot_ux;
mod snapshots;
mod sync;
mod sync_safety;
mod util;
