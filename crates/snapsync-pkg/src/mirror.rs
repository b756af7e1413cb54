//! The mirror: a [`Plan`] (what the source has that the requirements select, against what the
//! destination has, by file name and sha256), then [`execute`] (each file downloaded to a temporary
//! file, its sha256 checked, its metadata read, uploaded; `jobs` at a time; an outcome per file).
//!
//! A store tree gets each file by temporary name and rename, its project page only after, so a killed
//! run leaves whole files or none under their names, and pages that list only those; the next run to
//! the same destination plans again, sends only what is not listed, and removes the temporary files
//! and the folder of downloads the killed run left (its process id is in their names). An HTTP upload
//! is one request: whether a cut one leaves a file is the index's doing (pypiserver keeps what it got
//! under the final name, which the next run then reports as a conflict: docs/RELIABILITY.md).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use snapsync_core::Cancel;
use url::Url;

use crate::dist::{DistFilename, normalize, read_metadata};
use crate::error::{Error, Result};
use crate::hashes::hash_file;
use crate::index::{Destination, Index};
use crate::page::DistFile;
use crate::select::{Selector, SkipReason};

/// What to do with one selected file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The destination does not have it: download and upload.
    Upload,
    /// The destination has it (same name, same sha256 — or the same name where one side gives no hash).
    Present,
    /// The destination has a file of that name with another sha256: left alone, reported.
    Conflict {
        /// The destination's sha256.
        destination_sha256: String,
    },
}

/// One selected file and what the plan does with it.
#[derive(Clone, Debug)]
pub struct PlanItem {
    /// The project (normalised).
    pub project: String,
    /// The file as the source lists it.
    pub file: DistFile,
    /// What to do.
    pub action: Action,
}

/// A file of a selected project that the selection left out.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// The project (normalised).
    pub project: String,
    /// The file name.
    pub filename: String,
    /// Why.
    pub reason: SkipReason,
}

/// What a mirror run will do; printable before anything is sent (`--dry-run`).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The selected files, sorted by project and file name.
    pub items: Vec<PlanItem>,
    /// The files left out, and why.
    pub skipped: Vec<Skipped>,
    /// Projects the requirements name that the source does not have.
    pub missing: Vec<String>,
}

impl Plan {
    /// The items to upload.
    pub fn uploads(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.action == Action::Upload)
    }
}

/// How a run executes.
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// Files transferred at once (at least 1).
    pub jobs: usize,
    /// Where downloads are kept until uploaded (the system's temporary folder by default).
    pub temp_dir: Option<PathBuf>,
    /// Stops [`execute`] early ([`Error::Cancelled`]): no file starts after it is cancelled, those
    /// in flight are abandoned (a store tree's temporary names removed), and the files that arrived
    /// are listed on their pages.
    pub cancel: Cancel,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            jobs: 4,
            temp_dir: None,
            cancel: Cancel::new(),
        }
    }
}

/// What happened to one file.
#[derive(Debug)]
pub struct Outcome {
    /// The project.
    pub project: String,
    /// The file name.
    pub filename: String,
    /// `Ok(bytes)` uploaded, or why not.
    pub result: Result<u64>,
}

/// The outcomes of a run.
#[derive(Debug, Default)]
pub struct Summary {
    /// One per file the plan uploads or reports as a conflict, in completion order.
    pub outcomes: Vec<Outcome>,
    /// Files the destination had already.
    pub present: usize,
}

impl Summary {
    /// The files uploaded.
    pub fn uploaded(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_ok())
    }

    /// The files that failed (conflicts included).
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_err())
    }

    /// Whether every file got there.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.failed().next().is_none()
    }
}

