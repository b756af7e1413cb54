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

use crate::util::{cargo, project_root, run};

const HELP: &str = "\
cargo xtask <TASK> [OPTIONS]

Tasks:
  test                 Run every test: cargo nextest (unit, integration, interop with snapdir,
                       stores against moto, Azurite, pyftpdlib, vsftpd and sshd) and the doc tests.
                       Needs python3 + pip, node + npm, access to PyPI and npm the first time, and
                       vsftpd, openssh-server and openssl installed; runs as root (vsftpd, sshd).
  lint                 rustfmt check, clippy -D warnings, cargo-deny (bans, licenses, sources).
  ci                   What CI runs: lint, test, the fuzz targets for 20 seconds each, and
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
      --runs N           timed runs per tool (default 5; a warm-up run comes first)
      --quick            small data (2,000 files, 256 MiB file; 64 MiB for delta; 1 GiB for the
                         snapshot memory check) for a smoke run
      --data DIR         where the generated data lives (default target/bench-data)
  fuzz [--seconds N]   Run each fuzz target for N seconds (default 60); needs cargo-fuzz
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
        "bench" => bench::run(rest),
        "fuzz" => fuzz(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// The one test command: README and CI call exactly this.
fn test() -> Result<()> {
    run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["deny", "check", "bans", "licenses", "sources"]))
        .context("cargo-deny (install it with `cargo install --locked cargo-deny`)")
}

fn ci() -> Result<()> {
    lint()?;
    test()?;
    fuzz(&["--seconds".into(), "20".into()])?;
    bench::run(&["id".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["delta".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["snapshot".into(), "--quick".into(), "--runs".into(), "1".into()])?;
    bench::run(&["sync".into(), "--quick".into(), "--runs".into(), "1".into()])
}

fn fuzz(args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => 60,
        [flag, n] if flag == "--seconds" => n.parse().context("--seconds takes a number")?,
        _ => bail!("usage: cargo xtask fuzz [--seconds N]"),
    };
    let fuzz_dir = project_root().join("fuzz");
    for target in [
        "manifest_parse",
        "path_quote",
        "signature_read",
        "delta_apply",
        "delta_round_trip",
    ] {
        std::fs::create_dir_all(fuzz_dir.join("corpus").join(target))?;
        run(cargo()
            .current_dir(&fuzz_dir)
            // cargo-fuzz needs nightly flags; the stable compiler accepts them with this switch.
            .env("RUSTC_BOOTSTRAP", "1")
            // The first corpus directory collects what the fuzzer finds; the second holds committed seeds.
            .args(["fuzz", "run", target])
            .arg(format!("corpus/{target}"))
            .arg(format!("seeds/{target}"))
            .args(["--", &format!("-max_total_time={seconds}")]))
        .with_context(|| format!("fuzz target {target}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tidy {
    //! Checks on the repository itself, run with the tests.
    use std::fs;
    use std::path::PathBuf;

    use super::project_root;

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
}
