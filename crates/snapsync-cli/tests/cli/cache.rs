//! `snapsync cache` through the binary, against a local folder, pyftpdlib, OpenSSH's sshd (key login,
//! as sftpsyncer's users had) and the S3 server: two caches of one remote share a file; a push that
//! would clobber the other cache's edit is refused (exit 4) until forced; missing and hostile paths.

use std::fs;
use std::path::Path;

use snapsync_testkit::{FtpServer, S3Server, Sshd};

use crate::util::{run_env, stderr};

/// Runs the cache scenario against `remote`, with `extra` connection flags and `env`.
fn scenario(remote: &str, extra: &[&str], env: &[(&str, String)]) {
    let caches = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        caches.path().join("a"),
        caches.path().join("b"),
        caches.path().join("c"),
    );
    let cache = |dir: &Path, args: &[&str]| {
        let mut all = vec![
            "cache",
            args[0],
            "--remote",
            remote,
            "--cache",
            dir.to_str().unwrap(),
        ];
        all.extend_from_slice(&args[1..]);
        all.extend_from_slice(extra);
        let out = run_env(&all, env);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    // Cache A adds a new file and pushes it.
    fs::create_dir_all(a.join("reports")).unwrap();
    fs::write(a.join("reports/q3.csv"), "v1").unwrap();
    let (code, _, err) = cache(&a, &["add", "reports/q3.csv"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cache(&a, &["push"]);
    assert_eq!(code, 0, "{err}");
    // Cache B opens it: the printed path holds the file.
    let (code, out, err) = cache(&b, &["open", "reports/q3.csv"]);
    assert_eq!(code, 0, "{err}");
    let b_file = Path::new(out.trim()).to_owned();
    assert_eq!(fs::read_to_string(&b_file).unwrap(), "v1");
    assert!(b_file.starts_with(b.canonicalize().unwrap()));
    // Missing and hostile paths are errors that say so.
    let (code, _, err) = cache(&b, &["open", "nope.csv"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not in the cache and not on the remote"), "{err}");
    let (code, _, err) = cache(&b, &["open", "../../etc/passwd"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a usable path"), "{err}");
    // Both edit; A pushes first; B's push would clobber A's edit: a conflict, exit 4, nothing sent.
    fs::write(&b_file, "edited in B").unwrap();
    let (code, _, err) = cache(&b, &["add", b_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    fs::write(a.join("reports/q3.csv"), "edited in A, longer").unwrap();
    let (code, _, err) = cache(&a, &["add", "reports/q3.csv"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cache(&a, &["push"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cache(&b, &["push"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("conflict: reports/q3.csv"), "{err}");
    let (code, out, err) = cache(&b, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(status["type"], "file", "{out}");
    assert_eq!(status["queued"], true, "{out}");
    assert!(status["conflict"].is_string(), "{out}");
    let (code, out, err) = cache(&c, &["open", "reports/q3.csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(out.trim()).unwrap(), "edited in A, longer");
    // Forced, B's edit goes; C sees it after a refresh.
    let (code, _, err) = cache(&b, &["push", "--force"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cache(&c, &["open", "--refresh", "reports/q3.csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(out.trim()).unwrap(), "edited in B");
    // Eviction empties C (nothing queued there).
    let (code, _, err) = cache(&c, &["evict", "--max-size", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(!c.join("reports/q3.csv").exists());
}

#[test]
fn a_cache_over_a_local_folder() {
    let remote = tempfile::tempdir().unwrap();
    scenario(remote.path().to_str().unwrap(), &[], &[]);
}

#[test]
fn a_cache_over_ftp() {
    let server = FtpServer::pyftpdlib();
    fs::create_dir_all(server.root().join("data")).unwrap();
    scenario(&server.url("data"), &[], &[]);
}

#[test]
fn a_cache_over_sftp_with_a_key() {
    let server = Sshd::start();
    let (key, known) = (server.key_file(), server.known_hosts());
    scenario(
        &server.url_without_password(""),
        &[
            "--ssh-key",
            key.to_str().unwrap(),
            "--known-hosts",
            known.to_str().unwrap(),
        ],
        &[],
    );
}

#[test]
fn a_cache_over_s3() {
    let server = S3Server::start();
    server.create_bucket("cache");
    scenario("s3://cache/team", &[], &server.env());
}

#[test]
fn an_unreachable_remote_serves_cached_files_with_a_warning_unless_online() {
    let mut server = FtpServer::pyftpdlib();
    fs::create_dir_all(server.root().join("data")).unwrap();
    fs::write(server.root().join("data/a.txt"), "a").unwrap();
    fs::write(server.root().join("data/b.txt"), "b").unwrap();
    let remote = server.url("data");
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_str().unwrap();
    let open = |extra: &[&str]| {
        let mut args = vec!["cache", "open", "--remote", &remote, "--cache", cache_dir];
        args.extend_from_slice(extra);
        let out = crate::util::run(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let (code, _, err) = open(&["a.txt"]);
    assert_eq!(code, 0, "{err}");
    server.stop();
    // Cached, and not asked to check: no warning, no wait.
    let (code, out, err) = open(&["a.txt"]);
    assert_eq!(
        (code, fs::read_to_string(out.trim()).unwrap().as_str()),
        (0, "a"),
        "{err}"
    );
    // Asked to check, the remote is gone: the cached copy, with a warning.
    let (code, out, err) = open(&["--refresh", "a.txt"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().ends_with("a.txt"), "{out}");
    assert!(
        err.contains("warning:") && err.contains("cannot be reached"),
        "{err}"
    );
    // --online makes that an error; a file that is not cached is one anyway.
    let (code, _, err) = open(&["--refresh", "--online", "a.txt"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = open(&["b.txt"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be reached"), "{err}");
}

#[test]
fn a_killed_open_or_push_leaves_old_or_new_files_and_the_rerun_completes() {
    let server = FtpServer::pyftpdlib();
    let root = server.root().join("data");
    fs::create_dir_all(&root).unwrap();
    let big: Vec<u8> = (0..(96u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    let remote = server.url("data");
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_str().unwrap();
    let args = |command: &'static str, path: Option<&'static str>| {
        let mut args = vec![
            "cache",
            command,
            "--remote",
            remote.as_str(),
            "--cache",
            cache_dir,
        ];
        args.extend(path);
        args
    };
    let open = args("open", Some("big.bin"));
    // Killed mid-download: no file under the final name, only a temporary one.
    crate::sync::kill_midway(&open, || crate::sync::has_temp(dir.path(), "big.bin"));
    assert!(!dir.path().join("big.bin").exists());
    let out = crate::util::run(&open);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(dir.path().join("big.bin")).unwrap() == big);
    assert!(
        !crate::sync::has_temp(dir.path(), "big.bin"),
        "the killed fetch's temporary file stayed"
    );
    // Killed mid-push: the remote file is old or new, never torn; the file stays queued and the
    // rerun sends it.
    let mut edited = big.clone();
    edited.extend_from_slice(b"more");
    fs::write(dir.path().join("big.bin"), &edited).unwrap();
    let out = crate::util::run(&args("add", Some("big.bin")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let push = args("push", None);
    crate::sync::kill_midway(&push, || crate::sync::has_temp(&root, "big.bin"));
    let now = fs::read(root.join("big.bin")).unwrap();
    assert!(now == big || now == edited, "torn: {} bytes", now.len());
    let out = crate::util::run(&push);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(root.join("big.bin")).unwrap() == edited);
}

#[test]
fn two_processes_opening_one_missing_file_download_it_once_and_see_it_whole() {
    let server = FtpServer::pyftpdlib();
    let root = server.root().join("data");
    fs::create_dir_all(&root).unwrap();
    let big: Vec<u8> = (0..(32u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    let remote = server.url("data");
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        crate::util::snapsync()
            .args(["-v", "cache", "open", "--remote", &remote, "--cache"])
            .arg(dir.path())
            .arg("big.bin")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (open(), open());
    let mut said = Vec::new();
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        // Each process reads the file it was given: whole, never a partial download.
        let path = String::from_utf8(out.stdout).unwrap();
        assert!(fs::read(path.trim()).unwrap() == big, "a partial file was opened");
        said.push(err);
    }
    // One fetched it; the other waited for that fetch and found it cached.
    let fetched = said.iter().filter(|e| e.contains("big.bin: fetched")).count();
    let cached = said.iter().filter(|e| e.contains("big.bin: cached")).count();
    assert_eq!((fetched, cached), (1, 1), "{said:?}");
    assert!(!crate::sync::has_temp(dir.path(), "big.bin"));
}
