//! Ctrl-C, as a person presses it: SIGINT sent to a real `snapsync upload` mid-transfer against
//! pyftpdlib (FTP) and sshd (SFTP), the same keypress typed as the byte 0x03 on a terminal
//! (`script`), a second Ctrl-C, and `push` and `pull` interrupted. Each stops with exit status 3 and
//! one line, leaves no temporary file on either side and no lock, every file old or new, and the
//! next run completes.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snapsync_testkit::{FtpServer, Sshd};

use crate::sync::{T12, snapsync, write};

/// A remote folder: its URL, the same folder on this machine, and the arguments it needs.
struct Remote {
    url: String,
    root: PathBuf,
    extra: Vec<String>,
    _ftp: Option<FtpServer>,
    _sshd: Option<Sshd>,
}

fn ftp() -> Remote {
    let server = FtpServer::pyftpdlib();
    let remote = Remote {
        url: server.url("site"),
        root: server.root().join("site"),
        extra: Vec::new(),
        _ftp: None,
        _sshd: None,
    };
    fs::create_dir_all(&remote.root).unwrap();
    Remote {
        _ftp: Some(server),
        ..remote
    }
}

fn sftp() -> Remote {
    let server = Sshd::start();
    let root = server.root().join("site");
    fs::create_dir_all(&root).unwrap();
    let status = Command::new("chown")
        .args(["-R", snapsync_testkit::SSH_USER])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    Remote {
        url: server.url("site"),
        extra: vec!["--known-hosts".into(), server.known_hosts().display().to_string()],
        root,
        _ftp: None,
        _sshd: Some(server),
    }
}

impl Remote {
    /// `snapsync COMMAND... LOCAL REMOTE` with the remote's own arguments.
    fn args<'a>(&'a self, command: &[&'a str], local: &'a Path) -> Vec<&'a str> {
        let mut all = command.to_vec();
        all.extend([local.to_str().unwrap(), self.url.as_str()]);
        all.extend(self.extra.iter().map(String::as_str));
        all
    }
}

