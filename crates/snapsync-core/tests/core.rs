//! Walks of real directory trees: what is recorded, what is skipped, and that the result is consistent.

use std::fs;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use proptest::prelude::*;
use snapsync_core::{Checksum, Exclude, MacroContext, Manifest, WalkOptions, Warning, walk};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn text(root: &Path, options: &WalkOptions) -> String {
    walk(root, options).unwrap().manifest.render()
}

/// The paths of a manifest as written.
fn paths(manifest: &Manifest) -> Vec<String> {
    manifest
        .entries()
        .iter()
        .map(|e| e.rendered_path().into_owned())
        .collect()
}

fn excluding(globs: &[&str]) -> WalkOptions {
    let globs: Vec<String> = globs.iter().map(ToString::to_string).collect();
    WalkOptions {
        exclude: Exclude::new(&globs, &[], &MacroContext::default()).unwrap(),
        ..WalkOptions::default()
    }
}

#[test]
fn empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    assert_eq!(
        text(dir.path(), &WalkOptions::default()),
        format!("D 755 {} 0 ./", Checksum::EMPTY)
    );
}

#[test]
fn snapdir_single_empty_file_golden() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    fs::write(dir.path().join("empty.txt"), b"").unwrap();
    chmod(&dir.path().join("empty.txt"), 0o600);
    assert_eq!(
        text(dir.path(), &WalkOptions::default()),
        format!(
            "D 755 dba5865c0d91b17958e4d2cac98c338f85cbbda07b71a020ab16c391b5e7af4b 0 ./\nF 600 {} 0 ./empty.txt",
            Checksum::EMPTY
        )
    );
}

#[test]
fn nested_sizes_modes_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/x"), b"hello\n").unwrap();
    fs::write(root.join("top"), b"0123456789").unwrap();
    chmod(&root.join("top"), 0o4755);
    chmod(&root.join("a"), 0o700);
    let walked = walk(root, &WalkOptions::default()).unwrap();
    let m = &walked.manifest;
    m.check_consistency().unwrap();
    let x = m.get(b"./a/b/x").unwrap();
    assert_eq!((x.size(), x.checksum()), (6, Checksum::of(b"hello\n")));
    assert_eq!(m.get(b"./top").unwrap().mode(), 0o4755);
    assert_eq!(m.get(b"./a/").unwrap().mode(), 0o700);
    assert_eq!(m.root().unwrap().size(), 16);
    assert!(walked.warnings.is_empty());
}

#[test]
fn symlinks_are_followed_like_snapdir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/file"), b"hello world\n").unwrap();
    symlink("d/file", root.join("l")).unwrap();
    symlink("d", root.join("ld")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    let walked = walk(root, &WalkOptions::default()).unwrap();
    let m = &walked.manifest;
    let link = m.get(b"./l").unwrap();
    // The content is the target's; the permissions and size are the link's own (snapdir does this).
    assert_eq!(link.checksum(), Checksum::of(b"hello world\n"));
    assert_eq!((link.mode(), link.size()), (0o777, 6));
    assert!(m.get(b"./ld/").unwrap().is_dir());
    assert_eq!(m.get(b"./ld/file").unwrap().size(), 12);
    assert!(m.get(b"./dangling").is_none());
    assert_eq!(
        walked.warnings,
        [Warning::DanglingSymlink {
            path: walked.root.join("dangling")
        }]
    );
    m.check_consistency().unwrap();

    let no_follow = WalkOptions {
        follow_symlinks: false,
        ..WalkOptions::default()
    };
    let walked = walk(root, &no_follow).unwrap();
    let paths = paths(&walked.manifest);
    assert_eq!(paths, ["./", "./d/", "./d/file"]);
    assert!(walked.warnings.is_empty());
}

#[test]
fn symlink_loops_are_cut_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("a")).unwrap();
    fs::write(root.join("a/x"), b"x").unwrap();
    symlink("..", root.join("a/up")).unwrap();
    symlink(".", root.join("self")).unwrap();
    let walked = walk(root, &WalkOptions::default()).unwrap();
    let paths = paths(&walked.manifest);
    assert_eq!(paths, ["./", "./a/", "./a/x"]);
    assert_eq!(walked.warnings.len(), 2, "{:?}", walked.warnings);
    assert!(
        walked
            .warnings
            .iter()
            .all(|w| matches!(w, Warning::SymlinkLoop { .. }))
    );
}

#[test]
fn special_files_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let walked = walk(dir.path(), &WalkOptions::default()).unwrap();
    assert_eq!(walked.manifest.len(), 1);
    assert_eq!(
        walked.warnings,
        [Warning::SpecialFile {
            path: walked.root.join("fifo"),
            kind: "FIFO"
        }]
    );
}

