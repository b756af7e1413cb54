//! `cargo xtask bench delta`: signature, delta and patch against rdiff (apt), and the memory bound.
//!
//! Data: a basis of pseudo-random bytes (1 GiB; 64 MiB with `--quick`) and a new version with about 1% of
//! it changed in scattered edits (insertions, deletions, replacements of 1–9 KiB). Both tools use their
//! default options, so the same block length (√ of the basis size). Runs alternate between the tools so
//! that both see the same state of the machine; outputs go to tmpfs so the disk does not decide.
//!
//! Memory: a sparse 10 GiB file goes through `snapsync signature` and `snapsync patch`; the peak resident
//! set of each must stay under 100 MiB (measured by GNU time), or the bench fails.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{MIB, Options, Rng, Scratch, build_snapsync, cpu_model, median};
use crate::util::{capture, which};

/// The bound the issue sets for signature and patch of a 10 GiB file.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

pub(crate) fn run(options: &Options) -> Result<()> {
    let size = if options.quick { 64 * MIB } else { 1024 * MIB };
    let (basis, new) = ensure_pair(&options.data, size)?;
    let snapsync = build_snapsync()?;
    let rdiff = which("rdiff").context("rdiff is not installed (apt-get install rdiff)")?;
    let gnu_time = Path::new("/usr/bin/time");
    ensure!(
        gnu_time.is_file(),
        "GNU time is not installed (apt-get install time); it measures peak memory"
    );
    let scratch = Scratch::new("delta")?;
    let s = |name: &str| scratch.0.join(name);
    let new_len = fs::metadata(&new)?.len();

    println!(
        "\nbench delta: {} MiB basis, ~1% scattered edits; median of {} runs, tools alternating",
        size / MIB,
        options.runs
    );
    println!(
        "machine: {} cores, {}; outputs in {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model(),
        scratch.0.display()
    );
    // Writing a GiB into a page cache that is full makes the kernel reclaim memory, and the run that
    // happens to trigger it (often evicting its own input) takes 3-4x longer, whichever tool it is. As root
    // the bench drops the page cache before every run and reads the inputs back in, so both tools start
    // from the same state.
    let clean_cache = fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    if !clean_cache {
        println!("note: not root, so the page cache is not reset between runs; expect noisier figures");
    }
    let files = Files {
        snapsync: &snapsync,
        rdiff: &rdiff,
        basis: &basis,
        new: &new,
        scratch: &scratch.0,
    };
    println!(
        "\n| operation | snapsync | rdiff | ratio (rdiff / snapsync) | snapsync peak RSS | rdiff peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for op in [Op::Signature, Op::Delta, Op::PatchFile, Op::PatchNull] {
        let input = if op == Op::Signature { size } else { new_len };
        // Warm up both (and make the files the next operation needs).
        capture(&mut files.command(op, true))?;
        capture(&mut files.command(op, false))?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..options.runs {
            // Who goes first alternates; each run starts from the same state (see `Files::settle`).
            let order = if run % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for ours_now in order {
                files.settle(op, clean_cache)?;
                let time = timed(&mut files.command(op, ours_now))?;
                if ours_now {
                    ours.push(time);
                } else {
                    theirs.push(time);
                }
            }
        }
        let (ours, theirs) = (median(ours), median(theirs));
        let rss = |ours| peak_rss(gnu_time, &files.command(op, ours));
        println!(
            "| {} | {:.3} s ({:.0} MiB/s) | {:.3} s ({:.0} MiB/s) | **{:.2}x** | {} MiB | {} MiB |",
            op.name(),
            ours.as_secs_f64(),
            rate(input, ours),
            theirs.as_secs_f64(),
            rate(input, theirs),
            theirs.as_secs_f64() / ours.as_secs_f64(),
            rss(true)? / 1024,
            rss(false)? / 1024,
        );
    }

    ensure!(
        same_file(&s("o.sig"), &s("r.sig"))?,
        "snapsync's signature differs from rdiff's"
    );
    ensure!(
        same_file(&s("o.out"), &new)?,
        "snapsync's patch output differs from the new file"
    );
    ensure!(
        same_file(&s("r.out"), &new)?,
        "rdiff's patch output differs from the new file"
    );
    let (ours, theirs) = (
        fs::metadata(s("o.delta"))?.len(),
        fs::metadata(s("r.delta"))?.len(),
    );
    println!(
        "\nsignatures identical; both patches rebuild the new file; delta size: snapsync {ours} bytes, rdiff {theirs} bytes ({:+.3}%)",
        (ours as f64 / theirs as f64 - 1.0) * 100.0
    );
    ensure!(ours <= theirs, "snapsync's delta is larger than rdiff's");

    memory_check(&snapsync, gnu_time, &scratch.0)
}

