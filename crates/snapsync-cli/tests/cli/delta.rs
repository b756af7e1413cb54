//! `signature`, `delta` and `patch` as a user runs them: pipes, files, refusals, verification, limits.

use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use crate::util::{Tree, ok, run, run_with_input, stderr};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn setup() -> Tree {
    let tree = Tree::new();
    let basis: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 23) as u8)
        .collect();
    let mut new = basis.clone();
    new.splice(100_000..100_100, b"something new".iter().copied());
    tree.file("basis", &basis, 0o644).file("new", &new, 0o644);
    tree
}

#[test]
fn files_and_pipes_round_trip() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    ok(&["signature", p(&f("basis")), p(&f("sig"))]);
    ok(&["delta", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    ok(&["patch", p(&f("basis")), p(&f("delta")), p(&f("out"))]);
    assert_eq!(std::fs::read(f("out")).unwrap(), std::fs::read(f("new")).unwrap());

    // The same through standard input and output.
    let basis = std::fs::read(f("basis")).unwrap();
    let out = run_with_input(&["signature", "-", "-"], &basis);
    assert!(out.status.success(), "{}", stderr(&out));
    let sig = out.stdout;
    let out = run_with_input(&["delta", "-", p(&f("new")), "-"], &sig);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_with_input(&["patch", p(&f("basis")), "-", "-"], &out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(f("new")).unwrap());
    // The basis from standard input: a pipe (copied aside first, as it is read at any offset) and a
    // file redirected (`< basis`, read where it is).
    let out = run_with_input(&["patch", "-", p(&f("delta")), "-"], &basis);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(f("new")).unwrap());
    let out = crate::util::snapsync()
        .args(["patch", "-", p(&f("delta")), p(&f("out2"))])
        .stdin(std::fs::File::open(f("basis")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(f("out2")).unwrap(),
        std::fs::read(f("new")).unwrap()
    );
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(tree.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("snapsync")), "{names:?}");
}

