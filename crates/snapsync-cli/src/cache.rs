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
                ..CacheOptions::default()
            };
            let agent = agent(&args.dirs, options, connect)?;
            let mut out = io::stdout().lock();
            // A fetch on a miss can take a while: the files done and to do, on a terminal.
            let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let total = args.paths.len() as u64;
            let seen = Arc::clone(&opened);
            let ticker = Ticker::start(output, Label::new("opening", ("file", "files")), move || Status {
                items: Some((seen.load(Ordering::Relaxed), total)),
                ..Status::default()
            });
            for path in &args.paths {
                let (local, how) = runtime.block_on(agent.path(path))?;
                opened.fetch_add(1, Ordering::Relaxed);
                let (outcome, what) = match &how {
                    Opened::Offline(why) => {
                        log::warn!("{path}: {why}");
                        ("offline", None)
                    }
                    Opened::Cached => ("cached", Some("cached")),
                    Opened::Revalidated => ("revalidated", Some("cached, unchanged on the remote")),
                    Opened::Fetched => ("fetched", Some("fetched")),
                    Opened::LocalEdit => ("edited", Some("changed in the cache, kept as it is")),
                };
                if let Some(what) = what {
                    log::info!("{path}: {what}");
                }
                if output.json {
                    let warning = match &how {
                        Opened::Offline(why) => Some(why.clone()),
                        _ => None,
                    };
                    crate::say::event(
                        "file",
                        serde_json::json!({
                            "path": path, "local": local, "outcome": outcome, "warning": warning,
                        }),
                    )?;
                } else {
                    crate::progress::suspended(|| writeln!(out, "{}", local.display()))?;
                }
            }
            drop(ticker);
            if output.json {
                crate::say::summary("cache open", serde_json::json!({ "files": args.paths.len() }))?;
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
            for key in &keys {
                log::info!("queued {key}");
                if output.json {
                    crate::say::event("file", serde_json::json!({ "path": key, "outcome": "queued" }))?;
                }
            }
            if output.json {
                crate::say::summary("cache add", serde_json::json!({ "queued": keys.len() }))?;
            }
            Ok(())
        }
        CacheCommand::Push(args) => {
            let options = CacheOptions {
                cancel: crate::interrupt::token(),
                ..CacheOptions::default()
            };
            let agent = agent(&args.dirs, options, connect)?;
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
            let (mut uploaded, mut conflicts, mut failed) = (0, 0, 0);
            for (path, outcome) in &pushed {
                let (word, bytes, error) = match outcome {
                    Pushed::Uploaded(bytes) => {
                        uploaded += 1;
                        log::info!("uploaded {path}");
                        ("uploaded", Some(*bytes), None)
                    }
                    Pushed::Conflict(e) => {
                        conflicts += 1;
                        crate::say::stderr_line(crate::say::CONFLICT, "conflict: ", &e.to_string());
                        ("conflict", None, Some(e.to_string()))
                    }
                    Pushed::Failed(e) => {
                        failed += 1;
                        crate::say::stderr_line(crate::say::ERROR, "error: ", &format!("{path}: {e}"));
                        ("failed", None, Some(e.to_string()))
                    }
                };
                if output.json {
                    crate::say::event(
                        "file",
                        serde_json::json!({ "path": path, "outcome": word, "bytes": bytes, "error": error }),
                    )?;
                }
            }
            if output.json {
                crate::say::summary(
                    "cache push",
                    serde_json::json!({ "uploaded": uploaded, "conflicts": conflicts, "failed": failed }),
                )?;
            }
            if failed > 0 {
                anyhow::bail!(
                    "{} could not be pushed (listed above); they stay queued",
                    crate::say::count(failed, "queued file", "queued files")
                );
            }
            if conflicts > 0 {
                return Err(crate::ConflictsLeft {
                    message: format!(
                        "{} not pushed: the remote copy changed since it was fetched (listed above); they stay queued",
                        crate::say::count(conflicts, "file", "files")
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
            if output.json {
                for f in &files {
                    crate::say::event(
                        "file",
                        serde_json::json!({
                            "path": f.path, "size": f.size, "queued": f.queued,
                            "stale": f.stale, "conflict": f.conflict,
                        }),
                    )?;
                }
                crate::say::summary("cache status", serde_json::json!({ "files": files.len() }))?;
                return Ok(());
            }
            let mut out = io::stdout().lock();
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
            for path in &removed {
                log::info!("evicted {path}");
                if output.json {
                    crate::say::event("file", serde_json::json!({ "path": path, "outcome": "evicted" }))?;
                }
            }
            if output.json {
                crate::say::summary("cache evict", serde_json::json!({ "evicted": removed.len() }))?;
            } else if !output.quiet {
                eprintln!("{} evicted", crate::say::count(removed.len(), "file", "files"));
            }
            Ok(())
        }
    }
}
