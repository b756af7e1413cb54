//! The `pkg` commands: Python distributions between package indexes (snapsync-pkg).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use futures::StreamExt;
use snapsync_pkg::{
    Action, ClientOptions, Destination, DistFile, DistFilename, Index, Location, MirrorOptions, Outcome,
    Selector,
};
use snapsync_store::ConnectOptions;

use crate::ConflictsLeft;
use crate::UsageError;
use crate::cli::{OutputArgs, PkgCommand, PkgSelectArgs};
use crate::output::printable;
use crate::say::count;

/// Pages read and files moved at once when `--jobs` is not given: 4, as small index servers take
/// only a few connections at once (pypiserver's default server queues 5 and speaks HTTP/1.0, so 8 at
/// once had the kernel drop handshakes, each retried after a second: 3.1 s against 0.3 s for 50 files
/// in `cargo xtask bench pkg`).
const DEFAULT_JOBS: usize = 4;

pub(crate) fn run(command: &PkgCommand, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let runtime = crate::snapshot::runtime()?;
    match command {
        PkgCommand::Mirror(args) => {
            let client = client(connect);
            let source = Index::open(&location(&args.from)?, &client)?;
            let destination = destination(&args.to, args.upload_url.as_deref(), &client)?;
            let selector = selector(&args.select)?;
            let jobs = jobs(args.jobs.jobs);
            let plan = runtime.block_on(snapsync_pkg::plan(&source, &destination, &selector, jobs))?;
            for project in &plan.missing {
                warn(&format!("{} has no project {project}", source.url()));
            }
            for skipped in &plan.skipped {
                log::info!("skipped {} ({:?})", skipped.filename, skipped.reason);
            }
            if args.dry_run {
                return print_plan(&plan, output.json);
            }
            let total: u64 = plan.uploads().filter_map(|item| item.file.size).sum();
            let sent = Arc::new(AtomicU64::new(0));
            let options = MirrorOptions {
                jobs,
                cancel: crate::interrupt::token(),
                ..MirrorOptions::default()
            };
            let summary =
                crate::progress::counting(output, "mirror", (total > 0).then_some(total), |done| {
                    let report = |outcome: &Outcome| {
                        if let Ok(bytes) = &outcome.result {
                            done.fetch_add(*bytes, Ordering::Relaxed);
                            sent.fetch_add(*bytes, Ordering::Relaxed);
                        }
                        report_outcome(output, outcome);
                    };
                    runtime.block_on(snapsync_pkg::execute(
                        &plan,
                        &source,
                        &destination,
                        &options,
                        &report,
                    ))
                })?;
            finish(
                output,
                &Totals {
                    verb: "mirrored",
                    done: summary.uploaded().count(),
                    bytes: sent.load(Ordering::Relaxed),
                    present: summary.present,
                    failed: summary.failed().collect(),
                    missing: plan.missing.len(),
                },
            )
        }
        PkgCommand::List(args) => {
            let client = client(connect);
            let index = Index::open(&location(&args.url)?, &client)?;
            let selector = selector(&args.select)?;
            let (chosen, missing) = runtime.block_on(select(&index, &selector, DEFAULT_JOBS))?;
            let mut out = io::stdout().lock();
            for (project, file) in &chosen {
                let version = DistFilename::parse(&file.filename, Some(project))
                    .map_or_else(|_| "?".to_owned(), |d| d.version);
                if output.json {
                    crate::say::event(
                        "file",
                        serde_json::json!({
                            "project": project,
                            "version": version,
                            "filename": file.filename,
                            "sha256": file.sha256,
                            "requires_python": file.requires_python,
                            "yanked": file.yanked,
                            "size": file.size,
                        }),
                    )?;
                } else {
                    // Tab-separated; each field printable (a hostile name cannot add fields or lines).
                    let yanked = file
                        .yanked
                        .as_ref()
                        .map_or("-".to_owned(), |reason| format!("yanked: {reason}"));
                    let fields = [
                        project.as_str(),
                        &version,
                        &file.filename,
                        file.sha256.as_deref().unwrap_or("-"),
                        file.requires_python.as_deref().unwrap_or("-"),
                        &yanked,
                    ];
                    let fields: Vec<_> = fields.iter().map(|f| printable(f)).collect();
                    writeln!(out, "{}", fields.join("\t"))?;
                }
            }
            out.flush()?;
            if output.json {
                crate::say::summary(
                    "pkg list",
                    serde_json::json!({ "files": chosen.len(), "missing_projects": missing }),
                )?;
            }
            missing_projects(&index.url(), &missing)
        }
        PkgCommand::Download(args) => {
            let client = client(connect);
            let index = Index::open(&location(&args.url)?, &client)?;
            let selector = selector(&args.select)?;
            let jobs = jobs(args.jobs.jobs);
            let (chosen, missing) = runtime.block_on(select(&index, &selector, jobs))?;
            fs::create_dir_all(&args.dir).with_context(|| format!("cannot make {}", args.dir.display()))?;
            let total: u64 = chosen.iter().filter_map(|(_, f)| f.size).sum();
            let results: Vec<(String, anyhow::Result<u64>)> =
                crate::progress::counting(output, "download", (total > 0).then_some(total), |done| {
                    runtime.block_on(
                        futures::stream::iter(&chosen)
                            .map(|(_, file)| async {
                                let result = download(&index, file, &args.dir).await;
                                if let Ok(bytes) = &result {
                                    done.fetch_add(*bytes, Ordering::Relaxed);
                                }
                                (file.filename.clone(), result)
                            })
                            .buffer_unordered(jobs)
                            .collect(),
                    )
                });
            let mut failed = 0u64;
            let (mut fetched, mut bytes) = (0u64, 0);
            for (filename, result) in &results {
                match result {
                    Ok(size) => {
                        fetched += 1;
                        bytes += size;
                        log::info!("downloaded {filename}");
                    }
                    Err(e) => {
                        failed += 1;
                        crate::say::stderr_line(crate::say::ERROR, "error: ", &format!("{filename}: {e:#}"));
                    }
                }
                if output.json {
                    crate::say::event(
                        "file",
                        serde_json::json!({
                            "filename": filename,
                            "outcome": if result.is_ok() { "downloaded" } else { "failed" },
                            "bytes": result.as_ref().ok(),
                            "error": result.as_ref().err().map(|e| format!("{e:#}")),
                        }),
                    )?;
                }
            }
            if output.json {
                crate::say::summary(
                    "pkg download",
                    serde_json::json!({
                        "downloaded": fetched, "bytes": bytes, "failed": failed, "missing_projects": missing,
                    }),
                )?;
            } else if !output.quiet {
                eprintln!(
                    "downloaded {} ({bytes} bytes) into {}",
                    count(fetched, "file", "files"),
                    args.dir.display()
                );
            }
            if failed > 0 {
                anyhow::bail!(
                    "{} could not be downloaded (listed above)",
                    count(failed, "file", "files")
                );
            }
            missing_projects(&index.url(), &missing)
        }
        PkgCommand::Upload(args) => {
            let client = client(connect);
            let destination = destination(&args.url, args.upload_url.as_deref(), &client)?;
            let sent = AtomicU64::new(0);
            // The bar counts each file's bytes once it is accepted, against the files' total.
            let total: u64 = args
                .files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            let summary =
                crate::progress::counting(output, "upload", (total > 0).then_some(total), |done| {
                    let report = |outcome: &Outcome| {
                        if let Ok(bytes) = &outcome.result {
                            sent.fetch_add(*bytes, Ordering::Relaxed);
                            done.fetch_add(*bytes, Ordering::Relaxed);
                        }
                        report_outcome(output, outcome);
                    };
                    runtime.block_on(snapsync_pkg::upload_files(
                        &destination,
                        &args.files,
                        jobs(args.jobs.jobs),
                        &report,
                    ))
                })?;
            finish(
                output,
                &Totals {
                    verb: "uploaded",
                    done: summary.uploaded().count(),
                    bytes: sent.load(Ordering::Relaxed),
                    present: summary.present,
                    failed: summary.failed().collect(),
                    missing: 0,
                },
            )
        }
    }
}

