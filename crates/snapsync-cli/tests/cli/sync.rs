//! Folder sync through the binary: pyftpsync's two-way fixture (its `tests/fixture_tools.py` and
//! `tests/test_sync_bidir.py`) against a local folder, pyftpdlib over FTP and OpenSSH's sshd over SFTP,
//! with the default (skip), `--resolve local`, `--resolve remote` and `--dry-run`; the results are
//! pyftpsync's expected trees, contents and times, except where pyftpsync documents a conflict it
//! misses (folder4, folder7): there the edited file is kept and the conflict reported. A second run
//! right after changes nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use snapsync_testkit::{FtpServer, Sshd};

use crate::util::{run, stderr};

/// 2014-01-01 12:00:00 UTC, pyftpsync's base time.
pub(crate) const T12: u64 = 1_388_577_600;
pub(crate) const T13: u64 = T12 + 3600;
const T13_05: u64 = T13 + 5;

/// A file's content and modification time (seconds).
pub(crate) type Tree = BTreeMap<String, (String, u64)>;

pub(crate) fn write(root: &Path, rel: &str, content: &str, time: u64) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(time)).unwrap();
}

/// Every file below `root` (the sync state and the lock left out).
pub(crate) fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if rel == ".snapsync" || rel == ".snapsync-lock" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                walk(root, &entry.path(), out);
            } else {
                let meta = entry.metadata().unwrap();
                let time = meta
                    .modified()
                    .unwrap()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                out.insert(rel, (fs::read_to_string(entry.path()).unwrap(), time));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

fn expect(entries: &[(&str, &str, u64)]) -> Tree {
    entries
        .iter()
        .map(|(path, content, time)| ((*path).to_owned(), ((*content).to_owned(), *time)))
        .collect()
}

/// Where the fixture's remote lives: its URL, the same folder on this machine, and how to make files
/// written there the server user's.
struct Remote {
    url: String,
    root: PathBuf,
    args: Vec<String>,
    owner: Option<&'static str>,
}

impl Remote {
    fn settle(&self) {
        if let Some(owner) = self.owner {
            let status = std::process::Command::new("chown")
                .args(["-R", owner])
                .arg(&self.root)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

/// Runs `snapsync sync` with the remote's arguments; the exit status and the JSON summary.
fn sync(local: &Path, remote: &Remote, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["sync", "--json", local.to_str().unwrap(), remote.url.as_str()];
    args.extend(extra);
    args.extend(remote.args.iter().map(String::as_str));
    let out = run(&args);
    let code = out.status.code().unwrap_or(-1);
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON lines"))
        .find(|line| line["type"] == "summary")
        .unwrap_or_else(|| {
            panic!(
                "no JSON summary: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            )
        });
    (code, summary)
}

/// pyftpsync's `_prepare_initial_synced_fixture`: 9 files and 7 folders, synced once.
fn initial(local: &Path, remote: &Remote) {
    for i in 1..10 {
        write(local, &format!("file{i}.txt"), &format!("local{i}"), T12);
    }
    for i in 1..8 {
        write(
            local,
            &format!("folder{i}/file{i}_1.txt"),
            &format!("local{i}_1"),
            T12,
        );
    }
    fs::create_dir_all(&remote.root).unwrap();
    remote.settle();
    let (code, summary) = sync(local, remote, &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["uploaded"], 16, "{summary}");
    assert_eq!(tree(local), tree(&remote.root));
}

/// pyftpsync's `_prepare_modified_fixture`: changes on both sides.
fn modify(local: &Path, remote: &Remote) {
    let r = remote.root.as_path();
    write(local, "file2.txt", "local 13:00", T13);
    fs::remove_file(local.join("file3.txt")).unwrap();
    write(r, "file4.txt", "remote 13:00", T13);
    fs::remove_file(r.join("file5.txt")).unwrap();
    write(local, "file6.txt", "local 13:00", T13);
    write(r, "file6.txt", "remote 13:00:05", T13_05);
    write(local, "file7.txt", "local 13:00:05", T13_05);
    write(r, "file7.txt", "remote 13:00", T13);
    fs::remove_file(local.join("file8.txt")).unwrap();
    write(r, "file8.txt", "remote 13:00", T13);
    write(local, "file9.txt", "local 13:00", T13);
    fs::remove_file(r.join("file9.txt")).unwrap();

    write(local, "folder2/file2_1.txt", "local 13:00", T13);
    fs::remove_dir_all(local.join("folder3")).unwrap();
    fs::remove_dir_all(local.join("folder4")).unwrap();
    write(r, "folder4/file4_1.txt", "remote 13:00", T13);
    write(r, "folder5/file5_1.txt", "remote 13:00", T13);
    fs::remove_dir_all(r.join("folder6")).unwrap();
    write(local, "folder7/file7_1.txt", "local 13:00", T13);
    fs::remove_dir_all(r.join("folder7")).unwrap();

    write(local, "new_file1.txt", "local 13:00", T13);
    write(r, "new_file2.txt", "remote 13:00", T13);
    write(local, "new_file3.txt", "local 13:00", T13);
    write(r, "new_file3.txt", "local 13:00", T13);
    write(local, "new_file4.txt", "local 13:00", T13);
    write(r, "new_file4.txt", "remote 13:00 with other content", T13);
    write(local, "new_file5.txt", "local 13:00", T13);
    write(r, "new_file5.txt", "remote 13:00:05", T13_05);
    write(local, "new_file6.txt", "local 13:00:05", T13_05);
    write(r, "new_file6.txt", "remote 13:00", T13);
    remote.settle();
}

/// The files every scenario ends with on both sides.
fn common() -> Vec<(&'static str, &'static str, u64)> {
    vec![
        ("file1.txt", "local1", T12),
        ("file2.txt", "local 13:00", T13),
        ("file4.txt", "remote 13:00", T13),
        ("folder1/file1_1.txt", "local1_1", T12),
        ("folder2/file2_1.txt", "local 13:00", T13),
        ("folder5/file5_1.txt", "remote 13:00", T13),
        ("new_file1.txt", "local 13:00", T13),
        ("new_file2.txt", "remote 13:00", T13),
        ("new_file3.txt", "local 13:00", T13),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Default,
    ResolveLocal,
    ResolveRemote,
    DryRun,
}

/// Runs one scenario in `local` ⇄ `remote` and checks the trees, the summary, and a second run.
fn scenario(which: Scenario, local: &Path, remote: &Remote) {
    initial(local, remote);
    modify(local, remote);
    let (local_before, remote_before) = (tree(local), tree(&remote.root));
    let flags: &[&str] = match which {
        Scenario::Default => &[],
        Scenario::ResolveLocal => &["--resolve", "local"],
        Scenario::ResolveRemote => &["--resolve", "remote"],
        Scenario::DryRun => &["--resolve", "local", "--dry-run"],
    };
    let (code, summary) = sync(local, remote, flags);
    let count = |key: &str| summary[key].as_u64().unwrap();
    let conflicts = summary["conflicts"].as_array().unwrap().len();
    let mut expect_local = common();
    let mut expect_remote = common();
    match which {
        Scenario::Default => {
            assert_eq!(code, 4, "{summary}");
            // pyftpsync's 7 conflicts, and the two it misses: folder4 and folder7.
            assert_eq!(conflicts, 9, "{summary}");
            assert_eq!((count("uploaded"), count("downloaded")), (3, 3), "{summary}");
            assert_eq!(
                (count("deleted_local"), count("deleted_remote")),
                (2, 2),
                "{summary}"
            );
            assert_eq!((count("dirs_removed"), count("equal")), (2, 1), "{summary}");
            expect_local.extend([
                ("file6.txt", "local 13:00", T13),
                ("file7.txt", "local 13:00:05", T13_05),
                ("file9.txt", "local 13:00", T13),
                ("new_file4.txt", "local 13:00", T13),
                ("new_file5.txt", "local 13:00", T13),
                ("new_file6.txt", "local 13:00:05", T13_05),
                // pyftpsync deletes this folder; the edit in it is kept.
                ("folder7/file7_1.txt", "local 13:00", T13),
            ]);
            expect_remote.extend([
                ("file6.txt", "remote 13:00:05", T13_05),
                ("file7.txt", "remote 13:00", T13),
                ("file8.txt", "remote 13:00", T13),
                ("new_file4.txt", "remote 13:00 with other content", T13),
                ("new_file5.txt", "remote 13:00:05", T13_05),
                ("new_file6.txt", "remote 13:00", T13),
                ("folder4/file4_1.txt", "remote 13:00", T13),
            ]);
        }
        Scenario::ResolveLocal => {
            assert_eq!(code, 0, "{summary}");
            assert_eq!((conflicts, count("resolved")), (0, 9), "{summary}");
            assert_eq!((count("uploaded"), count("downloaded")), (10, 3), "{summary}");
            assert_eq!(
                (count("deleted_local"), count("deleted_remote")),
                (2, 4),
                "{summary}"
            );
            assert_eq!(count("dirs_removed"), 3, "{summary}");
            let local_wins = [
                ("file6.txt", "local 13:00", T13),
                ("file7.txt", "local 13:00:05", T13_05),
                ("file9.txt", "local 13:00", T13),
                ("new_file4.txt", "local 13:00", T13),
                ("new_file5.txt", "local 13:00", T13),
                ("new_file6.txt", "local 13:00:05", T13_05),
                ("folder7/file7_1.txt", "local 13:00", T13),
            ];
            expect_local.extend(local_wins);
            expect_remote.extend(local_wins);
        }
        Scenario::ResolveRemote => {
            assert_eq!(code, 0, "{summary}");
            assert_eq!((conflicts, count("resolved")), (0, 9), "{summary}");
            assert_eq!((count("uploaded"), count("downloaded")), (3, 10), "{summary}");
            assert_eq!(
                (count("deleted_local"), count("deleted_remote")),
                (4, 2),
                "{summary}"
            );
            assert_eq!(count("dirs_removed"), 3, "{summary}");
            let remote_wins = [
                ("file6.txt", "remote 13:00:05", T13_05),
                ("file7.txt", "remote 13:00", T13),
                ("file8.txt", "remote 13:00", T13),
                ("new_file4.txt", "remote 13:00 with other content", T13),
                ("new_file5.txt", "remote 13:00:05", T13_05),
                ("new_file6.txt", "remote 13:00", T13),
                ("folder4/file4_1.txt", "remote 13:00", T13),
            ];
            expect_local.extend(remote_wins);
            expect_remote.extend(remote_wins);
        }
        Scenario::DryRun => {
            assert_eq!(code, 0, "{summary}");
            assert_eq!(summary["dry_run"], true);
            // What --resolve local would do, and nothing done.
            assert_eq!((count("uploaded"), count("downloaded")), (10, 3), "{summary}");
            assert_eq!(tree(local), local_before);
            assert_eq!(tree(&remote.root), remote_before);
            return;
        }
    }
    assert_eq!(tree(local), expect(&expect_local), "local after {which:?}");
    assert_eq!(
        tree(&remote.root),
        expect(&expect_remote),
        "remote after {which:?}"
    );
    // Folders whose files were all deleted are gone; the ones a conflict keeps are not.
    assert!(!remote.root.join("folder3").exists() && !local.join("folder6").exists());
    if matches!(which, Scenario::ResolveLocal) {
        assert!(!remote.root.join("folder4").exists());
    }
    // A second run right after changes nothing (the conflicts skipped stay conflicts).
    let (again_code, again) = sync(local, remote, flags);
    assert_eq!(again_code, code, "{again}");
    for key in [
        "uploaded",
        "downloaded",
        "deleted_local",
        "deleted_remote",
        "dirs_removed",
    ] {
        assert_eq!(again[key], 0, "second run after {which:?}: {again}");
    }
    assert_eq!(tree(local), expect(&expect_local));
    assert_eq!(tree(&remote.root), expect(&expect_remote));
}

fn all_scenarios(remote_for: impl Fn(&str) -> Remote) {
    for which in [
        Scenario::Default,
        Scenario::ResolveLocal,
        Scenario::ResolveRemote,
        Scenario::DryRun,
    ] {
        let local = tempfile::tempdir().unwrap();
        let remote = remote_for(&format!("{which:?}").to_lowercase());
        scenario(which, local.path(), &remote);
    }
}

#[test]
fn pyftpsync_bidirectional_fixture_with_a_local_folder() {
    let remotes = tempfile::tempdir().unwrap();
    all_scenarios(|name| Remote {
        url: remotes.path().join(name).display().to_string(),
        root: remotes.path().join(name),
        args: Vec::new(),
        owner: None,
    });
}

#[test]
fn pyftpsync_bidirectional_fixture_over_ftp() {
    let server = FtpServer::pyftpdlib();
    all_scenarios(|name| Remote {
        url: server.url(name),
        root: server.root().join(name),
        args: Vec::new(),
        owner: None,
    });
}

#[test]
fn pyftpsync_bidirectional_fixture_over_sftp() {
    let server = Sshd::start();
    let known_hosts = server.known_hosts().display().to_string();
    all_scenarios(|name| Remote {
        url: server.url(name),
        root: server.root().join(name),
        args: vec!["--known-hosts".into(), known_hosts.clone()],
        owner: Some(snapsync_testkit::SSH_USER),
    });
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs snapsync and returns (exit status, stdout, stderr).
pub(crate) fn snapsync(args: &[&str]) -> (i32, String, String) {
    let out = run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn upload_keeps_remote_edits_unless_forced_and_deletes_only_when_asked() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "a.txt", "a", T12);
    write(l, "b.txt", "b", T12);
    write(l, "sub/c.txt", "c", T12);
    let (code, _, err) = snapsync(&["upload", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(r), tree(l));

    write(r, "a.txt", "edited there", T13);
    write(l, "b.txt", "edited here", T13);
    write(r, "extra.txt", "only there", T13);
    // The whole folder goes (a folder that stays here, even empty, is kept there too).
    fs::remove_dir_all(l.join("sub")).unwrap();
    // The remote's edit is a conflict, not overwritten; nothing is deleted without --delete.
    let (code, out, err) = snapsync(&["upload", "-n", ls, rs]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(out.trim(), "upload        b.txt", "{err}");
    let (code, _, err) = snapsync(&["upload", ls, rs]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("conflict: a.txt"), "{err}");
    assert_eq!(read(&r.join("a.txt")), "edited there");
    assert_eq!(read(&r.join("b.txt")), "edited here");
    assert!(r.join("sub/c.txt").exists() && r.join("extra.txt").exists());
    // --delete removes what the local side does not have; the empty folder goes with it.
    let (code, _, err) = snapsync(&["upload", "--delete", ls, rs]);
    assert_eq!(code, 4, "{err}");
    assert!(!r.join("sub").exists() && !r.join("extra.txt").exists());
    assert_eq!(read(&r.join("a.txt")), "edited there");
    // --force overwrites the remote's edit.
    let (code, _, err) = snapsync(&["upload", "--force", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(r), tree(l));
    let (code, _, err) = snapsync(&["upload", "--delete", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 up"), "{err}");
}

#[test]
fn two_way_sync_refuses_one_way_switches_as_a_usage_error() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ls, rs) = (local.path().to_str().unwrap(), remote.path().to_str().unwrap());
    write(local.path(), "a.txt", "a", T12);
    for switch in ["--delete", "--delete-unmatched", "--force"] {
        let (code, _, err) = snapsync(&["sync", switch, ls, rs]);
        assert_eq!(code, 2, "{switch}: {err}");
        assert!(
            err.contains(switch) && err.contains("for upload and download"),
            "{err}"
        );
    }
    assert!(
        !remote.path().join("a.txt").exists(),
        "a refused run changed something"
    );
}

#[test]
fn download_creates_the_folder_and_mirrors_with_delete() {
    let (remote, base) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (r, rs) = (remote.path(), remote.path().to_str().unwrap());
    let l = base.path().join("new/mirror");
    let ls = l.to_str().unwrap();
    write(r, "x/y.txt", "y", T12);
    write(r, "z.txt", "z", T13);
    let (code, _, err) = snapsync(&["download", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(&l), tree(r));
    write(&l, "local-only.txt", "mine", T13);
    fs::remove_file(r.join("z.txt")).unwrap();
    let (code, _, err) = snapsync(&["download", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(l.join("local-only.txt").exists() && l.join("z.txt").exists());
    let (code, _, err) = snapsync(&["download", "--delete", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(&l), tree(r));
}

#[test]
fn match_exclude_and_delete_unmatched_choose_what_is_synced() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "index.html", "<html>", T12);
    write(l, "notes.txt", "notes", T12);
    write(l, ".git/config", "git", T12);
    write(l, "sub/.DS_Store", "junk", T12);
    write(l, "sub/page.html", "<p>", T12);
    write(r, "old.txt", "stale", T12);
    // The default excludes keep version control and junk out.
    let (code, _, err) = snapsync(&["upload", "-m", "*.html", ls, rs]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = tree(r).into_keys().collect();
    assert_eq!(names, ["index.html", "old.txt", "sub/page.html"]);
    // --delete-unmatched also removes target files --match leaves out.
    let (code, _, err) = snapsync(&["upload", "-m", "*.html", "--delete-unmatched", ls, rs]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = tree(r).into_keys().collect();
    assert_eq!(names, ["index.html", "sub/page.html"]);
    // An explicit --exclude replaces the defaults.
    let (code, _, err) = snapsync(&["upload", "-x", "*.txt", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(r.join(".git/config").exists() && !r.join("notes.txt").exists());
    let (code, _, err) = snapsync(&["upload", "-m", "[", ls, rs]);
    assert_eq!(code, 1);
    assert!(err.contains("--match"), "{err}");
}

#[test]
fn a_held_lock_stops_a_second_run_until_it_is_stale_or_broken() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "a.txt", "a", T12);
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    fs::write(
        r.join(".snapsync-lock"),
        format!(r#"{{"host":"elsewhere","pid":42,"started_ns":{now}}}"#),
    )
    .unwrap();
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("locked") && err.contains("elsewhere") && err.contains("--break-lock"),
        "{err}"
    );
    assert!(!r.join("a.txt").exists());
    // A dry run reads only and needs no lock.
    let (code, out, err) = snapsync(&["sync", "-n", ls, rs]);
    assert_eq!((code, out.trim()), (0, "upload        a.txt"), "{err}");
    let (code, _, err) = snapsync(&["sync", "--break-lock", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(r.join("a.txt").exists() && !r.join(".snapsync-lock").exists());
    // A lock older than --lock-timeout belongs to a dead run and is taken over.
    fs::write(
        r.join(".snapsync-lock"),
        r#"{"host":"elsewhere","pid":42,"started_ns":1000}"#,
    )
    .unwrap();
    write(l, "b.txt", "b", T12);
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(r.join("b.txt").exists() && !r.join(".snapsync-lock").exists());
    // A fresh lock of this machine whose process is gone (a killed run) is taken over too.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    fs::write(
        r.join(".snapsync-lock"),
        format!(
            r#"{{"host":"{}","pid":4294967294,"started_ns":{now}}}"#,
            host.trim()
        ),
    )
    .unwrap();
    write(l, "c.txt", "c", T12);
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(r.join("c.txt").exists() && !r.join(".snapsync-lock").exists());
}

#[test]
fn sync_over_ftp_with_a_wrong_password_fails_without_showing_it() {
    let server = FtpServer::pyftpdlib();
    let local = tempfile::tempdir().unwrap();
    write(local.path(), "a.txt", "a", T12);
    let url = server.url_with_password("site", "not-the-password-9");
    let (code, _, err) = snapsync(&["sync", local.path().to_str().unwrap(), &url]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("not-the-password-9"), "{err}");
    assert!(
        err.to_lowercase().contains("denied") || err.contains("530"),
        "{err}"
    );
}

#[test]
fn checksum_lets_content_decide_over_size_and_time() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "touched.txt", "same", T12);
    write(l, "sneaky.txt", "aaaa", T12);
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 0, "{err}");
    // Touched without an edit; edited keeping size and time.
    write(l, "touched.txt", "same", T13);
    write(l, "sneaky.txt", "bbbb", T12);
    let (code, out, err) = snapsync(&["sync", "-n", ls, rs]);
    assert_eq!((code, out.trim()), (0, "upload        touched.txt"), "{err}");
    let (code, out, err) = snapsync(&["sync", "-n", "--checksum", ls, rs]);
    assert_eq!((code, out.trim()), (0, "upload        sneaky.txt"), "{err}");
    let (code, _, err) = snapsync(&["sync", "--checksum", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&r.join("sneaky.txt")), "bbbb");
}

/// Starts `snapsync ARGS` and kills it once `ready` says a transfer is under way; fails unless the
/// kill came while that transfer was in flight (not after the run finished, nor before it began).
pub(crate) fn kill_midway(args: &[&str], ready: impl Fn() -> bool) {
    let mut child = crate::util::snapsync()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut in_flight = false;
    while started.elapsed() < Duration::from_secs(30) {
        if ready() {
            in_flight = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        in_flight && still_running,
        "snapsync {args:?} was not killed mid-transfer (in flight: {in_flight}, still running: {still_running})"
    );
}

/// Whether a temporary file of `name` (a transfer under way, or its leftover) exists in `dir`.
pub(crate) fn has_temp(dir: &Path, name: &str) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        let file = e.file_name();
        snapsync_store::is_temp_name(&file)
            && file.to_string_lossy().starts_with(&format!(".{name}."))
            && e.metadata().unwrap().len() > 0
    })
}

#[test]
fn a_killed_run_leaves_each_file_old_or_new_and_the_next_run_finishes() {
    let server = FtpServer::pyftpdlib();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    let ls = l.to_str().unwrap();
    let url = server.url("site");
    let remote = server.root().join("site");
    let big: Vec<u8> = (0..(96u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::create_dir_all(&remote).unwrap();
    fs::write(remote.join("big.bin"), b"old version").unwrap();
    fs::write(l.join("big.bin"), &big).unwrap();
    // Killed while uploading: the remote file is the old one, never a torn new one.
    kill_midway(&["upload", "--force", ls, &url], || has_temp(&remote, "big.bin"));
    let now = fs::read(remote.join("big.bin")).unwrap();
    assert!(now == b"old version" || now == big, "torn: {} bytes", now.len());
    let (code, _, err) = snapsync(&["upload", "--force", ls, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(remote.join("big.bin")).unwrap() == big);
    assert!(
        !has_temp(&remote, "big.bin"),
        "the killed upload's temporary file stayed on the server"
    );

    // Killed while downloading: the local file is old or new; the next run removes the leftover.
    let target = tempfile::tempdir().unwrap();
    let t = target.path();
    fs::write(t.join("big.bin"), b"old local").unwrap();
    let ts = t.to_str().unwrap();
    kill_midway(&["download", "--force", ts, &url], || has_temp(t, "big.bin"));
    let now = fs::read(t.join("big.bin")).unwrap();
    assert!(now == b"old local" || now == big, "torn: {} bytes", now.len());
    let (code, _, err) = snapsync(&["download", "--force", ts, &url]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(t.join("big.bin")).unwrap() == big);
    assert!(!has_temp(t, "big.bin"), "a leftover temporary file stayed");
}

#[test]
fn resolve_ask_prompts_on_a_terminal_and_skips_without_one() {
    let (local, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "a.txt", "local", T12);
    write(r, "a.txt", "remote version", T13);
    // No terminal: the conflict is skipped and reported.
    let (code, _, err) = snapsync(&["sync", "--resolve", "ask", ls, rs]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
    // On a terminal (script(1) gives it one): an answer that is not understood asks again; `r` keeps
    // the remote version.
    let (ok, text) = on_a_terminal(&format!("sync --resolve ask {ls} {rs}"), b"what\nr\n");
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("Keep [l]ocal (upload), [r]emote (download)").count(),
        2,
        "{text}"
    );
    assert_eq!(read(&l.join("a.txt")), "remote version");
}

/// Runs `snapsync ARGS` on a terminal (script(1) gives it one) that types `input`: whether it
/// succeeded, and what the terminal showed.
pub(crate) fn on_a_terminal(args: &str, input: &[u8]) -> (bool, String) {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_snapsync"));
    let mut child = crate::util::script(&command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) runs (util-linux)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn two_way_sync_with_an_s3_bucket() {
    let server = snapsync_testkit::S3Server::start();
    server.create_bucket("site");
    let env = server.env();
    let run = |args: &[&str]| {
        let out = crate::util::run_env(args, &env);
        (out.status.code().unwrap_or(-1), stderr(&out))
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_path, b_path) = (a.path(), b.path());
    let (a_arg, b_arg) = (a_path.to_str().unwrap(), b_path.to_str().unwrap());
    write(a_path, "index.html", "<h1>", T12);
    write(a_path, "img/logo.png", "png", T12);
    // Machine A sends, machine B (its own base) receives; both then sync both ways.
    let (code, err) = run(&["sync", a_arg, "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(&["sync", b_arg, "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let contents = |root: &Path| -> BTreeMap<String, String> {
        tree(root).into_iter().map(|(k, (c, _))| (k, c)).collect()
    };
    assert_eq!(contents(b_path), contents(a_path));
    // An object store keeps its own times: the base maps them, so a re-run does nothing.
    let (code, err) = run(&["sync", a_arg, "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 up") && err.contains("0 down"), "{err}");
    // B edits and deletes; A gets both.
    write(b_path, "index.html", "<h1>edited", T13);
    fs::remove_file(b_path.join("img/logo.png")).unwrap();
    let (code, err) = run(&["sync", b_arg, "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(&["sync", a_arg, "s3://site/www"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&a_path.join("index.html")), "<h1>edited");
    assert!(!a_path.join("img").exists(), "the emptied folder stays");
}

#[test]
fn download_from_a_read_only_remote_works_without_a_lock() {
    let server = Sshd::start();
    let known_hosts = server.known_hosts();
    let known = ["--known-hosts", known_hosts.to_str().unwrap()];
    // The folder belongs to root: the SFTP user can read it but not write a lock into it.
    let remote = server.root().join("pub");
    write(&remote, "readme.txt", "read me", T12);
    let local = tempfile::tempdir().unwrap();
    let ls = local.path().to_str().unwrap();
    let url = server.url("pub");
    let (code, _, err) = snapsync(&["download", ls, &url, known[0], known[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("without a lock"), "{err}");
    assert_eq!(read(&local.path().join("readme.txt")), "read me");
    // Sending needs the lock (and write access): refused with the reason.
    write(local.path(), "new.txt", "new", T13);
    let (code, _, err) = snapsync(&["upload", ls, &url, known[0], known[1]]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("access denied"), "{err}");
}
