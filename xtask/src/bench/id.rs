//! `cargo xtask bench id`: `snapsync id` against snapdir (PyPI) and b3sum (apt).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::{MIB, Measured, Options, Rng, build_snapsync, cpu_model, gib, median, time_process};
use crate::util::{capture, project_root, run as run_command, which};

const SNAPDIR_VERSION: &str = "1.12.0";
pub(crate) fn run(options: &Options) -> Result<()> {
    let (file_count, single_size) = if options.quick {
        (2_000, 256 * MIB)
    } else {
        (20_000, 2048 * MIB)
    };
    let tree = ensure_tree(&options.data, file_count)?;
    let single = ensure_single(&options.data, single_size)?;
    let snapsync = build_snapsync()?;
    let snapdir = ensure_snapdir()?;
    let b3sum = which("b3sum").context("b3sum is not installed (apt-get install b3sum)")?;

    println!(
        "\nbench id: median of {} warm runs; ratio = anchor time / snapsync time (>1: snapsync faster)",
        options.runs
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model()
    );
    for data in [&tree, &single] {
        println!(
            "\n{}: {} files, {:.2} GiB",
            data.label,
            data.files.len(),
            gib(data.bytes)
        );
        let mut ours_id = String::new();
        let ours = time_process("snapsync", options.runs, &mut ours_id, || {
            let mut c = Command::new(&snapsync);
            c.args(["id", "-q"]).arg(&data.dir);
            c
        })?;
        let (theirs, theirs_id) = time_snapdir(&snapdir, &data.dir, options.runs)?;
        ensure!(
            ours_id.trim() == theirs_id,
            "snapsync id {} differs from snapdir id {theirs_id}",
            ours_id.trim()
        );
        let mut ignored = String::new();
        let b3 = time_process("b3sum", options.runs, &mut ignored, || {
            let mut c = Command::new(&b3sum);
            c.arg("--no-names").args(&data.files).current_dir(&data.dir);
            c
        })?;
        println!("| data | tool | median | GiB/s | ratio |");
        println!("|---|---|---|---|---|");
        for m in [&ours, &theirs, &b3] {
            println!(
                "| {} | {} | {:.3} s | {:.2} | {:.2}x |",
                data.label,
                m.tool,
                m.median.as_secs_f64(),
                gib(data.bytes) / m.median.as_secs_f64(),
                m.median.as_secs_f64() / ours.median.as_secs_f64()
            );
        }
        println!("ids: snapsync and snapdir agree ({theirs_id})");
    }
    Ok(())
}

/// A generated data set: its directory and its files relative to it.
pub(crate) struct Data {
    pub(crate) label: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) bytes: u64,
}

pub(crate) fn ensure_tree(data: &Path, count: usize) -> Result<Data> {
    let dir = data.join(format!("tree-{count}"));
    let mut rng = Rng(0x5eed_0000 + count as u64);
    let mut files = Vec::with_capacity(count);
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        files.push(PathBuf::from(format!(
            "d{:02}/d{}/f{i:05}.bin",
            i / 1000,
            (i / 100) % 10
        )));
        sizes.push(rng.file_size());
    }
    let bytes = sizes.iter().sum();
    // The marker sits beside the tree, not in it, so it is not part of what is hashed.
    let marker = data.join(format!("tree-{count}.complete"));
    if !(marker.exists() && dir.is_dir()) {
        eprintln!(
            "xtask: generating {count} files ({bytes} bytes) in {}",
            dir.display()
        );
        let staging = data.join(format!("tree-{count}.partial"));
        let _ = fs::remove_dir_all(&staging);
        let mut buffer = vec![0u8; MIB as usize];
        for (file, size) in files.iter().zip(&sizes) {
            let path = staging.join(file);
            fs::create_dir_all(path.parent().context("file path has a parent")?)?;
            let buffer = &mut buffer[..*size as usize];
            rng.fill(buffer);
            fs::write(&path, buffer).with_context(|| format!("writing {}", path.display()))?;
        }
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir)?;
        fs::write(&marker, format!("{count} files, {bytes} bytes\n"))?;
    }
    Ok(Data {
        label: "tree",
        dir,
        files,
        bytes,
    })
}

fn ensure_single(data: &Path, size: u64) -> Result<Data> {
    let dir = data.join(format!("single-{}m", size / MIB));
    let file = dir.join("big.bin");
    if fs::metadata(&file).map(|m| m.len()).ok() != Some(size) {
        eprintln!("xtask: generating a {size}-byte file in {}", dir.display());
        fs::create_dir_all(&dir)?;
        let partial = data.join("big.bin.partial");
        let mut out = BufWriter::with_capacity(4 * MIB as usize, File::create(&partial)?);
        let mut rng = Rng(0xb16_f11e);
        let mut buffer = vec![0u8; MIB as usize];
        for _ in 0..size / MIB {
            rng.fill(&mut buffer);
            out.write_all(&buffer)?;
        }
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        fs::rename(&partial, &file)?;
    }
    Ok(Data {
        label: "single",
        dir,
        files: vec![PathBuf::from("big.bin")],
        bytes: size,
    })
}

/// snapdir from PyPI, installed once under target/anchors; returns the PYTHONPATH to use.
pub(crate) fn ensure_snapdir() -> Result<PathBuf> {
    let target = project_root().join(format!("target/anchors/snapdir-{SNAPDIR_VERSION}"));
    if !target.join("snapdir").is_dir() {
        run_command(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                ])
                .arg(&target)
                .arg(format!("snapdir=={SNAPDIR_VERSION}")),
        )
        .context("installing snapdir from PyPI")?;
    }
    Ok(target)
}

/// snapdir timed inside Python (`asyncio.run(snapdir.id(dir))`), so interpreter start-up and import are
/// not counted against it.
fn time_snapdir(pythonpath: &Path, dir: &Path, runs: usize) -> Result<(Measured, String)> {
    const SCRIPT: &str = r"
import asyncio, os, sys, time
import snapdir
root, runs = sys.argv[1], int(sys.argv[2])
asyncio.run(snapdir.id(root))
for _ in range(runs):
    t = time.perf_counter()
    i = asyncio.run(snapdir.id(root))
    print('time', time.perf_counter() - t)
print('id', i)
sys.stdout.flush()
os._exit(0)
";
    let output = capture(
        Command::new("python3")
            .env("PYTHONPATH", pythonpath)
            .args(["-c", SCRIPT])
            .arg(dir)
            .arg(runs.to_string()),
    )?;
    let text = String::from_utf8(output.stdout)?;
    let mut times = Vec::new();
    let mut id = String::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("time", secs)) => times.push(Duration::from_secs_f64(secs.parse()?)),
            Some(("id", value)) => value.clone_into(&mut id),
            _ => {}
        }
    }
    ensure!(
        times.len() == runs && id.len() == 64,
        "unexpected output from snapdir: {text}"
    );
    Ok((
        Measured {
            tool: "snapdir",
            median: median(times),
        },
        id,
    ))
}
