//! Empty folders: made and removed as the plan says, and removed once deletions emptied them.

use std::collections::BTreeSet;
use std::fs;

use super::{Event, Pair, Report, Summary, deepest_first};
use crate::error::{Error, Result};
use crate::plan::{DirAction, Plan};

impl Pair {
    /// Removes the local folders `dirs` that are empty, deepest first; those it removed.
    pub(super) fn prune_local(&self, dirs: &BTreeSet<String>) -> BTreeSet<String> {
        let mut removed = BTreeSet::new();
        for dir in deepest_first(dirs) {
            let Ok(path) = self.local_path(dir) else {
                continue;
            };
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && fs::remove_dir(&path).is_ok() {
                removed.insert(dir.clone());
            }
        }
        removed
    }

    /// Makes and removes the plan's empty folders (removals deepest first, and only of folders still
    /// empty); those done. A failure is reported and counted, never fatal.
    pub(super) async fn carry_out_dirs(
        &self,
        plan: &Plan,
        summary: &mut Summary,
        report: Report<'_>,
    ) -> Vec<(String, DirAction)> {
        let mut done = Vec::new();
        let mut ordered: Vec<&(String, DirAction)> = plan.dirs.iter().collect();
        // Makes first, top down; then removals, deepest first.
        ordered.sort_by_key(|(dir, action)| {
            let depth = dir.matches('/').count();
            match action {
                DirAction::CreateLocal | DirAction::CreateRemote => (0, depth),
                DirAction::RemoveLocal | DirAction::RemoveRemote => (1, usize::MAX - depth),
            }
        });
        for (dir, action) in ordered {
            let outcome: Result<bool> = match action {
                DirAction::CreateLocal => self.local_path(dir).and_then(|path| {
                    fs::create_dir_all(&path)
                        .map(|()| true)
                        .map_err(|e| Error::io(&path, e))
                }),
                DirAction::CreateRemote => self
                    .store
                    .create_dir(dir)
                    .await
                    .map(|()| true)
                    .map_err(Error::from),
                DirAction::RemoveLocal => Ok(!self.prune_local(&BTreeSet::from([dir.clone()])).is_empty()),
                DirAction::RemoveRemote => self.store.remove_empty_dir(dir).await.map_err(Error::from),
            };
            match outcome {
                Ok(true) => {
                    match action {
                        DirAction::CreateLocal | DirAction::CreateRemote => summary.dirs_created += 1,
                        DirAction::RemoveLocal | DirAction::RemoveRemote => summary.dirs_removed += 1,
                    }
                    report(Event::Folder {
                        path: dir,
                        action: *action,
                    });
                    done.push((dir.clone(), *action));
                }
                // Not empty any more (something arrived meanwhile): it stays, as the next run will see.
                Ok(false) => {}
                Err(e) => summary.failed.push(super::Failure::new(format!("{dir}/"), e)),
            }
        }
        done
    }
}