/// A big file's contents (big enough that its upload is still going when the signal comes).
fn big(len: usize, seed: u32) -> Vec<u8> {
    (0..u32::try_from(len).unwrap())
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Temporary files (of a transfer under way, or left over) anywhere below `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temps(&path));
        } else if snapsync_store::is_temp_name(&entry.file_name()) {
            found.push(path);
        }
    }
    found
}

/// A temporary file with bytes in it below `dir`: a transfer is under way.
fn transferring(dir: &Path) -> bool {
    temps(dir)
        .iter()
        .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
}

/// The big file's upload is under way (the small ones, before it by name, are done).
fn sending_big(remote: &Remote) -> bool {
    temps(&remote.root).iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".c-big.bin."))
            && fs::metadata(p).is_ok_and(|m| m.len() > 0)
    })
}

/// The remote's lock, if a run left it.
fn locks(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(snapsync_store::LOCK_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

fn spawn(args: &[&str]) -> Child {
    crate::util::snapsync()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ready` (failing if the process ended first or it never came).
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "snapsync ended before {what}"
        );
        assert!(started.elapsed() < Duration::from_mins(1), "{what} never came");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signals` (`INT`, `TERM`), one right after the other, to `pid`.
fn signal(pid: u32, signals: &[&str]) {
    let script: Vec<String> = signals.iter().map(|s| format!("kill -{s} {pid}")).collect();
    let status = Command::new("sh")
        .args(["-c", &script.join("; ")])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to end (at most 30 s); its exit status, how long it took, its stderr.
fn finish(mut child: Child) -> (Option<i32>, Duration, String) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("snapsync did not stop within 30 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        took,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line an interrupted command ends with.
fn said_interrupted(err: &str) {
    assert_eq!(err.matches("interrupted").count(), 1, "{err}");
    // On a terminal, the echoed ^C comes first on the line.
    assert!(
        err.lines()
            .any(|l| l.trim_start_matches("^C").starts_with("snapsync: interrupted")),
        "{err}"
    );
}

/// A local folder to upload: two small files (sent first, `--jobs 1` goes by name) and a big one
/// whose older copy is on the remote.
fn upload_case(remote: &Remote) -> (tempfile::TempDir, Vec<u8>) {
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    write(l, "a.txt", "a", T12);
    write(l, "b.txt", "b", T12);
    let new = big(64 << 20, 1);
    fs::write(l.join("c-big.bin"), &new).unwrap();
    fs::write(remote.root.join("c-big.bin"), b"old version").unwrap();
    (local, new)
}

/// After an interrupted upload: nothing torn, nothing left; then the next run sends only the rest.
fn check_after_upload(remote: &Remote, local: &Path, new: &[u8]) {
    assert_eq!(
        temps(&remote.root),
        Vec::<PathBuf>::new(),
        "remote temporary files"
    );
    assert_eq!(temps(local), Vec::<PathBuf>::new(), "local temporary files");
    assert_eq!(locks(&remote.root), Vec::<String>::new(), "the lock stayed");
    let now = fs::read(remote.root.join("c-big.bin")).unwrap();
    assert!(now == b"old version" || now == new, "torn: {} bytes", now.len());
    assert_eq!(fs::read(remote.root.join("a.txt")).unwrap(), b"a");
    // The small files went up before the signal and were recorded: the next run sends the big
    // one alone (`-v` lists what it does).
    let (code, out, err) = snapsync(&remote.args(&["-v", "upload", "--force", "--jobs", "1"], local));
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("a.txt") && !out.contains("b.txt"),
        "sent again: {out}"
    );
    assert!(out.contains("c-big.bin"), "{out}");
    assert!(fs::read(remote.root.join("c-big.bin")).unwrap() == new);
    assert_eq!(temps(&remote.root), Vec::<PathBuf>::new());
    assert_eq!(locks(&remote.root), Vec::<String>::new());
    let mut names: Vec<String> = fs::read_dir(&remote.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt", "c-big.bin"]);
}

fn upload_interrupted_by_sigint(remote: &Remote) {
    let (local, new) = upload_case(remote);
    let l = local.path();
    let mut child = spawn(&remote.args(&["upload", "--force", "--jobs", "1"], l));
    wait_for(&mut child, "the big upload", || sending_big(remote));
    signal(child.id(), &["INT"]);
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(3), "{err}");
    said_interrupted(&err);
    check_after_upload(remote, l, &new);
}

#[test]
fn ctrl_c_mid_upload_over_ftp_stops_cleanly_and_the_next_run_completes() {
    upload_interrupted_by_sigint(&ftp());
}

#[test]
fn ctrl_c_mid_upload_over_sftp_stops_cleanly_and_the_next_run_completes() {
    upload_interrupted_by_sigint(&sftp());
}

#[test]
fn sigterm_mid_upload_stops_as_ctrl_c_does() {
    let remote = ftp();
    let (local, new) = upload_case(&remote);
    let l = local.path();
    // With --json, the last line on standard output is the error object of kind `interrupted`.
    let mut child = spawn(&remote.args(&["upload", "--json", "--force", "--jobs", "1"], l));
    wait_for(&mut child, "the big upload", || sending_big(&remote));
    signal(child.id(), &["TERM"]);
    let stdout = child.stdout.take().unwrap();
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(3), "{err}");
    said_interrupted(&err);
    let json = std::io::read_to_string(stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        (&last["type"], &last["kind"], &last["exit"]),
        (&"error".into(), &"interrupted".into(), &3.into()),
        "{json}"
    );
    check_after_upload(&remote, l, &new);
}

/// Ctrl-C typed on a terminal: the byte 0x03 into a pseudo-terminal (`script`), whose line
/// discipline sends SIGINT to the foreground process, as a person's keypress does.
#[test]
fn ctrl_c_typed_on_a_terminal_mid_upload_stops_cleanly() {
    let remote = ftp();
    let (local, new) = upload_case(&remote);
    let l = local.path();
    let command = format!(
        "{} {}",
        env!("CARGO_BIN_EXE_snapsync"),
        remote.args(&["upload", "--force", "--jobs", "1"], l).join(" ")
    );
    let mut child = crate::util::script(&command)
        .env(
            "SNAPSYNC_CACHE_DIR",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interrupt-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) runs (util-linux)");
    wait_for(&mut child, "the big upload", || sending_big(&remote));
    // Standard input stays open until the end: its end would reach the terminal as end-of-file.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0x03]).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Ctrl-C did not stop it"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    // script -e exits with the command's status; the terminal shows both streams.
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{shown}");
    said_interrupted(&shown);
    check_after_upload(&remote, l, &new);
}

/// A second Ctrl-C does not wait for a clean stop: the process ends at once with 130 (128 +
/// SIGINT), as a shell reports a process Ctrl-C killed. Typed on a terminal while `--resolve ask`
/// waits for an answer, which the first Ctrl-C cannot cut short (two signals sent back to back
/// would arrive as one).
#[test]
fn a_second_ctrl_c_exits_at_once_with_130() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    write(l, "a.txt", "local", T12);
    write(r, "a.txt", "remote version", crate::sync::T13);
    let command = format!(
        "{} sync --resolve ask {} {}",
        env!("CARGO_BIN_EXE_snapsync"),
        l.display(),
        r.display()
    );
    let mut child = crate::util::script(&command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) runs (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    // The prompt is up once the run has locked the remote and planned.
    wait_for(&mut child, "the prompt", || {
        fs::read_dir(r).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(snapsync_store::LOCK_PREFIX)
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(&[0x03]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C ended the prompt"
    );
    stdin.write_all(&[0x03]).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second Ctrl-C did not end it"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(130), "{shown}");
    // Nothing was changed; the lock the run held goes stale and is taken over (its process is gone).
    assert_eq!(crate::sync::read(&l.join("a.txt")), "local");
    assert_eq!(crate::sync::read(&r.join("a.txt")), "remote version");
    let (code, _, err) = snapsync(&[
        "sync",
        "--resolve",
        "local",
        l.to_str().unwrap(),
        r.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(crate::sync::read(&r.join("a.txt")), "local");
}

/// A push interrupted mid-object writes no manifest (the snapshot does not exist) and leaves no
/// temporary object; the next push completes.
#[test]
fn ctrl_c_mid_push_writes_no_manifest_and_the_next_push_completes() {
    let server = FtpServer::pyftpdlib();
    let url = server.url("snapshots");
    let store = server.root().join("snapshots");
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    write(s, "a.txt", "a", T12);
    fs::write(s.join("big-1.bin"), big(48 << 20, 2)).unwrap();
    fs::write(s.join("big-2.bin"), big(48 << 20, 3)).unwrap();
    let src_arg = s.to_str().unwrap();
    let mut child = spawn(&["push", "--jobs", "1", "--store", &url, src_arg]);
    wait_for(&mut child, "an object upload", || transferring(&store));
    signal(child.id(), &["INT"]);
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(3), "{err}");
    said_interrupted(&err);
    assert_eq!(temps(&store), Vec::<PathBuf>::new(), "temporary objects");
    let manifests = store.join(".manifests");
    assert!(
        fs::read_dir(&manifests).map_or(true, |mut d| d.next().is_none()),
        "a manifest of a half-pushed snapshot"
    );
    let (code, out, err) = snapsync(&["push", "--store", &url, src_arg]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim();
    let (code, _, err) = snapsync(&["verify", "--store", &url, "--id", id]);
    assert_eq!(code, 0, "{err}");
}

/// A pull interrupted mid-way leaves every file old or new and no temporary file; the next pull
/// completes.
#[test]
fn ctrl_c_mid_pull_leaves_files_old_or_new_and_the_next_pull_completes() {
    const FILES: usize = 12;
    let server = FtpServer::pyftpdlib();
    let url = server.url("snapshots");
    let name = |i: usize| format!("f{i:02}.bin");
    let new = |i: usize| big(8 << 20, 10 + u32::try_from(i).unwrap());
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    for i in 0..FILES {
        fs::write(src.path().join(name(i)), new(i)).unwrap();
        fs::write(d.join(name(i)), format!("old {i}")).unwrap();
    }
    let (code, out, err) = snapsync(&["push", "--store", &url, src.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    let pull = [
        "pull",
        "--jobs",
        "1",
        "--store",
        &url,
        "--id",
        &id,
        d.to_str().unwrap(),
    ];
    // Without the cache: every object comes from the server.
    let cache = tempfile::tempdir().unwrap();
    let mut child = crate::util::snapsync()
        .env("SNAPSYNC_CACHE_DIR", cache.path())
        .args(pull)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut child, "a file being written", || transferring(d));
    signal(child.id(), &["INT"]);
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(3), "{err}");
    said_interrupted(&err);
    assert_eq!(temps(d), Vec::<PathBuf>::new(), "temporary files");
    let mut left = 0;
    for i in 0..FILES {
        let now = fs::read(d.join(name(i))).unwrap();
        assert!(
            now == format!("old {i}").as_bytes() || now == new(i),
            "{} torn",
            name(i)
        );
        left += usize::from(now != new(i));
    }
    assert!(left > 0, "the pull had finished before the signal");
    let (code, _, err) = snapsync(&pull);
    assert_eq!(code, 0, "{err}");
    for i in 0..FILES {
        assert!(fs::read(d.join(name(i))).unwrap() == new(i));
    }
}

#[test]
fn the_help_shows_the_one_exit_status_table() {
    let top = crate::util::ok(&["--help"]);
    for line in [
        "0    success",
        "1    error",
        "2    usage error",
        "3    interrupted: Ctrl-C or SIGTERM",
        "4    finished, but conflicts were left",
        "130  a second Ctrl-C",
        "141  standard output was closed",
    ] {
        assert!(top.contains(line), "{line:?} missing from:\n{top}");
    }
    let upload = crate::util::ok(&["upload", "--help"]);
    assert!(
        upload.contains("Ctrl-C") && upload.contains("exit status 3"),
        "{upload}"
    );
}

/// A download interrupted mid-file over SFTP: the local file is old or new, its temporary file gone,
/// the remote's lock released; the next run fetches only what had not arrived.
#[test]
fn ctrl_c_mid_download_over_sftp_stops_cleanly_and_the_next_run_completes() {
    let remote = sftp();
    let new = big(64 << 20, 7);
    write(&remote.root, "a.txt", "a", T12);
    fs::write(remote.root.join("c-big.bin"), &new).unwrap();
    let status = Command::new("chown")
        .args(["-R", snapsync_testkit::SSH_USER])
        .arg(&remote.root)
        .status()
        .unwrap();
    assert!(status.success());
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    fs::write(l.join("c-big.bin"), b"old local").unwrap();
    let mut child = spawn(&remote.args(&["download", "--force", "--jobs", "1"], l));
    let big_arriving = || {
        temps(l).iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".c-big.bin."))
                && fs::metadata(p).is_ok_and(|m| m.len() > 0)
        })
    };
    wait_for(&mut child, "the big download", big_arriving);
    signal(child.id(), &["INT"]);
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(3), "{err}");
    said_interrupted(&err);
    assert_eq!(temps(l), Vec::<PathBuf>::new(), "local temporary files");
    assert_eq!(locks(&remote.root), Vec::<String>::new(), "the lock stayed");
    let now = fs::read(l.join("c-big.bin")).unwrap();
    assert!(now == b"old local" || now == new, "torn: {} bytes", now.len());
    assert_eq!(fs::read(l.join("a.txt")).unwrap(), b"a");
    let (code, out, err) = snapsync(&remote.args(&["-v", "download", "--force", "--jobs", "1"], l));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("a.txt"), "fetched again: {out}");
    assert!(fs::read(l.join("c-big.bin")).unwrap() == new);
    assert_eq!(temps(l), Vec::<PathBuf>::new());
}

/// `signature`, `delta` and `patch` stop at Ctrl-C too: each reads its input from a pipe that is still
/// being written when the signal comes; the command exits 3 with the one line, and its output file is
/// neither published nor left under a temporary name.
#[test]
fn ctrl_c_mid_signature_delta_and_patch_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let basis = big(4 << 20, 7);
    fs::write(d.join("basis"), &basis).unwrap();
    let sig = d.join("basis.sig");
    let status = crate::util::snapsync()
        .args([
            "signature",
            d.join("basis").to_str().unwrap(),
            sig.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let delta = d.join("a.delta");
    let status = crate::util::snapsync()
        .args([
            "delta",
            sig.to_str().unwrap(),
            d.join("basis").to_str().unwrap(),
            delta.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let delta_bytes = fs::read(&delta).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = |name: &str| out_dir.path().join(name).to_str().unwrap().to_owned();
    let cases: [(Vec<String>, &[u8], String); 3] = [
        (vec!["signature".into(), "-".into(), out("s")], &basis, out("s")),
        (
            vec!["delta".into(), sig.display().to_string(), "-".into(), out("d")],
            &basis,
            out("d"),
        ),
        (
            vec![
                "patch".into(),
                d.join("basis").display().to_string(),
                "-".into(),
                out("p"),
            ],
            &delta_bytes,
            out("p"),
        ),
    ];
    for (args, input, output) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = crate::util::snapsync()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Half the input, and the output under its temporary name: the command is at work.
        let half = input.len() / 2;
        stdin.write_all(&input[..half]).unwrap();
        let out_dir = out_dir.path().to_path_buf();
        wait_for(&mut child, "the output's temporary file", || {
            !temps(&out_dir).is_empty()
        });
        signal(child.id(), &["INT"]);
        // The rest still comes, and the pipe closes as if the input were whole.
        std::thread::sleep(Duration::from_millis(100));
        let _ = stdin.write_all(&input[half..]);
        drop(stdin);
        let (code, _, err) = finish(child);
        assert_eq!(code, Some(3), "{args:?}: {err}");
        said_interrupted(&err);
        assert!(!Path::new(&output).exists(), "{args:?}: the output was published");
        assert_eq!(
            temps(&out_dir),
            Vec::<PathBuf>::new(),
            "{args:?}: a temporary file was left"
        );
    }
}
