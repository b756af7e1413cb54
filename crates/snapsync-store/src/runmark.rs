//! Marks of runs under way, kept on this machine, so that the temporary files a killed run left in a
//! store are removed by the next run to it.
//!
//! A store that writes under a temporary name and renames (local, FTP, SFTP) keeps the temporary files
//! of a process killed mid-write; their names carry the writer's process id. Before it writes, a run
//! leaves a mark `PREFIXPID` in a folder of this machine (the caller's prefix names what and where it
//! writes); a run that ends removes it. A mark whose process is gone is a run that was killed: once a
//! later run has finished its writes, it removes the store's temporary files carrying that process id,
//! then the mark. A live process's files, and another machine's (no mark here), are left alone; a pid
//! another machine's writer shares by chance is the one case this cannot tell apart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;

use crate::Store;

/// This process's mark of a run under way, and the marks of killed runs of the same kind it found.
#[derive(Debug)]
pub struct RunMark {
    path: PathBuf,
    dead: Vec<(u32, PathBuf)>,
}

impl RunMark {
    /// Marks a run of this process under way in the folder `dir` (made if missing) as `PREFIXPID`,
    /// and finds the marks with the same prefix whose process is gone.
    ///
    /// # Errors
    /// The folder cannot be listed, or the folder or the mark cannot be written.
    pub fn start(dir: &Path, prefix: &str) -> io::Result<RunMark> {
        fs::create_dir_all(dir)?;
        let me = std::process::id();
        let mut dead = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != me && !snapsync_core::atomic::process_alive(pid) {
                dead.push((pid, entry.path()));
            }
        }
        let path = dir.join(format!("{prefix}{me}"));
        fs::write(&path, b"")?;
        Ok(RunMark { path, dead })
    }

    /// The process ids of the killed runs that were found.
    #[must_use]
    pub fn dead_pids(&self) -> Vec<u32> {
        self.dead.iter().map(|(pid, _)| *pid).collect()
    }

    /// The run succeeded: removes the temporary files of the killed runs found from `store` (then
    /// their marks) and this run's mark. Returns how many files were removed. A failure to list or
    /// remove keeps the marks, so the next run tries again: a listing that failed is never read as
    /// "nothing left".
    pub async fn finish(self, store: &dyn Store) -> usize {
        let mut removed = 0;
        if !self.dead.is_empty() {
            let (count, complete) = remove_temporaries_of(store, &self.dead_pids()).await;
            removed = count;
            if complete {
                for (_, mark) in &self.dead {
                    let _ = fs::remove_file(mark);
                }
            }
        }
        let _ = fs::remove_file(&self.path);
        removed
    }
}

/// Removes from `store` the temporary files (`.NAME.snapsync-PID-N.tmp`) written by the processes
/// `pids` — killed runs' — and no others. Returns how many were removed, and whether that was all of
/// them: `false` when the listing or a removal failed, and the caller must then keep whatever tells
/// the next run to try again (a listing that failed is never read as "nothing left").
pub async fn remove_temporaries_of(store: &dyn Store, pids: &[u32]) -> (usize, bool) {
    let mut removed = 0;
    let mut leftovers = store.list_leftovers();
    loop {
        match leftovers.try_next().await {
            Ok(Some(meta)) => {
                let name = meta.key.rsplit('/').next().unwrap_or(&meta.key);
                if snapsync_core::atomic::temp_pid(name).is_some_and(|pid| pids.contains(&pid)) {
                    if store.delete(&meta.key).await.is_ok() {
                        removed += 1;
                    } else {
                        return (removed, false);
                    }
                }
            }
            Ok(None) => return (removed, true),
            Err(_) => return (removed, false),
        }
    }
}
