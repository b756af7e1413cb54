//! `snapsync scan REMOTE`: the remote's tree, and the clean-up of what runs left (a dead run's lock,
//! temporary files of interrupted uploads, the sync states kept for the remote). The rules are
//! snapsync-sync's (`inspect`, `lock::remove_stale`, `state::forget`); this prints.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::SystemTime;

use serde_json::{Value, json};
use snapsync_store::ConnectOptions;
use snapsync_sync::{EntryKind, Leftover, Mode, Options, RemoteEntry};

use crate::cli::{OutputArgs, ScanArgs};
use crate::output::printable;

/// Paths longer than this do not widen the path column (they push their line's other columns).
const MAX_PATH_COLUMN: usize = 60;

pub(crate) fn scan(args: &ScanArgs, output: &OutputArgs, connect: &ConnectOptions) -> anyhow::Result<()> {
    // The same filter a sync of this remote uses (its default excludes too).
    let options = Options::builder(Mode::Upload)
        .matches(&args.matches)
        .excludes(&args.exclude)
        .build()
        .map_err(|e| match e {
            snapsync_sync::Error::InvalidOptions { reason } => crate::UsageError(reason).into(),
            other => anyhow::Error::from(other),
        })?;
    let store = snapsync_sync::open_remote(&args.remote, &options, connect)?;
    let remote = store.url().to_string();
    let runtime = crate::snapshot::runtime()?;
    let out = Printer {
        json: output.json,
        dry_run: args.dry_run,
    };
    let mut counts = Counts::default();

    // The states are on this machine: forgotten before the remote is reached, so the state of a
    // remote that is gone can be forgotten too.
    if args.remove_state {
        let forgotten = snapsync_sync::forget(&snapsync_sync::default_root(), &remote, args.dry_run)?;
        for state in &forgotten.removed {
            out.state(state, None)?;
        }
        for state in &forgotten.in_use {
            out.state(state, Some("a run of this folder is under way"))?;
        }
        counts.states = forgotten.removed.len();
        counts.states_kept = forgotten.in_use.len();
    }

    // A recursive listing of a big remote takes a while: a spinner on a terminal meanwhile.
    let ticker = crate::progress::Ticker::start(
        output,
        crate::progress::Label::new("listing", ("entry", "entries")),
        crate::progress::Status::default,
    );
    let entries = runtime
        .block_on(snapsync_sync::list_remote(
            &*store,
            options.filter(),
            args.recursive,
        ))
        .map_err(|e| match e {
            snapsync_sync::Error::MissingRemote { .. } => crate::hinted(
                e.to_string(),
                "check the path (scan never creates it; a first upload does with --create-folder)",
            ),
            other => other.into(),
        })?;
    drop(ticker);
    out.entries(&entries)?;

    if args.remove_temp {
        let done = runtime.block_on(snapsync_sync::remove_leftovers(
            &*store,
            args.temp_age,
            args.dry_run,
        ))?;
        for leftover in &done.removed {
            out.temp(leftover, None)?;
        }
        for (leftover, why) in &done.kept {
            out.temp(leftover, Some(why))?;
        }
        counts.temps = done.removed.len();
        counts.temps_kept = done.kept.len();
    }

    let mut lock_error = None;
    if args.remove_locks {
        match runtime.block_on(snapsync_sync::remove_stale(
            &*store,
            args.lock_timeout,
            args.dry_run,
        )) {
            Ok(Some(lock)) => {
                out.lock(&lock)?;
                counts.locks = 1;
            }
            Ok(None) => {}
            // A live run's lock: said after the rest, as the command's error (exit status 1).
            Err(e @ snapsync_sync::Error::Locked { .. }) => {
                counts.locks_kept = 1;
                lock_error = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }

    out.summary(&remote, args, &entries, &counts, output)?;
    if let Some(e) = lock_error {
        return Err(crate::hinted(
            format!("{e}; the lock was not removed"),
            "wait for that run to finish; a killed run's lock is removed once it is stale (not renewed \
for --lock-timeout, or its process gone from this machine)",
        ));
    }
    if counts.states_kept > 0 {
        return Err(crate::hinted(
            format!(
                "{} sync state{} of {remote} kept: a run of {} is under way",
                counts.states_kept,
                if counts.states_kept == 1 { " was" } else { "s were" },
                if counts.states_kept == 1 {
                    "its folder"
                } else {
                    "their folders"
                }
            ),
            "run --remove-state again once the run has finished",
        ));
    }
    Ok(())
}

/// What was removed and kept, for the summary.
#[derive(Default)]
struct Counts {
    locks: usize,
    locks_kept: usize,
    temps: usize,
    temps_kept: usize,
    states: usize,
    states_kept: usize,
}

/// Prints entries and removals as aligned text or JSON lines on standard output.
struct Printer {
    json: bool,
    dry_run: bool,
}

/// A time as RFC 3339 in UTC, to the second.
fn rfc3339(time: Option<SystemTime>) -> Value {
    time.map_or(Value::Null, |t| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into()
    })
}

/// A line of text on standard output, control characters escaped.
fn text_line(text: &str) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{}", printable(text))
}

impl Printer {
    /// The word for a removal: done, or (dry run) planned.
    fn removed(&self) -> (&'static str, &'static str) {
        if self.dry_run {
            ("would_remove", "would remove")
        } else {
            ("removed", "removed")
        }
    }

    /// The word for a leftover: kept (with its reason), or removed (planned, in a dry run).
    fn outcome(&self, kept: Option<&str>) -> (&'static str, &'static str) {
        match kept {
            Some(_) => ("kept", "kept"),
            None => self.removed(),
        }
    }

