//! Holding the remote for a run: the mark of a run under way (in the pair's state directory, so the
//! next run knows this one was interrupted and whose temporary files are leftovers), the remote's lock
//! ([`crate::lock::Lease`]), and letting both go.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;

use super::{Pair, Prepared};
use crate::error::{Error, Result};
use crate::lock::Lease;
use crate::plan::Mode;
use crate::scan::{self, Listing};
use crate::state::StateDir;

/// The mark of a run under way, in the pair's state directory.
const RUNNING: &str = "running";

/// What [`Pair::hold`] took.
#[derive(Debug)]
pub(super) struct Hold {
    /// The remote's lock (none for a dry run, or a download from a remote that cannot be written).
    pub(super) lease: Option<Lease>,
    /// Pids of interrupted runs of this pair on this machine: their temporary files are leftovers.
    pub(super) dead_pids: Vec<u32>,
    /// The run before this one did not finish: its mark stays until a run finishes.
    pub(super) interrupted: bool,
    /// The mark of this run.
    pub(super) running: PathBuf,
    /// Said to the user (a download without a lock).
    pub(super) warning: Option<String>,
}

impl Pair {
    /// Puts down the mark of a run under way, then takes the remote's lock (neither for a dry run).
    pub(super) async fn hold(&self) -> Result<Hold> {
        // The mark goes down before the lock, so a run killed even while locking leaves it; a run that
        // finds it knows the one before was interrupted.
        let state_dir = StateDir::new(&self.local, &self.store.url().to_string());
        let running = state_dir.path().join(RUNNING);
        let interrupted = running.exists();
        if interrupted {
            log::debug!(
                "{} marks an interrupted run: its leftovers will be cleaned up",
                running.display()
            );
        }
        // The pid of the run that was interrupted: only temporary files it left are removed.
        let previous_pid: Option<u32> = fs::read_to_string(&running)
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        let dry_run = self.options.dry_run();
        if !dry_run {
            // With the pair's names, so the state can be found by its remote (`scan --remove-state`).
            state_dir.create()?;
            fs::write(&running, std::process::id().to_string()).map_err(|e| Error::io(&running, e))?;
        }
        let mut hold = Hold {
            lease: None,
            dead_pids: previous_pid.into_iter().collect(),
            interrupted,
            running,
            warning: None,
        };
        if !dry_run {
            match Lease::take(
                Arc::clone(&self.store),
                self.options.lock_timeout(),
                self.options.break_lock(),
            )
            .await
            {
                Ok(taken) => {
                    // A run of this machine that died with the lock: its temporary files may be left.
                    if let Some(holder) = taken.took_over
                        && holder.host == crate::lock::hostname()
                    {
                        hold.dead_pids.push(holder.pid);
                    }
                    hold.lease = Some(taken.lease);
                }
                // A download only writes here: a read-only remote (an anonymous FTP mirror, a folder
                // mounted read-only) is fine.
                Err(Error::Store(e)) if self.options.mode() == Mode::Download && read_only(&e) => {
                    hold.warning = Some(format!(
                        "the remote cannot be locked ({e}); downloading without a lock"
                    ));
                }
                Err(e) => {
                    self.unmark(&hold);
                    return Err(e);
                }
            }
        }
        // A reused pid must not make this run's own files look like leftovers.
        hold.dead_pids.retain(|&pid| pid != std::process::id());
        Ok(hold)
    }

    /// Takes the mark of a run under way away again, unless the run before left it (then it stays
    /// until a run finishes).
    fn unmark(&self, hold: &Hold) {
        if !hold.interrupted && !self.options.dry_run() {
            let _ = fs::remove_file(&hold.running);
        }
    }

    /// Lets go of what [`Pair::hold`] took, for a run that goes no further.
    pub(super) async fn let_go(&self, hold: Hold) {
        self.unmark(&hold);
        if let Some(lease) = hold.lease {
            log::debug!("releasing the lock on {}", self.store.url());
            lease.release().await;
        }
    }

    /// Lets go of what [`Pair::prepare`] took, for a prepared run that goes no further.
    pub(super) async fn release(&self, prepared: Prepared) {
        self.let_go(prepared.hold).await;
    }

    /// Removes the temporary files of interrupted runs of this pair on this machine (their pid is in
    /// their name): under the lock, no other run is writing them. A file that only looks like one (a
    /// user's, or another machine's run's) is left alone.
    pub(super) async fn remove_leftovers(&self, local: &Listing, dead_pids: &[u32]) {
        let dead = |name: &str| scan::temp_pid(name).is_some_and(|pid| dead_pids.contains(&pid));
        for leftover in &local.leftovers {
            if leftover.file_name().and_then(|n| n.to_str()).is_some_and(dead) {
                let _ = fs::remove_file(leftover);
            }
        }
        if !dead_pids.is_empty() {
            let mut leftovers = self.store.list_leftovers();
            while let Ok(Some(meta)) = leftovers.try_next().await {
                if dead(meta.key.rsplit('/').next().unwrap_or(&meta.key)) {
                    let _ = self.store.delete(&meta.key).await;
                }
            }
        }
    }
}

/// Whether a store error says the remote cannot be written (a read-only account or mount).
fn read_only(error: &snapsync_store::Error) -> bool {
    match error {
        snapsync_store::Error::PermissionDenied { .. } => true,
        snapsync_store::Error::Io { source, .. } => source.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
        _ => false,
    }
}
