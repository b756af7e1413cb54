//! The mirror: a [`Plan`] (what the source has that the requirements select, against what the
//! destination has, by file name and sha256), then [`execute`] (each file downloaded to a temporary
//! file, its sha256 checked, its metadata read, uploaded; `jobs` at a time; an outcome per file).
//!
//! A run that is killed leaves nothing the next run cannot fix: an HTTP upload is one request the
//! server takes whole or not at all, and a store tree gets each file by temporary name and rename,
//! its project page only after. A re-run plans again and sends only what the destination does not list.

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
    let temp = tempfile::Builder::new()
        .prefix("snapsync-pkg-")
        .tempdir_in(&temp_root)
        .map_err(|e| Error::io(&temp_root, e))?;
    let dir = temp.path();
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
    Ok(summary)
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
