//! `cargo xtask bench pkg`: mirroring a package index, `snapsync pkg mirror --all` against what a user
//! without snapsync runs — `pip download` then `twine upload` (both from PyPI) — on the same 50
//! distributions (25 tiny projects, each a wheel and an sdist, built with the testkit's `make_dists`),
//! from one local pypiserver to another, in the same run.
//!
//! Each timed run gets a fresh, empty destination (a pypiserver that takes uploads with an htpasswd
//! user), so every run uploads all 50 files; afterwards the destination's package folder must hold
//! exactly the 50 source files, byte for byte, or the bench fails. Times are wall-clock medians of
//! whole processes, start-up included; a warm-up run comes first and the tools alternate which goes
//! first.
//!
//! The anchor is pip and twine as a user would run them against a private index, hermetic (no pip
//! configuration or `PIP_*` variables from the environment, no cache) and in their fastest working form:
//! one `pip download --no-deps` for the wheels (`--only-binary :all:`), one for the sdists
//! (`--no-binary :all:`, since one pip call downloads one file per requirement), then one
//! `twine upload` of the 50 files. pip prepares every sdist's metadata by running its build backend;
//! `--no-build-isolation` lets it use the setuptools installed beside it instead of installing
//! setuptools from the (private) source index into a fresh environment per sdist, which would fail here
//! and be much slower anywhere.
//!
//! A side figure times snapsync with `--jobs 8` as well (see [`SIDE_JOBS`]), and the run counts the
//! connections the kernel dropped from a full listen queue while snapsync ran: why its default is 4.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use snapsync_testkit::{PKG_PASSWORD, PKG_USER, PypiServer, make_dists, pip_install, python};

use super::{Options, Scratch, build_snapsync, cpu_model, median};
use crate::util::capture;

/// Projects on the source index; each has a wheel and an sdist, so twice as many files.
const PROJECTS: usize = 25;

/// What is timed: snapsync as a user runs it, snapsync with fewer connections (a side figure, see
/// [`SIDE_JOBS`]), and the anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Snapsync,
    SnapsyncSideJobs,
    PipTwine,
}

const TOOLS: [Tool; 3] = [Tool::Snapsync, Tool::PipTwine, Tool::SnapsyncSideJobs];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Snapsync => "snapsync pkg mirror",
            Tool::SnapsyncSideJobs => "snapsync pkg mirror --jobs 8",
            Tool::PipTwine => "pip download + twine upload",
        }
    }
}

/// `--jobs` of the side figure: more connections at once than pypiserver's listen backlog (Python's
/// `socketserver` default of 5; its default server, wsgiref, accepts one connection at a time). The
/// kernel drops the connections that do not fit and the client's TCP resends its SYN a second later;
/// the side figure shows what that cost snapsync's earlier default of 8 (the default is now 4).
const SIDE_JOBS: &str = "8";

/// The anchor's three steps, timed one by one.
#[derive(Clone, Copy, Debug, Default)]
struct AnchorTimes {
    wheels: Duration,
    sdists: Duration,
    upload: Duration,
}

impl AnchorTimes {
    fn total(self) -> Duration {
        self.wheels + self.sdists + self.upload
    }
}

struct Setup {
    snapsync: PathBuf,
    /// `PYTHONPATH` for pip (with setuptools, the build backend it runs on each sdist).
    pip: PathBuf,
    /// `PYTHONPATH` for twine.
    twine: PathBuf,
    source: PypiServer,
    /// The distributions the source serves: what every destination must end up holding.
    dists: Vec<PathBuf>,
    /// `name==version` of every project.
    requirements: Vec<String>,
    scratch: PathBuf,
}