/// Plans a mirror: reads the projects the selector names (every project of the source when it names
/// none) on both sides, `jobs` pages at a time.
///
/// # Errors
///
/// Any page that cannot be read, on either side: a plan is never made from a listing that failed.
pub async fn plan(
    source: &Index,
    destination: &Destination,
    selector: &Selector,
    jobs: usize,
) -> Result<Plan> {
    let projects = if let Some(projects) = selector.projects() {
        projects
    } else {
        let mut names: Vec<String> = source.projects().await?.iter().map(|p| normalize(p)).collect();
        names.sort();
        names.dedup();
        names
    };
    let pages: Vec<(String, Option<Vec<DistFile>>, Vec<DistFile>)> = futures::stream::iter(projects)
        .map(|project| async move {
            let files = source.files(&project).await?;
            let present = match &files {
                Some(_) => destination.files(&project).await?,
                None => Vec::new(),
            };
            Ok::<_, Error>((project, files, present))
        })
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    let mut plan = Plan::default();
    for (project, files, present) in pages {
        let Some(mut files) = files else {
            plan.missing.push(project);
            continue;
        };
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        files.dedup_by(|a, b| a.filename == b.filename);
        let (chosen, skipped) = selector.select(&project, &files);
        plan.skipped
            .extend(skipped.into_iter().map(|(file, reason)| Skipped {
                project: project.clone(),
                filename: file.filename,
                reason,
            }));
        let present: HashMap<&str, Option<&str>> = present
            .iter()
            .map(|f| (f.filename.as_str(), f.sha256.as_deref()))
            .collect();
        for file in chosen {
            let action = match present.get(file.filename.as_str()) {
                None => Action::Upload,
                Some(Some(theirs)) if file.sha256.as_deref().is_some_and(|ours| ours != *theirs) => {
                    Action::Conflict {
                        destination_sha256: (*theirs).to_owned(),
                    }
                }
                Some(_) => Action::Present,
            };
            plan.items.push(PlanItem {
                project: project.clone(),
                file,
                action,
            });
        }
    }
    Ok(plan)
}

