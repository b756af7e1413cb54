//! The `cache` commands: a local cache over a remote (snapsync-cache).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use snapsync_cache::{CacheAgent, CacheOptions, Opened, PushProgress, Pushed};
use snapsync_store::ConnectOptions;

use crate::cli::{CacheCommand, CacheDirs, OutputArgs};
use crate::output::printable;
use crate::progress::{Label, Status, Ticker};

fn agent(dirs: &CacheDirs, options: CacheOptions, connect: &ConnectOptions) -> anyhow::Result<CacheAgent> {
    Ok(CacheAgent::connect(&dirs.remote, connect, &dirs.cache, options)?)
}

pub(crate) fn run(
    command: &CacheCommand,
    output: &OutputArgs,
    connect: &ConnectOptions,
) -> anyhow::Result<()> {
    let runtime = crate::snapshot::runtime()?;
    match command {
        CacheCommand::Open(args) => {
            let options = CacheOptions {
                max_age: if args.refresh {
                    Some(std::time::Duration::ZERO)
                } else {
                    args.max_age
                },
                online: args.online,
                offline_after: args.offline_after,
            };
            let agent = agent(&args.dirs, options, connect)?;
            let mut out = io::stdout().lock();
            for path in &args.paths {
                let (local, how) = runtime.block_on(agent.path(path))?;
                let what = match how {
                    Opened::Offline(why) => {
                        if !output.quiet {
                            eprintln!("warning: {}", printable(&format!("{path}: {why}")));
                        }
                        None
                    }
                    Opened::Cached => Some("cached"),
                    Opened::Revalidated => Some("cached, unchanged on the remote"),
                    Opened::Fetched => Some("fetched"),
                    Opened::LocalEdit => Some("changed in the cache, kept as it is"),
                };
                if let Some(what) = what
                    && output.verbose > 0
                {
                    eprintln!("{}: {what}", printable(path));
                }
                writeln!(out, "{}", local.display())?;
            }
            Ok(())
        }
        CacheCommand::Add(args) => {
            let agent = agent(&args.dirs, CacheOptions::default(), connect)?;
            let keys = args
                .paths
                .iter()
                .map(|path| agent.key_of(path))
                .collect::<Result<Vec<String>, _>>()?;
            agent.add_all(keys.iter().map(String::as_str))?;
            Ok(())
        }
        CacheCommand::Push(args) => {
            let agent = agent(&args.dirs, CacheOptions::default(), connect)?;
            let queued: Vec<u64> = agent
                .status()?
                .iter()
                .filter(|file| file.queued)
                .map(|file| file.size)
                .collect();
            let (files, bytes) = (queued.len() as u64, queued.iter().sum::<u64>());
            let progress = Arc::new(PushProgress::default());
            let seen = Arc::clone(&progress);
            let ticker = Ticker::start(output, Label::new("pushing", ("file", "files")), move || Status {
                items: Some((seen.files.load(Ordering::Relaxed), files)),
                bytes: seen.bytes.load(Ordering::Relaxed).min(bytes),
                bytes_total: bytes,
            });
            let pushed = runtime.block_on(agent.push_counting(args.force, Some(&progress)))?;
            drop(ticker);
            let (mut conflicts, mut failed) = (0, 0);
            let mut report = Vec::new();
            for (path, outcome) in &pushed {
                let (word, detail) = match outcome {
                    Pushed::Uploaded(bytes) => ("uploaded", bytes.to_string()),
                    Pushed::Conflict(e) => {
                        conflicts += 1;
                        eprintln!("conflict: {}", printable(&e.to_string()));
                        ("conflict", e.to_string())
                    }
                    Pushed::Failed(e) => {
                        failed += 1;
                        eprintln!("error: {}", printable(&format!("{path}: {e}")));
                        ("failed", e.to_string())
                    }
                };
                report.push(serde_json::json!({ "path": path, "outcome": word, "detail": detail }));
                if output.verbose > 0 && word == "uploaded" {
                    eprintln!("{}", printable(&format!("uploaded {path}")));
                }
            }
            if args.json {
                let mut out = io::stdout().lock();
                serde_json::to_writer(&mut out, &serde_json::json!({ "files": report }))?;
                writeln!(out)?;
            }
            if failed > 0 {
                anyhow::bail!(
                    "{} could not be pushed (listed above); they stay queued",
                    crate::progress::plural(failed, "queued file", "queued files")
                );
            }
            if conflicts > 0 {
                return Err(crate::ConflictsLeft {
                    message: format!(
                        "{} not pushed: the remote copy changed since it was fetched (listed above); they stay queued",
                        crate::progress::plural(conflicts, "file", "files")
                    ),
                    hint: "open the remote copy to merge by hand, or push --force to overwrite it",
                }
                .into());
            }
            Ok(())
        }
        CacheCommand::Status(args) => {
            let options = CacheOptions {
                max_age: args.max_age,
                ..CacheOptions::default()
            };
            let agent = agent(&args.dirs, options, connect)?;
            let files = agent.status()?;
            let mut out = io::stdout().lock();
            if args.json {
                let list: Vec<_> = files
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "path": f.path, "size": f.size, "queued": f.queued,
                            "stale": f.stale, "conflict": f.conflict,
                        })
                    })
                    .collect();
                serde_json::to_writer(&mut out, &serde_json::json!({ "files": list }))?;
                writeln!(out)?;
                return Ok(());
            }
            for f in files {
                let state = match (&f.conflict, f.queued, f.stale) {
                    (Some(_), _, _) => "conflict",
                    (None, true, _) => "queued",
                    (None, false, true) => "stale",
                    (None, false, false) => "cached",
                };
                writeln!(
                    out,
                    "{}",
                    printable(&format!("{state:<9} {:>10}  {}", f.size, f.path))
                )?;
            }
            Ok(())
        }
        CacheCommand::Evict(args) => {
            let agent = agent(&args.dirs, CacheOptions::default(), connect)?;
            let removed = agent.evict(args.max_size)?;
            if output.verbose > 0 {
                for path in &removed {
                    eprintln!("{}", printable(&format!("evicted {path}")));
                }
            }
            if !output.quiet {
                eprintln!(
                    "{} evicted",
                    crate::progress::plural(removed.len() as u64, "file", "files")
                );
            }
            Ok(())
        }
    }
}