fn jobs(given: Option<NonZeroUsize>) -> usize {
    given.map_or(DEFAULT_JOBS, NonZeroUsize::get)
}

fn warn(message: &str) {
    log::warn!("{message}");
}

/// The HTTP client's options: the store options, whose credentials (the netrc file unless
/// `--no-netrc`, the keyring, the terminal prompt) give the indexes' passwords too, and whose
/// `--timeout` bounds connecting to an index and each wait for it.
fn client(connect: &ConnectOptions) -> ClientOptions {
    let client = ClientOptions::default().with_connect_options(connect.clone());
    match connect.timeout() {
        Some(timeout) => client.with_timeouts(timeout, timeout),
        None => client,
    }
}

/// A source or destination as the user names it. A URL with a user and no password gets one from
/// the credentials (netrc, keyring, or asked, hidden, when standard input is a terminal) when the
/// index is opened; never echoed, never printed.
fn location(text: &str) -> anyhow::Result<Location> {
    Ok(Location::parse(text)?)
}

/// The destination `to` names; with `upload`, an HTTP index whose upload URL is elsewhere (PyPI's
/// `https://upload.pypi.org/legacy/`), which gets `to`'s credentials when it names none.
fn destination(to: &str, upload: Option<&str>, client: &ClientOptions) -> anyhow::Result<Destination> {
    let to = location(to)?;
    let Some(upload) = upload else {
        return Ok(Destination::open(&to, client)?);
    };
    let Location::Http(index) = &to else {
        return Err(UsageError("--upload-url is for an http(s) index destination".to_owned()).into());
    };
    let Location::Http(mut upload) = Location::parse(upload)? else {
        return Err(UsageError("--upload-url must be an http(s) URL".to_owned()).into());
    };
    if upload.username().is_empty() && upload.host_str() == index.host_str() {
        // Both succeed on an http(s) URL with a host.
        let _ = upload.set_username(index.username());
        let _ = upload.set_password(index.password());
    }
    Ok(Destination::http(index, &upload, client)?)
}

