//! snapsync against the real snapdir (PyPI): manifests byte for byte and ids, on the same trees.

use proptest::prelude::*;

use crate::util::{Snapdir, Tree, ok, run_with_input};

/// Asserts `snapsync manifest` and `snapsync id` equal snapdir's for `flags` (snapdir's spelling;
/// `--exclude RE` becomes `--exclude-regex RE` for snapsync).
fn assert_same(tree: &Tree, flags: &[&str]) {
    let ours: Vec<&str> = flags
        .iter()
        .map(|f| if *f == "--exclude" { "--exclude-regex" } else { f })
        .collect();
    let theirs = Snapdir::get().walk(tree.path(), flags);
    let manifest = ok(&[&["manifest", "-q"], &ours[..], &[tree.arg()]].concat());
    let id = ok(&[&["id", "-q"], &ours[..], &[tree.arg()]].concat());
    assert_eq!(
        manifest,
        format!("{}\n", theirs.manifest),
        "manifest differs with {flags:?}"
    );
    assert_eq!(id.trim_end(), theirs.id, "id differs with {flags:?}");
    // And snapsync derives the same id from snapdir's manifest text.
    let out = run_with_input(&["id", "-"], theirs.manifest.as_bytes());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), theirs.id);
}

/// Everything the issue lists: nested and empty directories, empty files, spaces, unicode, the modes
/// 600/644/755/4755, symlinks to files and directories, a dangling link, and hardlinks.
fn everything() -> Tree {
    let tree = Tree::new();
    tree.dir("nested/deeper/deepest", 0o755)
        .file("nested/deeper/deepest/leaf.txt", b"leaf\n", 0o644)
        .file("nested/deeper/mid.bin", &[0u8, 1, 2, 255, 254], 0o600)
        .file("nested/top.txt", b"top\n", 0o644)
        .dir("empty-dir", 0o755)
        .dir("private", 0o700)
        .file("private/secret", b"s3cret", 0o600)
        .file("empty-file", b"", 0o644)
        .file("another empty", b"", 0o644)
        .file("with spaces/a file  with   spaces.txt", b"spaces\n", 0o644)
        .file("ünïcödé/日本語.txt", b"unicode\n", 0o644)
        .file("tab\tand\\backslash", b"odd but legal\n", 0o644)
        .file("mode-600", b"600", 0o600)
        .file("mode-644", b"644", 0o644)
        .file("mode-755", b"#!/bin/sh\n", 0o755)
        .file("mode-4755", b"setuid", 0o4755)
        .dir("sticky", 0o1777)
        .file("sticky/x", b"x", 0o644)
        .symlink("link-to-file", "nested/top.txt")
        .symlink("link-to-dir", "nested/deeper")
        .symlink("link-absolute", "/etc/hostname")
        .symlink("dangling", "does/not/exist")
        .hardlink("hardlink-to-top", "nested/top.txt")
        .file("big.bin", &vec![42u8; 3 * 1024 * 1024 + 17], 0o644);
    tree
}

#[test]
fn everything_default() {
    assert_same(&everything(), &[]);
}

#[test]
fn everything_no_follow() {
    assert_same(&everything(), &["--no-follow"]);
}

#[test]
fn everything_absolute() {
    assert_same(&everything(), &["--absolute"]);
    assert_same(&everything(), &["--absolute", "--no-follow"]);
}

#[test]
fn regex_excludes_match_snapdir() {
    let tree = everything();
    tree.file(".git/HEAD", b"ref\n", 0o644)
        .file("node_modules/x/index.js", b"1", 0o644);
    // snapdir's Python API takes regexes as they are; its CLI (and snapsync) expand `%common%` first.
    let common = format!("(/({})($|/))", snapsync_core::COMMON_EXCLUDE_DIRS);
    let theirs = Snapdir::get().walk(tree.path(), &["--exclude", &common]);
    assert_eq!(
        ok(&["manifest", "--exclude-regex", "%common%", tree.arg()]),
        format!("{}\n", theirs.manifest)
    );
    assert!(!theirs.manifest.contains("/.git/") && !theirs.manifest.contains("node_modules"));
    assert_same(&tree, &["--exclude", "nested", "--exclude", "\\.txt$"]);
    assert_same(&tree, &["--exclude", "mode-[0-9]+$"]);
}

#[test]
fn globs_match_the_equivalent_snapdir_regex() {
    let tree = everything();
    tree.file("node_modules/x/index.js", b"1", 0o644)
        .file("nested/node_modules/y", b"2", 0o644);
    let theirs = Snapdir::get().walk(tree.path(), &["--exclude", "/node_modules($|/)|\\.bin$"]);
    let ours = ok(&["manifest", "-q", "-x", "node_modules", "-x", "*.bin", tree.arg()]);
    assert_eq!(ours, format!("{}\n", theirs.manifest));
}

#[test]
fn snapdir_nested_golden_tree() {
    // The tree behind snapdir's own NESTED golden manifest (700 directories, 600 files).
    let tree = Tree::new();
    for (path, content) in [
        ("a/a1f", "a1f\n"),
        ("a/aa/aa1f", "aa1f\n"),
        ("a/aa/aaa/aaa1f", "aaa1f\n"),
        ("a/aa/aaa/aaa2f", "aaa2f\n"),
        ("b/bb/bbb/bbb1f", "bbb1f\n"),
        ("b/bb/bbb/bbb2f", "bbb2f\n"),
        ("c/cc/ccc/ccc1f", "ccc1f\n"),
        ("r1f", "r1f\n"),
    ] {
        tree.file(path, content.as_bytes(), 0o600);
    }
    tree.dir("d", 0o700);
    for dir in [
        ".", "a", "a/aa", "a/aa/aaa", "b", "b/bb", "b/bb/bbb", "c", "c/cc", "c/cc/ccc",
    ] {
        tree.mode(dir, 0o700);
    }
    assert_same(&tree, &[]);
}

/// Random trees: names drawn from a set with spaces, dots, unicode and shared prefixes (which exercise the
/// bytewise sort), random contents, modes, directories and symlinks.
fn arb_tree() -> impl Strategy<Value = Vec<(Vec<&'static str>, u8, Vec<u8>, u32)>> {
    let name = prop::sample::select(vec!["a", "a b", "a.b", "a-b", "ab", "B", "é", "_", "z z", "0"]);
    let kind = 0u8..10;
    let mode = prop::sample::select(vec![0o600, 0o644, 0o640, 0o755, 0o700, 0o4755, 0o2755]);
    prop::collection::vec(
        (
            prop::collection::vec(name, 1..4),
            kind,
            prop::collection::vec(any::<u8>(), 0..64),
            mode,
        ),
        1..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_match_snapdir(items in arb_tree()) {
        let tree = Tree::new();
        for (parts, kind, content, mode) in &items {
            let rel = parts.join("/");
            let path = tree.path().join(&rel);
            // Skip items that collide with what earlier items made.
            if path.symlink_metadata().is_ok() || path.parent().is_none_or(|p| std::fs::create_dir_all(p).is_err()) {
                continue;
            }
            match kind {
                0 => { tree.dir(&rel, *mode | 0o700); }
                1 => { tree.symlink(&rel, parts[0]); }
                _ => { tree.file(&rel, content, *mode); }
            }
        }
        assert_same(&tree, &[]);
    }
}