/// Executes a plan: uploads its `Upload` items `jobs` at a time, reports each outcome to `report` as
/// it comes, and (for a store tree) writes the project pages and the root page once the files are in.
/// A file that fails fails alone; the others go on.
///
/// # Errors
///
/// Only what stops the whole run: the temporary folder cannot be made, or a store tree's pages cannot
/// be written (the files then stay unlisted and the next run sends them again).
pub async fn execute(
    plan: &Plan,
    source: &Index,
    destination: &Destination,
    options: &MirrorOptions,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Summary> {
    let temp_root = options.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let killed = killed_runs(&temp_root, &destination.url());
    let temp = tempfile::Builder::new()
        .prefix(&format!("{DOWNLOADS_PREFIX}{}-", std::process::id()))
        .tempdir_in(&temp_root)
        .map_err(|e| Error::io(&temp_root, e))?;
    let dir = temp.path();
    // The folder names the destination: should this run be killed, the next run to the same
    // destination knows whose temporary files there are its.
    std::fs::write(dir.join(DESTINATION_FILE), destination.url()).map_err(|e| Error::io(dir, e))?;
    let mut summary = Summary {
        present: plan.items.iter().filter(|i| i.action == Action::Present).count(),
        ..Summary::default()
    };
    for item in &plan.items {
        if let Action::Conflict { destination_sha256 } = &item.action {
            let outcome = Outcome {
                project: item.project.clone(),
                filename: item.file.filename.clone(),
                result: Err(Error::Conflict {
                    filename: item.file.filename.clone(),
                    source_sha256: item.file.sha256.clone().unwrap_or_default(),
                    destination: destination_sha256.clone(),
                }),
            };
            report(&outcome);
            summary.outcomes.push(outcome);
        }
    }
    let mut transfers = futures::stream::iter(plan.uploads())
        .map(|item| async move {
            let cancel = &options.cancel;
            let result = if cancel.is_cancelled() {
                Err(Error::Cancelled)
            } else {
                tokio::select! {
                    biased;
                    result = transfer(item, source, destination, dir) => result,
                    () = cancel.cancelled() => Err(Error::Cancelled),
                }
            };
            (item, result)
        })
        .buffer_unordered(options.jobs.max(1));
    // The files each project's page lists after the run: uploaded ones with the hash of their bytes.
    // A store tree's project page is written as soon as that project's last upload ends, so a killed
    // run leaves at most the files of the projects under way unlisted (sent again next time).
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for item in plan.uploads() {
        *remaining.entry(item.project.as_str()).or_default() += 1;
    }
    let mut uploaded: BTreeMap<String, Vec<DistFile>> = BTreeMap::new();
    while let Some((item, result)) = transfers.next().await {
        if matches!(result, Err(Error::Cancelled)) {
            continue;
        }
        let outcome = Outcome {
            project: item.project.clone(),
            filename: item.file.filename.clone(),
            result: result.map(|(file, size)| {
                uploaded.entry(item.project.clone()).or_default().push(file);
                size
            }),
        };
        report(&outcome);
        summary.outcomes.push(outcome);
        let left = remaining.entry(item.project.as_str()).or_default();
        *left = left.saturating_sub(1);
        if *left == 0
            && let Some(new) = uploaded.remove(&item.project)
        {
            list_project(destination, &item.project, &new).await?;
        }
    }
    drop(transfers);
    for (project, new) in &uploaded {
        list_project(destination, project, new).await?;
    }
    if options.cancel.is_cancelled() {
        if let Destination::Store(tree) = destination {
            let _ = tree.store().remove_abandoned().await;
            if !uploaded.is_empty() {
                tree.write_root_page().await?;
            }
        }
        return Err(Error::Cancelled);
    }
    // Rewritten whenever the plan had files: a run killed after its last project page and before
    // this leaves projects off the root page, which the next run (with nothing to upload) puts back.
    if let Destination::Store(tree) = destination
        && !plan.items.is_empty()
    {
        tree.write_root_page().await?;
    }
    remove_leftovers_of(destination, killed).await;
    Ok(summary)
}

/// How a run's folder of downloads is named in the temporary folder: this, the run's process id, `-`
/// and a random tail. A killed run cannot remove its folder; the id tells the next run it is dead.
const DOWNLOADS_PREFIX: &str = "snapsync-pkg-";

/// The file in a run's folder of downloads that names its destination (its URL, no password).
const DESTINATION_FILE: &str = "destination";

/// The folders of downloads that killed runs left in `root` (their process gone from this machine):
/// those of runs to `destination` (by its URL), as process id and folder, to be removed once their
/// temporary files on the destination are ([`remove_leftovers_of`]); those that name no destination
/// are removed at once. A killed run to another destination's folder stays for a run to that one;
/// those of live runs, and everything else, stay. Best effort: what cannot be read or removed stays.
fn killed_runs(root: &std::path::Path, destination: &str) -> Vec<(u32, PathBuf)> {
    let mut ours = Vec::new();
    for (pid, dir) in dead_download_dirs(root) {
        match std::fs::read_to_string(dir.join(DESTINATION_FILE)) {
            Ok(named) if named == destination => ours.push((pid, dir)),
            Ok(_) => {}
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    ours
}

/// After a run to `destination`: removes the temporary files the `killed` runs left there (a store
/// tree's `.NAME.snapsync-PID-N.tmp` carrying their process ids; an index takes an upload whole or
/// keeps what it got, and has none), then their folders of downloads. A failure to list or remove
/// keeps the folders, so the next run tries again.
async fn remove_leftovers_of(destination: &Destination, killed: Vec<(u32, PathBuf)>) {
    if killed.is_empty() {
        return;
    }
    if let Destination::Store(tree) = destination {
        let pids: Vec<u32> = killed.iter().map(|(pid, _)| *pid).collect();
        let (_, complete) = snapsync_store::remove_temporaries_of(tree.store().as_ref(), &pids).await;
        if !complete {
            return;
        }
    }
    for (_, dir) in killed {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The folders of downloads in `root` whose run's process is gone from this machine: process id and
/// folder.
fn dead_download_dirs(root: &std::path::Path) -> Vec<(u32, PathBuf)> {
    let mut dead = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return dead;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DOWNLOADS_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !snapsync_core::atomic::process_alive(pid)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            dead.push((pid, entry.path()));
        }
    }
    dead
}

/// For a store tree, adds files uploaded to their project's page (an HTTP index lists what it took
/// itself).
async fn list_project(destination: &Destination, project: &str, new: &[DistFile]) -> Result<()> {
    if let Destination::Store(tree) = destination
        && !new.is_empty()
    {
        let mut files = tree.page_files(project).await?.unwrap_or_default();
        files.retain(|f| !new.iter().any(|n| n.filename == f.filename));
        files.extend(new.iter().cloned());
        tree.write_project_page(project, &files).await?;
    }
    Ok(())
}

/// For a store tree, adds the files uploaded to their projects' pages, and the projects to the root
/// page, once the files are in.
async fn list_uploaded(destination: &Destination, uploaded: &BTreeMap<String, Vec<DistFile>>) -> Result<()> {
    if let Destination::Store(tree) = destination
        && !uploaded.is_empty()
    {
        for (project, new) in uploaded {
            list_project(destination, project, new).await?;
        }
        tree.write_root_page().await?;
    }
    Ok(())
}

/// Uploads local distribution files (pkgsync's `upload()`), `jobs` at a time: each file's name is
/// parsed, its metadata read from it and its digests computed; a file the destination lists already
/// with the same sha256 is counted present and not sent, one listed with another sha256 is
/// [`Error::Conflict`]. For a store tree the pages are written once the files are in. A file that
/// fails fails alone.
///
/// # Errors
///
/// Only a store tree's pages that cannot be written (the files then stay unlisted and the next run
/// sends them again).
pub async fn upload_files(
    destination: &Destination,
    files: &[PathBuf],
    jobs: usize,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut uploads = futures::stream::iter(files)
        .map(|path| async move { (path, upload_file(destination, path).await) })
        .buffer_unordered(jobs.max(1));
    let mut uploaded: BTreeMap<String, Vec<DistFile>> = BTreeMap::new();
    while let Some((path, result)) = uploads.next().await {
        let filename = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let (project, result) = match result {
            Ok((project, None)) => {
                summary.present += 1;
                let outcome = Outcome {
                    project,
                    filename,
                    result: Ok(0),
                };
                report(&outcome);
                continue;
            }
            Ok((project, Some(file))) => {
                let size = file.size.unwrap_or_default();
                uploaded.entry(project.clone()).or_default().push(file);
                (project, Ok(size))
            }
            Err(e) => (String::new(), Err(e)),
        };
        let outcome = Outcome {
            project,
            filename,
            result,
        };
        report(&outcome);
        summary.outcomes.push(outcome);
    }
    drop(uploads);
    list_uploaded(destination, &uploaded).await?;
    Ok(summary)
}

/// One local file: its project, and the file as the destination lists it after the upload (`None`:
/// the destination had it already).
async fn upload_file(
    destination: &Destination,
    path: &std::path::Path,
) -> Result<(String, Option<DistFile>)> {
    let filename = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::BadFilename {
            filename: path.display().to_string(),
            reason: "not a file name in UTF-8".to_owned(),
        })?
        .to_owned();
    let dist = DistFilename::parse(&filename, None)?;
    let project = normalize(&dist.name);
    let (owned, for_read) = (path.to_path_buf(), dist.clone());
    let (metadata, hashes) = tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((read_metadata(&owned, &for_read)?, hash_file(&owned)?))
    })
    .await
    .map_err(|e| Error::archive(path, format!("metadata reader failed: {e}")))??;
    if let Some(listed) = destination
        .files(&project)
        .await?
        .into_iter()
        .find(|f| f.filename == filename)
    {
        return match listed.sha256 {
            Some(theirs) if theirs != hashes.sha256 => Err(Error::Conflict {
                filename,
                source_sha256: hashes.sha256,
                destination: theirs,
            }),
            _ => Ok((project, None)),
        };
    }
    match destination {
        Destination::Http { uploader, .. } => uploader.upload(path, &dist, &metadata, &hashes).await?,
        Destination::Store(tree) => tree.put_file(&project, &filename, path).await?,
    }
    let url = Url::parse(&format!("store:///{project}/{filename}")).map_err(|e| Error::InvalidUrl {
        url: filename.clone(),
        reason: e.to_string(),
    })?;
    Ok((
        project,
        Some(DistFile {
            filename,
            url,
            sha256: Some(hashes.sha256),
            requires_python: metadata.get("Requires-Python").map(str::to_owned),
            yanked: None,
            core_metadata: None,
            size: Some(hashes.size),
        }),
    ))
}

