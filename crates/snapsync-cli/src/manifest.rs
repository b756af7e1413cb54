//! The snapshot commands: `manifest` and `id`.

use std::io::{self, BufWriter, Read, Write};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::HumanBytes;
use snapsync_core::{Exclude, MacroContext, Manifest, Progress, Walk, WalkOptions};

use crate::UsageError;
use crate::cli::{OutputArgs, WalkArgs, WalkFlags};
use crate::progress::{Label, Status, Ticker, per_second};
use crate::say::count;

/// Warnings printed one by one before the rest are summed up (all of them with `-v`).
const WARNINGS_SHOWN: usize = 20;

pub(crate) fn manifest(args: &WalkArgs, output: &OutputArgs) -> anyhow::Result<()> {
    if args.dir == Path::new("-") {
        return Err(
            UsageError("`manifest` needs a directory; `-` is only for `snapsync id -`".into()).into(),
        );
    }
    let walked = walk(args, output)?;
    if output.json {
        let manifest = &walked.manifest;
        for entry in manifest.entries() {
            crate::say::event(
                "entry",
                serde_json::json!({
                    "kind": if entry.is_dir() { "directory" } else { "file" },
                    "mode": format!("{:o}", entry.mode()),
                    "checksum": entry.checksum().to_string(),
                    "size": entry.size(),
                    "path": entry.rendered_path(),
                }),
            )?;
        }
        let files = manifest.entries().iter().filter(|e| !e.is_dir()).count();
        return Ok(crate::say::summary(
            "manifest",
            serde_json::json!({
                "id": manifest.id().to_string(),
                "entries": manifest.len(),
                "files": files,
                "bytes": manifest.root().map_or(0, snapsync_core::Entry::size),
            }),
        )?);
    }
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    walked.manifest.write_to(&mut out)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

pub(crate) fn id(args: &WalkArgs, output: &OutputArgs) -> anyhow::Result<()> {
    let id = if args.dir == Path::new("-") {
        if !args.filter.exclude.is_empty()
            || !args.filter.exclude_regex.is_empty()
            || args.filter.no_follow
            || args.absolute
        {
            return Err(UsageError(
                "--exclude, --exclude-regex, --no-follow and --absolute apply to a directory, not to `-`"
                    .into(),
            )
            .into());
        }
        let mut text = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut text)
            .context("cannot read the manifest from standard input")?;
        let manifest = Manifest::parse(&text).context("standard input is not a valid manifest")?;
        if manifest.is_empty() {
            // As snapdir's `id` (b3sum of its input): the id of the empty manifest. Said, in case the
            // input was meant to come from somewhere.
            log::warn!("standard input holds no manifest entries: the id of the empty manifest");
        }
        manifest.id()
    } else {
        walk(args, output)?.manifest.id()
    };
    if output.json {
        return Ok(crate::say::summary(
            "id",
            serde_json::json!({ "id": id.to_string() }),
        )?);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "{id}")?;
    out.flush()?;
    Ok(())
}

/// The walk of `manifest` and `id`.
fn walk(args: &WalkArgs, output: &OutputArgs) -> anyhow::Result<Walk> {
    let how = How {
        absolute: args.absolute,
        threads: args.jobs,
        record_sources: false,
    };
    walk_dir(&args.dir, &args.filter, how, output)
}

/// How a command wants its walk.
#[derive(Clone, Copy, Default)]
pub(crate) struct How {
    pub(crate) absolute: bool,
    pub(crate) threads: Option<NonZeroUsize>,
    pub(crate) record_sources: bool,
}

/// Walks `dir` with progress on standard error, then prints warnings (and timing with `-v`).
pub(crate) fn walk_dir(
    dir: &Path,
    filter: &WalkFlags,
    how: How,
    output: &OutputArgs,
) -> anyhow::Result<Walk> {
    let exclude = Exclude::new(&filter.exclude, &filter.exclude_regex, &macro_context())?;
    let counters = Arc::new(Progress::default());
    let options = WalkOptions {
        follow_symlinks: !filter.no_follow,
        absolute: how.absolute,
        exclude,
        threads: how.threads,
        progress: Some(Arc::clone(&counters)),
        record_sources: how.record_sources,
        cancel: crate::interrupt::token(),
    };
    let started = Instant::now();
    let walked = {
        let seen = Arc::clone(&counters);
        let _progress = Ticker::start(output, Label::new("hashing", ("file", "files")), move || Status {
            items: Some((seen.files(), 0)),
            bytes: seen.bytes(),
            bytes_total: 0,
        });
        snapsync_core::walk(dir, &options)?
    };
    let shown = if output.verbose > 0 {
        walked.warnings.len()
    } else {
        WARNINGS_SHOWN
    };
    for warning in walked.warnings.iter().take(shown) {
        log::warn!("{warning}");
    }
    if walked.warnings.len() > shown {
        log::warn!(
            "{} more entries skipped (-v lists them all)",
            walked.warnings.len() - shown
        );
    }
    let elapsed = started.elapsed();
    log::info!(
        "walked {}, hashed {} ({}) in {:.2?} ({}/s)",
        count(walked.manifest.len(), "entry", "entries"),
        count(counters.files(), "file", "files"),
        HumanBytes(counters.bytes()),
        elapsed,
        HumanBytes(per_second(counters.bytes(), elapsed))
    );
    Ok(walked)
}

/// Values for snapdir's `%system%` macro: the home cache and snapsync's cache directory.
fn macro_context() -> MacroContext {
    let home = std::env::var("HOME").unwrap_or_default();
    let home_cache = format!("{}/.cache/", home.trim_end_matches('/'));
    let cache_root = std::env::var("XDG_CACHE_HOME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{}/.cache", home.trim_end_matches('/')));
    MacroContext {
        home_cache,
        cache_dir: format!("{}/snapsync", cache_root.trim_end_matches('/')),
    }
}
