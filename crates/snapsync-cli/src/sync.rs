//! The folder-sync commands: upload, download, sync.

use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::HumanBytes;
use snapsync_store::ConnectOptions;
use snapsync_sync::{Action, Conflict, DirAction, Event, Item, Mode, Options, Pair, Resolve, Summary};

use crate::cli::{OutputArgs, ResolveArg, SyncArgs};
use crate::output::printable;
use crate::progress::{Label, Status, Ticker};
use crate::say::count;

pub(crate) fn upload(args: &SyncArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    run(Mode::Upload, args, output, connect)
}

pub(crate) fn download(args: &SyncArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    run(Mode::Download, args, output, connect)
}

pub(crate) fn sync(args: &SyncArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    run(Mode::Sync, args, output, connect)
}

/// The library's options for `args`: the builder's refusals (contradictory options) are usage errors.
pub(crate) fn options(mode: Mode, args: &SyncArgs) -> anyhow::Result<Options> {
    let resolve = match args.resolve {
        ResolveArg::Skip | ResolveArg::Ask => Resolve::Skip,
        ResolveArg::Local => Resolve::Local,
        ResolveArg::Remote => Resolve::Remote,
        ResolveArg::New => Resolve::Newer,
        ResolveArg::Old => Resolve::Older,
    };
    Options::builder(mode)
        .delete(args.delete)
        .delete_unmatched(args.delete_unmatched)
        .force(args.force)
        .resolve(resolve)
        .matches(&args.matches)
        .excludes(&args.exclude)
        .checksum(args.checksum)
        .jobs(args.jobs)
        .dry_run(args.dry_run)
        .break_lock(args.break_lock)
        .lock_timeout(args.lock_timeout)
        .allow_mass_delete(args.allow_mass_delete)
        .create_folder(args.create_folder)
        .cancel(crate::interrupt::token())
        .build()
        .map_err(|e| match e {
            snapsync_sync::Error::InvalidOptions { reason } => crate::UsageError(reason).into(),
            other => anyhow::Error::from(other),
        })
}

