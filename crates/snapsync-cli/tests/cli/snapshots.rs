//! The snapshot commands end to end through a `file://` store: what they print, what they write, and
//! how they fail.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Tree, manifest_of, ok, run, stderr};

fn sample() -> Tree {
    let tree = Tree::new();
    tree.dir("docs/deep/er", 0o755)
        .file("docs/readme.md", b"# readme\n", 0o644)
        .file("docs/deep/er/notes.txt", b"notes\n", 0o600)
        .file("bin/run", b"#!/bin/sh\necho hi\n", 0o755)
        .file("empty", b"", 0o644)
        .dir("empty-dir", 0o700)
        .file("with space/ünïcödé.txt", b"unicode\n", 0o644)
        .file("big.bin", &pattern(3 << 20, 7), 0o644)
        .file("copy-of-readme", b"# readme\n", 0o640);
    tree
}

/// Bytes that do not repeat within a block, so corrupting one is visible.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u64::from(seed) + 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// All files under `root`, relative, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.symlink_metadata().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The object file for `checksum` in a local store.
fn object_path(store: &Path, checksum: &str) -> PathBuf {
    sharded(&store.join(".objects"), checksum)
}

/// `dir/abc/def/ghi/rest`: where snapdir's layout keeps an object or a manifest.
fn sharded(dir: &Path, checksum: &str) -> PathBuf {
    dir.join(&checksum[..3])
        .join(&checksum[3..6])
        .join(&checksum[6..9])
        .join(&checksum[9..])
}

/// The checksum of `path` in a manifest's text.
fn checksum_in(manifest: &str, path: &str) -> String {
    manifest
        .lines()
        .find(|line| line.ends_with(&format!(" {path}")))
        .and_then(|line| line.split(' ').nth(2))
        .unwrap_or_else(|| panic!("{path} is not in\n{manifest}"))
        .to_owned()
}