/// One file: download (sha256 checked), metadata read from the file, upload. Returns the file as the
/// destination's page lists it and its size.
async fn transfer(
    item: &PlanItem,
    source: &Index,
    destination: &Destination,
    dir: &std::path::Path,
) -> Result<(DistFile, u64)> {
    let dist = DistFilename::parse(&item.file.filename, Some(&item.project))?;
    let download = source.download(&item.file, dir).await?;
    let path = download.path().to_path_buf();
    let for_read = dist.clone();
    let metadata = tokio::task::spawn_blocking(move || read_metadata(&path, &for_read))
        .await
        .map_err(|e| Error::archive(download.path(), format!("metadata reader failed: {e}")))??;
    destination
        .upload(&item.project, &download, &dist, &metadata)
        .await?;
    let mut listed = item.file.clone();
    // An index that gave no Requires-Python (pypiserver) still has it in the file: a tree lists it.
    if listed.requires_python.is_none() {
        listed.requires_python = metadata.get("Requires-Python").map(str::to_owned);
    }
    listed.sha256 = Some(download.hashes.sha256.clone());
    listed.core_metadata = None;
    listed.size = Some(download.hashes.size);
    Ok((listed, download.hashes.size))
}

/// Plans and executes in one call.
///
/// # Errors
///
/// As [`plan`] and [`execute`].
pub async fn mirror(
    source: &Index,
    destination: &Destination,
    selector: &Selector,
    options: &MirrorOptions,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<(Plan, Summary)> {
    let plan = plan(source, destination, selector, options.jobs).await?;
    let summary = execute(&plan, source, destination, options, report).await?;
    Ok((plan, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crash harness found a killed `pkg mirror`'s folder of downloads left in the temporary
    /// folder for good: the next run to the same destination now takes it for a killed run's (and
    /// removes it once its temporary files are gone); a live run's, another destination's and anything
    /// else stay; one that names no destination goes at once.
    #[test]
    fn a_killed_runs_download_folder_is_found_by_the_next_run_and_a_live_ones_stays() {
        let root = tempfile::tempdir().unwrap();
        let dead = snapsync_testkit::dead_pid();
        let killed = root.path().join(format!("{DOWNLOADS_PREFIX}{dead}-a1b2c3"));
        let live = root
            .path()
            .join(format!("{DOWNLOADS_PREFIX}{}-d4e5f6", std::process::id()));
        let elsewhere = root.path().join(format!("{DOWNLOADS_PREFIX}{dead}-g7h8i9"));
        let unnamed = root.path().join(format!("{DOWNLOADS_PREFIX}{dead}-j0k1l2"));
        let other = root.path().join(format!("{DOWNLOADS_PREFIX}notapid-x"));
        for dir in [&killed, &live, &elsewhere, &unnamed, &other] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("a-1.0.tar.gz"), b"part").unwrap();
        }
        for dir in [&killed, &live] {
            std::fs::write(dir.join(DESTINATION_FILE), "file:///mirror").unwrap();
        }
        std::fs::write(elsewhere.join(DESTINATION_FILE), "file:///other").unwrap();
        let found = killed_runs(root.path(), "file:///mirror");
        assert_eq!(found, [(dead, killed.clone())]);
        assert!(!unnamed.exists());
        assert!(elsewhere.exists() && live.exists() && other.exists());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let destination = Destination::http(
            &Url::parse("http://127.0.0.1:9/simple/").unwrap(),
            &Url::parse("http://127.0.0.1:9/").unwrap(),
            &crate::ClientOptions::default(),
        )
        .unwrap();
        runtime.block_on(remove_leftovers_of(&destination, found));
        assert!(!killed.exists());
        assert!(live.join("a-1.0.tar.gz").exists());
    }
}
