//! Folder sync never deletes or overwrites what it could not see: the everyday accidents of issue 11
//! (a remote folder moved away or emptied, a folder that cannot be read, a file edited while it
//! uploads, a run with --exclude, a first upload over older copies, two runs at once), each through
//! the binary against a local folder and pyftpdlib over FTP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use snapsync_testkit::{FtpServer, Sshd};

use crate::sync::{T12, T13, has_temp, on_a_terminal, read, snapsync, tree, write};

/// A remote: its URL and the same folder on this machine.
struct Remote {
    url: String,
    root: PathBuf,
    _server: Option<FtpServer>,
    _dir: Option<tempfile::TempDir>,
    /// For SFTP: the server, and the extra arguments it needs (`--known-hosts`).
    sftp: Option<(Sshd, Vec<String>)>,
}

impl Remote {
    /// Makes what the test wrote in the remote folder the server user's, as the server's own would be.
    fn settle(&self) {
        if self.sftp.is_some() {
            let status = Command::new("chown")
                .args(["-R", snapsync_testkit::SSH_USER])
                .arg(&self.root)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

fn sftp_remote() -> Remote {
    let server = Sshd::start();
    let known_hosts = server.known_hosts().display().to_string();
    Remote {
        url: server.url("site"),
        root: server.root().join("site"),
        _server: None,
        _dir: None,
        sftp: Some((server, vec!["--known-hosts".into(), known_hosts])),
    }
}

fn local_remote() -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    Remote {
        url: root.to_str().unwrap().to_owned(),
        root,
        _server: None,
        _dir: Some(dir),
        sftp: None,
    }
}

fn ftp_remote() -> Remote {
    let server = FtpServer::pyftpdlib();
    Remote {
        url: server.url("site"),
        root: server.root().join("site"),
        _server: Some(server),
        _dir: None,
        sftp: None,
    }
}

fn both(test: impl Fn(&Remote)) {
    test(&local_remote());
    test(&ftp_remote());
}

/// Where the backends differ in how a root or a listing is checked: SFTP too.
fn all_three(test: impl Fn(&Remote)) {
    both(&test);
    test(&sftp_remote());
}

/// `snapsync ARGS... LOCAL REMOTE`.
fn run(args: &[&str], local: &Path, remote: &Remote) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend([local.to_str().unwrap(), remote.url.as_str()]);
    if let Some((_, extra)) = &remote.sftp {
        all.extend(extra.iter().map(String::as_str));
    }
    snapsync(&all)
}

/// Files a, b and sub/c, synced once to a remote folder that exists.
fn synced(remote: &Remote) -> tempfile::TempDir {
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    write(l, "a.txt", "a", T12);
    write(l, "b.txt", "b", T12);
    write(l, "sub/c.txt", "c", T12);
    fs::create_dir_all(&remote.root).unwrap();
    remote.settle();
    let (code, _, err) = run(&["sync"], l, remote);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(l), tree(&remote.root));
    local
}

