//! `snapsync scan` through the binary: listings of a local folder, pyftpdlib and sshd (top level,
//! recursive, `--match`, `--json`), a missing remote, and the clean-up of what runs leave: a killed
//! upload's temporary file (a fresh one stays), a dead run's lock (a live one is refused), and the
//! sync states kept for a remote (the next sync is a first sync).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use snapsync_testkit::{FtpServer, Sshd};

use crate::sync::{T12, has_temp, kill_midway, write};
use crate::util::{run, run_env, stderr};

/// Runs `snapsync ARGS`; (exit status, standard output, standard error).
fn scan(args: &[&str]) -> (i32, String, String) {
    let out = run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// The JSON lines of `out`: every line must be one object.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The entries' paths (folders with a `/`) of JSON lines, without the events and the summary.
fn listed(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["type"] == "entry")
        .map(|l| {
            let path = l["path"].as_str().unwrap().to_owned();
            if l["kind"] == "dir" {
                format!("{path}/")
            } else {
                path
            }
        })
        .collect()
}

/// A tree with files at two depths, an excluded `.git`, and a lock and a temporary file that are
/// never listed.
fn fill(root: &Path) {
    write(root, "a.txt", "aaa", T12);
    write(root, "sub/b.txt", "bb", T12);
    write(root, "sub/deep/c.html", "<p>", T12);
    write(root, ".git/HEAD", "ref", T12);
    write(
        root,
        ".snapsync-lock",
        r#"{"host":"elsewhere","pid":1,"started_ns":1}"#,
        T12,
    );
    write(root, "sub/.b.txt.snapsync-7-1.tmp", "torn", T12);
}

