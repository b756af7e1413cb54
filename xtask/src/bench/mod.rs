//! `cargo xtask bench`: snapsync against the anchor tools, on the same data, in the same run.
//!
//! Every figure is a median of warm runs (a warm-up run first, so the data is in the page cache), and is
//! reported as a ratio to snapsync measured in the same run: the machine's speed cancels out.

mod cache;
mod delta;
mod id;
mod pkg;
mod scale;
mod snapshot;
mod sync;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::util::{capture, cargo, project_root, run as run_command};

pub(crate) const MIB: u64 = 1024 * 1024;

const USAGE: &str = "usage: cargo xtask bench <id|delta|snapshot|sync|cache|pkg> [--runs N] [--quick] [--data DIR]\n       \
     cargo xtask bench scale [--files N] [--big-gib G] [--runs N] [--data DIR]";

pub(crate) fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("id") => id::run(&Options::parse(&args[1..])?),
        Some("delta") => delta::run(&Options::parse(&args[1..])?),
        Some("snapshot") => snapshot::run(&Options::parse(&args[1..])?),
        Some("sync") => sync::run(&Options::parse(&args[1..])?),
        Some("cache") => cache::run(&Options::parse(&args[1..])?),
        Some("pkg") => pkg::run(&Options::parse(&args[1..])?),
        Some("scale") => scale::run(&args[1..]),
        _ => bail!("{USAGE}"),
    }
}

pub(crate) struct Options {
    pub(crate) runs: usize,
    pub(crate) quick: bool,
    pub(crate) data: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            runs: 5,
            quick: false,
            data: project_root().join("target/bench-data"),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--runs" => {
                    options.runs = args
                        .next()
                        .context(USAGE)?
                        .parse()
                        .context("--runs takes a number")?;
                }
                "--quick" => options.quick = true,
                "--data" => options.data = PathBuf::from(args.next().context(USAGE)?),
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        ensure!(options.runs > 0, "--runs must be at least 1");
        Ok(options)
    }
}

/// One timed tool on one data set.
pub(crate) struct Measured {
    pub(crate) tool: &'static str,
    pub(crate) median: Duration,
}

/// `SplitMix64`: a fixed, fast generator so every run and every machine gets the same bytes.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// 1 KiB to 1 MiB, skewed towards small files: 1 KiB * 2^(10 u^1.5), about 107 KiB on average, so
    /// 20,000 files make about 2 GiB.
    #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)] // a size distribution, not exact arithmetic
    pub(crate) fn file_size(&mut self) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (1024.0 * 2f64.powf(10.0 * u.powf(1.5))) as u64
    }
}

/// The release binary, built; or, when `SNAPSYNC_BENCH_BINARY` names one (already built, on a machine
/// where another build would take long), that one.
pub(crate) fn build_snapsync() -> Result<PathBuf> {
    if let Some(binary) = std::env::var_os("SNAPSYNC_BENCH_BINARY") {
        let binary = PathBuf::from(binary);
        ensure!(
            binary.is_file(),
            "SNAPSYNC_BENCH_BINARY names {}, which is not a file",
            binary.display()
        );
        return Ok(binary);
    }
    run_command(cargo().args(["build", "--release", "--quiet", "-p", "snapsync-cli"]))?;
    Ok(project_root().join("target/release/snapsync"))
}

/// Runs a command once to warm up, then `runs` times; keeps the last standard output.
pub(crate) fn time_process(
    tool: &'static str,
    runs: usize,
    stdout: &mut String,
    make: impl Fn() -> Command,
) -> Result<Measured> {
    capture(&mut make())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let output = capture(&mut make())?;
        times.push(started.elapsed());
        *stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    Ok(Measured {
        tool,
        median: median(times),
    })
}

pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * MIB as f64)
}

pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

pub(crate) fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A directory for outputs, removed at the end: on tmpfs where there is one (so the disk does not
/// take part in the timing), else under target/.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Result<Scratch> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            project_root().join("target")
        };
        Scratch::under(&base, name)
    }

    /// Under target/, on disk: for data too big for memory.
    pub(crate) fn on_disk(name: &str) -> Result<Scratch> {
        Scratch::under(&project_root().join("target"), name)
    }

    fn under(base: &Path, name: &str) -> Result<Scratch> {
        let dir = base.join(format!("snapsync-bench-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One run of one tool, measured by GNU time.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    /// User + system CPU time.
    pub(crate) cpu: Duration,
    /// Peak resident set (`ru_maxrss` of the child), KiB.
    pub(crate) rss_kib: u64,
}

/// Runs `command` under GNU time (`gnu_time`, `/usr/bin/time`); returns the measurement and standard
/// output. A failed command is an error showing its standard error.
pub(crate) fn measure(gnu_time: &Path, command: &Command) -> Result<(Sample, String)> {
    let mut wrapped = Command::new(gnu_time);
    wrapped
        .args(["-f", "xtask-time %e %U %S %M"])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    let output = wrapped.stdin(Stdio::null()).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{command:?} failed ({}):\n{stderr}", output.status);
    }
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("xtask-time "))
        .with_context(|| format!("no timing from GNU time in {stderr:?}"))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read GNU time's {line:?}"))?;
    ensure!(fields.len() == 4, "cannot read GNU time's {line:?}");
    let sample = Sample {
        wall: Duration::from_secs_f64(fields[0]),
        cpu: Duration::from_secs_f64(fields[1] + fields[2]),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // KiB, a whole number
        rss_kib: fields[3] as u64,
    };
    Ok((sample, String::from_utf8_lossy(&output.stdout).into_owned()))
}