#[test]
fn a_missing_remote_folder_is_an_error_never_an_empty_remote() {
    all_three(|remote| {
        let local = synced(remote);
        let l = local.path();
        let before = tree(l);
        // The remote folder is moved away (a disk not mounted, a typo): nothing may be deleted here.
        let moved = remote.root.with_file_name("moved");
        fs::rename(&remote.root, &moved).unwrap();
        for args in [&["sync"][..], &["download", "--delete"], &["upload"]] {
            let (code, _, err) = run(args, l, remote);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(
                err.contains("does not exist") && err.contains("--create-folder"),
                "{err}"
            );
            assert_eq!(tree(l), before, "{args:?} changed the local folder");
            assert!(!remote.root.exists(), "{args:?} created the remote folder");
        }
        // Asked for, the folder is created (a first upload).
        let (code, _, err) = run(&["upload", "--create-folder"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(tree(&remote.root), before);
    });
}

#[test]
fn a_remote_that_went_empty_stops_the_run_before_anything_is_deleted() {
    all_three(|remote| {
        let local = synced(remote);
        let l = local.path();
        let before = tree(l);
        // The remote folder is still there but empty (an account reset, an empty mount point).
        fs::remove_dir_all(&remote.root).unwrap();
        fs::create_dir_all(&remote.root).unwrap();
        remote.settle();
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("stopped before changing anything") && err.contains("--allow-mass-delete"),
            "{err}"
        );
        assert_eq!(tree(l), before);
        // A dry run shows the plan and says a real run would stop.
        let (code, out, err) = run(&["sync", "-n"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("delete local  a.txt") && err.contains("stops here"),
            "{out}{err}"
        );
        assert_eq!(tree(l), before);
        // Confirmed, the deletion goes through.
        let (code, _, err) = run(&["sync", "--allow-mass-delete"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(tree(l).is_empty());
    });
    // One way too: an empty local folder uploaded with --delete would wipe the remote.
    let remote = local_remote();
    let local = synced(&remote);
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["upload", "--delete"], empty.path(), &remote);
    assert_eq!(code, 1, "{err}");
    assert_eq!(tree(&remote.root), tree(local.path()));
}

#[test]
fn most_of_a_side_deleted_at_once_needs_a_confirmation() {
    let remote = local_remote();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    for i in 0..30 {
        write(l, &format!("f{i:02}.txt"), "x", T12);
    }
    fs::create_dir_all(&remote.root).unwrap();
    let (code, _, err) = run(&["sync"], l, &remote);
    assert_eq!(code, 0, "{err}");
    // 20 of 30 deleted here: more than half, and at least 10.
    for i in 0..20 {
        fs::remove_file(l.join(format!("f{i:02}.txt"))).unwrap();
    }
    let (code, _, err) = run(&["sync"], l, &remote);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("20 of the 30 remote files"), "{err}");
    assert_eq!(tree(&remote.root).len(), 30);
    // A few at a time is an ordinary sync.
    write(l, "f00.txt", "x", T12);
    let (code, _, err) = run(&["sync", "--allow-mass-delete"], l, &remote);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(&remote.root), tree(l));
}

/// Runs snapsync without the capabilities that let root read any folder (so `chmod 000` works on
/// root's own folders, as it does for a user).
fn run_without_override(args: &[&str], local: &Path, remote: &Remote) -> (i32, String, String) {
    let mut command = snapsync_testkit::without_permission_override(env!("CARGO_BIN_EXE_snapsync"));
    command
        .args(args)
        .args([local.to_str().unwrap(), remote.url.as_str()]);
    let out = command.output().expect("setpriv runs (util-linux)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_local_folder_that_cannot_be_read_is_left_alone_not_deleted() {
    both(|remote| {
        let local = synced(remote);
        let l = local.path();
        write(l, "new.txt", "new", T13);
        fs::set_permissions(l.join("sub"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let (code, _, err) = run_without_override(&["sync"], l, remote);
        fs::set_permissions(l.join("sub"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("unknown: sub") && err.contains("left alone"),
            "{err}"
        );
        // The remote copies under it are still there; the rest of the run went ahead.
        assert_eq!(read(&remote.root.join("sub/c.txt")), "c");
        assert_eq!(read(&remote.root.join("new.txt")), "new");
        // Readable again, the next run changes nothing under it.
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("0 deleted there"), "{err}");
        assert_eq!(tree(l), tree(&remote.root));
    });
}

#[test]
fn an_unreadable_file_under_checksum_is_unknown_not_deleted() {
    let remote = local_remote();
    let local = synced(&remote);
    let l = local.path();
    fs::set_permissions(
        l.join("a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let (code, _, err) = run_without_override(&["sync", "--checksum"], l, &remote);
    fs::set_permissions(
        l.join("a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown: a.txt"), "{err}");
    assert_eq!(read(&remote.root.join("a.txt")), "a");
}

/// Over FTP, where a 64 MiB upload takes long enough to edit the file under it every time (the store's
/// own tests cover every backend, the local one included, byte for byte).
#[test]
fn a_file_edited_while_it_uploads_is_never_published_and_the_next_run_converges() {
    {
        let remote = &ftp_remote();
        let local = synced(remote);
        let l = local.path();
        let big: Vec<u8> = (0..(64u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(l.join("big.bin"), &big).unwrap();
        // Edit the file as soon as its upload is under way.
        let root = remote.root.clone();
        let file = l.join("big.bin");
        let editor = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !has_temp(&root, "big.bin") {
                assert!(started.elapsed().as_secs() < 60, "the upload never started");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::io::Write::write_all(&mut f, b"EDITED").unwrap();
        });
        let (code, _, err) = run(&["sync"], l, remote);
        editor.join().unwrap();
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("big.bin") && err.contains("changed on the local side"),
            "{err}"
        );
        assert!(!remote.root.join("big.bin").exists(), "a torn copy was published");
        // The next run uploads the edited file, with no conflict.
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            fs::read(remote.root.join("big.bin")).unwrap(),
            fs::read(l.join("big.bin")).unwrap()
        );
        assert!(!has_temp(&remote.root, "big.bin"));
    }
}

#[test]
fn files_a_run_excluded_keep_their_base() {
    both(|remote| {
        let local = synced(remote);
        let l = local.path();
        fs::remove_file(l.join("a.txt")).unwrap();
        write(&remote.root, "b.txt", "edited there", T13);
        let (code, _, err) = run(&["sync", "-x", "*.txt"], l, remote);
        assert_eq!(code, 0, "{err}");
        // A full run afterwards: the local delete goes out, the remote edit comes in.
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(
            !remote.root.join("a.txt").exists(),
            "the deleted file was resurrected"
        );
        assert_eq!(read(&l.join("b.txt")), "edited there");
        assert_eq!(tree(l), tree(&remote.root));
    });
}

#[test]
fn a_first_upload_replaces_older_remote_copies_and_keeps_newer_ones() {
    both(|remote| {
        let local = tempfile::tempdir().unwrap();
        let l = local.path();
        write(l, "a.txt", "new a", T13);
        write(l, "b.txt", "old b", T12);
        write(&remote.root, "a.txt", "old a", T12);
        write(&remote.root, "b.txt", "new b", T13);
        let (code, _, err) = run(&["upload"], l, remote);
        assert_eq!(code, 4, "{err}");
        assert_eq!(read(&remote.root.join("a.txt")), "new a", "{err}");
        assert_eq!(read(&remote.root.join("b.txt")), "new b");
        assert!(err.contains("conflict: b.txt"), "{err}");
        // And symmetrically for download.
        let target = tempfile::tempdir().unwrap();
        let t = target.path();
        write(t, "a.txt", "older here", T12);
        let (code, _, err) = run(&["download"], t, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(read(&t.join("a.txt")), "new a");
    });
}

/// `--resolve ask` on a terminal asks before a mass deletion: no keeps everything, yes goes ahead.
#[test]
fn on_a_terminal_resolve_ask_asks_before_a_mass_deletion() {
    let remote = local_remote();
    let local = synced(&remote);
    let l = local.path();
    fs::remove_dir_all(&remote.root).unwrap();
    fs::create_dir_all(&remote.root).unwrap();
    let args = format!("sync --resolve ask {} {}", l.display(), remote.url);
    let answer = |text: &[u8]| on_a_terminal(&args, text);
    let (ok, text) = answer(b"n\n");
    assert!(
        !ok && text.contains("Go ahead? [y/N]") && text.contains("stopped"),
        "{text}"
    );
    assert_eq!(tree(l).len(), 3);
    let (ok, text) = answer(b"y\n");
    assert!(ok, "{text}");
    assert!(tree(l).is_empty());
}

/// A remote folder the FTP server refuses to list (permissions changed) is not an empty folder: the
/// run stops before changing anything, naming it. pyftpdlib runs without root's permission override,
/// vsftpd's sessions run as the test user.
#[test]
fn an_ftp_folder_the_server_will_not_list_deletes_nothing() {
    use snapsync_testkit::{FtpFlavor, FtpOptions};
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start_with(
            flavor,
            FtpOptions {
                obey_permissions: true,
                ..FtpOptions::default()
            },
        );
        let remote = Remote {
            url: server.url("site"),
            root: server.root().join("site"),
            _server: None,
            _dir: None,
            sftp: None,
        };
        fs::create_dir_all(&remote.root).unwrap();
        server.give(&remote.root);
        let local = synced(&remote);
        let l = local.path();
        let before = tree(l);
        let locked = remote.root.join("sub");
        fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let (code, _, err) = run(&["sync"], l, &remote);
        fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(code, 1, "{flavor:?}: {err}");
        assert!(
            err.contains("sub") && err.contains("access denied"),
            "{flavor:?}: {err}"
        );
        assert_eq!(tree(l), before, "{flavor:?}: local files were deleted");
        drop(server);
    }
}

/// A read-only FTP account (an anonymous mirror, say) can be downloaded from: the lock cannot be
/// taken, which a download goes on without, with a warning.
#[test]
fn a_download_from_a_read_only_ftp_account_works_without_a_lock() {
    use snapsync_testkit::{FtpFlavor, FtpOptions};
    let server = FtpServer::start_with(
        FtpFlavor::Pyftpdlib,
        FtpOptions {
            read_only: true,
            ..FtpOptions::default()
        },
    );
    write(&server.root().join("site"), "a.txt", "a", T12);
    let local = tempfile::tempdir().unwrap();
    let (code, _, err) = snapsync(&["download", local.path().to_str().unwrap(), &server.url("site")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("downloading without a lock"), "{err}");
    assert_eq!(read(&local.path().join("a.txt")), "a");
    // An upload to it fails clearly, in the server's words.
    let (code, _, err) = snapsync(&["upload", local.path().to_str().unwrap(), &server.url("site")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("access denied") || err.contains("refused"), "{err}");
}

/// A file replaced by a folder of the same name (and back) settles in one run each, with no error.
#[test]
fn a_file_replaced_by_a_folder_settles_in_one_run() {
    both(|remote| {
        let local = synced(remote);
        let l = local.path();
        fs::remove_file(l.join("a.txt")).unwrap();
        write(l, "a.txt/inside.txt", "now a folder", T13);
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(read(&remote.root.join("a.txt/inside.txt")), "now a folder");
        // And back: the folder becomes a file again.
        fs::remove_dir_all(l.join("a.txt")).unwrap();
        write(l, "a.txt", "a file again", T13);
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(read(&remote.root.join("a.txt")), "a file again");
        assert_eq!(tree(l), tree(&remote.root));
        // The remote edits the file while the local side makes it a folder: a conflict, both kept.
        write(&remote.root, "b.txt", "edited there", T13 + 60);
        fs::remove_file(l.join("b.txt")).unwrap();
        write(l, "b.txt/x.txt", "x", T13);
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 4, "{err}");
        assert!(err.contains("a file on one side, a folder on the other"), "{err}");
        assert_eq!(read(&remote.root.join("b.txt")), "edited there");
        assert_eq!(read(&l.join("b.txt/x.txt")), "x");
    });
}

/// Syncing a folder does not change it: the state lives elsewhere, so its snapshot id stays.
#[test]
fn syncing_a_folder_leaves_its_snapshot_id_as_it_was() {
    let remote = local_remote();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    write(l, "a.txt", "a", T12);
    let (_, id_before, _) = snapsync(&["id", l.to_str().unwrap()]);
    fs::create_dir_all(&remote.root).unwrap();
    let (code, _, err) = run(&["sync"], l, &remote);
    assert_eq!(code, 0, "{err}");
    let (_, id_after, _) = snapsync(&["id", l.to_str().unwrap()]);
    assert_eq!(id_before, id_after);
    assert!(!l.join(".snapsync").exists());
}

/// A file dated before 1970 has a time in the base like any other: a remote-only edit is a download.
#[test]
fn files_dated_before_1970_are_synced_like_any_other() {
    let remote = local_remote();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    let before_1970 = |path: &Path, secs: u64| {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs))
            .unwrap();
    };
    fs::write(l.join("old.txt"), "old").unwrap();
    before_1970(&l.join("old.txt"), 300_000_000);
    fs::create_dir_all(&remote.root).unwrap();
    let (code, _, err) = run(&["sync"], l, &remote);
    assert_eq!(code, 0, "{err}");
    fs::write(remote.root.join("old.txt"), "edited there").unwrap();
    before_1970(&remote.root.join("old.txt"), 200_000_000);
    let (code, _, err) = run(&["sync"], l, &remote);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&l.join("old.txt")), "edited there");
}

/// Empty folders are synced like files where the remote has folders: made on the other side, and
/// removed there when removed here (and only if still empty); folders that hold files follow them.
#[test]
fn empty_folders_are_made_and_removed_on_the_other_side() {
    all_three(|remote| {
        let local = synced(remote);
        let l = local.path();
        let dirs = walkdir;
        fs::create_dir_all(l.join("empty/deeper")).unwrap();
        fs::create_dir_all(remote.root.join("there")).unwrap();
        remote.settle();
        let (code, out, err) = run(&["sync", "-n"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("mkdir remote  empty/deeper/") && out.contains("mkdir local   there/"),
            "{out}"
        );
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert_eq!(dirs(l), dirs(&remote.root), "{err}");
        assert!(remote.root.join("empty/deeper").is_dir() && l.join("there").is_dir());
        // Nothing left to do.
        let (code, out, err) = run(&["sync", "-n"], l, remote);
        assert_eq!((code, out.trim()), (0, ""), "{err}");
        // Removed on one side, removed on the other; a folder that got a file meanwhile stays.
        fs::remove_dir(l.join("empty/deeper")).unwrap();
        fs::remove_dir(remote.root.join("there")).unwrap();
        let (code, _, err) = run(&["sync"], l, remote);
        assert_eq!(code, 0, "{err}");
        assert!(!remote.root.join("empty/deeper").exists() && remote.root.join("empty").is_dir());
        assert!(!l.join("there").exists());
        assert_eq!(dirs(l), dirs(&remote.root));
    });
}

/// Every folder below `root`, as `/`-separated paths (the state and the lock left out).
fn walkdir(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            if path.is_dir() && !rel.starts_with(".snapsync") {
                out.push(rel);
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
