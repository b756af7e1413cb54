//! Comparing contents where the plan asks (a file changed on both sides, or new on both, with the
//! same size): equal content is nothing to do (and is recorded), different content the conflict or its
//! resolution. Sizes decide without reading when they differ; a local hash the scan already made is
//! reused.

use std::collections::HashMap;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};

use super::{Pair, blocking};
use crate::decide::Action;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::scan::Listing;

impl Pair {
    /// Settles the plan's comparisons: equal content is nothing to do (and is recorded), different
    /// content the conflict or its resolution. Sizes decide without reading when they differ.
    pub(super) async fn compare(
        &self,
        plan: &mut Plan,
        local: &Listing,
        remote: &Listing,
        hashes: &mut HashMap<String, [u8; 32]>,
    ) -> Result<()> {
        let asks: Vec<usize> = (0..plan.items.len())
            .filter(|&i| matches!(plan.items[i].action, Action::Compare(_)))
            .collect();
        let results: Vec<(usize, Option<[u8; 32]>)> = futures::stream::iter(asks)
            .map(|i| {
                let path = plan.items[i].path.clone();
                let (l, r) = (local.files.get(&path), remote.files.get(&path));
                let known = hashes.get(&path).copied();
                async move {
                    let (Some(l), Some(r)) = (l, r) else {
                        return Ok((i, None));
                    };
                    if l.size != r.size {
                        return Ok((i, None));
                    }
                    let local_hash = match known {
                        Some(h) => h,
                        None => self.hash_local(&path).await?,
                    };
                    let remote_hash = self.hash_remote(&path).await?;
                    Ok::<_, Error>((i, (local_hash == remote_hash).then_some(local_hash)))
                }
            })
            .buffer_unordered(self.jobs())
            .try_collect()
            .await?;
        for (i, same) in results {
            let item = &mut plan.items[i];
            let Action::Compare(conflict) = item.action else {
                continue;
            };
            if let Some(hash) = same {
                item.action = Action::Nothing;
                item.on_mismatch = None;
                hashes.insert(item.path.clone(), hash);
            } else if let Some(action) = item.on_mismatch.take() {
                item.action = action;
                item.resolved = Some(conflict);
            } else {
                item.action = Action::Conflict(conflict);
            }
        }
        Ok(())
    }

    pub(super) async fn hash_local(&self, path: &str) -> Result<[u8; 32]> {
        let file = self.local_path(path)?;
        blocking(&self.local, move || hash_file(&file)).await
    }

    async fn hash_remote(&self, path: &str) -> Result<[u8; 32]> {
        let mut stream = self.store.get(path).await?.stream;
        let mut hasher = blake3::Hasher::new();
        while let Some(piece) = stream.try_next().await? {
            hasher.update(&piece);
        }
        Ok(*hasher.finalize().as_bytes())
    }
}

/// BLAKE3 of a local file.
pub(super) fn hash_file(file: &Path) -> Result<[u8; 32]> {
    snapsync_core::hash_file(file)
        .map(|(c, _)| *c.as_bytes())
        .map_err(|e| Error::io(file, e))
}