/// The selection the arguments describe: requirements on the command line and in `-r` files, or
/// every project with `--all`.
fn selector(args: &PkgSelectArgs) -> anyhow::Result<Selector> {
    let mut requirements = args.requirements.clone();
    for file in &args.files {
        requirements.extend(read_requirements(file, 0)?);
    }
    if requirements.is_empty() && !args.all {
        return Err(UsageError(
            "name what to take: REQUIREMENT arguments, -r FILE, or --all for every project".to_owned(),
        )
        .into());
    }
    let python = args
        .python_version
        .as_deref()
        .map(|v| {
            v.parse::<snapsync_pkg::Version>()
                .map_err(|e| UsageError(format!("--python-version {v:?}: {e}")))
        })
        .transpose()?;
    Ok(Selector::new(&requirements)?
        .with_pre(args.pre)
        .with_python(python))
}

/// The requirements in a pip requirements file: one per line, `#` comments, `\` continuations, nested
/// `-r FILE`; other pip options (`-i`, `--hash`…) are skipped.
fn read_requirements(path: &Path, depth: usize) -> anyhow::Result<Vec<String>> {
    if depth > 8 {
        anyhow::bail!("{}: requirement files nested more than 8 deep", path.display());
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut requirements = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        if let Some(start) = raw.strip_suffix('\\') {
            line.push_str(start);
            continue;
        }
        line.push_str(raw);
        let whole = std::mem::take(&mut line);
        // A comment starts at `#` at the start of a line or after white space (a URL's `#` is kept).
        let cut = whole
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || whole[..i].ends_with(char::is_whitespace)))
            .map_or(whole.len(), |(i, _)| i);
        let entry = whole[..cut].trim();
        if entry.is_empty() {
            continue;
        }
        let nested = entry
            .strip_prefix("-r")
            .or_else(|| entry.strip_prefix("--requirement"))
            .map(|rest| rest.trim_start_matches('=').trim());
        match nested {
            Some(file) if !file.is_empty() => {
                let file = path.parent().unwrap_or(Path::new(".")).join(file);
                requirements.extend(read_requirements(&file, depth + 1)?);
            }
            _ if entry.starts_with('-') => {}
            _ => requirements.push(entry.to_owned()),
        }
    }
    Ok(requirements)
}

