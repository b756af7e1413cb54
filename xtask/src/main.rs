//! `cargo xtask`: the project's own tasks (tests, CI, benchmarks against the anchor tools, fuzzing).
//!
//! Few dependencies on purpose: it is built on every `cargo xtask` call.
#![forbid(unsafe_code)]
// The task runner talks to its user on standard output.
#![allow(clippy::print_stdout)]
// Reports turn byte counts into GiB and GiB/s; 52 bits of mantissa are plenty for that.
#![allow(clippy::cast_precision_loss)]

mod bench;
mod util;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::util::{capture, cargo, project_root, run};

const HELP: &str = "\
cargo xtask <TASK> [OPTIONS]

Tasks:
  test                 Run every test: cargo nextest (unit, integration, interop with snapdir,
                       stores against moto, Azurite, pyftpdlib, vsftpd and sshd) and the doc tests.
                       Needs python3 + pip, node + npm, access to PyPI and npm the first time, and
                       vsftpd, openssh-server and openssl installed; runs as root (vsftpd, sshd).
                       At the end it removes the test servers' system users (snapsyncftp,
                       snapsyncssh: no login shell, a random password per run), the PAM service
                       of the test vsftpd and the passwords.
  testkit-clean        Remove those users, the PAM service and the passwords now (after running
                       cargo nextest directly, say).
  lint                 rustfmt check, clippy -D warnings, cargo-deny (bans, licenses, sources).
  ci                   What CI runs: lint, test, the fuzz targets for 20 seconds each (12 targets:
                       4 minutes, besides building them), the crash harness with 5 iterations, and
                       quick benchmark smoke runs.
  bench id [OPTIONS]   Time `snapsync id` against snapdir (PyPI) and b3sum (apt) on a 20,000-file
                       tree of about 2 GiB and on a single 2 GiB file; prints medians and ratios.
  bench delta [OPTIONS]
                       Time signature, delta and patch against rdiff (apt) on a 1 GiB file with
                       ~1% scattered edits; check that a 10 GiB file goes through signature and
                       patch in under 100 MiB of memory (needs GNU time: apt-get install time).
        bench snapshot [OPTIONS]
                       Time push and pull of the 20,000-file tree to a file:// store and to a local
                       S3 server (moto, PyPI) against snapdir; check that a 5 GiB file pushes and
                       pulls through both in under 200 MiB of memory (needs GNU time).
  bench sync [OPTIONS] Time `snapsync upload` against pyftpsync (PyPI), lftp mirror and rclone (apt)
                       to local pyftpdlib and sshd servers: 2,000 x 4 KiB files (initial, re-run
                       unchanged, re-run after 1% changed), then 20 x 50 MiB files (4 with --quick).
  bench cache [OPTIONS]
                       Time `snapsync cache open` and `cache push` over a local sshd against
                       OpenSSH's `sftp` and `snapsync upload`.
  bench pkg [OPTIONS]  Time `snapsync pkg mirror --all` of 50 distributions between two local
                       pypiservers against `pip download` + `twine upload` (PyPI); checks that every
                       file arrived byte for byte.
  bench scale [--files N] [--big-gib G] [--runs N] [--data DIR]
                       Time and peak memory at scale, on disk under target/: trees of N/10 and N
                       small files (default 100,000) and sparse files of 1 and G GiB (default 10)
                       through id, push/pull (file:// and sftp://), upload and sync (local folder and
                       sftp://), against snapdir, b3sum, rsync and OpenSSH sftp; prints the memory
                       growth per file and per size, fails if the big file needs over 200 MiB.
                       --files 0 or --big-gib 0 leaves that part out (needs GNU time, rsync, b3sum).
      --runs N           timed runs per tool (default 5; a warm-up run comes first; scale: 1, no warm-up)
      --quick            small data (2,000 files, 256 MiB file; 64 MiB for delta; 1 GiB for the
                         snapshot memory check) for a smoke run
      --data DIR         where the generated data lives (default target/bench-data)
      --keep-test-users  leave the test servers' system users in place at the end (when other
                         test runs on this machine are using them)
                       SNAPSYNC_BENCH_BINARY=PATH times that snapsync binary instead of building
                       the release one.
  dist                 Build the release binary (default features) and, from it, a man page per
                       command and subcommand and bash, zsh, fish and PowerShell completion scripts,
                       into target/dist/: bin/snapsync, man/man1/*.1, completions/.
  chaos [OPTIONS]      The crash harness (docs/RELIABILITY.md): builds snapsync with its kill points
                       (feature `chaos`), runs push, pull, upload, download, sync, cache push and
                       pkg mirror against a local folder, moto (S3), pyftpdlib (FTP), vsftpd (FTPS)
                       and sshd (SFTP), and pkg mirror into pypiserver too, kills each run with
                       SIGKILL (at a random moment, mid-file, after a rename, holding the lock),
                       checks every file is old or new (a package whole or absent) and that the same
                       command run again converges and leaves no temporary file, lock or journal;
                       writes target/chaos/report.md and .json; fails on any torn file or failed
                       recovery.
      --iterations N     kills per operation and backend (default 100; CI runs 5)
      --op OP            push, pull, upload, download, sync, cache-push or pkg-mirror (repeatable;
                         default all)
      --backend B        local, s3, ftp, ftps, sftp or pypi (repeatable; default all but pypi, a
                         destination of pkg-mirror only, which keeps cut uploads: RELIABILITY.md)
      --seed N           replay the random choices of an earlier run (its report names the seed)
  fuzz [--seconds N] [--seed N] [TARGET...]
                       Run each fuzz target (every [[bin]] of fuzz/Cargo.toml, or those
                       named) for N seconds (default 60) over its seeds; --seed fixes the
                       fuzzer's random choices (CI: --seed 1); needs cargo-fuzz
                       (`cargo install cargo-fuzz`); uses RUSTC_BOOTSTRAP=1 on stable.
  help                 This text.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some(task) = args.first() else {
        print!("{HELP}");
        return Ok(());
    };
    let rest = &args[1..];
    match task.as_str() {
        "test" => test(),
        "lint" => lint(),
        "ci" => ci(),
        "bench" => {
            // The sync, cache and scale benchmarks log in to sshd as the test user: removed again
            // after, unless other test runs on this machine share it (--keep-test-users).
            let keep = rest.iter().any(|a| a == "--keep-test-users");
            let rest: Vec<String> = rest
                .iter()
                .filter(|a| *a != "--keep-test-users")
                .cloned()
                .collect();
            let done = bench::run(&rest);
            if !keep {
                remove_test_users();
            }
            done
        }
        "dist" => dist(),
        "testkit-clean" => {
            remove_test_users();
            Ok(())
        }
        "fuzz" => fuzz(rest),
        "chaos" => {
            // The FTPS and SFTP servers log in as the test users: removed again after.
            let done = chaos(rest);
            remove_test_users();
            done
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// The one test command: README and CI call exactly this. When it ends, passed or not, the test
/// servers' system users and their passwords are removed again.
fn test() -> Result<()> {
    let tested = run_tests();
    remove_test_users();
    tested
}

fn run_tests() -> Result<()> {
    run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))
}

/// Removes what the tests added to the machine (the FTP and SSH test users, vsftpd's PAM service, this
/// run's passwords), saying what it removed.
fn remove_test_users() {
    for what in snapsync_testkit::remove_test_users() {
        eprintln!("xtask: removed {what} (made by the tests)");
    }
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The crash harness and the kill points exist only with the `chaos` feature.
    run(cargo().args([
        "clippy",
        "--package",
        "snapsync-cli",
        "--all-targets",
        "--features",
        "chaos",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["deny", "check", "bans", "licenses", "sources"]))
        .context("cargo-deny (install it with `cargo install --locked cargo-deny`)")
}

fn ci() -> Result<()> {
    let done = ci_steps();
    remove_test_users();
    done
}

fn ci_steps() -> Result<()> {
    lint()?;
    run_tests()?;
    fuzz(&["--seconds".into(), "20".into(), "--seed".into(), "1".into()])?;
    chaos(&["--iterations".into(), "5".into()])?;
    bench::run(&["id".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["delta".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["snapshot".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["sync".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["cache".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["pkg".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&[
        "scale".into(),
        "--files".into(),
        "1000".into(),
        "--big-gib".into(),
        "0".into(),
    ])
}

/// `target/dist/`: the release binary and what a package installs beside it, made by the binary itself
/// (`snapsync __generate`), so the pages and scripts describe exactly the commands it parses. Assembled
/// in a temporary folder and renamed into place: an interrupted run leaves the previous `dist/` whole.
fn dist() -> Result<()> {
    run(cargo().args(["build", "--release", "--package", "snapsync-cli"]))?;
    let target = target_dir();
    let binary = target.join("release").join("snapsync");
    let dist = target.join("dist");
    let staging = target.join(format!("dist.tmp-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    let bin = staging.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(&binary, bin.join("snapsync"))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    let snapsync = bin.join("snapsync");
    capture(
        std::process::Command::new(&snapsync)
            .args(["__generate", "man"])
            .arg(staging.join("man/man1")),
    )?;
    capture(
        std::process::Command::new(&snapsync)
            .args(["__generate", "completions"])
            .arg(staging.join("completions")),
    )?;
    let version = capture(std::process::Command::new(&snapsync).arg("--version"))?;
    if dist.exists() {
        std::fs::remove_dir_all(&dist)
            .with_context(|| format!("cannot remove the old {}", dist.display()))?;
    }
    std::fs::rename(&staging, &dist)
        .with_context(|| format!("cannot move {} into place", staging.display()))?;
    let pages = std::fs::read_dir(dist.join("man/man1"))?.count();
    println!(
        "{}{}: bin/snapsync, man/man1/ ({pages} pages), completions/ (snapsync.bash, _snapsync, snapsync.fish, _snapsync.ps1)",
        String::from_utf8_lossy(&version.stdout),
        dist.display()
    );
    Ok(())
}

/// Where cargo builds: `$CARGO_TARGET_DIR` (relative to the project root), else `target/`.
fn target_dir() -> std::path::PathBuf {
    let root = project_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// `cargo xtask chaos`: the harness is the test target `chaos` of snapsync-cli, which only a build with
/// the `chaos` feature has; the options reach it through the environment.
fn chaos(args: &[String]) -> Result<()> {
    const OPS: [&str; 7] = [
        "push",
        "pull",
        "upload",
        "download",
        "sync",
        "cache-push",
        "pkg-mirror",
    ];
    const BACKENDS: [&str; 6] = ["local", "s3", "ftp", "ftps", "sftp", "pypi"];
    const USAGE: &str = "usage: cargo xtask chaos [--iterations N] [--op OP]... [--backend B]... [--seed N]";
    let (mut iterations, mut seed) = (100u64, None);
    let (mut ops, mut backends) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} takes a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--iterations" => iterations = value()?.parse().context("--iterations takes a number")?,
            "--seed" => seed = Some(value()?.parse::<u64>().context("--seed takes a number")?),
            "--op" => {
                let op = value()?;
                if !OPS.contains(&op.as_str()) {
                    bail!("unknown operation {op:?} (one of {})", OPS.join(", "));
                }
                ops.push(op.clone());
            }
            "--backend" => {
                let backend = value()?;
                if !BACKENDS.contains(&backend.as_str()) {
                    bail!("unknown backend {backend:?} (one of {})", BACKENDS.join(", "));
                }
                backends.push(backend.clone());
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let report = target_dir().join("chaos").join("report");
    let mut command = cargo();
    command
        .args([
            "nextest",
            "run",
            "--package",
            "snapsync-cli",
            "--features",
            "chaos",
        ])
        .args(["--test", "chaos", "--no-capture"])
        .env("SNAPSYNC_CHAOS_ITERATIONS", iterations.to_string())
        .env("SNAPSYNC_CHAOS_OPS", ops.join(","))
        .env("SNAPSYNC_CHAOS_BACKENDS", backends.join(","))
        .env("SNAPSYNC_CHAOS_REPORT", &report);
    if let Some(seed) = seed {
        command.env("SNAPSYNC_CHAOS_SEED", seed.to_string());
    }
    let done = run(&mut command);
    println!(
        "xtask: chaos report in {} and {}",
        report.with_extension("md").display(),
        report.with_extension("json").display()
    );
    done
}

/// `cargo xtask fuzz [--seconds N] [--seed N] [TARGET...]`: each fuzz target (all of them, or those
/// named) for N seconds, over the corpus it collected and its committed seeds. With `--seed` the
/// fuzzer's random choices are fixed, so a run from the same corpus repeats what an earlier run with
/// that seed tried (CI uses one: a clean clone's run then explores what a run here explored first).
fn fuzz(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask fuzz [--seconds N] [--seed N] [TARGET...]";
    let mut seconds: u64 = 60;
    let mut seed: Option<u64> = None;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let n = args
                .next()
                .with_context(|| format!("--seconds takes a number\n{usage}"))?;
            seconds = n
                .parse()
                .with_context(|| format!("--seconds takes a number, not {n:?}"))?;
        } else if arg == "--seed" {
            let n = args
                .next()
                .with_context(|| format!("--seed takes a number\n{usage}"))?;
            seed = Some(
                n.parse()
                    .with_context(|| format!("--seed takes a number, not {n:?}"))?,
            );
        } else if arg.starts_with('-') {
            bail!("unknown option {arg:?}\n{usage}");
        } else {
            chosen.push(arg.clone());
        }
    }
    let fuzz_dir = project_root().join("fuzz");
    let all = fuzz_targets(&fuzz_dir)?;
    if let Some(unknown) = chosen.iter().find(|name| !all.contains(name)) {
        bail!("no fuzz target {unknown:?}; the targets are {}", all.join(", "));
    }
    let targets = if chosen.is_empty() { all } else { chosen };
    println!(
        "xtask: fuzzing {} targets for {seconds} s each ({} s in all, besides building){}",
        targets.len(),
        seconds * targets.len() as u64,
        seed.map_or(String::new(), |n| format!(", seed {n}"))
    );
    for target in &targets {
        std::fs::create_dir_all(fuzz_dir.join("corpus").join(target))?;
        run(cargo()
            .current_dir(&fuzz_dir)
            // cargo-fuzz needs nightly flags; the stable compiler accepts them with this switch.
            .env("RUSTC_BOOTSTRAP", "1")
            // The first corpus directory collects what the fuzzer finds; the second holds committed seeds.
            .args(["fuzz", "run", target])
            .arg(format!("corpus/{target}"))
            .arg(format!("seeds/{target}"))
            .args(["--", &format!("-max_total_time={seconds}")])
            .args(seed.map(|n| format!("-seed={n}"))))
        .with_context(|| format!("fuzz target {target}"))?;
    }
    Ok(())
}

/// The fuzz targets: the names of the `[[bin]]` sections of `fuzz/Cargo.toml`, in their order there.
fn fuzz_targets(fuzz_dir: &std::path::Path) -> Result<Vec<String>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some(value) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix('='))
        {
            let name = value.trim().trim_matches('"');
            targets.push(name.to_owned());
            in_bin = false;
        }
    }
    if targets.is_empty() {
        bail!("{} names no [[bin]] target", manifest.display());
    }
    Ok(targets)
}

#[cfg(test)]
mod tidy {
    //! Checks on the repository itself, run with the tests.
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;
    use std::path::{Component, Path, PathBuf};
    use std::process::Command;

    use super::project_root;
    use crate::util::{capture, cargo};

    /// The crate directories under crates/ (not crates/README.md).
    fn crate_dirs() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(project_root().join("crates"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        assert!(!dirs.is_empty());
        dirs
    }

    #[test]
    fn every_fuzz_target_has_seeds_and_every_seed_folder_a_target() {
        let fuzz = project_root().join("fuzz");
        let targets = super::fuzz_targets(&fuzz).unwrap();
        for target in &targets {
            let seeds = fuzz.join("seeds").join(target);
            let count = fs::read_dir(&seeds)
                .unwrap_or_else(|e| {
                    panic!(
                        "fuzz target {target} has no seeds folder {}: {e}",
                        seeds.display()
                    )
                })
                .count();
            assert!(count > 0, "{} holds no seed", seeds.display());
        }
        for entry in fs::read_dir(fuzz.join("seeds")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    targets.contains(&name),
                    "fuzz/seeds/{name} belongs to no [[bin]] of fuzz/Cargo.toml"
                );
            }
        }
    }

    #[test]
    fn every_crate_inherits_the_workspace_lints_and_settings() {
        for dir in crate_dirs() {
            let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            for line in [
                "[lints]\nworkspace = true",
                "edition.workspace = true",
                "rust-version.workspace = true",
            ] {
                assert!(manifest.contains(line), "{} lacks {line:?}", dir.display());
            }
        }
    }

    #[test]
    fn architecture_doc_and_crate_index_name_every_crate() {
        let doc = fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap();
        let index = fs::read_to_string(project_root().join("crates/README.md")).unwrap();
        for dir in crate_dirs() {
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                doc.contains(&format!("### `{name}`")),
                "docs/ARCHITECTURE.md has no section for {name}"
            );
            assert!(
                index.contains(&format!("`{name}`")),
                "crates/README.md has no line for {name}"
            );
        }
    }

    #[test]
    fn ci_runs_the_readme_test_command() {
        let readme = fs::read_to_string(project_root().join("README.md")).unwrap();
        let ci = fs::read_to_string(project_root().join(".ci/run")).unwrap();
        assert!(
            readme.contains("cargo xtask test"),
            "README.md must give `cargo xtask test` as the test command"
        );
        assert!(
            ci.contains("cargo xtask test"),
            ".ci/run must run the README's test command"
        );
    }

    /// A workspace package as `cargo metadata` describes it.
    struct Package {
        name: String,
        /// The directory of its Cargo.toml.
        dir: PathBuf,
        /// The workspace packages it depends on in `[dependencies]` (not dev- or build-dependencies).
        deps: BTreeSet<String>,
    }

    /// The workspace's packages, from `cargo metadata --no-deps` (which lists the workspace members only).
    fn workspace() -> Vec<Package> {
        let output = capture(cargo().args(["metadata", "--format-version", "1", "--no-deps"])).unwrap();
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let text = |value: &serde_json::Value| value.as_str().expect("cargo metadata: a string").to_owned();
        let packages = metadata["packages"].as_array().expect("cargo metadata: packages");
        let names: BTreeSet<String> = packages.iter().map(|p| text(&p["name"])).collect();
        packages
            .iter()
            .map(|package| Package {
                name: text(&package["name"]),
                dir: Path::new(&text(&package["manifest_path"]))
                    .parent()
                    .unwrap()
                    .to_path_buf(),
                deps: package["dependencies"]
                    .as_array()
                    .expect("cargo metadata: dependencies")
                    .iter()
                    // `kind` is null for [dependencies], "dev" or "build" for the others; a workspace
                    // crate is a path dependency.
                    .filter(|dep| dep["kind"].is_null() && dep["path"].is_string())
                    .map(|dep| text(&dep["name"]))
                    .filter(|name| names.contains(name))
                    .collect(),
            })
            .collect()
    }

    /// A dependency: (the package, the package it depends on).
    type Edge = (String, String);

    fn architecture_doc() -> String {
        fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap()
    }

    /// The crate graph drawn in ARCHITECTURE.md: its mermaid code block, one statement a line after
    /// `graph TD`: `id[package-name]` declares a node, `a --> b` (or `a -->|why| b`) is an edge, and
    /// either end of an edge may declare its node; a node never declared is named by its id. Returns the
    /// package names and the edges between them, or what could not be read.
    fn documented_graph(doc: &str) -> Result<(BTreeSet<String>, BTreeSet<Edge>), Vec<String>> {
        let mut lines = doc
            .lines()
            .enumerate()
            .skip_while(|(_, line)| line.trim() != "```mermaid");
        if lines.next().is_none() {
            return Err(vec!["there is no ```mermaid block (the crate graph)".into()]);
        }
        let mut problems = Vec::new();
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        let mut id_edges = Vec::new();
        let mut header = false;
        // `id` or `id[label]`: the id, and the label if there is one.
        let node = |text: &str| -> Option<(String, Option<String>)> {
            let text = text.trim();
            let (id, label) = match text.split_once('[') {
                Some((id, rest)) => (id, Some(rest.strip_suffix(']')?.trim().to_owned())),
                None => (text, None),
            };
            let valid = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            valid.then(|| (id.to_owned(), label))
        };
        for (index, line) in lines {
            let statement = line.trim();
            if statement == "```" {
                break;
            }
            if statement.is_empty() || statement.starts_with("%%") {
                continue;
            }
            if !header {
                header = true;
                if statement.starts_with("graph ") || statement.starts_with("flowchart ") {
                    continue;
                }
                problems.push(format!(
                    "line {}: expected `graph TD` first, found `{statement}`",
                    index + 1
                ));
            }
            let ends: Option<Vec<(String, Option<String>)>> = match statement.split_once("-->") {
                Some((from, to)) => {
                    let to = to.trim_start();
                    // An edge label: `-->|text| to`.
                    let to = match to.strip_prefix('|') {
                        Some(rest) => rest.split_once('|').map(|(_, to)| to),
                        None => Some(to),
                    };
                    to.and_then(|to| Some(vec![node(from)?, node(to)?]))
                }
                None => node(statement).map(|node| vec![node]),
            };
            let Some(ends) = ends else {
                problems.push(format!(
                    "line {}: cannot read `{statement}` (expected `id[package]`, `a --> b` or `a -->|why| b`)",
                    index + 1
                ));
                continue;
            };
            for (id, label) in &ends {
                ids.insert(id.clone());
                if let Some(label) = label
                    && let Some(other) = labels.insert(id.clone(), label.clone())
                    && other != *label
                {
                    problems.push(format!(
                        "line {}: node `{id}` is both {other} and {label}",
                        index + 1
                    ));
                }
            }
            if let [(from, _), (to, _)] = &ends[..] {
                id_edges.push((from.clone(), to.clone()));
            }
        }
        if ids.is_empty() {
            problems.push("the ```mermaid block draws no crate".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let name = |id: &String| labels.get(id).unwrap_or(id).clone();
        let nodes = ids.iter().map(name).collect();
        let edges = id_edges.iter().map(|(from, to)| (name(from), name(to))).collect();
        Ok((nodes, edges))
    }

    /// What differs between the graph drawn in `doc` and the packages' real dependencies.
    fn graph_problems(doc: &str, packages: &[Package]) -> Vec<String> {
        let (nodes, edges) = match documented_graph(doc) {
            Ok(graph) => graph,
            Err(problems) => return problems,
        };
        let real_nodes: BTreeSet<String> = packages.iter().map(|p| p.name.clone()).collect();
        let real_edges: BTreeSet<Edge> = packages
            .iter()
            .flat_map(|p| p.deps.iter().map(|dep| (p.name.clone(), dep.clone())))
            .collect();
        let mut problems = Vec::new();
        for (from, to) in real_edges.difference(&edges) {
            problems.push(format!("missing edge {from} --> {to}: {from} depends on {to}"));
        }
        for (from, to) in edges.difference(&real_edges) {
            problems.push(format!(
                "extra edge {from} --> {to}: {from} has no [dependencies] entry for {to}"
            ));
        }
        for name in real_nodes.difference(&nodes) {
            problems.push(format!("missing crate {name}: it is a workspace member"));
        }
        for name in nodes.difference(&real_nodes) {
            problems.push(format!(
                "unknown crate {name}: not a workspace member (a node is named by its [label], else by its id)"
            ));
        }
        problems
    }

    #[test]
    fn architecture_doc_draws_the_real_crate_graph() {
        let problems = graph_problems(&architecture_doc(), &workspace());
        assert!(
            problems.is_empty(),
            "docs/ARCHITECTURE.md's crate graph (its ```mermaid block) is not what `cargo metadata` says:\n  {}",
            problems.join("\n  ")
        );
    }

    /// The `.rs` files under `dir`, recursively.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else {
            return files;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files.sort();
        files
    }

    /// The public error types a package defines in its `src/`: each `pub enum` or `pub struct` named
    /// `Error` or `…Error` (`pub` means reachable here: the workspace lints deny unreachable `pub`), as
    /// `crate_name::Type`, with the file that defines it.
    fn error_types(package: &Package) -> Vec<(String, PathBuf)> {
        let krate = package.name.replace('-', "_");
        let mut found = Vec::new();
        for file in rust_files(&package.dir.join("src")) {
            for line in fs::read_to_string(&file).unwrap().lines() {
                let line = line.trim_start();
                let Some(rest) = line
                    .strip_prefix("pub enum ")
                    .or_else(|| line.strip_prefix("pub struct "))
                else {
                    continue;
                };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.ends_with("Error") {
                    found.push((format!("{krate}::{name}"), file.clone()));
                }
            }
        }
        found
    }

    /// The text of the section that starts with the line `heading`, up to the next heading.
    fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
        let start = doc.find(&format!("\n{heading}\n"))? + heading.len() + 2;
        let end = doc[start..].find("\n#").map_or(doc.len(), |i| start + i);
        Some(&doc[start..end])
    }

    /// The error types a text names: `snapsync_x::SomeError`, not followed by more of an identifier.
    fn named_error_types(text: &str) -> BTreeSet<String> {
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        let mut named = BTreeSet::new();
        for (start, _) in text.match_indices("snapsync_") {
            if text[..start].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let path: String = text[start..]
                .chars()
                .take_while(|&c| is_ident(c) || c == ':')
                .collect();
            let mut parts = path.split("::");
            if let (Some(krate), Some(name)) = (parts.next(), parts.next())
                && name.ends_with("Error")
            {
                named.insert(format!("{krate}::{name}"));
            }
        }
        named
    }

    /// What is wrong with the Errors section of `doc`, given the error types the packages define.
    fn error_section_problems(doc: &str, packages: &[Package]) -> Vec<String> {
        let Some(errors) = section(doc, "### Errors") else {
            return vec!["there is no `### Errors` section".into()];
        };
        let named = named_error_types(errors);
        let root = project_root();
        let mut defined = BTreeSet::new();
        let mut problems = Vec::new();
        for package in packages {
            for (error, file) in error_types(package) {
                if !named.contains(&error) {
                    problems.push(format!(
                        "{}: {error} ({}) is not named",
                        package.name,
                        file.strip_prefix(&root).unwrap_or(&file).display()
                    ));
                }
                defined.insert(error);
            }
        }
        for error in named.difference(&defined) {
            problems.push(format!("{error} is named, but no crate defines it"));
        }
        problems
    }

    #[test]
    fn architecture_doc_names_every_error_type() {
        let problems = error_section_problems(&architecture_doc(), &workspace());
        assert!(
            problems.is_empty(),
            "docs/ARCHITECTURE.md's Errors section does not match the crates' error types:\n  {}",
            problems.join("\n  ")
        );
    }

    /// The files git knows (tracked, or new and not ignored) that match `pattern`.
    fn repository_files(pattern: &str) -> Vec<PathBuf> {
        let root = project_root();
        let output = capture(
            Command::new("git")
                .args([
                    "ls-files",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                    "--",
                    pattern,
                ])
                .current_dir(&root),
        )
        .expect("git lists the repository's files");
        let mut files: Vec<PathBuf> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| root.join(line))
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// `relative` resolved from `dir` (both inside `root`) without leaving `root`; `None` if it leaves.
    fn resolve_inside(root: &Path, dir: &Path, relative: &str) -> Option<PathBuf> {
        let mut parts: Vec<Component<'_>> = dir.strip_prefix(root).ok()?.components().collect();
        for component in Path::new(relative).components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop()?;
                }
                Component::Normal(_) => parts.push(component),
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        Some(
            parts
                .iter()
                .fold(root.to_path_buf(), |path, part| path.join(part)),
        )
    }

    /// Why `target`, written in `file`, does not name something inside the repository; `None` when it
    /// does, or is a web address or an anchor. A path in a link is relative to the file's folder; a path
    /// in a code span may also be relative to the repository's root (`docs/sync.md` from anywhere).
    fn outside_link(root: &Path, file: &Path, target: &str, code_span: bool) -> Option<String> {
        let target = target.trim_start_matches('<').trim_end_matches('>');
        if target.is_empty()
            || target.starts_with('#')
            || target.contains("://")
            || target.starts_with("mailto:")
        {
            return None;
        }
        let path = target.split('#').next().unwrap_or_default();
        if path.starts_with('/') || path.starts_with('~') {
            return Some(format!("`{target}` is an absolute path, outside the repository"));
        }
        let dir = file.parent().unwrap();
        let mut candidates = vec![resolve_inside(root, dir, path)];
        if code_span {
            candidates.push(resolve_inside(root, root, path));
        }
        // What the build writes under target/ is there on this machine but not in a clean clone.
        let built = root.join("target");
        if candidates
            .iter()
            .flatten()
            .any(|candidate| candidate.exists() && !candidate.starts_with(&built))
        {
            None
        } else if candidates.iter().any(Option::is_none) {
            Some(format!("`{target}` points outside the repository"))
        } else {
            Some(format!("`{target}` does not exist in the repository"))
        }
    }

    /// Whether the text of a code span names a file: a markdown file's name, or a path going up.
    fn names_a_file(span: &str) -> bool {
        !span.contains(char::is_whitespace)
            && (span.starts_with("../") || Path::new(span).extension().is_some_and(|e| e == "md"))
    }

    /// The link targets and file-naming code spans of one line of markdown (outside code blocks), each
    /// with whether it was a code span.
    fn markdown_targets(line: &str) -> Vec<(String, bool)> {
        let mut targets = Vec::new();
        // A reference definition: `[name]: target`.
        if let Some(rest) = line.trim_start().strip_prefix('[')
            && let Some((_, target)) = rest.split_once("]:")
            && let Some(target) = target.split_whitespace().next()
        {
            targets.push((target.to_owned(), false));
        }
        // Outside backticks, inline links and images: `](target)` or `](target "title")`.
        for (i, piece) in line.split('`').enumerate() {
            if i % 2 == 1 {
                if names_a_file(piece) {
                    targets.push((piece.to_owned(), true));
                }
                continue;
            }
            for (start, _) in piece.match_indices("](") {
                let rest = &piece[start + 2..];
                let end = rest.find(')').unwrap_or(rest.len());
                if let Some(target) = rest[..end].split_whitespace().next() {
                    targets.push((target.to_owned(), false));
                }
            }
        }
        targets
    }

    /// Every place in `file` (markdown, or the comments of Rust code) that names something outside the
    /// repository or missing from it.
    fn outside_links(root: &Path, file: &Path) -> Vec<String> {
        let text = fs::read_to_string(file).unwrap();
        let is_markdown = file.extension().is_some_and(|e| e == "md");
        let shown = file.strip_prefix(root).unwrap_or(file).display();
        let mut problems = Vec::new();
        let mut in_code_block = false;
        for (index, line) in text.lines().enumerate() {
            let targets = if is_markdown {
                let fence = line.trim_start();
                if fence.starts_with("```") || fence.starts_with("~~~") {
                    in_code_block = !in_code_block;
                    continue;
                }
                if in_code_block {
                    continue;
                }
                markdown_targets(line)
            } else if line.trim_start().starts_with("//") {
                // In comments only the code spans that name a file: `docs/sync.md`.
                line.split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|span| names_a_file(span))
                    .map(|span| (span.to_owned(), true))
                    .collect()
            } else {
                continue;
            };
            for (target, code_span) in targets {
                if let Some(problem) = outside_link(root, file, &target, code_span) {
                    problems.push(format!("{shown}:{}: {problem}", index + 1));
                }
            }
        }
        problems
    }

    /// What a merge or a patch leaves beside a file (`snapshot.rs.orig` was committed once).
    #[test]
    fn no_merge_leftovers_are_committed() {
        let leftovers: Vec<PathBuf> = [
            "*.orig",
            "*.rej",
            "*.BACKUP.*",
            "*.BASE.*",
            "*.LOCAL.*",
            "*.REMOTE.*",
        ]
        .iter()
        .flat_map(|p| repository_files(p))
        .collect();
        assert!(
            leftovers.is_empty(),
            "merge leftovers in the repository: {leftovers:?}"
        );
    }

    #[test]
    fn no_document_points_outside_the_repository() {
        let root = project_root();
        let files: Vec<PathBuf> = ["*.md", "*.rs"]
            .iter()
            .flat_map(|p| repository_files(p))
            .collect();
        assert!(files.iter().any(|f| f.ends_with("docs/ARCHITECTURE.md")));
        let problems: Vec<String> = files.iter().flat_map(|file| outside_links(&root, file)).collect();
        assert!(
            problems.is_empty(),
            "links and paths must name files inside the repository (bring what is needed into it):\n  {}",
            problems.join("\n  ")
        );
    }
}
