//! The delta commands: `signature`, `delta`, `patch`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::HumanBytes;
use snapsync_core::Checksum;
use snapsync_delta::{
    FileBasis, IndexedSignature, PatchOptions, Signature, SignatureKind, SignatureParams, StrongKind,
    WeakKind, apply_delta, write_delta, write_signature,
};

use crate::cli::{DeltaArgs, HashArg, OutputArgs, PatchArgs, RollsumArg, SignatureArgs};
use crate::output::{Output, check_interrupted};
use crate::progress::{counting, per_second};
use crate::{UsageError, hinted};

/// An input: a file, or standard input for `-`, with its size when it is a regular file.
struct Input {
    reader: Box<dyn Read + Send>,
    len: Option<u64>,
}

impl Input {
    fn open(path: &Path, what: &str) -> anyhow::Result<Input> {
        let file = if path == Path::new("-") {
            // Standard input redirected from a file has a size to plan with, as rdiff finds with fstat;
            // a pipe does not.
            let stdin = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot use standard input")?;
            File::from(stdin)
        } else {
            File::open(path).with_context(|| format!("cannot open the {what} {}", path.display()))?
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read the {what} {}", path.display()))?;
        if meta.is_dir() {
            bail!("the {what} {} is a directory", path.display());
        }
        // A FIFO or a device has no size to plan with.
        let len = meta.is_file().then_some(meta.len());
        Ok(Input {
            reader: Box::new(file),
            len,
        })
    }
}

impl Read for Input {
    /// Reads on until Ctrl-C: then the read fails (also one that was waiting on a pipe and returns
    /// after), so the command stops with exit status 3 and its output file is never published.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check_interrupted()?;
        let n = self.reader.read(buf)?;
        check_interrupted()?;
        Ok(n)
    }
}

/// The basis `patch` reads at any offset: a file, or for `-` standard input: as it is when it is a
/// regular file (`< basis`), else (a pipe) first copied into an unnamed temporary file, which the system
/// removes when it is closed.
fn basis_file(path: &Path) -> anyhow::Result<File> {
    if path != Path::new("-") {
        let file = File::open(path).with_context(|| format!("cannot open the basis {}", path.display()))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            bail!("the basis {} is a directory", path.display());
        }
        return Ok(file);
    }
    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot use standard input")?;
    let stdin = File::from(stdin);
    if stdin.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(stdin);
    }
    let temp_dir = std::env::temp_dir();
    let mut copy = tempfile::tempfile_in(&temp_dir)
        .with_context(|| format!("cannot make a temporary file in {}", temp_dir.display()))?;
    let mut input = Input {
        reader: Box::new(stdin),
        len: None,
    };
    let copied = io::copy(&mut input, &mut copy).with_context(|| {
        format!(
            "cannot copy the basis from standard input into a temporary file in {}",
            temp_dir.display()
        )
    })?;
    log::info!("read the basis from standard input: {copied} bytes, kept in a temporary file");
    Ok(copy)
}

/// With `--json` standard output carries the JSON lines, so the result itself must go to a file.
fn json_needs_a_file(output: &OutputArgs, path: &Path) -> anyhow::Result<()> {
    if output.json && path == Path::new("-") {
        return Err(UsageError(
            "with --json, standard output carries the JSON lines: write the result to a file, not `-`".into(),
        )
        .into());
    }
    Ok(())
}

fn no_two_stdins(paths: &[&Path]) -> anyhow::Result<()> {
    if paths.iter().filter(|p| **p == Path::new("-")).count() > 1 {
        return Err(UsageError("only one input can be standard input (`-`)".into()).into());
    }
    Ok(())
}

