//! The README's first example, run exactly as it is written: the commands of its demo block, with the
//! output the README shows (the id a new user compares with their own).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The demo block: the console code block after the `<!-- demo -->` line.
fn demo_block() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let after = text
        .split_once("<!-- demo -->")
        .expect("the README marks its demo with <!-- demo -->")
        .1;
    let block = after
        .split_once("```console\n")
        .expect("a console block follows the marker")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    block.lines().map(ToOwned::to_owned).collect()
}

#[test]
fn the_readme_demo_prints_what_the_readme_shows() {
    let lines = demo_block();
    // `$ command` lines are run in order by one shell; every other line is output they print.
    let mut script = String::from("set -e\n");
    let mut expected = String::new();
    for line in &lines {
        if let Some(command) = line.strip_prefix("$ ") {
            script.push_str(command);
            script.push('\n');
        } else {
            expected.push_str(line);
            expected.push('\n');
        }
    }
    assert!(script.contains("snapsync id"), "the demo prints an id: {lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_snapsync")).parent().unwrap().into();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        // Not the user's cache (a pull reads objects from it when it has them).
        .env("SNAPSYNC_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "the demo failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "the demo's output differs from the README's"
    );
}