#[test]
fn stage_checkout_push_fetch_pull_copy_round_trip() {
    let src = sample();
    let work = tempfile::tempdir().unwrap();
    let (store, other, cache) = (
        work.path().join("store"),
        work.path().join("other"),
        work.path().join("cache"),
    );
    let cache_flag = ["--cache-dir", s(&cache)];

    let id = ok(&[&["stage"][..], &cache_flag, &[src.arg()]].concat());
    let id = id.trim();
    assert_eq!(
        id,
        ok(&["id", "-q", src.arg()]).trim(),
        "stage prints the snapshot id"
    );

    let checked_out = work.path().join("checked-out");
    ok(&[&["checkout", "--id", id][..], &cache_flag, &[s(&checked_out)]].concat());
    assert_eq!(manifest_of(&checked_out), manifest_of(src.path()));

    // From the cache to a store, then from the store to a new directory.
    let pushed = ok(&[&["push", "--store", &url(&store), "--id", id][..], &cache_flag].concat());
    assert_eq!(pushed.trim(), id);
    let pulled = work.path().join("pulled");
    ok(&["pull", "--store", &url(&store), "--id", id, s(&pulled)]);
    assert_eq!(manifest_of(&pulled), manifest_of(src.path()));
    assert_eq!(fs::read(pulled.join("big.bin")).unwrap(), pattern(3 << 20, 7));

    // A directory pushed straight to a store (here a plain path) has the same id.
    assert_eq!(ok(&["push", "--store", s(&other), src.arg()]).trim(), id);
    assert!(ok(&["snapshots", "--store", s(&other)]).starts_with(id));

    // Fetch into an empty cache, then check out from it with the store gone.
    let cache2 = work.path().join("cache2");
    ok(&[
        "fetch",
        "--store",
        s(&other),
        "--id",
        id,
        "--cache-dir",
        s(&cache2),
    ]);
    fs::remove_dir_all(&other).unwrap();
    let from_cache = work.path().join("from-cache");
    ok(&["checkout", "--id", id, "--cache-dir", s(&cache2), s(&from_cache)]);
    assert_eq!(manifest_of(&from_cache), manifest_of(src.path()));

    // Store to store, then verify the copy.
    let copied = work.path().join("copied");
    ok(&["copy", "--id", id, "--from", &url(&store), "--to", &url(&copied)]);
    let out = run(&["verify", "--store", &url(&copied), "--id", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("all 6 objects verified"),
        "{}",
        stderr(&out)
    );

    let size = ok(&["size", "--store", &url(&copied), "--id", id]);
    assert!(size.starts_with("7 files, 7 directories,"), "{size}");
}

#[test]
fn diff_names_added_deleted_and_modified_paths() {
    let a = sample();
    let b = sample();
    b.file("docs/readme.md", b"# changed\n", 0o644)
        .file("new.txt", b"new\n", 0o644);
    fs::remove_file(b.path().join("empty")).unwrap();
    b.mode("bin/run", 0o700);
    let expected = "M ./bin/run\nM ./docs/readme.md\nD ./empty\nA ./new.txt\n";
    // As diff(1): the differences and exit status 1; none, and 0.
    let differ = |args: &[&str]| {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(differ(&["diff", a.arg(), b.arg()]), expected);

    // The same between snapshot ids in a store, and between an id and a directory.
    let store = tempfile::tempdir().unwrap();
    let id_a = ok(&["push", "--store", s(store.path()), a.arg()]);
    let id_b = ok(&["push", "--store", s(store.path()), b.arg()]);
    let by_id = differ(&["diff", "--store", s(store.path()), id_a.trim(), id_b.trim()]);
    assert_eq!(by_id, expected);
    assert_eq!(
        differ(&["diff", "--store", s(store.path()), id_a.trim(), b.arg()]),
        expected
    );
    assert_eq!(ok(&["diff", a.arg(), a.arg()]), "");
}

#[test]
fn bad_ids_are_usage_errors_and_unknown_ids_are_named() {
    let store = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = run(&[
        "pull",
        "--store",
        s(store.path()),
        "--id",
        "not-an-id",
        s(dest.path()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a snapshot id"), "{}", stderr(&out));

    let unknown = "ab".repeat(32);
    let out = run(&[
        "pull",
        "--store",
        s(store.path()),
        "--id",
        &unknown,
        s(dest.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("snapshot {unknown} is not in")),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn verify_names_each_bad_object_and_pull_never_writes_a_corrupt_file() {
    let src = sample();
    let store = tempfile::tempdir().unwrap();
    let id = ok(&["push", "--store", s(store.path()), src.arg()]);
    let id = id.trim();
    let manifest = manifest_of(src.path());
    let big = checksum_in(&manifest, "./big.bin");
    let notes = checksum_in(&manifest, "./docs/deep/er/notes.txt");

    // Flip one byte in the middle of the big object, and delete another object.
    let object = object_path(store.path(), &big);
    let mut bytes = fs::read(&object).unwrap();
    bytes[1 << 20] ^= 0xff;
    fs::write(&object, &bytes).unwrap();
    fs::remove_file(object_path(store.path(), &notes)).unwrap();

    let out = run(&["verify", "--store", s(store.path()), "--id", id]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(stdout.contains(&format!("corrupt {big} ./big.bin")), "{stdout}");
    assert!(
        stdout.contains(&format!("missing {notes} ./docs/deep/er/notes.txt")),
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("2 of 6 objects are bad"),
        "{}",
        stderr(&out)
    );

    // A pull stops at the first bad object; whatever it wrote is whole and right, nothing else is left.
    let dest = tempfile::tempdir().unwrap();
    let out = run(&[
        "pull",
        "--store",
        s(store.path()),
        "--id",
        id,
        "--jobs",
        "1",
        s(dest.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&big) || err.contains(&notes),
        "the error names the bad object: {err}"
    );
    for rel in files_under(dest.path()) {
        assert_eq!(
            fs::read(dest.path().join(&rel)).unwrap(),
            fs::read(src.path().join(&rel)).unwrap(),
            "{} was written wrong",
            rel.display()
        );
    }
    assert!(
        !dest.path().join("big.bin").exists(),
        "the corrupt object was materialised"
    );

    // Pushing again alone does not repair a corrupt object: a push skips objects the store has.
    ok(&["push", "--store", s(store.path()), src.arg()]);
    let out = run(&["verify", "--store", s(store.path()), "--id", id]);
    assert!(stderr(&out).contains("1 of 6 objects is bad"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: run verify again with --remove-corrupt"),
        "{}",
        stderr(&out)
    );

    // Removing the corrupt objects, then pushing from the good copy, does; the pull then completes.
    let out = run(&[
        "verify",
        "--remove-corrupt",
        "--store",
        s(store.path()),
        "--id",
        id,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("removed 1 corrupt object"),
        "{}",
        stderr(&out)
    );
    assert!(!object_path(store.path(), &big).exists());
    ok(&["push", "--store", s(store.path()), src.arg()]);
    let out = run(&["verify", "--store", s(store.path()), "--id", id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    ok(&["pull", "--store", s(store.path()), "--id", id, s(dest.path())]);
    assert_eq!(manifest_of(dest.path()), manifest);
}

#[test]
fn a_missing_object_is_named_on_pull() {
    let src = sample();
    let store = tempfile::tempdir().unwrap();
    let id = ok(&["push", "--store", s(store.path()), src.arg()]);
    let readme = checksum_in(&manifest_of(src.path()), "./docs/readme.md");
    fs::remove_file(object_path(store.path(), &readme)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = run(&[
        "pull",
        "--store",
        s(store.path()),
        "--id",
        id.trim(),
        s(dest.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("object {readme} (./")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("is missing from"), "{}", stderr(&out));
}

#[test]
fn pull_over_an_older_version_replaces_it_and_delete_removes_the_rest() {
    let old = sample();
    let new = sample();
    new.file("docs/readme.md", b"# new readme\n", 0o600)
        .file("added.txt", b"added\n", 0o644);
    fs::remove_file(new.path().join("empty")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let id = ok(&["push", "--store", s(store.path()), new.arg()]);

    let dest = sample();
    dest.file("local-only.txt", b"mine\n", 0o644);
    ok(&["pull", "--store", s(store.path()), "--id", id.trim(), dest.arg()]);
    assert_eq!(
        fs::read(dest.path().join("docs/readme.md")).unwrap(),
        b"# new readme\n"
    );
    assert!(
        dest.path().join("local-only.txt").exists(),
        "files outside the snapshot stay"
    );
    assert!(
        dest.path().join("empty").exists(),
        "without --delete nothing is removed"
    );

    ok(&[
        "pull",
        "--delete",
        "--store",
        s(store.path()),
        "--id",
        id.trim(),
        dest.arg(),
    ]);
    assert_eq!(manifest_of(dest.path()), manifest_of(new.path()));
    drop(old);
}

#[test]
fn gc_keeps_what_manifests_reference_and_recent_objects() {
    let store = tempfile::tempdir().unwrap();
    let keep = sample();
    let drop_me = Tree::new();
    drop_me
        .file("only-here.txt", b"only in the dropped snapshot\n", 0o644)
        .file("docs/readme.md", b"# readme\n", 0o644);
    let keep_id = ok(&["push", "--store", s(store.path()), keep.arg()]);
    let drop_id = ok(&["push", "--store", s(store.path()), drop_me.arg()]);
    let drop_id = drop_id.trim();
    fs::remove_file(sharded(&store.path().join(".manifests"), drop_id)).unwrap();
    let only = checksum_in(&manifest_of(drop_me.path()), "./only-here.txt");

    // Within the default grace period nothing is deleted: a concurrent push may still need it.
    let out = ok(&["gc", "--store", s(store.path())]);
    assert!(
        out.contains("1 unreferenced but younger than 1d (kept); 0 deleted"),
        "{out}"
    );

    let out = ok(&["gc", "--dry-run", "--grace", "0", "--store", s(store.path())]);
    assert!(out.contains(&format!("would delete {only}")), "{out}");
    assert!(
        object_path(store.path(), &only).exists(),
        "a dry run deletes nothing"
    );

    let out = ok(&["gc", "--grace", "0", "--store", s(store.path())]);
    assert!(out.contains("1 deleted"), "{out}");
    assert!(!object_path(store.path(), &only).exists());
    let out = run(&["verify", "--store", s(store.path()), "--id", keep_id.trim()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ok(&["snapshots", "--store", s(store.path())]).starts_with(keep_id.trim()));
}

/// A snapshot of an empty folder (no files, so no objects) pushed, staged and copied into store and
/// cache folders that do not exist yet: each is made, as snapdir makes them (snapdir's own test suite
/// does this), and the snapshot comes back out of them.
#[test]
fn a_snapshot_with_no_files_goes_into_new_folders() {
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    fs::create_dir(work.path().join("empty")).unwrap();
    let id = ok(&["id", &w("empty")]);
    let id = id.trim();
    assert_eq!(ok(&["push", "--store", &w("new/store"), &w("empty")]).trim(), id);
    assert_eq!(
        ok(&["stage", "--cache-dir", &w("new/cache"), &w("empty")]).trim(),
        id
    );
    ok(&[
        "copy",
        "--id",
        id,
        "--from",
        &w("new/store"),
        "--to",
        &w("new/copy"),
    ]);
    for store in ["new/store", "new/copy"] {
        let listed = ok(&["snapshots", "--store", &w(store)]);
        assert!(listed.starts_with(id), "{store}: {listed}");
        ok(&["verify", "--store", &w(store), "--id", id]);
    }
    ok(&["pull", "--store", &w("new/copy"), "--id", id, &w("pulled")]);
    assert!(work.path().join("pulled").is_dir());
    assert_eq!(ok(&["id", &w("pulled")]).trim(), id);
}