fn run(mode: Mode, args: &SyncArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    let options = options(mode, args)?;
    let store = snapsync_sync::open_remote(&args.remote, &options, connect)?;
    let pair = Pair::new(args.local.clone(), store, options);
    let runtime = crate::snapshot::runtime()?;
    let mut prepared = runtime.block_on(pair.prepare())?;
    if let Some(reason) = prepared.mass_delete()
        && !args.allow_mass_delete
        && !args.dry_run
        && args.resolve == ResolveArg::Ask
        && io::stdin().is_terminal()
        && confirm(&format!("{reason}. Go ahead?"))
    {
        prepared.confirm_mass_delete();
    }

    let (files, bytes) = prepared.transfers();
    let (done_bytes, done_files) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (seen_bytes, seen_files) = (Arc::clone(&done_bytes), Arc::clone(&done_files));
    let ticker = (!args.dry_run).then(|| {
        let doing = match mode {
            Mode::Upload => "uploading",
            Mode::Download => "downloading",
            Mode::Sync => "syncing",
        };
        Ticker::start(output, Label::new(doing, ("file", "files")), move || Status {
            items: Some((seen_files.load(Ordering::Relaxed), files)),
            bytes: seen_bytes.load(Ordering::Relaxed),
            bytes_total: bytes,
        })
    });
    let ask_user = |item: &Item, conflict: Conflict| ask(item, conflict);
    let ask: Option<snapsync_sync::Ask<'_>> = (args.resolve == ResolveArg::Ask).then_some(&ask_user);
    let (verbose, dry_run, json) = (output.verbose > 0, args.dry_run, output.json);
    let report = |event: Event<'_>| match event {
        // Transfers report their bytes as they move, so a big file moves the bar while it goes.
        Event::Moved { bytes, .. } => {
            done_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Event::Done { item, bytes } => {
            if !matches!(item.action, Action::Upload | Action::Download) {
                done_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            if matches!(item.action, Action::Upload | Action::Download) {
                done_files.fetch_add(1, Ordering::Relaxed);
            }
            if item.action == Action::Nothing {
                return;
            }
            if json {
                let _ = crate::say::event(
                    "action",
                    serde_json::json!({
                        "action": action_word(item.action),
                        "path": item.path,
                        "bytes": bytes,
                        "resolved": item.resolved.map(|c| c.to_string()),
                        "dry_run": dry_run,
                    }),
                );
            } else if dry_run || verbose {
                // The plan is the result of a dry run: on standard output.
                plan_line(action_word(item.action), &describe(item));
            }
        }
        Event::Folder { path, action } => {
            let word = match action {
                DirAction::CreateLocal => "mkdir local",
                DirAction::CreateRemote => "mkdir remote",
                DirAction::RemoveLocal => "rmdir local",
                DirAction::RemoveRemote => "rmdir remote",
            };
            if json {
                let _ = crate::say::event(
                    "folder",
                    serde_json::json!({ "action": word, "path": path, "dry_run": dry_run }),
                );
            } else if dry_run || verbose {
                plan_line(word, &format!("{word:<13} {path}/"));
            }
        }
        Event::Failed { item, error } => {
            // With its causes: what the store met, and for a fault that outlasted the retries, the
            // operation and the attempts ("upload failed 5 times: connection reset").
            let mut text = format!("{}: {error}", item.path);
            let mut cause = std::error::Error::source(error);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            crate::say::stderr_line(crate::say::ERROR, "error: ", &text);
            if json {
                let _ = crate::say::event(
                    "failed",
                    serde_json::json!({ "path": item.path, "error": error.to_string() }),
                );
            }
        }
    };
    if args.resolve == ResolveArg::Ask && !io::stdin().is_terminal() {
        log::warn!("--resolve ask needs a terminal; conflicts are skipped");
    }
    let summary =
        runtime.block_on(pair.execute(prepared, ask.filter(|_| io::stdin().is_terminal()), &report))?;
    drop(ticker);
    print_summary(mode, &summary, output)?;
    if !summary.unknown.is_empty() {
        anyhow::bail!(
            "{} could not be read (listed above): {} and everything below {} left alone on both sides{}",
            count(summary.unknown.len(), "path", "paths"),
            if summary.unknown.len() == 1 {
                "it was"
            } else {
                "they were"
            },
            if summary.unknown.len() == 1 { "it" } else { "them" },
            if summary.failed.is_empty() {
                String::new()
            } else {
                format!(", and {} failed", count(summary.failed.len(), "file", "files"))
            }
        );
    }
    if !summary.failed.is_empty() {
        anyhow::bail!(
            "{} of the files could not be synced (listed above); the rest were",
            summary.failed.len()
        );
    }
    if !summary.conflicts.is_empty() {
        let n = summary.conflicts.len();
        return Err(crate::ConflictsLeft {
            message: format!(
                "{} left unresolved (listed above); both sides keep their version",
                count(n, "conflict", "conflicts")
            ),
            hint: "settle them with --resolve local|remote|new|old|ask, or edit one side and run again",
        }
        .into());
    }
    Ok(())
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Nothing => "equal",
        Action::Upload => "upload",
        Action::Download => "download",
        Action::DeleteLocal => "delete local",
        Action::DeleteRemote => "delete remote",
        Action::Conflict(_) => "conflict",
        Action::Compare(_) => "compare",
    }
}

fn describe(item: &Item) -> String {
    let mut line = format!("{:<13} {}", action_word(item.action), item.path);
    if let Some(conflict) = item.resolved {
        let _ = write!(line, "  (conflict: {conflict}; resolved)");
    }
    line
}

/// Asks a yes/no question on the terminal; no unless the answer is yes.
fn confirm(question: &str) -> bool {
    let mut err = io::stderr().lock();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
        return false;
    }
    matches!(answer.trim(), "y" | "yes")
}

