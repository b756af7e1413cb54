//! Marks of pushes under way, kept on this machine, so that the temporary files a killed push left in
//! a store are removed by the next push to it.
//!
//! A push holds no lock on its store (many may push at once: objects are content-addressed), and a
//! store that writes under a temporary name and renames (local, FTP, SFTP) keeps the temporary files
//! of a process killed mid-write. Their names carry the writer's process id. Before it sends, a push
//! writes a mark `push-HASH-PID` (HASH: the store's URL hashed, PID its own) in a folder of this
//! machine (the cache folder's `runs/`); a push that ends removes it. A mark whose process is gone is
//! a push that was killed: once a later push to the same store has written its manifest, it removes
//! the store's temporary files carrying that process id, then the mark. A live process's files, and
//! another machine's (no mark here), are left alone; a pid another machine's writer shares by chance
//! is the one case this cannot tell apart (as for sync's leftovers); `snapsync scan --remove-temp`
//! removes old leftovers whatever wrote them.

use std::io;
use std::path::Path;

use snapsync_store::RunMark;

use crate::Repository;

/// This process's mark of a push under way to one store (a [`RunMark`] whose prefix names the store).
#[derive(Debug)]
pub struct PushMark(RunMark);

impl PushMark {
    /// Marks a push from this process to `to` under way in the folder `dir` (made if missing), and
    /// finds the marks of earlier pushes to `to` from this machine whose process is gone.
    ///
    /// # Errors
    /// The folder or the mark cannot be written.
    pub fn start(dir: &Path, to: &Repository) -> io::Result<PushMark> {
        let prefix = format!("push-{}-", &blake3::hash(to.url().as_bytes()).to_hex()[..16]);
        RunMark::start(dir, &prefix).map(PushMark)
    }

    /// The process ids of the killed pushes to this store that were found.
    #[must_use]
    pub fn dead_pids(&self) -> Vec<u32> {
        self.0.dead_pids()
    }

    /// The push succeeded: removes the temporary files of the killed pushes found from `to` (then
    /// their marks) and this push's mark. Returns how many files were removed. A failure to list or
    /// remove keeps the marks, so the next push tries again.
    pub async fn finish(self, to: &Repository) -> usize {
        self.0.finish(to.store().as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use snapsync_store::{LocalStore, PutMode, PutSource, Store as _, StoreUrl};

    use std::fs;

    use super::*;

    #[tokio::test]
    async fn a_killed_pushs_temporary_files_go_with_the_next_push_and_a_live_ones_stay() {
        let (runs, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Arc::new(LocalStore::new(StoreUrl::local(root.path())));
        let repo = Repository::new(store.clone());
        store
            .put("a/b", PutSource::Bytes(b"x".to_vec().into()), PutMode::Overwrite)
            .await
            .unwrap();
        // A process that is gone (a child that exited), and one that runs (this test's own parent).
        let dead = snapsync_testkit::dead_pid();
        let live = std::os::unix::process::parent_id();
        let prefix = format!("push-{}-", &blake3::hash(repo.url().as_bytes()).to_hex()[..16]);
        for pid in [dead, live] {
            fs::write(runs.path().join(format!("{prefix}{pid}")), b"").unwrap();
            fs::write(root.path().join(format!("a/.b.snapsync-{pid}-0.tmp")), b"part").unwrap();
        }
        // Another store's mark is not this one's business.
        fs::write(runs.path().join("push-0000000000000000-1"), b"").unwrap();

        let mark = PushMark::start(runs.path(), &repo).unwrap();
        assert_eq!(mark.dead_pids(), vec![dead]);
        assert_eq!(mark.finish(&repo).await, 1);
        assert!(!root.path().join(format!("a/.b.snapsync-{dead}-0.tmp")).exists());
        assert!(root.path().join(format!("a/.b.snapsync-{live}-0.tmp")).exists());
        assert!(root.path().join("a/b").exists());
        let mut left: Vec<String> = fs::read_dir(runs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["push-0000000000000000-1".to_owned(), format!("{prefix}{live}")]
        );
    }
}