/// The operations timed, each run by both tools.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Signature,
    Delta,
    PatchFile,
    PatchNull,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Signature => "signature",
            Op::Delta => "delta",
            Op::PatchFile => "patch (to tmpfs)",
            Op::PatchNull => "patch (to /dev/null)",
        }
    }

    /// The files one run writes (snapsync's and rdiff's), in the scratch directory.
    fn outputs(self) -> &'static [&'static str] {
        match self {
            Op::Signature => &["o.sig", "r.sig"],
            Op::Delta => &["o.delta", "r.delta"],
            Op::PatchFile => &["o.out", "r.out"],
            Op::PatchNull => &[],
        }
    }
}

/// The programs and files of the bench.
struct Files<'a> {
    snapsync: &'a Path,
    rdiff: &'a Path,
    basis: &'a Path,
    new: &'a Path,
    scratch: &'a Path,
}

impl Files<'_> {
    /// Before a run: remove the outputs (a user's run usually makes a new file; replacing one costs
    /// rdiff, which truncates it, and snapsync, which writes beside it and renames, differently), then,
    /// when allowed, drop the page cache and read the run's inputs back into it.
    fn settle(&self, op: Op, clean_cache: bool) -> Result<()> {
        for output in op.outputs() {
            let _ = fs::remove_file(self.scratch.join(output));
        }
        if !clean_cache {
            return Ok(());
        }
        let _ = Command::new("sync").status();
        fs::write("/proc/sys/vm/drop_caches", "3\n")?;
        let s = |name: &str| self.scratch.join(name);
        let inputs: Vec<PathBuf> = match op {
            Op::Signature => vec![self.basis.to_path_buf()],
            Op::Delta => vec![s("o.sig"), s("r.sig"), self.new.to_path_buf()],
            Op::PatchFile | Op::PatchNull => vec![self.basis.to_path_buf(), s("o.delta"), s("r.delta")],
        };
        let mut buf = vec![0u8; 16 * MIB as usize];
        for input in inputs {
            let mut file = File::open(&input)?;
            while file.read(&mut buf)? > 0 {}
        }
        Ok(())
    }

    /// The command for `op` by snapsync (`ours`) or rdiff: the same inputs, like outputs.
    fn command(&self, op: Op, ours: bool) -> Command {
        let s = |name: &str| self.scratch.join(name);
        let (sn, rd) = (self.snapsync, self.rdiff);
        let mut c = match (op, ours) {
            (Op::Signature, true) => tool(sn, &["signature", "-q", "-f"], &[self.basis, &s("o.sig")]),
            (Op::Signature, false) => tool(rd, &["-f", "signature"], &[self.basis, &s("r.sig")]),
            (Op::Delta, true) => tool(
                sn,
                &["delta", "-q", "-f"],
                &[&s("o.sig"), self.new, &s("o.delta")],
            ),
            (Op::Delta, false) => tool(rd, &["-f", "delta"], &[&s("r.sig"), self.new, &s("r.delta")]),
            (Op::PatchFile, true) => tool(
                sn,
                &["patch", "-q", "-f"],
                &[self.basis, &s("o.delta"), &s("o.out")],
            ),
            (Op::PatchFile, false) => tool(rd, &["-f", "patch"], &[self.basis, &s("r.delta"), &s("r.out")]),
            (Op::PatchNull, true) => tool(sn, &["patch", "-q"], &[self.basis, &s("o.delta"), Path::new("-")]),
            (Op::PatchNull, false) => tool(rd, &["patch"], &[self.basis, &s("r.delta"), Path::new("-")]),
        };
        if op == Op::PatchNull {
            c.stdout(Stdio::null());
        }
        c
    }
}

