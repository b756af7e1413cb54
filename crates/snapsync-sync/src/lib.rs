//! snapsync-sync: folder sync between a local directory and any store (`upload`, `download`, two-way
//! `sync`).
//!
//! [`mod@decide`] is the two-way decision table — how each side changed since the base (what both sides
//! agreed on at the end of the last sync), and what to do about it, conflicts and `--resolve` strategies
//! included; [`state`] keeps the base on disk (a whole file plus a journal of the run under way, so a
//! killed run loses nothing); [`scan`] lists both sides through one [`Filter`]; [`mod@plan`] turns the
//! two listings and the base into a [`Plan`]; [`run`] locks the remote, compares contents where needed
//! and carries the plan out ([`Pair::prepare`], [`Pair::execute`]). [`inspect`] lists a remote and
//! the temporary files interrupted writes left there; with [`remove_stale`] (a dead run's lock) and
//! [`forget`] (the states kept for a remote) it is what `snapsync scan` cleans up with. See
//! `docs/sync.md`.
//!
//! Every option lives in one validated [`Options`]; [`open_remote`] names and opens a remote the way
//! every front end must. A program syncs a folder without the command line:
//!
//! ```
//! use snapsync_store::ConnectOptions;
//! use snapsync_sync::{Mode, Options, Pair};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # std::fs::create_dir(dir.path().join("site"))?;
//! # std::fs::create_dir(dir.path().join("mirror"))?;
//! # let (local, remote) = (dir.path().join("site"), dir.path().join("mirror"));
//! std::fs::write(local.join("index.html"), "<h1>hi</h1>")?;
//! let options = Options::builder(Mode::Upload)
//!     .delete(true)
//!     .excludes(["*.tmp"])
//!     .build()?;
//! let store = snapsync_sync::open_remote(remote.to_str().unwrap(), &options, &ConnectOptions::from_env())?;
//! let pair = Pair::new(local, store, options);
//! let runtime = tokio::runtime::Runtime::new()?;
//! let summary = runtime.block_on(async {
//!     let prepared = pair.prepare().await?;
//!     pair.execute(prepared, None, &|_event| {}).await
//! })?;
//! assert_eq!(summary.uploaded, 1);
//! assert!(remote.join("index.html").exists());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod decide;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod lock;
pub mod options;
pub mod plan;
mod remote;
pub mod run;
pub mod scan;
pub mod state;

pub use decide::{Action, Class, Conflict, Observed, Recorded, Resolve, classify, decide, resolve};
pub use error::{Error, Result};
pub use inspect::{
    EntryKind, Leftover, LeftoversRemoved, RemoteEntry, leftovers, list_remote, remove_leftovers,
};
pub use lock::{RemovedLock, remove_stale};
pub use options::{DEFAULT_LOCK_TIMEOUT, Options, OptionsBuilder};
pub use plan::{DirAction, Item, Mode, Plan, plan, plan_dirs};
pub use remote::{open_remote, remote_url};
pub use run::{Ask, Event, Failure, MASS_DELETE_MIN, Pair, Prepared, Report, Summary, Unsettled};
pub use scan::{DEFAULT_EXCLUDES, Filter, Listing, Verdict};
pub use snapsync_core::Cancel;
pub use state::{
    BaseEntry, Forgotten, PairState, State, StateDir, StateError, default_root, forget, states_of,
};