pub(crate) fn signature(args: &SignatureArgs, output: &OutputArgs) -> anyhow::Result<()> {
    // Ctrl-C stops the reads and writes below: exit status 3, no output left (docs/exit-status.md).
    crate::interrupt::token();
    let mut basis = Input::open(&args.basis, "basis")?;
    let kind = SignatureKind {
        weak: match args.rollsum {
            RollsumArg::Rabinkarp => WeakKind::RabinKarp,
            RollsumArg::Rollsum => WeakKind::Rollsum,
        },
        strong: match args.hash {
            HashArg::Blake2 => StrongKind::Blake2,
            HashArg::Md4 => StrongKind::Md4,
        },
    };
    let block_len = (args.block_size != 0).then_some(args.block_size);
    let provisional = SignatureParams::recommended(kind, basis.len, block_len, None)?;
    // rdiff's -S: 0 means the whole strong sum, -1 the smallest librsync recommends for this basis.
    let strong_len = match args.sum_size {
        0 => None,
        -1 => Some(match basis.len {
            Some(len) => SignatureParams::min_strong_len(len, provisional.block_len),
            None => 12,
        }),
        n => Some(
            u32::try_from(n)
                .map_err(|_| UsageError(format!("--sum-size {n} is not valid (0, -1 or 1..=32)")))?,
        ),
    };
    let params = SignatureParams::recommended(kind, basis.len, block_len, strong_len)?;
    if let (Some(len), Some(strong)) = (basis.len, strong_len) {
        let min = SignatureParams::min_strong_len(len, params.block_len);
        if strong < min {
            log::warn!(
                "--sum-size {strong} is below the {min} bytes librsync recommends for this basis; \
                 chance collisions may corrupt patches"
            );
        }
    }
    json_needs_a_file(output, &args.signature)?;
    let mut out = Output::open(&args.signature, args.force)?;
    let started = Instant::now();
    let stats = counting(output, "signature", basis.len, |done| {
        write_signature(&mut basis, &mut out, params, Some(done))
    })
    .map_err(|e| naming_output(e, &args.signature, None))?;
    out.commit()?;
    if output.json {
        crate::say::summary(
            "signature",
            serde_json::json!({
                "basis_bytes": stats.basis_bytes, "blocks": stats.blocks, "block_size": params.block_len,
                "sum_size": params.strong_len, "signature_bytes": stats.signature_bytes,
                "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
    }
    log::info!(
        "signature: {} of basis in {} blocks of {} bytes, {}-byte strong sums ({:?} + {:?}); {} written in {:.2?} ({}/s)",
        HumanBytes(stats.basis_bytes),
        stats.blocks,
        params.block_len,
        params.strong_len,
        kind.weak,
        kind.strong,
        HumanBytes(stats.signature_bytes),
        started.elapsed(),
        HumanBytes(per_second(stats.basis_bytes, started.elapsed()))
    );
    Ok(())
}

pub(crate) fn delta(args: &DeltaArgs, output: &OutputArgs) -> anyhow::Result<()> {
    // Ctrl-C stops the reads and writes below: exit status 3, no output left (docs/exit-status.md).
    crate::interrupt::token();
    no_two_stdins(&[&args.signature, &args.new])?;
    let mut sig_input = Input::open(&args.signature, "signature")?;
    let signature = Signature::read(&mut sig_input)
        .with_context(|| format!("cannot use the signature {}", args.signature.display()))?;
    let index = IndexedSignature::new(signature);
    let mut new = Input::open(&args.new, "new file")?;
    json_needs_a_file(output, &args.delta)?;
    let mut out = Output::open(&args.delta, args.force)?;
    let started = Instant::now();
    let stats = counting(output, "delta", new.len, |done| {
        write_delta(&index, &mut new, &mut out, Some(done))
    })
    .map_err(|e| naming_output(e, &args.delta, None))?;
    out.commit()?;
    if output.json {
        crate::say::summary(
            "delta",
            serde_json::json!({
                "new_bytes": stats.new_bytes, "copy_bytes": stats.copy_bytes, "copy_commands": stats.copy_cmds,
                "literal_bytes": stats.literal_bytes, "literal_commands": stats.literal_cmds,
                "delta_bytes": stats.delta_bytes, "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
    }
    log::info!(
        "delta: {} of new file: {} copied in {} COPY, {} literal in {} LITERAL; {} written in {:.2?} ({}/s)",
        HumanBytes(stats.new_bytes),
        HumanBytes(stats.copy_bytes),
        stats.copy_cmds,
        HumanBytes(stats.literal_bytes),
        stats.literal_cmds,
        HumanBytes(stats.delta_bytes),
        started.elapsed(),
        HumanBytes(per_second(stats.new_bytes, started.elapsed()))
    );
    Ok(())
}

/// A failed signature, delta or patch in the words of what failed: writing `output` (a full disk, say)
/// names that path; anything else keeps `otherwise` as its context (or none). The library's error only
/// knows it was writing "the output".
fn naming_output(error: snapsync_delta::Error, output: &Path, otherwise: Option<String>) -> anyhow::Error {
    let context = if matches!(error, snapsync_delta::Error::Write { .. }) {
        Some(if output == Path::new("-") {
            "cannot write to standard output".to_owned()
        } else {
            format!("cannot write {}", output.display())
        })
    } else {
        otherwise
    };
    match context {
        Some(context) => anyhow::Error::new(error).context(context),
        None => anyhow::Error::new(error),
    }
}

/// Counts what passes through (for progress), and hashes it for `--expect-blake3`.
struct Counted<W> {
    inner: W,
    written: Option<Arc<AtomicU64>>,
    hasher: Option<blake3::Hasher>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        if let Some(written) = &self.written {
            written.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn patch(args: &PatchArgs, output: &OutputArgs) -> anyhow::Result<()> {
    // Ctrl-C stops the reads and writes below: exit status 3, no output left (docs/exit-status.md).
    crate::interrupt::token();
    no_two_stdins(&[&args.basis, &args.delta])?;
    let expected = args
        .expect_blake3
        .as_deref()
        .map(|hex| {
            hex.to_ascii_lowercase()
                .parse::<Checksum>()
                .map_err(|_| UsageError(format!("--expect-blake3 {hex:?} is not 64 hex digits")))
        })
        .transpose()?;
    let basis = FileBasis::new(basis_file(&args.basis)?)?;
    let mut delta = Input::open(&args.delta, "delta")?;
    json_needs_a_file(output, &args.output)?;
    let out = Output::open(&args.output, args.force)?;
    let mut out = Counted {
        inner: out,
        written: None,
        hasher: expected.map(|_| blake3::Hasher::new()),
    };
    let started = Instant::now();
    let options = PatchOptions {
        max_output: args.max_size,
    };
    let stats = counting(output, "patch", None, |done| {
        out.written = Some(Arc::clone(done));
        apply_delta(&basis, &mut delta, &mut out, options)
    })
    .map_err(|e| {
        naming_output(
            e,
            &args.output,
            Some(format!("cannot apply the delta {}", args.delta.display())),
        )
    })?;
    if let (Some(expected), Some(hasher)) = (expected, &out.hasher) {
        let actual = Checksum::from(hasher.finalize());
        if actual != expected {
            // Dropping a file output removes its temporary file: nothing was written at the destination.
            // A stream (standard output, a FIFO, a device) has had the bytes already.
            let streamed = out.inner.is_stream();
            drop(out);
            let destination = if args.output == Path::new("-") {
                "standard output received it anyway".to_string()
            } else if streamed {
                format!("{} received it anyway", args.output.display())
            } else {
                format!("{} was not written", args.output.display())
            };
            return Err(hinted(
                format!("the patched result has BLAKE3 {actual}, not the expected {expected}; {destination}"),
                "the delta was made against a different basis, or the expected hash is wrong",
            ));
        }
    }
    out.inner.commit()?;
    if output.json {
        crate::say::summary(
            "patch",
            serde_json::json!({
                "output_bytes": stats.output_bytes, "delta_bytes": stats.delta_bytes,
                "copy_commands": stats.copy_cmds, "literal_commands": stats.literal_cmds,
                "blake3": out.hasher.as_ref().map(|h| Checksum::from(h.finalize()).to_string()),
                "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
    }
    log::info!(
        "patch: {} written from {} of delta ({} COPY, {} LITERAL) in {:.2?} ({}/s)",
        HumanBytes(stats.output_bytes),
        HumanBytes(stats.delta_bytes),
        stats.copy_cmds,
        stats.literal_cmds,
        started.elapsed(),
        HumanBytes(per_second(stats.output_bytes, started.elapsed()))
    );
    Ok(())
}