/// The files the selector takes from `index`, by project, and the projects it names that `index`
/// does not have.
async fn select(
    index: &Index,
    selector: &Selector,
    jobs: usize,
) -> anyhow::Result<(Vec<(String, DistFile)>, Vec<String>)> {
    let projects = if let Some(projects) = selector.projects() {
        projects
    } else {
        let mut all: Vec<String> = index
            .projects()
            .await?
            .iter()
            .map(|p| snapsync_pkg::normalize(p))
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let pages: Vec<(String, Option<Vec<DistFile>>)> = futures::stream::iter(projects)
        .map(|project| async move {
            let files = index.files(&project).await?;
            Ok::<_, snapsync_pkg::Error>((project, files))
        })
        .buffered(jobs.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let (mut chosen, mut missing) = (Vec::new(), Vec::new());
    for (project, files) in pages {
        match files {
            Some(mut files) => {
                files.sort_by(|a, b| a.filename.cmp(&b.filename));
                chosen.extend(
                    selector
                        .select(&project, &files)
                        .0
                        .into_iter()
                        .map(|f| (project.clone(), f)),
                );
            }
            None => missing.push(project),
        }
    }
    Ok((chosen, missing))
}

/// Downloads one file into `dir` (its sha256 checked against the index's before it takes its name);
/// a file already there with the index's sha256 is kept. The bytes downloaded.
async fn download(index: &Index, file: &DistFile, dir: &Path) -> anyhow::Result<u64> {
    let target = dir.join(&file.filename);
    // The name comes from the index: only a distribution's file name (no separator, no leading dot)
    // may name a file in `dir`.
    DistFilename::parse(&file.filename, None)?;
    if let Some(expected) = &file.sha256
        && target.is_file()
    {
        let path = target.clone();
        let hashes = tokio::task::spawn_blocking(move || snapsync_pkg::hash_file(&path)).await??;
        if hashes.sha256 == *expected {
            return Ok(0);
        }
    }
    let download = index.download(file, dir).await?;
    let size = download.hashes.size;
    download.persist(&target)?;
    Ok(size)
}

/// One line per outcome (errors always, uploads with `-v`), or one JSON object with `--json`.
fn report_outcome(output: &OutputArgs, outcome: &Outcome) {
    let (word, bytes, error) = match &outcome.result {
        Ok(0) => ("present", 0, None),
        Ok(bytes) => ("uploaded", *bytes, None),
        Err(e) if is_conflict(e) => ("conflict", 0, Some(e)),
        Err(e) => ("failed", 0, Some(e)),
    };
    if output.json {
        let _ = crate::say::event(
            "file",
            serde_json::json!({
                "project": outcome.project,
                "filename": outcome.filename,
                "outcome": word,
                "bytes": bytes,
                "error": error.map(|e| snapsync_store::redact_text(&e.to_string())),
            }),
        );
    }
    match error {
        Some(e) => {
            let style = if word == "conflict" {
                crate::say::CONFLICT
            } else {
                crate::say::ERROR
            };
            crate::say::stderr_line(style, &format!("{word}: "), &format!("{}: {e}", outcome.filename));
        }
        None => log::info!("{word} {}", outcome.filename),
    }
}

fn is_conflict(error: &snapsync_pkg::Error) -> bool {
    matches!(
        error,
        snapsync_pkg::Error::Conflict { .. } | snapsync_pkg::Error::UploadExists { .. }
    )
}

/// What a mirror or an upload did, for [`finish`].
struct Totals<'a> {
    /// `mirrored` or `uploaded`: the summary's word (and JSON key) for the files sent.
    verb: &'static str,
    done: usize,
    bytes: u64,
    present: usize,
    failed: Vec<&'a Outcome>,
    /// Projects the source does not have.
    missing: usize,
}

/// The summary line (or JSON object), then the exit status: 4 when conflicts are all that failed, 1
/// for any other failure or a project the source does not have.
fn finish(output: &OutputArgs, totals: &Totals<'_>) -> anyhow::Result<()> {
    let Totals {
        verb,
        done,
        bytes,
        present,
        ref failed,
        missing,
    } = *totals;
    let conflicts = failed
        .iter()
        .filter(|o| o.result.as_ref().is_err_and(is_conflict))
        .count();
    let errors = failed.len() - conflicts;
    if output.json {
        crate::say::summary(
            if verb == "mirrored" {
                "pkg mirror"
            } else {
                "pkg upload"
            },
            serde_json::json!({
                verb: done, "bytes": bytes, "present": present, "conflicts": conflicts,
                "failed": errors, "missing_projects": missing,
            }),
        )?;
    } else if !output.quiet {
        eprintln!(
            "{verb} {} ({bytes} bytes); {present} already there; {}; {errors} failed",
            count(done, "file", "files"),
            count(conflicts, "conflict", "conflicts")
        );
    }
    if errors > 0 {
        anyhow::bail!(
            "{} failed (listed above); run again to retry them",
            count(errors, "file", "files")
        );
    }
    if missing > 0 {
        anyhow::bail!(
            "{} not found at the source (listed above)",
            count(missing, "project", "projects")
        );
    }
    if conflicts > 0 {
        return Err(ConflictsLeft {
            message: format!(
                "{} not uploaded: the destination has a different file of that name (listed above)",
                count(conflicts, "file", "files")
            ),
            hint: "indexes do not let a file be replaced: remove it at the destination first if the source's is the one to keep",
        }
        .into());
    }
    Ok(())
}

fn missing_projects(url: &str, missing: &[String]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!("{url} has no project {}", missing.join(", "))
}

/// `--dry-run`: what the mirror would do, a line per file (or a JSON object), nothing sent.
fn print_plan(plan: &snapsync_pkg::Plan, json: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let width = plan.items.iter().map(|i| i.project.len()).max().unwrap_or(0);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &plan.items {
        let word = match item.action {
            Action::Upload => "upload",
            Action::Present => "present",
            Action::Conflict { .. } => "conflict",
        };
        *counts.entry(word).or_default() += 1;
        if json {
            crate::say::event(
                "file",
                serde_json::json!({
                    "project": item.project, "filename": item.file.filename, "action": word,
                    "sha256": item.file.sha256, "size": item.file.size, "dry_run": true,
                }),
            )?;
        } else {
            writeln!(
                out,
                "{}",
                printable(&format!(
                    "{word:<8} {:<width$}  {}",
                    item.project, item.file.filename
                ))
            )?;
        }
    }
    drop(out);
    if json {
        crate::say::summary(
            "pkg mirror",
            serde_json::json!({ "dry_run": true, "actions": counts }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_files_take_comments_continuations_options_and_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("base.txt"), "six==1.16.0 # pinned\n").unwrap();
        fs::write(
            dir.path().join("req.txt"),
            "# a comment\n\ncelery>=5 \\\n  ,<6\n-i https://example/simple/\n--hash=sha256:abc\n-r base.txt\nattrs @ https://x/a.whl#sha256=1\n",
        )
        .unwrap();
        let got = read_requirements(&dir.path().join("req.txt"), 0).unwrap();
        assert_eq!(
            got,
            [
                "celery>=5   ,<6",
                "six==1.16.0",
                "attrs @ https://x/a.whl#sha256=1"
            ]
        );
    }
}