    fn entries(&self, entries: &[RemoteEntry]) -> io::Result<()> {
        if self.json {
            for entry in entries {
                crate::say::event(
                    "entry",
                    json!({
                        "path": entry.path,
                        "kind": match entry.kind {
                            EntryKind::File => "file",
                            EntryKind::Dir => "dir",
                        },
                        "size": entry.size,
                        "modified": rfc3339(entry.modified),
                    }),
                )?;
            }
            return Ok(());
        }
        let shown = |entry: &RemoteEntry| {
            let path = printable(&entry.path).into_owned();
            if entry.kind == EntryKind::Dir {
                format!("{path}/")
            } else {
                path
            }
        };
        let width = entries
            .iter()
            .map(|e| shown(e).chars().count())
            .max()
            .unwrap_or(0)
            .min(MAX_PATH_COLUMN);
        let size_width = entries
            .iter()
            .map(|e| e.size.to_string().len())
            .max()
            .unwrap_or(1);
        let mut out = io::stdout().lock();
        for entry in entries {
            let size = match entry.kind {
                EntryKind::File => entry.size.to_string(),
                EntryKind::Dir => "-".to_owned(),
            };
            let time = entry
                .modified
                .map_or_else(|| "-".to_owned(), crate::time::format_utc);
            writeln!(out, "{:<width$}  {size:>size_width$}  {time}", shown(entry))?;
        }
        Ok(())
    }

    fn state(&self, state: &snapsync_sync::PairState, kept: Option<&str>) -> io::Result<()> {
        let (event, word) = self.outcome(kept);
        if self.json {
            return crate::say::event(
                event,
                json!({
                    "kind": "state",
                    "local": state.local.as_ref().map(|p| p.display().to_string()),
                    "state_dir": state.dir.display().to_string(),
                    "reason": kept,
                }),
            );
        }
        let folder = state.local.as_ref().map_or_else(
            || "a folder an earlier version did not record".to_owned(),
            |p| p.display().to_string(),
        );
        let why = kept.map_or_else(String::new, |why| format!(": {why}"));
        text_line(&format!(
            "{word} state of {folder} ({}){why}",
            state.dir.display()
        ))
    }

    fn temp(&self, leftover: &Leftover, kept: Option<&str>) -> io::Result<()> {
        let (event, word) = self.outcome(kept);
        if self.json {
            return crate::say::event(
                event,
                json!({
                    "kind": "temp",
                    "path": leftover.path,
                    "size": leftover.size,
                    "modified": rfc3339(leftover.modified),
                    "pid": leftover.pid,
                    "reason": kept,
                }),
            );
        }
        let why = kept.map_or_else(String::new, |why| format!(": {why}"));
        text_line(&format!(
            "{word} temp {} ({} bytes, process {}){why}",
            leftover.path, leftover.size, leftover.pid
        ))
    }

    fn lock(&self, lock: &snapsync_sync::RemovedLock) -> io::Result<()> {
        let (event, word) = self.removed();
        if self.json {
            return crate::say::event(
                event,
                json!({
                    "kind": "lock",
                    "location": lock.location,
                    "host": lock.holder.as_ref().map(|h| h.host.clone()),
                    "pid": lock.holder.as_ref().map(|h| h.pid),
                    "age_seconds": lock.age.as_secs(),
                    "reason": lock.reason,
                }),
            );
        }
        let holder = lock.holder.as_ref().map_or_else(
            || "an unreadable lock".to_owned(),
            |h| format!("host {}, process {}", h.host, h.pid),
        );
        text_line(&format!(
            "{word} lock {} ({holder}): {}",
            lock.location, lock.reason
        ))
    }

    fn summary(
        &self,
        remote: &str,
        args: &ScanArgs,
        entries: &[RemoteEntry],
        counts: &Counts,
        output: &OutputArgs,
    ) -> io::Result<()> {
        let files = entries.iter().filter(|e| e.kind == EntryKind::File).count();
        let dirs = entries.len() - files;
        let bytes: u64 = entries.iter().map(|e| e.size).sum();
        if self.json {
            return crate::say::summary(
                "scan",
                json!({
                    "remote": remote,
                    "recursive": args.recursive,
                    "files": files,
                    "dirs": dirs,
                    "bytes": bytes,
                    "dry_run": args.dry_run,
                    "removed": {"locks": counts.locks, "temps": counts.temps, "states": counts.states},
                    "kept": {"locks": counts.locks_kept, "temps": counts.temps_kept, "states": counts.states_kept},
                }),
            );
        }
        if output.quiet {
            return Ok(());
        }
        let size = if bytes < 1024 {
            crate::say::count(bytes, "byte", "bytes")
        } else {
            format!("{} ({bytes} bytes)", indicatif::HumanBytes(bytes))
        };
        let mut text = format!(
            "{}, {}, {size} in {remote}",
            crate::say::count(files, "file", "files"),
            crate::say::count(dirs, "folder", "folders"),
        );
        if !args.recursive {
            text.push_str(", top level only (--recursive lists all)");
        }
        let removals = [
            (args.remove_locks, counts.locks, "lock", "locks"),
            (
                args.remove_temp,
                counts.temps,
                "temporary file",
                "temporary files",
            ),
            (args.remove_state, counts.states, "sync state", "sync states"),
        ];
        for (asked, n, one, many) in removals {
            if asked {
                let word = if self.dry_run { "would remove" } else { "removed" };
                let _ = write!(text, "; {word} {}", crate::say::count(n, one, many));
            }
        }
        // The summary is said on standard error: standard output is the listing (and removals).
        crate::say::note(&text);
        Ok(())
    }
}