impl Setup {
    /// `python -m MODULE` with `pythonpath`, and no pip or twine settings from the environment (a
    /// `PIP_FIND_LINKS` would make pip look beyond the source index).
    fn python(pythonpath: &Path, module: &str) -> Command {
        let mut command = Command::new(python());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("PIP_") || key_text.starts_with("TWINE_") {
                command.env_remove(&key);
            }
        }
        command
            .env("PYTHONPATH", pythonpath)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .args(["-m", module]);
        command
    }

    /// `pip download` of every project's wheel (`binary`) or sdist into `dir`.
    fn pip_download(&self, dir: &Path, binary: bool) -> Command {
        let mut command = Setup::python(&self.pip, "pip");
        command
            .args(["download", "--no-deps", "--no-cache-dir"])
            .args(["--disable-pip-version-check", "--no-input", "--quiet"])
            .args(["--progress-bar", "off", "--index-url", &self.source.simple_url()])
            .arg("--dest")
            .arg(dir);
        if binary {
            command.args(["--only-binary", ":all:"]);
        } else {
            command.args(["--no-binary", ":all:", "--no-build-isolation"]);
        }
        command.args(&self.requirements);
        command
    }

    fn twine_upload(&self, dir: &Path, destination: &PypiServer) -> Result<Command> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.sort();
        let mut command = Setup::python(&self.twine, "twine");
        command
            .args(["upload", "--non-interactive", "--disable-progress-bar"])
            .args(["--repository-url", &destination.url()])
            .args(["-u", PKG_USER, "-p", PKG_PASSWORD])
            .args(files);
        Ok(command)
    }

    fn snapsync_mirror(&self, destination: &PypiServer, jobs: Option<&str>) -> Command {
        let mut command = Command::new(&self.snapsync);
        command
            .args(["pkg", "mirror", "--from", &self.source.simple_url()])
            .args(["--to", &with_credentials(&destination.url())])
            .arg("--all");
        if let Some(jobs) = jobs {
            command.args(["--jobs", jobs]);
        }
        command
    }

    /// Runs the anchor into `destination`, its downloads going to a fresh folder named after `run`.
    fn anchor(&self, destination: &PypiServer, run: usize) -> Result<AnchorTimes> {
        let dir = self.scratch.join(format!("downloaded-{run}"));
        fs::create_dir_all(&dir)?;
        let wheels = timed(&mut self.pip_download(&dir, true))?;
        let sdists = timed(&mut self.pip_download(&dir, false))?;
        let upload = timed(&mut self.twine_upload(&dir, destination)?)?;
        fs::remove_dir_all(&dir)?;
        Ok(AnchorTimes {
            wheels,
            sdists,
            upload,
        })
    }
}

/// `http://127.0.0.1:PORT/` with the uploader's name and password in it, percent-encoded.
fn with_credentials(url: &str) -> String {
    let encode = |text: &str| {
        text.bytes().fold(String::new(), |mut out, byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "%{byte:02X}");
            }
            out
        })
    };
    url.replacen(
        "http://",
        &format!("http://{}:{}@", encode(PKG_USER), encode(PKG_PASSWORD)),
        1,
    )
}

