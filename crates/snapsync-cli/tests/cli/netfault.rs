//! Network faults through the binary: `snapsync upload` and `download` against pyftpdlib and sshd
//! behind the testkit's `FaultProxy`. Transient faults (a data connection reset mid-upload, a control
//! connection closed right after its `PASV` reply, a download cut short) are retried and the run ends
//! 0 with the right files; a persistent fault ends 1 with an error that names the server (no
//! password) and the operation, with every file old or absent and no temporary file under a final
//! name; a stalled server ends in a timeout error (`--timeout 2s`), never a hang. The same through an
//! S3 server (moto) and an FTPS one (vsftpd, faulted at the TCP level: its replies are encrypted).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use snapsync_testkit::{Direction, Fault, FaultProxy, FtpFlavor, FtpServer, Link, Rule, S3Server, Sshd};

use crate::util::snapsync;

/// Runs `snapsync ARGS`, killing it (and failing the test) if it has not ended within `limit`:
/// (exit status, standard output, standard error).
fn run_within(limit: Duration, args: &[&str]) -> (i32, String, String) {
    run_within_env(limit, args, &[])
}

/// [`run_within`] with `env` added to the environment.
fn run_within_env(limit: Duration, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut child = snapsync()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapsync runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "snapsync {args:?} still ran after {limit:?} (a hang): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `len` bytes that differ with `seed`.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A local folder of `files` files of 400 KB.
fn folder(files: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..files {
        fs::write(dir.path().join(format!("file{i}.bin")), content(400_000, i)).unwrap();
    }
    dir
}

/// Every file below `dir`, relative, with its bytes; temporary files and the lock left out.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Temporary files below `dir` (a torn upload would leave one).
fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| snapsync_store::is_temp_name(std::ffi::OsStr::new(name)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn transient_ftp_faults_are_retried_and_upload_and_download_end_0() {
    let server = FtpServer::pyftpdlib();
    let proxy = FaultProxy::ftp(server.port());
    let url = proxy.url(&server.url("site"));
    let local = folder(6);
    // One data connection reset mid-upload (the first ones are listings', which carry too little).
    proxy.add(Rule {
        link: Link::Data,
        when: snapsync_testkit::When::UntilFired,
        fault: Fault::Reset {
            direction: Direction::ToServer,
            after: 150_000,
        },
    });
    let l = local.path().to_str().unwrap();
    let (code, _, err) = run_within(
        Duration::from_mins(2),
        &["upload", "--create-folder", "--timeout", "10s", l, &url],
    );
    assert_eq!(code, 0, "{err}");
    // Parallel uploads given the fault before it first took effect may meet it too.
    assert!(proxy.fired() >= 1, "the fault never happened");
    let before = proxy.fired();
    // One control connection closed right after its `PASV` reply (vsftpd's case), with a new file
    // to send.
    fs::write(local.path().join("new.bin"), content(300_000, 99)).unwrap();
    proxy.clear();
    proxy.add(Rule::once(Link::Main, Fault::ClosePassive { reply: true }));
    let (code, _, err) = run_within(Duration::from_mins(2), &["upload", "--timeout", "10s", l, &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxy.fired(), before + 1, "the fault happened");
    let remote = server.root().join("site");
    assert!(
        files(&remote) == files(local.path()),
        "the remote holds other files"
    );
    assert_eq!(temporaries(&remote), Vec::<String>::new());
    // A download whose data connection is cut short, then one that is reset.
    proxy.clear();
    let before = proxy.fired();
    for fault in [
        Fault::Truncate {
            direction: Direction::ToClient,
            after: 150_000,
        },
        Fault::Reset {
            direction: Direction::ToClient,
            after: 250_000,
        },
    ] {
        proxy.add(Rule {
            link: Link::Data,
            when: snapsync_testkit::When::UntilFired,
            fault,
        });
    }
    let back = tempfile::tempdir().unwrap();
    let b = back.path().to_str().unwrap();
    let (code, _, err) = run_within(Duration::from_mins(2), &["download", b, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(proxy.fired() >= before + 2, "both download faults happened");
    assert!(
        files(back.path()) == files(local.path()),
        "the download is not the folder"
    );
    assert_eq!(temporaries(back.path()), Vec::<String>::new());
}

#[test]
fn a_persistent_fault_exits_1_naming_the_server_and_the_operation_and_tears_nothing() {
    let server = FtpServer::pyftpdlib();
    let remote = server.root().join("site");
    fs::create_dir_all(&remote).unwrap();
    fs::write(remote.join("file0.bin"), b"old").unwrap();
    let proxy = FaultProxy::ftp(server.port());
    let url = proxy.url(&server.url("site"));
    proxy.add(Rule::always(
        Link::Data,
        Fault::Reset {
            direction: Direction::ToServer,
            after: 100_000,
        },
    ));
    let local = folder(2);
    let l = local.path().to_str().unwrap();
    let (code, _, err) = run_within(
        Duration::from_mins(2),
        &["upload", "--force", "--retries", "2", "--timeout", "5s", l, &url],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", proxy.port())),
        "no server in: {err}"
    );
    assert!(err.contains("upload failed 3 times"), "no operation in: {err}");
    let password = snapsync_testkit::FTP_PASSWORD.as_str();
    assert!(!err.contains(password), "the password shows: {err}");
    // Old or absent, never torn; no temporary file left under any name.
    assert_eq!(fs::read(remote.join("file0.bin")).unwrap(), b"old");
    assert!(!remote.join("file1.bin").exists());
    assert_eq!(temporaries(&remote), Vec::<String>::new());
    // The fault gone, the next run completes.
    proxy.clear();
    let (code, _, err) = run_within(Duration::from_mins(2), &["upload", "--force", l, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(files(&remote) == files(local.path()));
}

#[test]
fn a_stalled_server_ends_in_a_timeout_error_never_a_hang() {
    let ftp = FtpServer::pyftpdlib();
    let sshd = Sshd::start();
    let ftp_proxy = FaultProxy::ftp(ftp.port());
    let ssh_proxy = FaultProxy::start(sshd.port());
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    let local = folder(1);
    let l = local.path().to_str().unwrap();
    let stall = Fault::Stall {
        direction: Direction::ToClient,
        after: 0,
    };
    ftp_proxy.add(Rule::always(Link::Main, stall));
    ssh_proxy.add(Rule::always(Link::Main, stall));
    let ftp_url = ftp_proxy.url(&ftp.url("site"));
    let ssh_url = ssh_proxy.url(&sshd.url("site"));
    let known = known_hosts.path().to_str().unwrap();
    for (name, args) in [
        (
            "FTP",
            vec!["upload", "--timeout", "2s", "--retries", "1", l, &ftp_url],
        ),
        (
            "SFTP",
            vec![
                "upload",
                "--timeout",
                "2s",
                "--retries",
                "1",
                "--known-hosts",
                known,
                "--accept-new-host-key",
                l,
                &ssh_url,
            ],
        ),
    ] {
        let (code, _, err) = run_within(Duration::from_mins(1), &args);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(err.contains("no answer within 2s"), "{name}: {err}");
        assert!(err.contains("127.0.0.1:"), "{name}: {err}");
    }
    // A timeout of zero is refused as a usage error.
    let (code, _, err) = run_within(Duration::from_mins(1), &["upload", "--timeout", "0", l, &ftp_url]);
    assert_eq!(code, 2, "{err}");
}

/// The S3 server through the proxy, as the binary reaches it: `server.env()` with the endpoint moved
/// to the proxy's port.
fn s3_env(server: &S3Server, proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    server
        .env()
        .into_iter()
        .map(|(key, value)| {
            if key == "AWS_ENDPOINT_URL" {
                (key, format!("http://127.0.0.1:{}", proxy.port()))
            } else {
                (key, value)
            }
        })
        .collect()
}

#[test]
fn s3_faults_through_the_binary_are_retried_or_fail_clearly_and_tear_nothing() {
    let server = S3Server::start();
    server.create_bucket("faults");
    let port = server.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port);
    let env = s3_env(&server, &proxy);
    let url = "s3://faults/site";
    let local = folder(4);
    let l = local.path().to_str().unwrap();
    // Transient: a connection reset while it sends a file, then one while it receives one.
    proxy.add(Rule {
        link: Link::Main,
        when: snapsync_testkit::When::UntilFired,
        fault: Fault::Reset {
            direction: Direction::ToServer,
            after: 300_000,
        },
    });
    let (code, _, err) = run_within_env(
        Duration::from_mins(2),
        &["upload", "--create-folder", "--timeout", "10s", l, url],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(proxy.fired() >= 1, "the upload fault never happened");
    proxy.clear();
    let before = proxy.fired();
    proxy.add(Rule {
        link: Link::Main,
        when: snapsync_testkit::When::UntilFired,
        fault: Fault::Reset {
            direction: Direction::ToClient,
            after: 300_000,
        },
    });
    let back = tempfile::tempdir().unwrap();
    let b = back.path().to_str().unwrap();
    let (code, _, err) = run_within_env(Duration::from_mins(2), &["download", b, url], &env);
    assert_eq!(code, 0, "{err}");
    assert!(proxy.fired() > before, "the download fault never happened");
    assert!(
        files(back.path()) == files(local.path()),
        "the download is not the folder"
    );
    assert_eq!(temporaries(back.path()), Vec::<String>::new());

    // Persistent: every connection reset while it sends; a changed file stays old on the server.
    fs::write(local.path().join("file0.bin"), content(400_000, 1000)).unwrap();
    proxy.clear();
    proxy.add(Rule::always(
        Link::Main,
        Fault::Reset {
            direction: Direction::ToServer,
            after: 100_000,
        },
    ));
    let (code, _, err) = run_within_env(
        Duration::from_mins(2),
        &["upload", "--force", "--retries", "2", "--timeout", "5s", l, url],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("s3://faults/site"), "no store in: {err}");
    assert!(err.contains("upload"), "no operation in: {err}");
    assert!(
        !err.contains(snapsync_testkit::S3_SECRET_KEY),
        "the secret shows: {err}"
    );
    proxy.clear();
    let again = tempfile::tempdir().unwrap();
    let a = again.path().to_str().unwrap();
    let (code, _, err) = run_within_env(Duration::from_mins(2), &["download", a, url], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        files(again.path()) == files(back.path()),
        "the failed upload changed the server's files"
    );
    // The fault gone, the same command completes.
    let (code, _, err) = run_within_env(Duration::from_mins(2), &["upload", "--force", l, url], &env);
    assert_eq!(code, 0, "{err}");

    // Stalled: the server accepts and never answers.
    proxy.add(Rule::always(
        Link::Main,
        Fault::Stall {
            direction: Direction::ToClient,
            after: 0,
        },
    ));
    let (code, _, err) = run_within_env(
        Duration::from_mins(1),
        &["download", "--timeout", "2s", "--retries", "1", a, url],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("s3://faults/site"), "no store in: {err}");
}

#[test]
fn ftps_faults_through_the_binary_are_retried_or_fail_clearly_and_tear_nothing() {
    let server = FtpServer::start(FtpFlavor::Vsftpd, true);
    let ca = server.ca_file().unwrap();
    let ca = ca.to_str().unwrap();
    let proxy = FaultProxy::start(server.port());
    let url = proxy.url(&server.url("site"));
    let remote = server.root().join("site");
    let local = folder(4);
    let l = local.path().to_str().unwrap();
    // Transient: the first connection dropped at accept, then one reset 2,000 bytes into what the
    // server sends (in its TLS handshake or past it, as the first connection goes).
    proxy.add(Rule::once(Link::Main, Fault::Drop));
    let (code, _, err) = run_within(
        Duration::from_mins(2),
        &[
            "upload",
            "--create-folder",
            "--ca-file",
            ca,
            "--timeout",
            "10s",
            l,
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxy.fired(), 1, "the drop never happened");
    assert!(files(&remote) == files(local.path()));
    fs::write(local.path().join("file1.bin"), content(400_000, 2000)).unwrap();
    proxy.add(Rule::once(
        Link::Main,
        Fault::Reset {
            direction: Direction::ToClient,
            after: 2_000,
        },
    ));
    let (code, _, err) = run_within(
        Duration::from_mins(2),
        &["upload", "--ca-file", ca, "--timeout", "10s", l, &url],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(proxy.fired(), 2, "the reset never happened");
    assert!(files(&remote) == files(local.path()));
    assert_eq!(temporaries(&remote), Vec::<String>::new());

    // Persistent: every connection dropped; the server's files stay as they are.
    let before = files(&remote);
    fs::write(local.path().join("file2.bin"), content(400_000, 3000)).unwrap();
    proxy.add(Rule::always(Link::Main, Fault::Drop));
    let (code, _, err) = run_within(
        Duration::from_mins(2),
        &[
            "upload",
            "--ca-file",
            ca,
            "--retries",
            "2",
            "--timeout",
            "5s",
            l,
            &url,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", proxy.port())),
        "no server in: {err}"
    );
    let password = snapsync_testkit::FTP_PASSWORD.as_str();
    assert!(!err.contains(password), "the password shows: {err}");
    assert!(
        files(&remote) == before,
        "the failed run changed the server's files"
    );
    assert_eq!(temporaries(&remote), Vec::<String>::new());
    proxy.clear();
    let (code, _, err) = run_within(Duration::from_mins(2), &["upload", "--ca-file", ca, l, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(files(&remote) == files(local.path()));
}
