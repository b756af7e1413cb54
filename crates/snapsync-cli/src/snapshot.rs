//! The snapshot commands: stage, push, fetch, pull, checkout, copy, diff, verify, snapshots, size, gc.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::HumanBytes;
use snapsync_core::{Checksum, Manifest};
use snapsync_snapshot::{
    Change, GcOptions, MaterializeOptions, MaterializeReport, Problem, Progress, PushMark, PushReport,
    Repository, TransferOptions,
};
use snapsync_store::{ConnectOptions, LocalDurability, LocalStore, StoreUrl};

use crate::cli::{
    CacheArgs, CheckoutArgs, CopyArgs, DiffArgs, FetchArgs, GcArgs, JobsArgs, OutputArgs, PullArgs, PushArgs,
    SizeArgs, SnapshotsArgs, StageArgs, VerifyArgs,
};
use crate::manifest::{How, walk_dir};
use crate::progress::{Label, Status, Ticker, per_second};
use crate::say::count;
use crate::{QuietExit, UsageError, hinted};

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The fewest hex digits a short id may have (as git's).
const MIN_PREFIX: usize = 4;

/// Whether `text` can be a snapshot id or a short one: 4 to 64 hex digits.
fn looks_like_id(text: &str) -> bool {
    (MIN_PREFIX..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot `text` names in `repo`: a whole id as it is (the operation then says whether it is
/// there), or a unique prefix of at least 4 hex digits of one of the store's snapshots, as git takes
/// short commit ids. A prefix that matches none or several is an error that says so (naming the
/// candidates).
fn resolve_id(text: &str, repo: &Repository) -> anyhow::Result<Checksum> {
    if !looks_like_id(text) {
        bail!(UsageError(format!(
            "{text:?} is not a snapshot id (64 hex digits, or a unique prefix of at least {MIN_PREFIX})"
        )));
    }
    let prefix = text.to_ascii_lowercase();
    if let Ok(id) = prefix.parse::<Checksum>() {
        return Ok(id);
    }
    let snapshots = runtime()?.block_on(repo.snapshots())?;
    let matching: Vec<Checksum> = snapshots
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [id] => Ok(*id),
        [] => Err(hinted(
            format!("no snapshot in {} has an id starting with {prefix}", repo.url()),
            "`snapsync snapshots STORE` lists the snapshots a store has",
        )),
        many => {
            let mut ids: Vec<String> = many.iter().map(ToString::to_string).collect();
            ids.sort();
            Err(hinted(
                format!(
                    "the short id {prefix} is ambiguous in {}: {} start with it:\n  {}",
                    repo.url(),
                    count(many.len(), "snapshot", "snapshots"),
                    ids.join("\n  ")
                ),
                "give more digits of the id",
            ))
        }
    }
}

/// The cache directory: `--cache-dir`, else `$SNAPSYNC_CACHE_DIR`, else `$XDG_CACHE_HOME/snapsync`, else
/// `$HOME/.cache/snapsync`.
fn cache_dir(args: &CacheArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.cache_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("SNAPSYNC_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("snapsync"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("no cache directory: set --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/snapsync"))
}

fn cache(args: &CacheArgs) -> anyhow::Result<Repository> {
    let dir = cache_dir(args)?;
    Ok(Repository::new(Arc::new(LocalStore::batched(StoreUrl::local(
        &dir,
    )))))
}

/// A store for snapshots, reached as `connect` says: local directories write objects without one flush
/// each (the snapshot code flushes once before each manifest); every store retries transient failures.
pub(crate) fn store(url: &str, connect: &ConnectOptions) -> anyhow::Result<Repository> {
    let options = connect.clone().with_local_durability(LocalDurability::Batched);
    Ok(Repository::new(snapsync_store::open(
        &StoreUrl::parse(url)?,
        &options,
    )?))
}

fn jobs(args: &JobsArgs, repo: &Repository) -> usize {
    args.jobs.map_or_else(
        || repo.store().capabilities().default_jobs,
        std::num::NonZeroUsize::get,
    )
}

/// Runs a transfer with a progress display fed by its counters.
fn transferring<T>(
    output: &OutputArgs,
    label: Label,
    work: impl FnOnce(Arc<Progress>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let progress = Arc::new(Progress::default());
    let seen = Arc::clone(&progress);
    let _ticker = Ticker::start(output, label, move || {
        let counts = seen.counts();
        Status {
            items: Some((counts.items_done, counts.items_total)),
            bytes: counts.bytes_done,
            bytes_total: counts.bytes_total,
        }
    });
    work(progress)
}

const OBJECTS: (&str, &str) = ("object", "objects");
const FILES: (&str, &str) = ("file", "files");

/// Where this machine keeps the marks of pushes under way ([`PushMark`]): `.snapsync-runs` in the
/// cache folder.
fn runs_dir(cache: &CacheArgs) -> Option<PathBuf> {
    cache_dir(cache).ok().map(|dir| dir.join(".snapsync-runs"))
}

/// Runs `send`, a push or copy into `to`, under a mark of a push under way on this machine; once it
/// has succeeded, the temporary files that killed pushes to `to` from this machine left are removed.
/// Without a folder for the mark (no cache folder can be made) the push goes on unmarked.
fn marked(
    runs: Option<PathBuf>,
    to: &Repository,
    send: impl FnOnce() -> anyhow::Result<PushReport>,
) -> anyhow::Result<PushReport> {
    let mark = runs.and_then(|dir| {
        PushMark::start(&dir, to)
            .inspect_err(|e| log::debug!("no mark of this push in {}: {e}", dir.display()))
            .ok()
    });
    let report = send()?;
    if let Some(mark) = mark {
        let dead = mark.dead_pids();
        let removed = runtime()?.block_on(mark.finish(to));
        if !dead.is_empty() {
            log::debug!(
                "removed {} that killed pushes ({dead:?}) left in {}",
                count(removed, "temporary file", "temporary files"),
                to.url()
            );
        }
    }
    Ok(report)
}

/// Sends a walked directory's objects and manifest to `to`, with progress.
fn push_walked(
    output: &OutputArgs,
    label: Label,
    walked: &snapsync_core::Walk,
    to: &Repository,
    jobs: usize,
) -> anyhow::Result<PushReport> {
    transferring(output, label, |progress| {
        let options = TransferOptions {
            jobs,
            progress: Some(progress),
            cancel: crate::interrupt::token(),
        };
        Ok(runtime()?.block_on(snapsync_snapshot::push_walk(walked, to, &options))?)
    })
}

/// Copies a snapshot between stores (the cache is one), with progress.
fn copy_snapshot(
    output: &OutputArgs,
    label: Label,
    id: &Checksum,
    from: &Repository,
    to: &Repository,
    jobs: usize,
) -> anyhow::Result<PushReport> {
    transferring(output, label, |progress| {
        let options = TransferOptions {
            jobs,
            progress: Some(progress),
            cancel: crate::interrupt::token(),
        };
        Ok(runtime()?.block_on(snapsync_snapshot::copy(id, from, to, &options))?)
    })
}

fn print_id(id: &Checksum) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{id}")?;
    Ok(out.flush()?)
}

/// What a push, stage, fetch or copy did: a JSON summary, or a one-line summary on standard error
/// (unless `--quiet`) and, when `print`, the id on standard output.
fn report_push(
    command: &str,
    output: &OutputArgs,
    report: &PushReport,
    started: Instant,
    print: bool,
) -> anyhow::Result<()> {
    let elapsed = started.elapsed();
    if output.json {
        crate::say::summary(
            command,
            serde_json::json!({
                "id": report.id.to_string(),
                "objects_sent": report.objects_sent,
                "bytes_sent": report.bytes_sent,
                "objects_present": report.objects_present,
                "seconds": elapsed.as_secs_f64(),
            }),
        )?;
    } else {
        if !output.quiet {
            crate::say::note(&format!(
                "sent {} ({}), {} already there, in {} ({}/s)",
                count(report.objects_sent, OBJECTS.0, OBJECTS.1),
                HumanBytes(report.bytes_sent),
                report.objects_present,
                seconds(elapsed),
                HumanBytes(per_second(report.bytes_sent, elapsed))
            ));
        }
        if print {
            print_id(&report.id)?;
        }
    }
    Ok(())
}

/// What a pull or checkout did: a JSON summary, or a one-line summary on standard error unless `--quiet`.
fn report_materialize(
    command: &str,
    id: &Checksum,
    output: &OutputArgs,
    report: &MaterializeReport,
    started: Instant,
) -> anyhow::Result<()> {
    if output.json {
        crate::say::summary(
            command,
            serde_json::json!({
                "id": id.to_string(),
                "files_written": report.files_written,
                "bytes_written": report.bytes_written,
                "files_unchanged": report.files_unchanged,
                "removed": report.removed,
                "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
    } else if !output.quiet {
        let removed = if report.removed > 0 {
            format!(", {} removed", report.removed)
        } else {
            String::new()
        };
        crate::say::note(&format!(
            "wrote {} ({}), {} already right{removed}, in {}",
            count(report.files_written, FILES.0, FILES.1),
            HumanBytes(report.bytes_written),
            report.files_unchanged,
            seconds(started.elapsed())
        ));
    }
    Ok(())
}

/// `0.42s`, `12.3s`.
fn seconds(elapsed: std::time::Duration) -> String {
    let millis = elapsed.as_millis();
    if millis < 10_000 {
        format!("{}.{:02}s", millis / 1000, millis % 1000 / 10)
    } else {
        format!("{}.{}s", millis / 1000, millis % 1000 / 100)
    }
}

pub(crate) fn stage(args: &StageArgs, output: &OutputArgs) -> anyhow::Result<()> {
    let walked = walk_dir(
        &args.dir,
        &args.filter,
        How {
            record_sources: true,
            ..How::default()
        },
        output,
    )?;
    let cache = cache(&args.cache)?;
    let jobs = jobs(&args.jobs, &cache);
    let started = Instant::now();
    let report = marked(runs_dir(&args.cache), &cache, || {
        push_walked(output, Label::new("staging", OBJECTS), &walked, &cache, jobs)
    })?;
    report_push("stage", output, &report, started, true)
}

pub(crate) fn push(args: &PushArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    let jobs = jobs(&args.jobs, &store);
    let started = Instant::now();
    let report = match (&args.dir, &args.id) {
        (Some(dir), _) => {
            let walked = walk_dir(
                dir,
                &args.filter,
                How {
                    record_sources: true,
                    ..How::default()
                },
                output,
            )?;
            marked(runs_dir(&args.cache), &store, || {
                push_walked(output, Label::new("pushing", OBJECTS), &walked, &store, jobs)
            })?
        }
        (None, Some(id)) => {
            let cache = cache(&args.cache)?;
            let id = resolve_id(id, &cache)?;
            marked(runs_dir(&args.cache), &store, || {
                copy_snapshot(output, Label::new("pushing", OBJECTS), &id, &cache, &store, jobs)
            })?
        }
        (None, None) => bail!(UsageError("push needs a directory or --id".into())),
    };
    report_push("push", output, &report, started, true)
}

pub(crate) fn fetch(args: &FetchArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let (store, cache) = (store(&args.store, connect)?, cache(&args.cache)?);
    let id = resolve_id(&args.id, &store)?;
    let jobs = jobs(&args.jobs, &store);
    let started = Instant::now();
    let report = marked(runs_dir(&args.cache), &cache, || {
        copy_snapshot(output, Label::new("fetching", OBJECTS), &id, &store, &cache, jobs)
    })?;
    report_push("fetch", output, &report, started, false)
}

pub(crate) fn pull(args: &PullArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    let id = resolve_id(&args.id, &store)?;
    // Objects already in the cache are read from there; the cache is not filled by a pull.
    let cache = cache_dir(&args.cache)
        .ok()
        .filter(|dir| dir.is_dir())
        .map(|_| cache(&args.cache))
        .transpose()?;
    let jobs = jobs(&args.jobs, &store);
    let started = Instant::now();
    let report = transferring(output, Label::new("pulling", FILES), |progress| {
        let options = MaterializeOptions {
            delete: args.delete,
            jobs,
            progress: Some(progress),
            cancel: crate::interrupt::token(),
        };
        Ok(runtime()?.block_on(snapsync_snapshot::pull(
            &id,
            &store,
            cache.as_ref(),
            &args.dir,
            &options,
        ))?)
    })?;
    report_materialize("pull", &id, output, &report, started)
}

pub(crate) fn checkout(args: &CheckoutArgs, output: &OutputArgs) -> anyhow::Result<()> {
    let cache = cache(&args.cache)?;
    let id = resolve_id(&args.id, &cache)?;
    let jobs = jobs(&args.jobs, &cache);
    let started = Instant::now();
    let report = transferring(output, Label::new("checking out", FILES), |progress| {
        let options = MaterializeOptions {
            delete: args.delete,
            jobs,
            progress: Some(progress),
            cancel: crate::interrupt::token(),
        };
        Ok(runtime()?.block_on(snapsync_snapshot::checkout(&id, &cache, &args.dir, &options))?)
    })?;
    report_materialize("checkout", &id, output, &report, started)
}

pub(crate) fn copy(args: &CopyArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let (from, to) = (store(&args.from, connect)?, store(&args.to, connect)?);
    let id = resolve_id(&args.id, &from)?;
    let jobs = jobs(&args.jobs, &to);
    let started = Instant::now();
    let report = marked(runs_dir(&CacheArgs::default()), &to, || {
        copy_snapshot(output, Label::new("copying", OBJECTS), &id, &from, &to, jobs)
    })?;
    report_push("copy", output, &report, started, false)
}

/// A directory's manifest, or a snapshot's from `--store` or the cache.
fn side(
    text: &str,
    args: &DiffArgs,
    output: &OutputArgs,
    connect: &ConnectOptions,
) -> anyhow::Result<Manifest> {
    if looks_like_id(text) && !Path::new(text).exists() {
        let repo = match &args.store {
            Some(url) => store(url, connect)?,
            None => cache(&args.cache)?,
        };
        let id = resolve_id(text, &repo)?;
        return Ok(runtime()?.block_on(repo.manifest(&id))?);
    }
    Ok(walk_dir(Path::new(text), &args.filter, How::default(), output)?.manifest)
}

pub(crate) fn diff(args: &DiffArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let (a, b) = (
        side(&args.a, args, output, connect)?,
        side(&args.b, args, output, connect)?,
    );
    let (mut added, mut removed, mut modified) = (0u64, 0u64, 0u64);
    let mut out = io::BufWriter::new(anstream::stdout().lock());
    for change in snapsync_snapshot::diff(&a, &b) {
        let (word, letter, style, path) = match &change {
            Change::Added(entry) => {
                added += 1;
                (
                    "added",
                    'A',
                    anstyle::AnsiColor::Green.on_default(),
                    entry.rendered_path(),
                )
            }
            Change::Removed(entry) => {
                removed += 1;
                (
                    "removed",
                    'D',
                    anstyle::AnsiColor::Red.on_default(),
                    entry.rendered_path(),
                )
            }
            Change::Modified { after, .. } => {
                modified += 1;
                (
                    "modified",
                    'M',
                    anstyle::AnsiColor::Yellow.on_default(),
                    after.rendered_path(),
                )
            }
        };
        if output.json {
            crate::say::event("change", serde_json::json!({ "change": word, "path": path }))?;
        } else {
            writeln!(out, "{style}{letter}{style:#} {path}")?;
        }
    }
    out.flush()?;
    drop(out);
    if output.json {
        crate::say::summary(
            "diff",
            serde_json::json!({ "added": added, "removed": removed, "modified": modified }),
        )?;
    }
    // As diff(1): 1 when the two differ, 0 when they do not (and 2 for trouble, here any error).
    if added + removed + modified == 0 {
        Ok(())
    } else {
        Err(QuietExit(1).into())
    }
}

pub(crate) fn verify(args: &VerifyArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    let id = resolve_id(&args.id, &store)?;
    let jobs = jobs(&args.jobs, &store);
    let report = transferring(output, Label::new("verifying", OBJECTS), |progress| {
        Ok(runtime()?.block_on(snapsync_snapshot::verify(&id, &store, jobs, Some(&progress)))?)
    })?;
    let mut out = io::stdout().lock();
    for problem in &report.problems {
        match problem {
            Problem::Missing { checksum, path } => {
                if output.json {
                    crate::say::event(
                        "problem",
                        serde_json::json!({ "problem": "missing", "checksum": checksum.to_string(), "path": path }),
                    )?;
                } else {
                    writeln!(out, "missing {checksum} {path}")?;
                }
            }
            Problem::Corrupt {
                checksum,
                path,
                actual,
            } => {
                if output.json {
                    crate::say::event(
                        "problem",
                        serde_json::json!({
                            "problem": "corrupt", "checksum": checksum.to_string(), "path": path,
                            "actual": actual.to_string(),
                        }),
                    )?;
                } else {
                    writeln!(out, "corrupt {checksum} {path} (its content hashes to {actual})")?;
                }
            }
        }
    }
    out.flush()?;
    drop(out);
    let corrupt = report.corrupt().count();
    let mut removed_count = 0;
    if args.remove_corrupt && corrupt > 0 {
        let removed = runtime()?.block_on(snapsync_snapshot::remove_corrupt(&store, &report))?;
        removed_count = removed.removed.len();
        if !output.quiet {
            eprintln!(
                "removed {}",
                count(removed.removed.len(), "corrupt object", "corrupt objects")
            );
            if !removed.kept.is_empty() {
                eprintln!(
                    "kept {} whole (or gone) by now",
                    count(removed.kept.len(), "object that is", "objects that are")
                );
            }
        }
    }
    if output.json {
        crate::say::summary(
            "verify",
            serde_json::json!({
                "id": id.to_string(), "objects": report.objects, "bytes": report.bytes,
                "missing": report.problems.len() - corrupt, "corrupt": corrupt, "removed": removed_count,
            }),
        )?;
    }
    if !report.problems.is_empty() {
        let hint = if corrupt == 0 || args.remove_corrupt {
            "push the snapshot again from a good copy: it sends the objects the store lacks"
        } else {
            "run verify again with --remove-corrupt, then push the snapshot again from a good copy \
             (a push skips objects the store already has, even corrupt ones)"
        };
        return Err(hinted(
            format!(
                "snapshot {id} in {}: {} of {} {} bad",
                store.url(),
                report.problems.len(),
                count(report.objects, "object", "objects"),
                if report.problems.len() == 1 { "is" } else { "are" }
            ),
            hint,
        ));
    }
    if !output.quiet && !output.json {
        let all = if report.objects == 1 { "its" } else { "all" };
        eprintln!(
            "snapshot {id}: {all} {} verified ({})",
            count(report.objects, "object", "objects"),
            HumanBytes(report.bytes)
        );
    }
    Ok(())
}

pub(crate) fn snapshots(
    args: &SnapshotsArgs,
    output: &OutputArgs,
    connect: &ConnectOptions,
) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    let list = runtime()?.block_on(store.snapshots())?;
    let mut out = io::stdout().lock();
    for (id, meta) in &list {
        let when = meta
            .modified
            .map_or_else(|| "-".to_owned(), crate::time::format_utc);
        if output.json {
            crate::say::event(
                "snapshot",
                serde_json::json!({
                    "id": id.to_string(),
                    "modified": meta.modified.map(crate::time::format_utc),
                    "size": meta.size,
                }),
            )?;
        } else {
            writeln!(out, "{id}  {when}")?;
        }
    }
    out.flush()?;
    drop(out);
    if output.json {
        crate::say::summary("snapshots", serde_json::json!({ "snapshots": list.len() }))?;
    }
    Ok(())
}

pub(crate) fn size(args: &SizeArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    let runtime = runtime()?;
    let mut out = io::stdout().lock();
    if let Some(id) = &args.id {
        let id = resolve_id(id, &store)?;
        let report = runtime.block_on(snapsync_snapshot::size(&id, &store))?;
        if output.json {
            drop(out);
            return Ok(crate::say::summary(
                "size",
                serde_json::json!({
                    "id": id.to_string(), "files": report.files, "directories": report.directories,
                    "bytes": report.bytes, "objects": report.objects, "object_bytes": report.object_bytes,
                }),
            )?);
        }
        writeln!(
            out,
            "{}, {}, {} ({}); {}, {} in the store",
            count(report.files, "file", "files"),
            count(report.directories, "directory", "directories"),
            HumanBytes(report.bytes),
            count(report.bytes, "byte", "bytes"),
            count(report.objects, "distinct object", "distinct objects"),
            HumanBytes(report.object_bytes)
        )?;
    } else {
        let snapshots = runtime.block_on(store.snapshots())?.len();
        let objects = runtime.block_on(store.objects())?;
        let bytes: u64 = objects.values().map(|m| m.size).sum();
        if output.json {
            drop(out);
            return Ok(crate::say::summary(
                "size",
                serde_json::json!({ "snapshots": snapshots, "objects": objects.len(), "bytes": bytes }),
            )?);
        }
        writeln!(
            out,
            "{}, {}, {} ({})",
            count(snapshots, "snapshot", "snapshots"),
            count(objects.len(), "object", "objects"),
            HumanBytes(bytes),
            count(bytes, "byte", "bytes")
        )?;
    }
    Ok(out.flush()?)
}

pub(crate) fn gc(args: &GcArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let store = store(&args.store, connect)?;
    // Reading every manifest, then deleting: counted as snapshots read, then objects deleted.
    let report = transferring(output, Label::new("collecting", ("item", "items")), |progress| {
        let options = GcOptions {
            dry_run: args.dry_run,
            grace: args.grace,
            jobs: jobs(&args.jobs, &store),
            progress: Some(progress),
        };
        Ok(runtime()?.block_on(snapsync_snapshot::gc(&store, options))?)
    })?;
    let bytes: u64 = report.deleted.iter().map(|(_, size)| size).sum();
    if output.json {
        for (sum, size) in &report.deleted {
            crate::say::event(
                "object",
                serde_json::json!({
                    "checksum": sum.to_string(), "size": size,
                    "action": if args.dry_run { "would delete" } else { "deleted" },
                }),
            )?;
        }
        return Ok(crate::say::summary(
            "gc",
            serde_json::json!({
                "dry_run": args.dry_run, "snapshots": report.snapshots, "objects": report.objects,
                "referenced": report.referenced, "kept_recent": report.kept_recent,
                "deleted": report.deleted.len(), "deleted_bytes": bytes,
            }),
        )?);
    }
    let mut out = io::stdout().lock();
    if args.dry_run || output.verbose > 0 {
        for (sum, size) in &report.deleted {
            writeln!(
                out,
                "{} {sum} ({})",
                if args.dry_run { "would delete" } else { "deleted" },
                HumanBytes(*size)
            )?;
        }
    }
    writeln!(
        out,
        "{}; {}: {} referenced, {} unreferenced but younger than {} (kept); {} {} ({})",
        count(report.snapshots, "snapshot", "snapshots"),
        count(report.objects, "object", "objects"),
        report.referenced,
        report.kept_recent,
        crate::time::format_age(args.grace),
        report.deleted.len(),
        if args.dry_run {
            "would be deleted"
        } else {
            "deleted"
        },
        HumanBytes(bytes)
    )?;
    Ok(out.flush()?)
}
