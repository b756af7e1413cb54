//! Snapshots on FTP, FTPS and SFTP servers through the binary: push, list, verify, pull back byte for
//! byte; the command-line options that reach those servers (`--ca-file`, `--known-hosts`,
//! `--accept-new-host-key`).

use snapsync_testkit::{FtpFlavor, FtpServer, Sshd};

use crate::snapshots::pattern;
use crate::util::{Tree, manifest_of, ok, run, stderr};

fn tree() -> Tree {
    let tree = Tree::new();
    tree.dir("a/b", 0o755)
        .file("a/b/deep.txt", b"deep\n", 0o644)
        .file("a/same.txt", b"deep\n", 0o600)
        .file("bin/tool", b"#!/bin/sh\n", 0o755)
        .file("empty", b"", 0o644)
        .file("spaced name/ünï.txt", b"unicode\n", 0o644)
        .file("large.bin", &pattern((3 << 20) + 5, 7), 0o644);
    tree
}

/// Push, list, verify, pull into an empty directory: the same tree; the server holds snapdir's layout.
fn round_trip(store: &str, extra: &[&str], server_root: &std::path::Path) {
    let src = tree();
    let with = |args: &[&str]| -> Vec<String> { args.iter().chain(extra).map(ToString::to_string).collect() };
    let args = with(&["push", "--store", store, src.arg()]);
    let id = ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .trim()
        .to_owned();
    assert_eq!(id, ok(&["id", "-q", src.arg()]).trim());
    assert!(server_root.join(".objects").is_dir() && server_root.join(".manifests").is_dir());
    let args = with(&["snapshots", "--store", store]);
    assert!(ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).starts_with(&id));
    let args = with(&["verify", "--store", store, "--id", &id]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let dest = tempfile::tempdir().unwrap();
    let args = with(&[
        "pull",
        "--store",
        store,
        "--id",
        &id,
        dest.path().to_str().unwrap(),
    ]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(manifest_of(dest.path()), manifest_of(src.path()));
}

#[test]
fn snapshots_go_to_an_ftps_server_and_come_back() {
    let server = FtpServer::start(FtpFlavor::Pyftpdlib, true);
    let ca = server.ca_file().unwrap();
    let store = server.url("snaps");
    // Without the certificate: refused, and the message says why.
    let out = run(&["snapshots", "--store", &store]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains(snapsync_testkit::FTP_PASSWORD.as_str()),
        "{}",
        stderr(&out)
    );
    round_trip(
        &store,
        &["--ca-file", ca.to_str().unwrap()],
        &server.root().join("snaps"),
    );
}

#[test]
fn snapshots_go_to_a_vsftpd_server_and_come_back() {
    let server = FtpServer::start(FtpFlavor::Vsftpd, false);
    round_trip(&server.url("snaps"), &[], &server.root().join("snaps"));
}

#[test]
fn snapshots_go_to_an_sftp_server_and_come_back() {
    let server = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let store = server.url("snaps");
    let known = ["--known-hosts", known_hosts.to_str().unwrap()];
    // An unknown host is refused with what to do; accepted once on request, then known.
    let out = run(&["snapshots", "--store", &store, known[0], known[1]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--accept-new-host-key"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(snapsync_testkit::SSH_PASSWORD.as_str()),
        "{}",
        stderr(&out)
    );
    ok(&[
        "snapshots",
        "--store",
        &store,
        known[0],
        known[1],
        "--accept-new-host-key",
    ]);
    round_trip(&store, &known, &server.root().join("snaps"));
    // A key instead of the password.
    let by_key = server.url_without_password("snaps");
    let key = server.key_file();
    ok(&[
        "snapshots",
        "--store",
        &by_key,
        known[0],
        known[1],
        "--ssh-key",
        key.to_str().unwrap(),
    ]);
}
