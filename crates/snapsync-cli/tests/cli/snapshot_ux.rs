//! What a new user met with snapshots: short ids (a unique prefix, as git takes), `diff`'s exit status
//! (as diff(1)), a pull that says what it did, counted nouns in the number they take.

use std::fs;
use std::path::Path;

use snapsync_testkit::S3Server;

use crate::util::{Tree, manifest_of, ok, ok_env, run, run_env, stderr};

fn small_tree(text: &str) -> Tree {
    let tree = Tree::new();
    tree.file("a.txt", text.as_bytes(), 0o644)
        .file("sub/b.txt", b"b\n", 0o644)
        .file("sub/c.txt", b"c\n", 0o600);
    tree
}

/// Puts a manifest file under a made-up id into a directory store (only its key matters to a
/// listing of snapshots).
fn fake_manifest(store: &Path, id: &str) {
    let path = store
        .join(".manifests")
        .join(&id[..3])
        .join(&id[3..6])
        .join(&id[6..9])
        .join(&id[9..]);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, "not a manifest\n").unwrap();
}

#[test]
fn diff_exits_1_when_the_sides_differ_and_0_when_they_do_not() {
    let (a, same, other) = (small_tree("a\n"), small_tree("a\n"), small_tree("changed\n"));
    let out = run(&["diff", a.arg(), same.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = run(&["diff", a.arg(), other.arg()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "M ./a.txt\n");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // A failure is an error with a message, not a quiet 1.
    let out = run(&["diff", a.arg(), "/nonexistent/snapsync-diff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error:"), "{}", stderr(&out));
    // The help says so.
    let help = ok(&["diff", "--help"]);
    assert!(help.contains("1 when they differ"), "{help}");
}

#[test]
fn a_short_id_names_the_snapshot_it_is_a_unique_prefix_of() {
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let (first, second) = (small_tree("first\n"), small_tree("second\n"));
    let id = ok(&["push", "-q", "--store", store_arg, first.arg()])
        .trim()
        .to_owned();
    let other = ok(&["push", "-q", "--store", store_arg, second.arg()])
        .trim()
        .to_owned();
    let (short, other_short) = (&id[..8], &other[..8]);
    assert_ne!(short, other_short);

    // pull, verify, size, diff, fetch, checkout, push --id and copy all take it.
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    ok(&["pull", "--store", store_arg, "--id", short, dest_arg]);
    assert_eq!(manifest_of(dest.path()), manifest_of(first.path()));
    let out = run(&["verify", "--store", store_arg, "--id", &short.to_uppercase()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&id),
        "the whole id is named: {}",
        stderr(&out)
    );
    assert!(ok(&["size", "--store", store_arg, "--id", short]).starts_with("3 files, 2 directories,"));
    let out = run(&["diff", "--store", store_arg, short, other_short]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "M ./a.txt\n");
    ok(&[
        "fetch",
        "--cache-dir",
        cache_arg,
        "--store",
        store_arg,
        "--id",
        short,
    ]);
    let checked_out = tempfile::tempdir().unwrap();
    ok(&[
        "checkout",
        "--cache-dir",
        cache_arg,
        "--id",
        &short[..4],
        checked_out.path().to_str().unwrap(),
    ]);
    assert_eq!(manifest_of(checked_out.path()), manifest_of(first.path()));
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere_arg = elsewhere.path().to_str().unwrap();
    let pushed = ok(&[
        "push",
        "-q",
        "--cache-dir",
        cache_arg,
        "--store",
        elsewhere_arg,
        "--id",
        short,
    ]);
    assert_eq!(pushed.trim(), id);
    let copied = tempfile::tempdir().unwrap();
    ok(&[
        "copy",
        "--id",
        other_short,
        "--from",
        store_arg,
        "--to",
        copied.path().to_str().unwrap(),
    ]);
    assert!(ok(&["snapshots", "--store", copied.path().to_str().unwrap()]).starts_with(&other));

    // Fewer than 4 digits, or not hex: a usage error.
    for bad in [&id[..3], "zzzzzz"] {
        let out = run(&["pull", "--store", store_arg, "--id", bad, dest_arg]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("unique prefix"), "{}", stderr(&out));
    }
    // A prefix of no snapshot: an error that says so.
    let none = if id.starts_with("0000") || other.starts_with("0000") {
        "ffff"
    } else {
        "0000"
    };
    let out = run(&["pull", "--store", store_arg, "--id", none, dest_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "no snapshot in {store_arg} has an id starting with {none}"
        )),
        "{}",
        stderr(&out)
    );
    // A prefix of two snapshots: an error naming both, and nothing written.
    let twins = [
        format!("abcd{}", "0".repeat(60)),
        format!("abcd{}", "1".repeat(60)),
    ];
    for twin in &twins {
        fake_manifest(store.path(), twin);
    }
    let untouched = tempfile::tempdir().unwrap();
    let out = run(&[
        "pull",
        "--store",
        store_arg,
        "--id",
        "ABCD",
        untouched.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the short id abcd is ambiguous") && err.contains("2 snapshots"),
        "{err}"
    );
    assert!(twins.iter().all(|twin| err.contains(twin.as_str())), "{err}");
    assert!(err.contains("hint: give more digits"), "{err}");
    assert_eq!(fs::read_dir(untouched.path()).unwrap().count(), 0);
    // One more digit settles it (and reaches the made-up manifest, which is then checked).
    let out = run(&["verify", "--store", store_arg, "--id", &twins[1][..5]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&twins[1]), "{}", stderr(&out));
}

#[test]
fn a_short_id_works_against_s3() {
    let server = S3Server::start();
    server.create_bucket("snaps");
    let env = server.env();
    let tree = small_tree("on s3\n");
    let id = ok_env(&["push", "-q", "--store", "s3://snaps/x", tree.arg()], &env)
        .trim()
        .to_owned();
    let dest = tempfile::tempdir().unwrap();
    let out = run_env(
        &[
            "pull",
            "--store",
            "s3://snaps/x",
            "--id",
            &id[..6],
            dest.path().to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest_of(dest.path()), manifest_of(tree.path()));
    let none = if id.starts_with("0000") { "ffff" } else { "0000" };
    let out = run_env(&["verify", "--store", "s3://snaps/x", "--id", none], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("has an id starting with {none}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pull_and_push_say_what_they_did_unless_quiet() {
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().to_str().unwrap();
    let tree = small_tree("a\n");
    let out = run(&["push", "--store", store_arg, tree.arg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // Three files of two bytes each, three contents: three objects.
    assert!(
        stderr(&out).starts_with("sent 3 objects (6 B), 0 already there, in "),
        "{}",
        stderr(&out)
    );
    let dest = tempfile::tempdir().unwrap();
    let dest_arg = dest.path().to_str().unwrap();
    let out = run(&["pull", "--store", store_arg, "--id", &id, dest_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "results only on stdout; pull has none");
    assert!(
        stderr(&out).starts_with("wrote 3 files (6 B), 0 already right, in "),
        "{}",
        stderr(&out)
    );
    fs::write(dest.path().join("a.txt"), "edited\n").unwrap();
    let out = run(&["pull", "--store", store_arg, "--id", &id, dest_arg]);
    assert!(
        stderr(&out).starts_with("wrote 1 file (2 B), 2 already right, in "),
        "{}",
        stderr(&out)
    );
    let out = run(&["pull", "-q", "--store", store_arg, "--id", &id, dest_arg]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
    let out = run(&["push", "-q", "--store", store_arg, tree.arg()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn counted_nouns_take_the_number_of_their_count() {
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().to_str().unwrap();
    let tree = Tree::new();
    tree.file("only.txt", b"x", 0o644);
    let id = ok(&["push", "-q", "--store", store_arg, tree.arg()])
        .trim()
        .to_owned();
    let size = ok(&["size", "--store", store_arg]);
    assert!(size.starts_with("1 snapshot, 1 object, 1 B (1 byte)"), "{size}");
    let size = ok(&["size", "--store", store_arg, "--id", &id]);
    assert!(
        size.starts_with("1 file, 1 directory, 1 B (1 byte); 1 distinct object"),
        "{size}"
    );
    let out = run(&["verify", "--store", store_arg, "--id", &id]);
    assert!(stderr(&out).contains("its 1 object verified"), "{}", stderr(&out));
    let gc = ok(&["gc", "--store", store_arg, "--dry-run"]);
    assert!(gc.contains("1 snapshot; 1 object: 1 referenced"), "{gc}");
}
