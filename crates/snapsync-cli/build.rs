//! What `snapsync --version` says besides the version: the git commit the binary was built from and the
//! cargo features it was built with, as `SNAPSYNC_BUILD_COMMIT` and `SNAPSYNC_BUILD_FEATURES`.
//!
//! The commit is `git rev-parse --short HEAD` of the checkout this crate is in; a build without git or
//! outside a checkout (a source tarball, a crates.io download) says `unknown`, and a packager can name
//! the commit with the variable `SNAPSYNC_BUILD_COMMIT`. The features are the `CARGO_FEATURE_*`
//! variables cargo sets for this build (`default` left out): `none` when there are none.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SNAPSYNC_BUILD_COMMIT");
    let commit = std::env::var("SNAPSYNC_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SNAPSYNC_BUILD_COMMIT={}", commit.trim());
    println!("cargo:rustc-env=SNAPSYNC_BUILD_FEATURES={}", features());
}

/// `git` in this crate's folder, its standard output trimmed when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let output = Command::new("git").args(args).current_dir(dir).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The short commit of the checkout this crate is part of, or `None` (no git, not a checkout, or a
/// checkout of another project this source was copied into). Cargo is told to build again when HEAD
/// moves: HEAD itself, the branch it names, and `packed-refs`, where a branch may live instead.
fn git_commit() -> Option<String> {
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // This source copied into some other repository is not that repository's commit.
    if !same_file(
        &top.join("crates/snapsync-cli/Cargo.toml"),
        &manifest.join("Cargo.toml"),
    ) {
        return None;
    }
    let mut watched = vec![git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "HEAD",
    ])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            &branch,
        ]));
    }
    watched.extend(git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "packed-refs",
    ]));
    for path in watched {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short", "HEAD"])
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The enabled features, as Cargo.toml names them, comma-separated and sorted; `none` without any.
fn features() -> String {
    let mut names: Vec<String> = std::env::vars()
        .filter_map(|(key, _)| key.strip_prefix("CARGO_FEATURE_").map(str::to_string))
        .filter(|name| name != "DEFAULT")
        // Cargo upper-cases the name and turns `-` into `_`; feature names are lower case by convention.
        .map(|name| name.to_lowercase().replace('_', "-"))
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(",")
    }
}
