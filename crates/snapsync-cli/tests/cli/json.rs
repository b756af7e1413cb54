//! The output contract of docs/json.md, checked on every command: with `--json`, standard output is JSON
//! lines, each an object with a `type`, the last a `summary` (exit 0) or an `error` whose `exit` is the
//! process's exit status.

use std::fs;
use std::path::Path;

use serde_json::Value;
use snapsync_testkit::make_dists;

use crate::util::{Tree, run, stderr};

/// Runs `snapsync --json ARGS`, checks the contract, and returns the lines and the exit status.
fn json(args: &[&str]) -> (Vec<Value>, i32) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let code = out.status.code().expect("exits");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("snapsync {args:?}: {line:?} is not JSON: {e}"))
        })
        .collect();
    for line in &lines {
        assert!(
            line.get("type").and_then(Value::as_str).is_some(),
            "snapsync {args:?}: {line} has no type"
        );
    }
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("snapsync {args:?} printed nothing: {}", stderr_text(&out.stderr)));
    // diff exits 1 when the two differ, as diff(1), and still ends with its summary.
    if code == 0 || (args[0] == "diff" && code == 1) {
        assert_eq!(last["type"], "summary", "snapsync {args:?}: {last}");
        // `run` passes on each task's summary before its own.
        assert!(
            args[0] == "run" || lines.iter().filter(|l| l["type"] == "summary").count() == 1,
            "snapsync {args:?}: one summary"
        );
    } else {
        assert_eq!(last["type"], "error", "snapsync {args:?}: {last}");
        assert_eq!(last["exit"], code, "snapsync {args:?}: {last}");
        assert!(last["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    (lines, code)
}

fn stderr_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

fn summary(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rev()
        .find(|l| l["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {lines:?}"))
}

#[test]
fn every_command_speaks_json() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let (store, cache, restored) = (path("store"), path("cache"), path("restored"));
    let tree = Tree::new();
    tree.file("a.txt", b"alpha", 0o644)
        .file("sub/b.txt", b"beta beta", 0o644);

    // Snapshots.
    let (lines, _) = json(&["manifest", tree.arg()]);
    assert_eq!(of_type(&lines, "entry").len(), 4, "{lines:?}");
    let id = summary(&lines)["id"].as_str().unwrap().to_owned();
    let (lines, _) = json(&["id", tree.arg()]);
    assert_eq!(summary(&lines)["id"], id.as_str());
    let (lines, _) = json(&["push", "--store", &store, tree.arg()]);
    assert_eq!(summary(&lines)["id"], id.as_str());
    assert_eq!(summary(&lines)["objects_sent"], 2, "two files' contents");
    let (lines, _) = json(&["stage", "--cache-dir", &cache, tree.arg()]);
    assert_eq!(summary(&lines)["id"], id.as_str());
    let (lines, _) = json(&["fetch", "--store", &store, "--cache-dir", &cache, "--id", &id]);
    assert_eq!(summary(&lines)["command"], "fetch");
    let (lines, _) = json(&["pull", "--store", &store, "--id", &id, &restored]);
    assert_eq!(summary(&lines)["files_written"], 2);
    let (lines, _) = json(&["checkout", "--cache-dir", &cache, "--id", &id, &path("co")]);
    assert_eq!(
        summary(&lines)["files_unchanged"].as_u64().unwrap()
            + summary(&lines)["files_written"].as_u64().unwrap(),
        2
    );
    let (lines, _) = json(&["copy", "--id", &id, "--from", &store, "--to", &path("store2")]);
    assert_eq!(summary(&lines)["command"], "copy");
    let (lines, _) = json(&["verify", "--store", &store, "--id", &id]);
    assert_eq!(summary(&lines)["corrupt"], 0);
    let (lines, _) = json(&["snapshots", "--store", &store]);
    assert_eq!(of_type(&lines, "snapshot")[0]["id"], id.as_str());
    let (lines, _) = json(&["size", "--store", &store]);
    assert_eq!(summary(&lines)["snapshots"], 1);
    let (lines, _) = json(&["size", "--store", &store, "--id", &id]);
    assert_eq!(summary(&lines)["files"], 2);
    let (lines, _) = json(&["gc", "--store", &store, "--dry-run"]);
    assert_eq!(summary(&lines)["deleted"], 0);
    let (lines, code) = json(&["diff", tree.arg(), &restored]);
    assert!(of_type(&lines, "change").is_empty(), "{lines:?}");
    assert_eq!(code, 0);
    fs::write(Path::new(&restored).join("new.txt"), "new").unwrap();
    let (lines, code) = json(&["diff", tree.arg(), &restored]);
    assert_eq!(code, 1, "diff exits 1 when the two differ");
    assert_eq!(of_type(&lines, "change")[0]["change"], "added");
    assert_eq!(summary(&lines)["added"], 1);

    // Deltas.
    let (sig, delta, out) = (path("a.sig"), path("a.delta"), path("a.out"));
    let basis = tree.path().join("a.txt");
    let basis = basis.to_str().unwrap();
    let (lines, _) = json(&["signature", basis, &sig]);
    assert_eq!(summary(&lines)["basis_bytes"], 5);
    let newer = tree.path().join("sub/b.txt");
    let (lines, _) = json(&["delta", &sig, newer.to_str().unwrap(), &delta]);
    assert_eq!(summary(&lines)["new_bytes"], 9);
    let (lines, _) = json(&["patch", basis, &delta, &out]);
    assert_eq!(summary(&lines)["output_bytes"], 9);
    assert_eq!(fs::read(&out).unwrap(), b"beta beta");
    let (_, code) = json(&["signature", basis, "-"]);
    assert_eq!(code, 2, "JSON and a result on standard output cannot share it");

    // Folder sync.
    let remote = path("remote");
    fs::create_dir(&remote).unwrap();
    let (lines, _) = json(&["upload", tree.arg(), &remote]);
    assert_eq!(summary(&lines)["uploaded"], 2, "{lines:?}");
    assert_eq!(of_type(&lines, "action").len(), 2, "{lines:?}");
    fs::write(Path::new(&remote).join("a.txt"), "changed there").unwrap();
    fs::write(tree.path().join("a.txt"), "changed here").unwrap();
    let (lines, code) = json(&["sync", tree.arg(), &remote]);
    assert_eq!(code, 4, "a conflict is left: {lines:?}");
    assert_eq!(of_type(&lines, "conflict")[0]["path"], "a.txt");
    assert_eq!(summary(&lines)["command"], "sync");
    assert_eq!(lines.last().unwrap()["kind"], "conflicts");
    // A dry run of a download into a folder not made yet plans against the empty folder, makes nothing.
    let (lines, _) = json(&["download", "--dry-run", &path("down"), &remote]);
    assert_eq!(summary(&lines)["dry_run"], true);
    assert!(of_type(&lines, "action").iter().all(|a| a["dry_run"] == true));
    assert_eq!(summary(&lines)["downloaded"], 2, "{lines:?}");
    assert!(!Path::new(&path("down")).exists(), "a dry run makes nothing");
    let (lines, _) = json(&["scan", "--recursive", &remote]);
    assert_eq!(
        of_type(&lines, "entry").len(),
        3,
        "a.txt, sub, sub/b.txt: {lines:?}"
    );
    assert_eq!(
        (
            summary(&lines)["files"].as_u64(),
            summary(&lines)["dirs"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // Errors are JSON too, with the exit status.
    let (_, code) = json(&["upload", tree.arg(), &path("no-such-remote")]);
    assert_eq!(code, 1);
    let (lines, code) = json(&["pull", "--store", &store, "--id", "nothex", &restored]);
    assert_eq!((code, lines.last().unwrap()["kind"].as_str()), (2, Some("usage")));
}

#[test]
fn run_cache_and_pkg_speak_json() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let tree = Tree::new();
    tree.file("site/index.html", b"<p>hi</p>", 0o644);
    let remote = path("remote");
    fs::create_dir(&remote).unwrap();
    let config = tree.path().join("snapsync.yaml");
    fs::write(
        &config,
        format!(
            "tasks:\n  deploy:\n    command: upload\n    local: site\n    remote: {remote}\n  again:\n    command: upload\n    local: site\n    remote: {remote}\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (lines, _) = json(&["run", "--config", config, "deploy", "again"]);
    assert_eq!(of_type(&lines, "task").len(), 2, "{lines:?}");
    assert_eq!(
        of_type(&lines, "summary").len(),
        3,
        "two tasks' and run's: {lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["command"], "run");
    assert_eq!(last["tasks"][0]["exit"], 0);

    // The cache agent over a local folder.
    let cache = path("cache");
    let (lines, _) = json(&[
        "cache",
        "open",
        "--remote",
        &remote,
        "--cache",
        &cache,
        "index.html",
    ]);
    assert_eq!(of_type(&lines, "file")[0]["outcome"], "fetched", "{lines:?}");
    let local = of_type(&lines, "file")[0]["local"].as_str().unwrap().to_owned();
    fs::write(&local, "<p>edited</p>").unwrap();
    let (lines, _) = json(&[
        "cache",
        "add",
        "--remote",
        &remote,
        "--cache",
        &cache,
        "index.html",
    ]);
    assert_eq!(summary(&lines)["queued"], 1);
    let (lines, _) = json(&["cache", "status", "--remote", &remote, "--cache", &cache]);
    assert_eq!(of_type(&lines, "file")[0]["queued"], true);
    let (lines, _) = json(&["cache", "push", "--remote", &remote, "--cache", &cache]);
    assert_eq!(summary(&lines)["uploaded"], 1);
    let (lines, _) = json(&[
        "cache",
        "evict",
        "--remote",
        &remote,
        "--cache",
        &cache,
        "--max-size",
        "0",
    ]);
    assert_eq!(summary(&lines)["command"], "cache evict");

    // Package indexes as folders (PEP 503 trees).
    let built = work.path().join("built");
    fs::create_dir(&built).unwrap();
    let files = make_dists(&built, &["wheel:alpha:1.0", "sdist:beta:0.5"]);
    let index = path("index");
    let mut upload = vec!["pkg", "upload", index.as_str()];
    let names: Vec<String> = files.iter().map(|f| f.to_str().unwrap().to_owned()).collect();
    upload.extend(names.iter().map(String::as_str));
    let (lines, _) = json(&upload);
    assert_eq!(summary(&lines)["uploaded"], 2, "{lines:?}");
    let (lines, _) = json(&["pkg", "list", &index, "--all"]);
    assert_eq!(of_type(&lines, "file").len(), 2);
    let (lines, _) = json(&["pkg", "download", &index, "alpha", "-d", &path("wheels")]);
    assert_eq!(summary(&lines)["downloaded"], 1);
    let (lines, _) = json(&[
        "pkg",
        "mirror",
        "--from",
        &index,
        "--to",
        &path("mirror"),
        "--all",
        "--dry-run",
    ]);
    assert_eq!(summary(&lines)["actions"]["upload"], 2, "{lines:?}");
    let (lines, _) = json(&[
        "pkg",
        "mirror",
        "--from",
        &index,
        "--to",
        &path("mirror"),
        "--all",
    ]);
    assert_eq!(summary(&lines)["mirrored"], 2, "{lines:?}");
    let (_, code) = json(&["completions", "bash"]);
    assert_eq!(code, 2);
}

#[test]
fn quiet_verbose_and_colour_follow_one_setup() {
    let tree = Tree::new();
    tree.file("a.txt", b"alpha", 0o644);
    let remote = tempfile::tempdir().unwrap();
    let remote = remote.path().to_str().unwrap();
    // -v: a line per file; -q: nothing on standard error; colour never into a pipe.
    let out = run(&["-v", "upload", tree.arg(), remote]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("upload        a.txt"), "{text}");
    assert!(err.contains("1 up"), "{err}");
    assert!(
        !text.contains('\u{1b}') && !err.contains('\u{1b}'),
        "no colour into a pipe: {text:?} {err:?}"
    );
    fs::write(tree.path().join("b.txt"), "b").unwrap();
    let out = run(&["-q", "upload", tree.arg(), remote]);
    assert_eq!(stderr(&out), "", "-q prints nothing on success");
    // --color always colours the error prefix; NO_COLOR loses to it, and wins over auto.
    let out = run(&[
        "--color",
        "always",
        "upload",
        tree.arg(),
        "/no/such/remote/folder",
    ]);
    assert!(stderr(&out).contains("\u{1b}["), "{:?}", stderr(&out));
    let out = crate::util::run_env(
        &["upload", tree.arg(), "/no/such/remote/folder"],
        &[("NO_COLOR", "1".to_owned()), ("CLICOLOR_FORCE", "1".to_owned())],
    );
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
}