/// A sparse 10 GiB file through signature, delta and patch; signature and patch must stay under 100 MiB.
fn memory_check(snapsync: &Path, gnu_time: &Path, scratch: &Path) -> Result<()> {
    let big = scratch.join("sparse-10g");
    File::create(&big)?.set_len(10 * 1024 * MIB)?;
    let sig = scratch.join("sparse.sig");
    let delta = scratch.join("sparse.delta");
    println!("\nmemory, 10 GiB file (sparse):");
    let started = Instant::now();
    let signature = peak_rss(
        gnu_time,
        &tool(snapsync, &["signature", "-q", "-f"], &[&big, &sig]),
    )?;
    let delta_rss = peak_rss(
        gnu_time,
        &tool(snapsync, &["delta", "-q", "-f"], &[&sig, &big, &delta]),
    )?;
    // The check is on memory: the 10 GiB of output are discarded.
    let mut patch = tool(snapsync, &["patch", "-q"], &[&big, &delta, Path::new("-")]);
    patch.stdout(Stdio::null());
    let patch_rss = peak_rss(gnu_time, &patch)?;
    println!("| operation | peak RSS | limit |");
    println!("|---|---|---|");
    println!("| signature | {} MiB | 100 MiB |", signature / 1024);
    println!(
        "| delta | {} MiB | (the signature table aside) |",
        delta_rss / 1024
    );
    println!("| patch | {} MiB | 100 MiB |", patch_rss / 1024);
    println!("({:.1} s for the three)", started.elapsed().as_secs_f64());
    ensure!(
        signature < RSS_LIMIT_KIB,
        "signature of 10 GiB used {signature} KiB, over the 100 MiB limit"
    );
    ensure!(
        patch_rss < RSS_LIMIT_KIB,
        "patch of 10 GiB used {patch_rss} KiB, over the 100 MiB limit"
    );
    Ok(())
}

fn tool(program: &Path, args: &[&str], paths: &[&Path]) -> Command {
    let mut c = Command::new(program);
    c.args(args).args(paths);
    c
}

fn timed(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    capture(command)?;
    Ok(started.elapsed())
}

#[allow(clippy::cast_precision_loss)] // a rate for a report
fn rate(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / MIB as f64 / time.as_secs_f64()
}

/// Peak resident set of one run, in KiB, by GNU time.
fn peak_rss(gnu_time: &Path, command: &Command) -> Result<u64> {
    let mut wrapped = Command::new(gnu_time);
    wrapped
        .args(["-f", "%M"])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let output = wrapped.stdout(Stdio::null()).output()?;
    ensure!(
        output.status.success(),
        "{:?} failed:\n{}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no peak RSS in {stderr:?}"))
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The basis and the edited new version, generated once.
fn ensure_pair(data: &Path, size: u64) -> Result<(PathBuf, PathBuf)> {
    let dir = data.join(format!("delta-{}m", size / MIB));
    let (basis, new) = (dir.join("basis.bin"), dir.join("new.bin"));
    let marker = data.join(format!("delta-{}m.complete", size / MIB));
    if marker.exists() && basis.is_file() && new.is_file() {
        return Ok((basis, new));
    }
    eprintln!(
        "xtask: generating a {size}-byte basis and its edited version in {}",
        dir.display()
    );
    fs::create_dir_all(&dir)?;
    let mut rng = Rng(0xde17a);
    let mut bytes = vec![0u8; usize::try_from(size)?];
    rng.fill(&mut bytes);
    write(&basis, &bytes)?;
    // About 1% edited: one edit of 1–9 KiB per 512 KiB on average, at random places.
    let count = size / (512 * 1024);
    let mut edits: Vec<(usize, u64, usize)> = (0..count)
        .map(|i| {
            (
                (rng.next() % size) as usize,
                i % 3,
                1024 + (rng.next() % 8192) as usize,
            )
        })
        .collect();
    edits.sort_unstable();
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 50);
    let mut at = 0;
    for (pos, kind, len) in edits {
        if pos < at {
            continue;
        }
        out.extend_from_slice(&bytes[at..pos]);
        let mut fresh = vec![0u8; len];
        rng.fill(&mut fresh);
        match kind {
            0 => {
                out.extend_from_slice(&fresh);
                at = (pos + len).min(bytes.len());
            }
            1 => {
                out.extend_from_slice(&fresh);
                at = pos;
            }
            _ => at = (pos + len).min(bytes.len()),
        }
    }
    out.extend_from_slice(&bytes[at..]);
    write(&new, &out)?;
    fs::write(&marker, "done\n")?;
    if !basis.is_file() {
        bail!("generation failed");
    }
    Ok((basis, new))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(bytes)?;
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok(())
}