/// Asks on the terminal how to settle one conflict.
fn ask(item: &Item, conflict: Conflict) -> Option<Action> {
    let local = snapsync_sync::resolve(conflict, Resolve::Local, None, None);
    let remote = snapsync_sync::resolve(conflict, Resolve::Remote, None, None);
    let mut err = io::stderr().lock();
    let stdin = io::stdin();
    loop {
        let _ = write!(
            err,
            "conflict: {} ({}). Keep [l]ocal ({}), [r]emote ({}), or [s]kip? ",
            item.path,
            conflict,
            local.map_or("-", action_word),
            remote.map_or("-", action_word),
        );
        let _ = err.flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).unwrap_or(0) == 0 {
            return None;
        }
        match answer.trim() {
            "l" | "local" => return local,
            "r" | "remote" => return remote,
            "s" | "skip" | "" => return None,
            _ => {}
        }
    }
}

/// One line of a plan on standard output: `line` with its action `word` coloured (on a terminal).
fn plan_line(word: &str, line: &str) {
    let style = match word {
        "upload" | "download" | "mkdir local" | "mkdir remote" => anstyle::AnsiColor::Green.on_default(),
        "delete local" | "delete remote" | "rmdir local" | "rmdir remote" => {
            anstyle::AnsiColor::Red.on_default()
        }
        "conflict" => crate::say::CONFLICT,
        _ => anstyle::Style::new(),
    };
    let line = printable(line);
    let (head, tail) = line.split_at(word.len().min(line.len()));
    let _ = writeln!(anstream::stdout().lock(), "{style}{head}{style:#}{tail}");
}

fn print_summary(mode: Mode, summary: &Summary, output: &OutputArgs) -> anyhow::Result<()> {
    for warning in &summary.warnings {
        log::warn!("{warning}");
    }
    for (path, why) in &summary.unknown {
        crate::say::stderr_line(
            crate::say::WARNING,
            "unknown: ",
            &format!("{path}: {why}; left alone"),
        );
    }
    for conflict in &summary.conflicts {
        crate::say::stderr_line(crate::say::CONFLICT, "conflict: ", &conflict.to_string());
    }
    if output.json {
        for (path, why) in &summary.unknown {
            crate::say::event("unknown", serde_json::json!({ "path": path, "error": why }))?;
        }
        for conflict in &summary.conflicts {
            crate::say::event(
                "conflict",
                serde_json::json!({ "path": conflict.path, "conflict": conflict.conflict.to_string() }),
            )?;
        }
        let command = match mode {
            Mode::Upload => "upload",
            Mode::Download => "download",
            Mode::Sync => "sync",
        };
        crate::say::summary(command, serde_json::to_value(summary)?)?;
    }
    if output.quiet {
        return Ok(());
    }
    let would = if summary.dry_run {
        "dry run, would have: "
    } else {
        ""
    };
    let count = crate::say::count;
    let mut line = format!(
        "{would}{} up ({}), {} down ({}), {} deleted here, {} deleted there, {} made, {} removed, {} left",
        summary.uploaded,
        HumanBytes(summary.uploaded_bytes),
        summary.downloaded,
        HumanBytes(summary.downloaded_bytes),
        summary.deleted_local,
        summary.deleted_remote,
        count(summary.dirs_created, "folder", "folders"),
        summary.dirs_removed,
        count(
            u64::try_from(summary.conflicts.len()).unwrap_or(u64::MAX),
            "conflict",
            "conflicts"
        ),
    );
    if summary.resolved > 0 {
        let _ = write!(line, " ({} resolved)", summary.resolved);
    }
    let _ = write!(
        line,
        ", {} failed in {:.1}s",
        summary.failed.len(),
        summary.seconds
    );
    let _ = writeln!(io::stderr().lock(), "{line}");
    Ok(())
}