/// The kernel's count of connections dropped because a listen queue was full (`ListenOverflows` in
/// `/proc/net/netstat`; machine-wide), or 0 where it cannot be read.
fn listen_overflows() -> u64 {
    let text = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn timed(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    capture(command)?;
    Ok(started.elapsed())
}

/// The destination's package folder holds exactly the source's files, byte for byte.
fn check_delivered(tool: Tool, dists: &[PathBuf], destination: &PypiServer) -> Result<()> {
    let folder = destination.packages();
    let mut found: Vec<String> = fs::read_dir(&folder)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    found.sort();
    let mut expected: Vec<String> = dists.iter().map(|path| file_name(path)).collect::<Result<_>>()?;
    expected.sort();
    let missing: Vec<&String> = expected.iter().filter(|n| !found.contains(n)).collect();
    let extra: Vec<&String> = found.iter().filter(|n| !expected.contains(n)).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "{}: the destination holds {} file(s), not the {} of the source; missing {missing:?}, unexpected {extra:?}",
        tool.name(),
        found.len(),
        expected.len()
    );
    for dist in dists {
        let name = file_name(dist)?;
        ensure!(
            fs::read(dist)? == fs::read(folder.join(&name))?,
            "{}: {name} arrived with other bytes than the source's",
            tool.name()
        );
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    Ok(path
        .file_name()
        .context("a distribution without a file name")?
        .to_string_lossy()
        .into_owned())
}

/// What a Python tool says for `--version`, up to where it names its location or its dependencies
/// (`pip 26.3 from …`, `twine version 6.2.0 (keyring: …)`).
fn version(pythonpath: &Path, module: &str) -> Result<String> {
    let output = capture(Setup::python(pythonpath, module).arg("--version"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default();
    let end = [" from ", " ("]
        .iter()
        .filter_map(|cut| line.find(cut))
        .min()
        .unwrap_or(line.len());
    Ok(line[..end].trim().to_owned())
}

pub(crate) fn run(options: &Options) -> Result<()> {
    let runs = if options.quick { 1 } else { options.runs };
    let snapsync = build_snapsync()?;
    eprintln!("xtask: installing pip, setuptools and twine from PyPI (once)");
    let pip = pip_install("pip-anchor", &["pip==26.*", "setuptools==84.*"]);
    let twine = pip_install("twine", &["twine==6.*"]);
    let scratch = Scratch::on_disk("pkg")?;
    let mut specs = Vec::new();
    let mut requirements = Vec::new();
    for i in 0..PROJECTS {
        let (name, version) = (format!("bench-pkg-{i:02}"), format!("1.{i}.0"));
        specs.push(format!("wheel:{name}:{version}"));
        specs.push(format!("sdist:{name}:{version}"));
        requirements.push(format!("{name}=={version}"));
    }
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let dists = make_dists(&scratch.0.join("dists"), &specs);
    ensure!(
        dists.len() == 2 * PROJECTS,
        "make_dists built {} files, not {}",
        dists.len(),
        2 * PROJECTS
    );
    eprintln!("xtask: starting the source pypiserver");
    let setup = Setup {
        snapsync,
        source: PypiServer::start_open(&dists),
        pip,
        twine,
        dists,
        requirements,
        scratch: scratch.0.clone(),
    };
    let versions = format!(
        "{}, {}",
        version(&setup.pip, "pip")?,
        version(&setup.twine, "twine")?
    );

    // Per snapsync variant: times, and listen-queue overflows during its runs.
    let mut ours: [(Vec<Duration>, u64); 2] = Default::default();
    let mut theirs: Vec<AnchorTimes> = Vec::new();
    // Run 0 warms up (Python's bytecode, the page cache) and is not counted; each run starts with
    // another tool.
    for run in 0..=runs {
        for k in 0..TOOLS.len() {
            let tool = TOOLS[(run + k) % TOOLS.len()];
            let destination = PypiServer::start_with_auth();
            match tool {
                Tool::Snapsync | Tool::SnapsyncSideJobs => {
                    let (slot, jobs) = if tool == Tool::Snapsync {
                        (0, None)
                    } else {
                        (1, Some(SIDE_JOBS))
                    };
                    let before = listen_overflows();
                    let time = timed(&mut setup.snapsync_mirror(&destination, jobs))?;
                    let overflows = listen_overflows().saturating_sub(before);
                    check_delivered(tool, &setup.dists, &destination)?;
                    if run > 0 {
                        ours[slot].0.push(time);
                        ours[slot].1 += overflows;
                    }
                }
                Tool::PipTwine => {
                    let times = setup.anchor(&destination, run)?;
                    check_delivered(tool, &setup.dists, &destination)?;
                    if run > 0 {
                        theirs.push(times);
                    }
                }
            }
        }
    }
    let [(default_times, default_overflows), (side_times, side_overflows)] = ours;
    let (ours, side) = (median(default_times), median(side_times));
    let part = |pick: fn(&AnchorTimes) -> Duration| median(theirs.iter().map(pick).collect());
    let total = part(|t| t.total());
    let ratio = |anchor: Duration, ours: Duration| anchor.as_secs_f64() / ours.as_secs_f64().max(1e-9);

    println!(
        "\nbench pkg: mirror {} distributions ({PROJECTS} projects, a wheel and an sdist each) from one \
         pypiserver to a fresh one with an htpasswd user; median of {runs} run(s) after a warm-up",
        setup.dists.len()
    );
    println!(
        "machine: {} cores, {}; anchor: {versions}",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model()
    );
    println!("\n| case | snapsync | anchor | ratio = anchor / snapsync (>1: snapsync faster) |");
    println!("|---|---|---|---|");
    println!(
        "| mirror {} files, whole processes | {:.2} s | {:.2} s (`pip download` x 2 + `twine upload`) | {:.2}x (target >= 3x: {}) |",
        setup.dists.len(),
        ours.as_secs_f64(),
        total.as_secs_f64(),
        ratio(total, ours),
        if ratio(total, ours) >= 3.0 {
            "met"
        } else {
            "not met"
        }
    );
    for (what, time) in [
        (
            "`pip download --only-binary :all:`, the wheels",
            part(|t| t.wheels),
        ),
        (
            "`pip download --no-binary :all:`, the sdists (each one's metadata built by setuptools)",
            part(|t| t.sdists),
        ),
        ("`twine upload`, all files", part(|t| t.upload)),
    ] {
        println!("| of the anchor: {what} | | {:.2} s | |", time.as_secs_f64());
    }
    // Not a whole mirror (no sdist is downloaded), so not the bench's figure: it shows how much of the
    // ratio pip's building of the sdists' metadata accounts for.
    let without = part(|t| t.wheels + t.upload);
    println!(
        "| the anchor less its sdist step (wheels' download + upload of all files; a lower bound) | {:.2} s | {:.2} s | {:.2}x |",
        ours.as_secs_f64(),
        without.as_secs_f64(),
        ratio(without, ours)
    );
    println!(
        "| side figure: snapsync `--jobs {SIDE_JOBS}` against the whole anchor | {:.2} s | {:.2} s | {:.2}x |",
        side.as_secs_f64(),
        total.as_secs_f64(),
        ratio(total, side)
    );
    println!(
        "\nconnections the kernel dropped for a full listen queue (machine-wide, over the {runs} timed run(s)): \
         {default_overflows} during snapsync's default runs, {side_overflows} during its `--jobs {SIDE_JOBS}` runs"
    );
    Ok(())
}
