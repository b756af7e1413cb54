//! `manifest`, `id`, help, errors and exit codes.

use std::io::Read;
use std::process::Stdio;

use crate::util::{Tree, ok, run, run_with_input, snapsync, stderr};

fn sample() -> Tree {
    let tree = Tree::new();
    tree.file("a/b/x", b"hello\n", 0o644)
        .file("top", b"0123456789", 0o600)
        .dir("empty", 0o755);
    tree
}

#[test]
fn manifest_ends_with_a_newline_and_hashes_to_the_id() {
    let tree = sample();
    let manifest = ok(&["manifest", tree.arg()]);
    assert!(manifest.ends_with("./top\n"), "{manifest}");
    assert_eq!(manifest.lines().count(), 6);
    let id = ok(&["id", tree.arg()]);
    assert_eq!(id, format!("{}\n", blake3::hash(manifest.as_bytes()).to_hex()));
}

#[test]
fn id_reads_a_manifest_from_stdin() {
    let tree = sample();
    let manifest = ok(&["manifest", tree.arg()]);
    let id = ok(&["id", tree.arg()]);
    let out = run_with_input(&["id", "-"], manifest.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), id);

    // Order, comments and CRLF do not matter; the canonical text is hashed.
    let mut lines: Vec<&str> = manifest.lines().collect();
    lines.reverse();
    let shuffled = format!("# made by hand\r\n{}\r\n", lines.join("\r\n"));
    let out = run_with_input(&["id", "-"], shuffled.as_bytes());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), id);

    // Empty input is the empty manifest. snapdir's `id` is `echo "$manifest" | grep -v '^#' | b3sum`,
    // which for no manifest hashes the one newline echo writes: the same id, from the real b3sum. A
    // warning says so, in case the input was meant to hold something.
    let mut b3sum = std::process::Command::new("b3sum")
        .arg("--no-names")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("b3sum runs (apt-get install b3sum)");
    std::io::Write::write_all(&mut b3sum.stdin.take().unwrap(), b"\n").unwrap();
    let b3sum = b3sum.wait_with_output().unwrap();
    let empty_id = String::from_utf8(b3sum.stdout).unwrap();
    let out = run_with_input(&["id", "-"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), empty_id);
    assert!(stderr(&out).contains("no manifest entries"), "{}", stderr(&out));
}

#[test]
fn bad_manifest_on_stdin_names_the_line() {
    let out = run_with_input(
        &["id", "-"],
        b"D 755 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./\nF 0644 x 1 ./f\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("error: standard input is not a valid manifest"),
        "{err}"
    );
    assert!(
        err.contains("caused by: manifest line 2: invalid permissions \"0644\""),
        "{err}"
    );

    // Comments alone are the empty manifest, as empty input is: its id, and the warning.
    let out = run_with_input(&["id", "-"], b"# only a comment\n");
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no manifest entries"));
    assert_eq!(out.stdout, run_with_input(&["id", "-"], b"").stdout);
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &[][..],
        &["id"],
        &["id", "--frobnicate", "."],
        &["manifest", "-"],
        &["id", "-", "--exclude", "x"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn failures_exit_with_1_and_name_the_path() {
    let tree = sample();
    let missing = tree.path().join("missing");
    let out = run(&["id", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot read {}\n  caused by: No such file",
            missing.display()
        )),
        "{err}"
    );

    let file = tree.path().join("top");
    let out = run(&["manifest", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("error: {} is not a directory\n", file.display())
    );

    let out = run(&["id", "--exclude", "a[", tree.arg()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: invalid exclude pattern \"a[\""), "{err}");
    assert!(err.contains("hint: --exclude takes a glob"), "{err}");
}

#[test]
fn help_explains_every_command() {
    let top = ok(&["--help"]);
    for word in ["manifest", "id", "completions", "Exit status"] {
        assert!(top.contains(word), "{top}");
    }
    let manifest = ok(&["manifest", "--help"]);
    for word in [
        "--exclude <GLOB>",
        "--exclude-regex <RE>",
        "--no-follow",
        "--absolute",
        "--jobs",
        "b3sum",
    ] {
        assert!(manifest.contains(word), "{word}: {manifest}");
    }
    assert!(ok(&["id", "--help"]).contains("standard input"));
    // Every command that takes a store names every kind of store it takes.
    for command in [
        &["push", "--help"][..],
        &["pull", "--help"],
        &["fetch", "--help"],
        &["verify", "--help"],
        &["snapshots", "--help"],
        &["gc", "--help"],
        &["copy", "--help"],
        &["sync", "--help"],
        &["upload", "--help"],
        &["download", "--help"],
        &["size", "--help"],
        &["diff", "--help"],
        &["cache", "open", "--help"],
    ] {
        let help = ok(command);
        for scheme in [
            "file://", "s3://", "gs://", "az://", "ftp://", "ftps://", "sftp://",
        ] {
            assert!(
                help.contains(scheme),
                "{command:?} does not name {scheme}: {help}"
            );
        }
    }
    assert!(ok(&["--version"]).starts_with("snapsync "));
}

#[test]
fn excludes_and_options_change_the_manifest() {
    let tree = sample();
    tree.symlink("link", "top");
    let all = ok(&["manifest", tree.arg()]);
    assert!(all.contains(" ./link\n") && all.contains(" ./a/b/x\n"));
    let some = ok(&[
        "manifest",
        "-x",
        "a",
        "--exclude",
        "*.nothing",
        "--no-follow",
        tree.arg(),
    ]);
    assert!(!some.contains("./a/") && !some.contains("./link"), "{some}");
    let regex = ok(&["manifest", "--exclude-regex", "/b(/|$)", tree.arg()]);
    assert!(regex.contains(" ./a/\n") && !regex.contains("./a/b"), "{regex}");
    let absolute = ok(&["manifest", "--absolute", "-j", "1", tree.arg()]);
    assert!(
        absolute.contains(&format!(" {}/a/b/x\n", tree.arg())),
        "{absolute}"
    );
}

#[test]
fn warnings_go_to_stderr_unless_quiet() {
    let tree = sample();
    tree.symlink("dangling", "nowhere");
    let out = run(&["id", tree.arg()]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        format!("warning: skipped dangling symlink {}/dangling\n", tree.arg())
    );
    let out = run(&["id", "-q", tree.arg()]);
    assert_eq!(stderr(&out), "");
    let out = run(&["id", "-v", tree.arg()]);
    assert!(
        stderr(&out).contains("walked 6 entries, hashed 2 files (16 B)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_closed_pipe_ends_quietly_and_not_as_success() {
    let tree = Tree::new();
    for i in 0..3000 {
        tree.file(&format!("d{}/file-with-a-long-name-{i}", i % 10), b"x", 0o644);
    }
    let mut child = snapsync()
        .args(["manifest", tree.arg()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is dropped here, like `| head -c 16`: no message (the reader chose to stop), and
    // not success either (the output is cut short), 141 as a shell reports SIGPIPE.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn completions_are_generated() {
    let bash = ok(&["completions", "bash"]);
    assert!(bash.contains("snapsync") && bash.contains("--exclude"));
}