#[test]
fn names_snapdir_cannot_write_are_quoted_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let newline = root.join("new\nline");
    let not_utf8 = root.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    fs::write(&newline, b"1").unwrap();
    fs::write(&not_utf8, b"2").unwrap();
    fs::write(root.join("plain \\ \"name\""), b"3").unwrap();
    let m = walk(root, &WalkOptions::default()).unwrap().manifest;
    let rendered = m.render();
    assert_eq!(rendered.lines().count(), 4, "{rendered}");
    assert!(rendered.contains(" 1 \"./new\\nline\""), "{rendered}");
    assert!(rendered.contains(" 1 \"./bad\\xffname\""), "{rendered}");
    assert!(
        rendered.contains(" 1 ./plain \\ \"name\""),
        "verbatim when no quoting is needed: {rendered}"
    );
    let back = Manifest::parse(rendered.as_bytes()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.get(b"./new\nline").unwrap().checksum(), Checksum::of(b"1"));
    assert_eq!(back.get(b"./bad\xffname").unwrap().checksum(), Checksum::of(b"2"));
    back.check_consistency().unwrap();
}

#[test]
fn excluded_directories_are_not_descended() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("keep/node_modules/pkg")).unwrap();
    fs::create_dir_all(root.join("build/out")).unwrap();
    fs::write(root.join("keep/node_modules/pkg/index.js"), b"x").unwrap();
    fs::write(root.join("keep/app.log"), b"x").unwrap();
    fs::write(root.join("keep/app.rs"), b"x").unwrap();
    fs::write(root.join("build/out/bin"), b"x").unwrap();
    // An unreadable directory would fail the walk if it were entered.
    chmod(&root.join("keep/node_modules"), 0o000);
    let walked = walk(root, &excluding(&["node_modules", "*.log", "/build/out"])).unwrap();
    chmod(&root.join("keep/node_modules"), 0o755);
    let paths = paths(&walked.manifest);
    assert_eq!(paths, ["./", "./build/", "./keep/", "./keep/app.rs"]);
    walked.manifest.check_consistency().unwrap();
}

#[test]
fn regex_excludes_match_the_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join(".git/HEAD"), b"x").unwrap();
    fs::write(dir.path().join(".gitignore"), b"x").unwrap();
    let options = WalkOptions {
        exclude: Exclude::new(&[], &["%common%".into()], &MacroContext::default()).unwrap(),
        ..WalkOptions::default()
    };
    let paths = paths(&walk(dir.path(), &options).unwrap().manifest);
    assert_eq!(paths, ["./", "./.gitignore"]);
}

#[test]
fn absolute_paths_use_the_normalised_root() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/f"), b"x").unwrap();
    let messy = dir.path().join(".").join("sub").join("..").join("");
    let options = WalkOptions {
        absolute: true,
        ..WalkOptions::default()
    };
    let walked = walk(&messy, &options).unwrap();
    let root = format!("{}/sub/..", dir.path().display());
    let paths = paths(&walked.manifest);
    assert_eq!(
        paths,
        [
            format!("{root}/"),
            format!("{root}/sub/"),
            format!("{root}/sub/f")
        ]
    );
    walked.manifest.check_consistency().unwrap();
    // The relative manifest of the same tree has a different id (the paths differ) but equal checksums.
    let relative = walk(&messy, &WalkOptions::default()).unwrap().manifest;
    assert_ne!(relative.id(), walked.manifest.id());
    assert_eq!(
        relative.root().unwrap().checksum(),
        walked.manifest.root().unwrap().checksum()
    );
}

#[test]
fn bad_roots_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = walk(&file, &WalkOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("{} is not a directory", file.display()));
    let missing = dir.path().join("missing");
    let err = walk(&missing, &WalkOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot read {}", missing.display()));
}

#[test]
fn large_files_hash_the_same_read_or_mapped_and_no_signal_handler_is_installed_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..snapsync_core::MMAP_THRESHOLD as usize * 2 + 12345)
        .map(|i| (i % 253) as u8)
        .collect();
    fs::write(dir.path().join("big"), &data).unwrap();
    let sigbus_handler = || {
        // SAFETY: querying a disposition (a null new action) changes nothing.
        #[allow(unsafe_code)]
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(libc::SIGBUS, std::ptr::null(), &raw mut current),
                0
            );
            current.sa_sigaction
        }
    };
    // Each test is a process of its own under nextest: nothing installed the guard before this line.
    let before = sigbus_handler();
    let read = walk(dir.path(), &WalkOptions::default()).unwrap().manifest;
    assert_eq!(read.get(b"./big").unwrap().checksum(), Checksum::of(&data));
    assert_eq!(
        sigbus_handler(),
        before,
        "a library call installed a SIGBUS handler"
    );
    // Opted in (as the snapsync binary does), the file is mapped; the result is the same.
    assert!(snapsync_core::install_sigbus_guard());
    assert_ne!(sigbus_handler(), before);
    let mapped = walk(dir.path(), &WalkOptions::default()).unwrap().manifest;
    assert_eq!(mapped.get(b"./big").unwrap().checksum(), Checksum::of(&data));
}

