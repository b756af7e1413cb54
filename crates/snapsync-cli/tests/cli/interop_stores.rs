//! Stores shared with the real snapdir (`PyPI`): what one pushes, the other pulls and verifies, on a
//! `file://` store and on an S3 server (moto on 127.0.0.1).

use snapsync_testkit::S3Server;

use crate::snapshots::pattern;
use crate::util::{Snapdir, Tree, manifest_of, ok, ok_env, run_env, stderr};

/// Files of every size class, modes, names with spaces and unicode, empty files and directories, and
/// two files with the same content (one object). No symlinks: a pull writes what a link pointed to.
fn tree() -> Tree {
    let tree = Tree::new();
    tree.dir("a/b/c", 0o755)
        .file("a/b/c/deep.txt", b"deep\n", 0o644)
        .file("a/one.txt", b"one\n", 0o600)
        .file("a/same-as-one.txt", b"one\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\n", 0o755)
        .file("empty", b"", 0o644)
        .dir("empty-dir", 0o755)
        .file("spaced name/ünïcödé 日本.txt", b"unicode\n", 0o644)
        .file("large.bin", &pattern((5 << 20) + 3, 3), 0o644);
    tree
}

/// snapdir pushes; snapsync verifies and pulls; the pulled tree is the original, byte for byte.
fn snapdir_to_snapsync(store: &str, snapdir_env: &[(&str, String)], our_env: &[(&str, String)]) {
    let src = tree();
    let id = Snapdir::get().push(src.path(), store, snapdir_env);
    assert_eq!(
        id,
        ok(&["id", "-q", src.arg()]).trim(),
        "both compute the same id"
    );
    let out = run_env(&["verify", "--store", store, "--id", &id], our_env);
    assert!(out.status.success(), "snapsync verify: {}", stderr(&out));
    assert!(ok_env(&["snapshots", "--store", store], our_env).starts_with(&id));
    let dest = tempfile::tempdir().unwrap();
    ok_env(
        &[
            "pull",
            "--store",
            store,
            "--id",
            &id,
            dest.path().to_str().unwrap(),
        ],
        our_env,
    );
    assert_eq!(manifest_of(dest.path()), manifest_of(src.path()));
}

/// snapsync pushes; snapdir verifies and pulls; the pulled tree is the original, byte for byte.
fn snapsync_to_snapdir(store: &str, snapdir_env: &[(&str, String)], our_env: &[(&str, String)]) {
    let src = tree();
    let id = ok_env(&["push", "--store", store, src.arg()], our_env);
    let id = id.trim();
    Snapdir::get().verify(id, store, snapdir_env);
    let dest = tempfile::tempdir().unwrap();
    Snapdir::get().pull(id, store, dest.path(), snapdir_env);
    assert_eq!(manifest_of(dest.path()), manifest_of(src.path()));
}

#[test]
fn file_store_snapdir_pushes_snapsync_pulls() {
    let store = tempfile::tempdir().unwrap();
    snapdir_to_snapsync(&format!("file://{}", store.path().display()), &[], &[]);
}

#[test]
fn file_store_snapsync_pushes_snapdir_pulls() {
    let store = tempfile::tempdir().unwrap();
    snapsync_to_snapdir(&format!("file://{}", store.path().display()), &[], &[]);
}

/// Environment variables for a program.
type Env = Vec<(&'static str, String)>;

/// snapdir's S3 store takes its endpoint from `SNAPDIR_S3_STORE_ENDPOINT_URL` and the keys from the
/// standard AWS variables; snapsync reads `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`.
fn s3_envs(server: &S3Server) -> (Env, Env) {
    let ours = server.env();
    let mut theirs: Env = ours
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") && *k != "AWS_ENDPOINT_URL" && *k != "AWS_ALLOW_HTTP")
        .cloned()
        .collect();
    theirs.push(("SNAPDIR_S3_STORE_ENDPOINT_URL", server.endpoint()));
    theirs.push(("AWS_DEFAULT_REGION", "us-east-1".into()));
    (theirs, ours)
}

#[test]
fn s3_store_both_ways() {
    let server = S3Server::start();
    server.create_bucket("shared");
    let (theirs, ours) = s3_envs(&server);
    snapdir_to_snapsync("s3://shared/from-snapdir", &theirs, &ours);
    snapsync_to_snapdir("s3://shared/from-snapsync", &theirs, &ours);
}