#[test]
fn existing_outputs_are_kept_unless_forced() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    tree.file("sig", b"precious", 0o644);
    let out = run(&["signature", p(&f("basis")), p(&f("sig"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exists; use --force to replace it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(f("sig")).unwrap(), b"precious");
    ok(&["signature", "--force", p(&f("basis")), p(&f("sig"))]);
    assert_ne!(std::fs::read(f("sig")).unwrap(), b"precious");
}

/// An output name that is a symbolic link, a dangling one or a FIFO is "something there": refused
/// without `--force`. With it, outputs never destroy what they name, as rdiff writes: a link stays a link
/// and its target (made, for a dangling one) gets the result whole; a FIFO stays a FIFO and its reader
/// gets the result; `/dev/null` stays the device. No temporary file is left either way.
#[test]
fn special_files_at_the_output_are_refused_or_written_as_rdiff_writes_never_replaced() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    tree.file("pointed-to", b"precious", 0o644)
        .symlink("link", "pointed-to")
        .symlink("dangling", "nowhere");
    let fifo = std::process::Command::new("mkfifo")
        .arg(f("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    for name in ["link", "dangling", "fifo"] {
        let out = run(&["signature", p(&f("basis")), p(&f(name))]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            stderr(&out).contains("exists; use --force to replace it"),
            "{name}: {}",
            stderr(&out)
        );
    }
    assert!(f("link").symlink_metadata().unwrap().file_type().is_symlink());
    assert!(!f("nowhere").exists());

    ok(&["signature", p(&f("basis")), p(&f("sig"))]);
    let sig = std::fs::read(f("sig")).unwrap();
    for (name, target) in [("link", "pointed-to"), ("dangling", "nowhere")] {
        ok(&["signature", "--force", p(&f("basis")), p(&f(name))]);
        let meta = f(name).symlink_metadata().unwrap();
        assert!(meta.file_type().is_symlink(), "{name} is no longer a link");
        assert_eq!(std::fs::read(f(target)).unwrap(), sig, "{name}'s target");
    }
    // A FIFO is written into: its reader gets the signature.
    let reader = {
        let fifo = f("fifo");
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(&["signature", "--force", p(&f("basis")), p(&f("fifo"))]);
    assert_eq!(reader.join().unwrap(), sig);
    assert!(f("fifo").symlink_metadata().unwrap().file_type().is_fifo());
    // `patch -f B D /dev/null` discards the result; /dev/null stays the device.
    ok(&["delta", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    ok(&["patch", "--force", p(&f("basis")), p(&f("delta")), "/dev/null"]);
    let null = std::path::Path::new("/dev/null").symlink_metadata().unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");
    let names: Vec<String> = std::fs::read_dir(tree.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("snapsync")), "{names:?}");
}

/// An output named through a loop of links, or through a link into a folder that does not exist,
/// is a clear error naming it with `--force` too: the links stay as they were and no file appears.
#[test]
fn an_output_through_a_link_loop_or_into_a_missing_folder_is_a_clear_error() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    tree.symlink("a", "b")
        .symlink("b", "a")
        .symlink("lost", "missing-folder/x");
    let before = std::fs::read_dir(tree.path()).unwrap().count();
    for (name, says) in [
        ("a", "more than 40 symbolic links in a row"),
        ("lost", "missing-folder/x"),
    ] {
        let out = run(&["signature", "--force", p(&f("basis")), p(&f(name))]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{name}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    for name in ["a", "b", "lost"] {
        let meta = f(name).symlink_metadata().unwrap();
        assert!(meta.file_type().is_symlink(), "{name} is no longer a link");
    }
    assert!(!f("missing-folder").exists());
    assert_eq!(
        std::fs::read_dir(tree.path()).unwrap().count(),
        before,
        "a file appeared"
    );
}

#[test]
fn patch_in_place_replaces_the_basis_only_when_complete() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    ok(&["signature", p(&f("basis")), p(&f("sig"))]);
    ok(&["delta", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    ok(&["patch", "--force", p(&f("basis")), p(&f("delta")), p(&f("basis"))]);
    assert_eq!(
        std::fs::read(f("basis")).unwrap(),
        std::fs::read(f("new")).unwrap()
    );
}

#[test]
fn expect_blake3_verifies_before_writing() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    ok(&["signature", p(&f("basis")), p(&f("sig"))]);
    ok(&["delta", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    let right = blake3::hash(&std::fs::read(f("new")).unwrap())
        .to_hex()
        .to_string();
    let wrong = blake3::hash(b"something else").to_hex().to_string();

    let out = run(&[
        "patch",
        "--expect-blake3",
        &wrong,
        p(&f("basis")),
        p(&f("delta")),
        p(&f("out")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("not the expected {wrong}")), "{err}");
    assert!(
        err.contains("was not written") && err.contains("hint: the delta was made against"),
        "{err}"
    );
    assert!(!f("out").exists());

    ok(&[
        "patch",
        "--expect-blake3",
        &right.to_uppercase(),
        p(&f("basis")),
        p(&f("delta")),
        p(&f("out")),
    ]);
    assert_eq!(std::fs::read(f("out")).unwrap(), std::fs::read(f("new")).unwrap());

    let out = run(&[
        "patch",
        "--expect-blake3",
        "abc",
        p(&f("basis")),
        p(&f("delta")),
        p(&f("out2")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn hostile_and_mismatched_inputs_fail_cleanly() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    // A delta that copies past the end of the basis.
    tree.file(
        "evil.delta",
        &[0x72, 0x73, 0x02, 0x36, 0x4b, 0, 0, 0x0f, 0xff, 0xff, 0xff, 0, 0],
        0o644,
    );
    let out = run(&["patch", p(&f("basis")), p(&f("evil.delta")), p(&f("out"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("corrupt delta at byte 4: COPY of bytes 0..268435455 but the basis has 200000 bytes"),
        "{err}"
    );
    assert!(
        err.contains("hint: the delta was made against a different basis file"),
        "{err}"
    );
    assert!(!f("out").exists());

    // Not a delta at all.
    let out = run(&["patch", p(&f("basis")), p(&f("new")), p(&f("out"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a librsync delta"), "{}", stderr(&out));

    // A signature that is a delta.
    tree.file("d", &[0x72, 0x73, 0x02, 0x36, 0], 0o644);
    let out = run(&["delta", p(&f("d")), p(&f("new")), p(&f("out"))]);
    assert!(
        stderr(&out).contains("not a librsync signature: it starts with 0x72730236"),
        "{}",
        stderr(&out)
    );

    // An output cap.
    ok(&["signature", p(&f("basis")), p(&f("sig"))]);
    ok(&["delta", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    let out = run(&[
        "patch",
        "--max-size",
        "100K",
        p(&f("basis")),
        p(&f("delta")),
        p(&f("out")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exceed the limit of 102400 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!f("out").exists());
}

#[test]
fn usage_errors_exit_with_2() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    for args in [
        vec!["patch", "-", "-", "y"],
        vec!["delta", "-", "-", "out"],
        vec!["signature", "--hash", "sha1", p(&f("basis")), "s"],
        vec!["signature", "--sum-size", "-5", p(&f("basis")), "s"],
        vec!["patch", "--max-size", "lots", p(&f("basis")), "d", "o"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["signature", "--sum-size", "40", p(&f("basis")), p(&f("s"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("strong sum length 40 is not between 1 and 32"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verbose_runs_report_what_they_did() {
    let tree = setup();
    let f = |name: &str| tree.path().join(name);
    let out = run(&["signature", "-v", p(&f("basis")), p(&f("sig"))]);
    assert!(
        stderr(&out).contains("signature: 195.31 KiB of basis in 521 blocks of 384 bytes"),
        "{}",
        stderr(&out)
    );
    let out = run(&["delta", "-v", p(&f("sig")), p(&f("new")), p(&f("delta"))]);
    assert!(stderr(&out).contains(" COPY, "), "{}", stderr(&out));
    let out = run(&["patch", "-v", p(&f("basis")), p(&f("delta")), p(&f("out"))]);
    assert!(
        stderr(&out).contains("patch: 195.23 KiB written"),
        "{}",
        stderr(&out)
    );
    assert!(ok(&["signature", "--help"]).contains("rdiff"));
}