#[test]
fn scan_lists_a_local_folder_top_level_recursive_matched_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site");
    fill(&remote);
    let r = remote.to_str().unwrap();
    let (code, out, err) = scan(&["scan", r]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "a.txt  3  2014-01-01 12:00:00 UTC\nsub/   -  -\n",
        "top level only, aligned"
    );
    assert!(
        err.contains("1 file, 1 folder") && err.contains("top level only"),
        "{err}"
    );
    let (code, out, err) = scan(&["scan", "--recursive", r]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "a.txt            3  2014-01-01 12:00:00 UTC",
            "sub/             -  -",
            "sub/b.txt        2  2014-01-01 12:00:00 UTC",
            "sub/deep/        -  -",
            "sub/deep/c.html  3  2014-01-01 12:00:00 UTC",
        ]
    );
    let (code, out, err) = scan(&["scan", "-r", "--match", "*.html", "--json", r]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(listed(&lines), ["sub/", "sub/deep/", "sub/deep/c.html"]);
    let html = &lines[2];
    assert_eq!(html["kind"], "file");
    assert_eq!(html["size"], 3);
    assert_eq!(html["modified"], "2014-01-01T12:00:00Z");
    let summary = lines.last().unwrap();
    assert_eq!(
        (&summary["type"], &summary["command"]),
        (&"summary".into(), &"scan".into())
    );
    assert_eq!(
        (summary["files"].as_u64(), summary["dirs"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(summary["recursive"], true);
    // --exclude as sync takes it: given, it replaces the default excludes (.git shows then).
    let (code, out, err) = scan(&["scan", "--json", "-x", "sub", r]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&json_lines(&out)), [".git/", "a.txt"]);

    // A missing remote folder is an error, never an empty listing.
    let gone = dir.path().join("gone");
    let (code, out, err) = scan(&["scan", "--json", gone.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "nothing listed, one error object: {out}");
    assert_eq!(lines[0]["type"], "error");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn scan_over_ftp_removes_a_killed_uploads_temp_and_a_dead_runs_lock_only() {
    let server = FtpServer::pyftpdlib();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    let remote = server.root().join("site");
    fs::create_dir_all(&remote).unwrap();
    write(&remote, "old.txt", "old", T12);
    let url = server.url("site");
    let big: Vec<u8> = (0..(64u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(l.join("big.bin"), &big).unwrap();
    // A killed upload leaves its temporary file on the server.
    kill_midway(&["upload", l.to_str().unwrap(), &url], || {
        has_temp(&remote, "big.bin")
    });
    assert!(
        has_temp(&remote, "big.bin"),
        "the killed upload left no temporary file"
    );
    let killed = temp_names(&remote);
    assert_eq!(killed.len(), 1, "{killed:?}");
    // A listing shows neither the temporary file nor the killed run's lock.
    let (code, out, err) = scan(&["scan", "--json", "-r", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&json_lines(&out)), ["old.txt"]);
    // Older than the safety age: removed; one written just now (an upload under way): kept.
    std::thread::sleep(Duration::from_secs(4));
    fs::write(remote.join(".fresh.bin.snapsync-999999-1.tmp"), "in flight").unwrap();
    let (code, out, err) = scan(&["scan", "--remove-temp", "--temp-age", "3s", "-n", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("would remove temp {}", killed[0])), "{out}");
    assert!(remote.join(&killed[0]).exists(), "a dry run removed it");
    let (code, out, err) = scan(&["scan", "--json", "--remove-temp", "--temp-age", "3s", &url]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let event = |kind: &str, event: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["kind"] == kind && l["type"] == event)
            .map(|l| l["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(event("temp", "removed"), killed);
    assert_eq!(event("temp", "kept"), [".fresh.bin.snapsync-999999-1.tmp"]);
    assert_eq!(lines.last().unwrap()["removed"]["temps"], 1);
    assert_eq!(temp_names(&remote), [".fresh.bin.snapsync-999999-1.tmp"]);
    assert_eq!(fs::read(remote.join("old.txt")).unwrap(), b"old");

    // The killed run's lock was taken over by nobody yet: it names a process that is gone.
    let lock = remote.join(".snapsync-lock");
    assert!(lock.join("owner").exists(), "the killed run left no lock");
    let (code, out, err) = scan(&["scan", "--remove-locks", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed lock") && out.contains("not running"),
        "{out}"
    );
    assert!(!lock.exists());
    // A live run's lock (this test's process, renewed now) is refused and left as it is.
    let live = live_lock();
    fs::create_dir_all(&lock).unwrap();
    fs::write(lock.join("owner"), &live).unwrap();
    let (code, out, err) = scan(&["scan", "--remove-locks", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("locked by another run"), "{err}");
    assert_eq!(fs::read_to_string(lock.join("owner")).unwrap(), live);
}

/// The temporary files' names in `dir`.
fn temp_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| snapsync_store::is_temp_name(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A lock held by this test's process, renewed now.
fn live_lock() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    format!(
        r#"{{"token":"live","host":"{}","pid":{},"started_ns":{now}}}"#,
        host.trim(),
        std::process::id()
    )
}

#[test]
fn scan_over_sftp_lists_and_cleans_up() {
    let server = Sshd::start();
    let known_hosts = server.known_hosts().display().to_string();
    let remote = server.root().join("site");
    fill(&remote);
    // A killed upload's temporary file, by its exact name, and one being written now.
    write(&remote, ".big.bin.snapsync-4242-5f3a1.tmp", "torn", T12);
    fs::write(remote.join(".new.bin.snapsync-4243-1.tmp"), "in flight").unwrap();
    let status = std::process::Command::new("chown")
        .args(["-R", snapsync_testkit::SSH_USER])
        .arg(&remote)
        .status()
        .unwrap();
    assert!(status.success());
    let url = server.url("site");
    let with = |args: &[&str]| {
        let mut all = vec!["scan", "--known-hosts", &known_hosts];
        all.extend(args);
        all.push(&url);
        scan(&all)
    };
    let (code, out, err) = with(&["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&json_lines(&out)), ["a.txt", "sub/"]);
    let (code, out, err) = with(&["--json", "-r", "-m", "*.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&json_lines(&out)), ["a.txt", "sub/", "sub/b.txt"]);
    let (code, out, err) = with(&["--remove-temp", "--remove-locks"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed temp .big.bin.snapsync-4242-5f3a1.tmp"),
        "{out}"
    );
    assert!(out.contains("removed temp sub/.b.txt.snapsync-7-1.tmp"), "{out}");
    assert!(out.contains("kept temp .new.bin.snapsync-4243-1.tmp"), "{out}");
    assert!(
        out.contains("removed lock") && out.contains("host elsewhere"),
        "{out}"
    );
    assert_eq!(temp_names(&remote), [".new.bin.snapsync-4243-1.tmp"]);
    assert!(!remote.join(".snapsync-lock").exists());
    assert!(remote.join("sub/b.txt").exists());
    // A missing folder on the server is an error.
    let missing = server.url("gone");
    let (code, _, err) = scan(&["scan", "--known-hosts", &known_hosts, &missing]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn remove_state_forgets_every_folder_paired_with_the_remote_and_the_next_sync_is_a_first_sync() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let env = [("SNAPSYNC_STATE_DIR", state.display().to_string())];
    let (remote, other) = (dir.path().join("remote"), dir.path().join("other"));
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    write(&one, "x.txt", "x", T12);
    write(&two, "y.txt", "y", T12);
    fs::create_dir_all(&remote).unwrap();
    fs::create_dir_all(&other).unwrap();
    let sync = |local: &Path, remote: &Path, extra: &[&str]| {
        let mut args = vec!["sync"];
        args.extend(extra);
        args.extend([local.to_str().unwrap(), remote.to_str().unwrap()]);
        let out = run_env(&args, &env);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    sync(&one, &remote, &[]);
    sync(&two, &remote, &[]);
    sync(&one, &remote, &[]);
    sync(&one, &other, &[]);
    let states = || fs::read_dir(state.join("sync")).unwrap().count();
    assert_eq!(states(), 3);
    // With a base, a local deletion is carried to the remote.
    fs::remove_file(one.join("x.txt")).unwrap();
    assert_eq!(sync(&one, &remote, &["-n"]).trim(), "delete remote x.txt");

    let r = remote.to_str().unwrap();
    let out = run_env(&["scan", "--remove-state", "-n", r], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("would remove state of").count(), 2, "{text}");
    assert_eq!(states(), 3, "a dry run removed a state");
    let out = run_env(&["scan", "--json", "--remove-state", r], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    let mut removed: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "removed" && l["kind"] == "state")
        .map(|l| l["local"].as_str().unwrap().to_owned())
        .collect();
    removed.sort();
    let canonical = |p: &Path| fs::canonicalize(p).unwrap().display().to_string();
    assert_eq!(removed, [canonical(&one), canonical(&two)]);
    assert_eq!(lines.last().unwrap()["removed"]["states"], 2);
    assert_eq!(states(), 1, "the other remote's state was removed too");
    // Without a base the next run is a first sync: it only adds, so the file comes back.
    let planned = sync(&one, &remote, &["-n"]);
    assert_eq!(planned.trim(), "download      x.txt");
    sync(&one, &remote, &[]);
    assert_eq!(fs::read_to_string(one.join("x.txt")).unwrap(), "x");
    assert!(remote.join("x.txt").exists());
}

#[test]
fn scan_of_an_s3_bucket_shows_key_prefixes_as_folders() {
    let server = snapsync_testkit::S3Server::start();
    server.create_bucket("site");
    let env = server.env();
    let local = tempfile::tempdir().unwrap();
    fill(local.path());
    fs::remove_file(local.path().join(".snapsync-lock")).unwrap();
    let scan = |args: &[&str]| {
        let out = run_env(args, &env);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let (code, _, err) = scan(&["upload", local.path().to_str().unwrap(), "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = scan(&["scan", "--json", "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(listed(&lines), ["a.txt", "sub/"]);
    assert_eq!(lines[1]["modified"], Value::Null, "a key prefix has no time");
    let (code, out, err) = scan(&["scan", "--json", "-r", "--remove-temp", "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(
        listed(&lines),
        ["a.txt", "sub/", "sub/b.txt", "sub/deep/", "sub/deep/c.html"]
    );
    assert_eq!(lines.last().unwrap()["bytes"], 8);
    // A bucket that does not exist is an error, never an empty listing.
    let (code, out, err) = scan(&["scan", "s3://no-such-bucket/www"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
}