/// Regression: a 2,000-level tree overflowed the 2 MiB stack of rayon's default threads and aborted.
#[test]
fn very_deep_trees_walk_without_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().to_path_buf();
    for _ in 0..2000 {
        path.push("d");
    }
    fs::create_dir_all(&path).unwrap();
    fs::write(path.join("f"), b"x").unwrap();
    for threads in [1, 2] {
        let options = WalkOptions {
            threads: NonZeroUsize::new(threads),
            ..WalkOptions::default()
        };
        let m = walk(dir.path(), &options).unwrap().manifest;
        assert_eq!(m.len(), 2002);
        m.check_consistency().unwrap();
    }
}

/// Deeper than a path can name: a clear error, not a crash.
#[test]
fn trees_deeper_than_path_max_give_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Built one relative step at a time from a changing directory, since the full path is too long for
    // one system call (a separate process, so this test's own working directory stays put).
    let script = "import os\nfor _ in range(3000):\n    os.mkdir('x')\n    os.chdir('x')\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let err = walk(dir.path(), &WalkOptions::default()).unwrap_err();
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains("File name too long"), "{chain}");
    // GNU rm walks with openat, so it can remove what no single path can name.
    let status = std::process::Command::new("rm")
        .args(["-rf", "x"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A random tree: (relative path, content or None for a directory).
fn arb_tree() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    let name = prop::sample::select(vec!["a", "b", "c d", "e.txt", "ü", "f"]);
    let path = prop::collection::vec(name, 1..4).prop_map(|parts| parts.join("/"));
    let content = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..300));
    prop::collection::vec((path, content), 0..25)
}

fn build(root: &Path, tree: &[(String, Option<Vec<u8>>)]) {
    for (path, content) in tree {
        let full = root.join(path);
        // Later entries may collide with earlier ones (a file where a directory is wanted): skip those.
        match content {
            Some(bytes) => {
                if full.parent().is_some_and(|p| fs::create_dir_all(p).is_ok()) && !full.is_dir() {
                    fs::write(&full, bytes).unwrap();
                }
            }
            None => {
                let _ = fs::create_dir_all(&full);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn walks_are_consistent_and_independent_of_threads_and_location(tree in arb_tree()) {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        build(one.path(), &tree);
        build(two.path(), &tree);
        let serial = WalkOptions { threads: NonZeroUsize::new(1), ..WalkOptions::default() };
        let parallel = WalkOptions { threads: NonZeroUsize::new(4), ..WalkOptions::default() };
        let a = walk(one.path(), &serial).unwrap().manifest;
        let b = walk(two.path(), &parallel).unwrap().manifest;
        a.check_consistency().unwrap();
        prop_assert_eq!(a.render(), b.render());
        prop_assert_eq!(a.id(), b.id());
        prop_assert_eq!(Manifest::parse(a.render().as_bytes()).unwrap(), a);
    }
}

#[test]
fn sources_record_every_file_with_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    fs::write(dir.path().join("d/a"), b"alpha").unwrap();
    fs::write(dir.path().join("b"), b"beta").unwrap();
    symlink("b", dir.path().join("link")).unwrap();
    let options = WalkOptions {
        record_sources: true,
        ..WalkOptions::default()
    };
    let walked = walk(dir.path(), &options).unwrap();
    let mut sources = walked.sources.clone();
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<_> = sources
        .iter()
        .map(|s| s.path.strip_prefix(&walked.root).unwrap().to_owned())
        .collect();
    assert_eq!(paths, [Path::new("b"), Path::new("d/a"), Path::new("link")]);
    for source in &sources {
        assert_eq!(
            source.fingerprint,
            snapsync_core::Fingerprint::current(&source.path).unwrap()
        );
        assert_eq!(source.checksum, Checksum::of(&fs::read(&source.path).unwrap()));
    }
    // A write changes the fingerprint, even one that restores the modification time.
    let before = sources[1].fingerprint;
    let mtime = fs::metadata(&sources[1].path).unwrap().modified().unwrap();
    fs::write(&sources[1].path, b"ALPHA").unwrap();
    fs::File::options()
        .write(true)
        .open(&sources[1].path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_ne!(
        snapsync_core::Fingerprint::current(&sources[1].path).unwrap(),
        before
    );
    // Without the option, nothing is recorded.
    assert!(
        walk(dir.path(), &WalkOptions::default())
            .unwrap()
            .sources
            .is_empty()
    );
}
