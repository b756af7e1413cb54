//! Hostile inputs and servers, one suite (issue 16, item 4), each case through the real binary: a
//! clear error (exit status, a message naming the path or host) or a correct result, never a panic,
//! never a file written outside the destination, never a torn file.
//!
//! - Manifests naming `..`, absolute paths, a NUL, a 5,000-byte name, names differing only by case
//!   or by Unicode normalisation: `pull`, `checkout` and `verify` of a store built by hand.
//! - Symbolic links that lead out of a folder: never followed by a sync
//!   (`links_never_lead_out_of_a_synced_folder`), an upload or a snapshot, never written through by a
//!   download or a pull.
//! - Servers: the testkit's scripted FTP server (`ScriptedFtp`), first behaving, then sending an
//!   endless listing (cut at the listing cap), an endless file (cut at the size it listed), a file
//!   shorter than it listed, absurd times, names no folder can hold (`..`, a name through `..`, an
//!   absolute one, a 5,000-byte one) and an unsolicited reply; FTPS on vsftpd with its
//!   certificate not trusted, then trusted with `--ca-file`; sshd whose host key changed.
//! - SFTP servers: the testkit's scripted SFTP server (`ScriptedSftp`, a real SSH server trusted through
//!   `--known-hosts`), first behaving, then sending an endless listing (cut at the listing cap), an
//!   endless file, sizes one byte too big or too small, absurd times, and names no folder can hold
//!   (`.` and `..` as files, names through `..`, an absolute one, a NUL, a 5,000-byte one), replies
//!   under the id of no request, a disk slower than the timeout to `fsync` an upload, and an `fsync`
//!   never answered.
//! - A full disk (a small tmpfs) under `pull`, `download`, `patch`, `checkout` and both sides of `sync`.
//!
//! Cases tested elsewhere, and not repeated here: the library's own hostile-manifest test
//! (`snapsync-snapshot/tests/snapshot.rs`), the cache's hostile paths (`snapsync-cache/tests/cache.rs`,
//! `tests/cli/cache.rs`), hostile deltas (`tests/cli/delta.rs`), read-only destinations
//! (`snapshot_failures.rs`), pyftpdlib over TLS with its certificate not trusted, then trusted
//! (`remote_stores.rs`), an unknown SSH host key refused until `--accept-new-host-key` (also there), unknown and changed host keys through the store (`snapsync-store`'s
//! `tests/store/sftp.rs`), and full FTP servers (`tests/store/ftp.rs`).

use std::fs;
use std::path::Path;

use crate::util::{Tree, run, stderr};

/// BLAKE3 of `bytes` as 64 lowercase hex digits.
fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// `PREFIX/abc/def/ghi/rest`, snapdir's sharded key of a checksum.
fn sharded(prefix: &str, hex: &str) -> String {
    format!(
        "{prefix}/{}/{}/{}/{}",
        &hex[..3],
        &hex[3..6],
        &hex[6..9],
        &hex[9..]
    )
}

/// A store folder in snapdir's layout written by hand, so its manifests can say what no walk would.
struct HandStore {
    dir: tempfile::TempDir,
}

impl HandStore {
    fn new() -> HandStore {
        HandStore {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn arg(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.path().join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Stores `files` (full manifest paths, `./…` or `/…`, and contents) as objects and a manifest
    /// that is consistent (directory checksums and sizes as snapdir computes them), so that only the
    /// paths themselves are hostile. Returns the snapshot id.
    fn snapshot(&self, files: &[(&[u8], &[u8])]) -> String {
        use std::collections::BTreeMap;
        // Each directory's children: (checksum, size).
        let mut dirs: BTreeMap<Vec<u8>, Vec<(String, u64)>> = BTreeMap::new();
        let mut lines: Vec<(Vec<u8>, String)> = Vec::new();
        for (path, content) in files {
            let sum = b3(content);
            self.put(&sharded(".objects", &sum), content);
            lines.push((path.to_vec(), format!("F 644 {sum} {} ", content.len())));
            let cut = path.iter().rposition(|&b| b == b'/').unwrap();
            dirs.entry(path[..=cut].to_vec())
                .or_default()
                .push((sum, content.len() as u64));
        }
        // Directories from the deepest up, each added to its parent once complete.
        let mut pending: Vec<Vec<u8>> = dirs.keys().cloned().collect();
        let mut all_dirs = Vec::new();
        while let Some(dir) = pending.pop() {
            if all_dirs.contains(&dir) {
                continue;
            }
            for parent in ancestors(&dir) {
                dirs.entry(parent.clone()).or_default();
                if !pending.contains(&parent) && !all_dirs.contains(&parent) {
                    pending.push(parent);
                }
            }
            all_dirs.push(dir);
        }
        all_dirs.sort_by_key(|d| std::cmp::Reverse(d.split(|&b| b == b'/').count()));
        for dir in &all_dirs {
            let children = dirs[dir].clone();
            let mut sums: Vec<&str> = children.iter().map(|(s, _)| s.as_str()).collect();
            sums.sort_unstable();
            sums.dedup();
            let sum = b3(sums.concat().as_bytes());
            let size: u64 = children.iter().map(|(_, s)| s).sum();
            lines.push((dir.clone(), format!("D 755 {sum} {size} ")));
            if let Some(parent) = ancestors(dir).into_iter().next() {
                dirs.get_mut(&parent).unwrap().push((sum, size));
            }
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = Vec::new();
        for (i, (path, head)) in lines.iter().enumerate() {
            if i > 0 {
                text.push(b'\n');
            }
            text.extend_from_slice(head.as_bytes());
            text.extend_from_slice(path);
        }
        text.push(b'\n');
        let id = b3(&text);
        self.put(&sharded(".manifests", &id), &text);
        id
    }
}

/// The directories above `dir` (which ends in `/`), nearest first, up to the root (`./` or `/`).
fn ancestors(dir: &[u8]) -> Vec<Vec<u8>> {
    let root: &[u8] = if dir.starts_with(b"./") { b"./" } else { b"/" };
    let mut out = Vec::new();
    let mut end = dir.len() - 1;
    while end > root.len() - 1 {
        let Some(cut) = dir[..end].iter().rposition(|&b| b == b'/') else {
            break;
        };
        out.push(dir[..=cut].to_vec());
        end = cut;
    }
    out
}

/// Everything below `dir`, as sorted relative paths (folders end in `/`).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &entry.path(), out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `pull` from the store and `checkout` from it used as a cache into `dest`: (exit status, stderr)
/// of each.
fn pull_and_checkout(store: &HandStore, id: &str, dest: &Path) -> [(i32, String); 2] {
    let pulled = run(&[
        "pull",
        "--store",
        store.arg(),
        "--id",
        id,
        dest.join("pulled").to_str().unwrap(),
    ]);
    let checked_out = run(&[
        "checkout",
        "--cache-dir",
        store.arg(),
        "--id",
        id,
        dest.join("checked-out").to_str().unwrap(),
    ]);
    [pulled, checked_out].map(|out| (out.status.code().unwrap_or(-1), stderr(&out)))
}

/// A manifest's files: paths and contents.
type Files = Vec<(Vec<u8>, &'static [u8])>;

#[test]
fn manifests_that_lead_out_of_the_destination_are_refused_before_anything_is_written() {
    let outside = tempfile::tempdir().unwrap();
    let absolute = format!("{}/x", outside.path().display());
    // An absolute manifest (snapdir's `--absolute`) holds absolute paths only: relative and absolute
    // ones mixed are refused as corrupt before any path is looked at.
    let cases: [(&str, Files, &str); 4] = [
        (
            "parent",
            vec![(b"./../x".to_vec(), b"evil"), (b"./fine.txt".to_vec(), b"fine")],
            "has a .. component",
        ),
        (
            "deeper parent",
            vec![
                (b"./a/../../x".to_vec(), b"evil"),
                (b"./fine.txt".to_vec(), b"fine"),
            ],
            "has a .. component",
        ),
        (
            "absolute",
            vec![(absolute.clone().into_bytes(), b"evil")],
            "absolute",
        ),
        (
            "mixed",
            vec![
                (absolute.clone().into_bytes(), b"evil"),
                (b"./fine.txt".to_vec(), b"fine"),
            ],
            "relative and absolute paths are mixed",
        ),
    ];
    for (what, files, why) in cases {
        let store = HandStore::new();
        let files: Vec<(&[u8], &[u8])> = files.iter().map(|(p, c)| (p.as_slice(), *c)).collect();
        let id = store.snapshot(&files);
        let parent = tempfile::tempdir().unwrap();
        for (code, err) in pull_and_checkout(&store, &id, parent.path()) {
            assert_eq!(code, 1, "{what}: {err}");
            assert!(err.contains(why), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
        }
        assert_eq!(
            listing(parent.path()),
            Vec::<String>::new(),
            "{what}: nothing was written"
        );
        assert_eq!(listing(outside.path()), Vec::<String>::new(), "{what}");
        assert!(!parent.path().join("x").exists(), "{what}");
        // verify checks the store: the manifest hashes to its id, is consistent and every object is
        // there, so it passes (a mixed manifest is not consistent); it never writes a path.
        let out = run(&["verify", "--store", store.arg(), "--id", &id]);
        let expected = i32::from(what == "mixed");
        assert_eq!(out.status.code(), Some(expected), "{what}: {}", stderr(&out));
    }
}

#[test]
fn a_nul_in_a_manifest_path_is_a_clear_error() {
    let store = HandStore::new();
    let id = store.snapshot(&[(b"./a\0b", b"x")]);
    let parent = tempfile::tempdir().unwrap();
    let verified = run(&["verify", "--store", store.arg(), "--id", &id]);
    for (code, err) in pull_and_checkout(&store, &id, parent.path())
        .into_iter()
        .chain([(verified.status.code().unwrap_or(-1), stderr(&verified))])
    {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("NUL byte") && err.contains(&id[..12]), "{err}");
    }
    assert_eq!(listing(parent.path()), Vec::<String>::new());
}

#[test]
fn a_name_longer_than_the_filesystem_allows_is_a_clear_error_and_leaves_nothing_half_written() {
    let long = format!("./{}", "n".repeat(5000));
    let store = HandStore::new();
    let id = store.snapshot(&[(long.as_bytes(), b"long"), (b"./fine.txt", b"fine")]);
    let parent = tempfile::tempdir().unwrap();
    for (code, err) in pull_and_checkout(&store, &id, parent.path()) {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("nnnnnnnn") && err.to_lowercase().contains("name too long"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // No temporary file is left behind; what was written is whole.
    for rel in listing(parent.path()) {
        assert!(!rel.contains(".tmp"), "{rel} was left behind");
        if rel.ends_with("fine.txt") {
            assert_eq!(fs::read(parent.path().join(&rel)).unwrap(), b"fine");
        }
    }
    let out = run(&["verify", "--store", store.arg(), "--id", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn names_that_differ_only_by_case_or_normalisation_are_distinct_files() {
    let nfc = "./caf\u{e9}.txt";
    let nfd = "./cafe\u{301}.txt";
    let store = HandStore::new();
    let id = store.snapshot(&[
        (b"./a", b"lower"),
        (b"./A", b"upper"),
        (nfc.as_bytes(), b"composed"),
        (nfd.as_bytes(), b"decomposed"),
    ]);
    let parent = tempfile::tempdir().unwrap();
    for (code, err) in pull_and_checkout(&store, &id, parent.path()) {
        assert_eq!(code, 0, "{err}");
    }
    for dest in ["pulled", "checked-out"] {
        let d = parent.path().join(dest);
        assert_eq!(fs::read(d.join("a")).unwrap(), b"lower");
        assert_eq!(fs::read(d.join("A")).unwrap(), b"upper");
        assert_eq!(fs::read(d.join(&nfc[2..])).unwrap(), b"composed");
        assert_eq!(fs::read(d.join(&nfd[2..])).unwrap(), b"decomposed");
        assert_eq!(listing(&d).len(), 4, "{:?}", listing(&d));
    }
    let out = run(&["verify", "--store", store.arg(), "--id", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The same names in a folder: download and upload keep them apart too.
    let remote = Tree::new();
    remote
        .file("a", b"lower", 0o644)
        .file("A", b"upper", 0o644)
        .file(&nfc[2..], b"composed", 0o644)
        .file(&nfd[2..], b"decomposed", 0o644);
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("copy");
    let out = run(&["download", copy.to_str().unwrap(), remote.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (name, content) in [
        ("a", "lower"),
        ("A", "upper"),
        (&nfc[2..], "composed"),
        (&nfd[2..], "decomposed"),
    ] {
        assert_eq!(fs::read_to_string(copy.join(name)).unwrap(), content, "{name}");
    }
}

/// Moved here from `sync.rs`: a two-way sync neither follows a link out of the folder nor writes
/// through one, and leaves alone a file named like a temporary one that no run of its own left.
#[test]
fn links_never_lead_out_of_a_synced_folder() {
    use crate::sync::{T12, T13, read, snapsync, tree, write};
    let (local, remote, outside) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (l, r) = (local.path(), remote.path());
    let (ls, rs) = (l.to_str().unwrap(), r.to_str().unwrap());
    write(l, "a.txt", "a", T12);
    // A file named like a temporary one, but of no run of this pair that was interrupted (a user's,
    // say): never synced, never deleted. (Leftovers of a killed run are removed: see the kill test.)
    write(l, ".a.txt.snapsync-1-1.tmp", "mine", T12);
    write(outside.path(), "secret.txt", "secret", T12);
    std::os::unix::fs::symlink(outside.path(), l.join("linked")).unwrap();
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("linked") && err.contains("symbolic link"), "{err}");
    assert_eq!(read(&l.join(".a.txt.snapsync-1-1.tmp")), "mine");
    let names: Vec<String> = tree(r).into_keys().collect();
    assert_eq!(names, ["a.txt"]);
    // A remote file under the link's name would be written through it: the link's path is left
    // alone on both sides, so nothing goes through it and nothing there is deleted.
    write(r, "linked/planted.txt", "planted", T13);
    let (code, _, err) = snapsync(&["sync", ls, rs]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("linked") && err.contains("left alone"), "{err}");
    assert!(!outside.path().join("planted.txt").exists());
    assert_eq!(read(&r.join("linked/planted.txt")), "planted");
    assert_eq!(read(&outside.path().join("secret.txt")), "secret");
}

/// An upload does not send what a link leads to; a snapshot with `--no-follow` leaves links out
/// (without it, a snapshot follows links as snapdir does, by design: see `snapsync manifest --help`).
#[test]
fn uploads_and_snapshots_do_not_follow_links_out_of_the_folder() {
    let outside = Tree::new();
    outside.file("secret.txt", b"secret outside", 0o644);
    let local = Tree::new();
    local
        .file("a.txt", b"a", 0o644)
        .symlink("dir-link", outside.arg())
        .symlink("file-link", &format!("{}/secret.txt", outside.arg()));
    let remote = tempfile::tempdir().unwrap();
    let out = run(&["upload", local.arg(), remote.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dir-link") && stderr(&out).contains("file-link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(remote.path()), ["a.txt"]);
    let store = tempfile::tempdir().unwrap();
    let out = run(&[
        "push",
        "--no-follow",
        "--store",
        store.path().to_str().unwrap(),
        local.arg(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let secret = sharded(".objects", &b3(b"secret outside"));
    assert!(
        !store.path().join(secret).exists(),
        "the link's target went into the store"
    );
    assert_eq!(
        listing(&store.path().join(".objects"))
            .iter()
            .filter(|p| !p.ends_with('/'))
            .count(),
        1,
        "only a.txt"
    );
}

/// A link planted in the destination is never written through: a download leaves it (and what it
/// leads to) alone, a pull replaces the link itself.
#[test]
fn downloads_and_pulls_never_write_through_a_link_in_the_destination() {
    let outside = Tree::new();
    outside.file("target.txt", b"keep me", 0o644);
    let remote = Tree::new();
    remote
        .file("sub/new.txt", b"from the remote", 0o644)
        .file("f.txt", b"from the remote", 0o644);
    let local = Tree::new();
    local
        .symlink("sub", outside.arg())
        .symlink("f.txt", &format!("{}/target.txt", outside.arg()));
    let out = run(&["download", local.arg(), remote.arg()]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(listing(outside.path()), ["target.txt"], "{}", stderr(&out));
    assert_eq!(fs::read(outside.path().join("target.txt")).unwrap(), b"keep me");
    // A pull writes the snapshot's files in place of the links.
    let store = tempfile::tempdir().unwrap();
    let out = run(&["push", "--store", store.path().to_str().unwrap(), remote.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = run(&[
        "pull",
        "--store",
        store.path().to_str().unwrap(),
        "--id",
        &id,
        local.arg(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(listing(outside.path()), ["target.txt"]);
    assert_eq!(fs::read(outside.path().join("target.txt")).unwrap(), b"keep me");
    assert_eq!(fs::read(local.path().join("f.txt")).unwrap(), b"from the remote");
    assert_eq!(
        fs::read(local.path().join("sub/new.txt")).unwrap(),
        b"from the remote"
    );
    assert!(
        !fs::symlink_metadata(local.path().join("sub"))
            .unwrap()
            .is_symlink()
    );
}

#[test]
fn ftps_is_refused_unless_its_certificate_is_trusted_explicitly() {
    let server = snapsync_testkit::FtpServer::start(snapsync_testkit::FtpFlavor::Vsftpd, true);
    let ca = server.ca_file().unwrap();
    let local = Tree::new();
    local.file("a.txt", b"over tls", 0o644);
    let url = server.url("site");
    let out = run(&["upload", "--create-folder", local.arg(), &url]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains(snapsync_testkit::FTP_PASSWORD.as_str()), "{err}");
    assert!(!server.root().join("site/a.txt").exists());
    let out = run(&[
        "upload",
        "--create-folder",
        "--ca-file",
        ca.to_str().unwrap(),
        local.arg(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(server.root().join("site/a.txt")).unwrap(), b"over tls");
}

#[test]
fn a_changed_ssh_host_key_is_always_refused() {
    let server = snapsync_testkit::Sshd::start();
    let other = snapsync_testkit::Sshd::start();
    // Another server's key recorded for this one's address: the host key "changed".
    let recorded = fs::read_to_string(other.known_hosts())
        .unwrap()
        .replace(&format!("]:{} ", other.port()), &format!("]:{} ", server.port()));
    assert!(recorded.contains(&format!("]:{} ", server.port())), "{recorded}");
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    fs::write(&known_hosts, &recorded).unwrap();
    let local = Tree::new();
    local.file("a.txt", b"a", 0o644);
    let url = server.url("site");
    let kh = known_hosts.to_str().unwrap();
    for extra in [&[][..], &["--accept-new-host-key"][..]] {
        let mut args = vec!["upload", "--create-folder", "--known-hosts", kh];
        args.extend_from_slice(extra);
        args.extend([local.arg(), url.as_str()]);
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains("CHANGED") && err.contains("127.0.0.1"),
            "{extra:?}: {err}"
        );
        assert!(!err.contains(snapsync_testkit::SSH_PASSWORD.as_str()), "{err}");
        assert!(!server.root().join("site").exists(), "{extra:?}");
        // known_hosts is left as it was: the changed key is not recorded.
        assert_eq!(fs::read_to_string(&known_hosts).unwrap(), recorded);
    }
}

/// Whether a name is one of snapsync's temporary names (`.NAME.snapsync-PID-N.tmp`).
fn is_temp(rel: &str) -> bool {
    rel.contains(".snapsync-") && Path::new(rel).extension().is_some_and(|e| e == "tmp")
}

/// Every file below `dest` is absent or whole (the bytes `source` holds at that path), and no
/// temporary file is left.
fn whole_or_absent(dest: &Path, source: &Path) {
    for rel in listing(dest) {
        assert!(!is_temp(&rel), "{rel} was left behind");
        if !rel.ends_with('/') && !rel.starts_with(".snapsync") {
            assert_eq!(
                fs::read(dest.join(&rel)).unwrap(),
                fs::read(source.join(&rel)).unwrap(),
                "{rel} is torn"
            );
        }
    }
}

/// A full disk (a small tmpfs) under a pull, a download and a patch: exit 1 with "no space" and the
/// path, every file whole or absent, no temporary file; once space is freed the next run completes.
#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_half_written() {
    use crate::snapshots::pattern;
    let parent = tempfile::tempdir().unwrap();
    let small = snapsync_testkit::Tmpfs::mount(&parent.path().join("small"), 1 << 20);
    let ballast = small.path().join("ballast");
    let fill = || fs::write(&ballast, vec![0u8; 700 << 10]).unwrap();
    let source = Tree::new();
    for i in 0..4 {
        source.file(&format!("f{i}.bin"), &pattern(150 << 10, i), 0o644);
    }
    let no_space = |out: &std::process::Output, what: &str, path: &Path| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.to_lowercase().contains("no space"), "{what}: {err}");
        assert!(err.contains(path.to_str().unwrap()), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    };

    // pull
    let store = tempfile::tempdir().unwrap();
    let out = run(&["push", "--store", store.path().to_str().unwrap(), source.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let dest = small.path().join("pulled");
    let pull = || {
        run(&[
            "pull",
            "--store",
            store.path().to_str().unwrap(),
            "--id",
            &id,
            dest.to_str().unwrap(),
        ])
    };
    fill();
    no_space(&pull(), "pull", &dest);
    whole_or_absent(&dest, source.path());
    fs::remove_file(&ballast).unwrap();
    let out = pull();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        crate::util::manifest_of(&dest),
        crate::util::manifest_of(source.path())
    );
    fs::remove_dir_all(&dest).unwrap();

    // download
    let dest = small.path().join("downloaded");
    let download = || run(&["download", dest.to_str().unwrap(), source.arg()]);
    fill();
    no_space(&download(), "download", &dest);
    whole_or_absent(&dest, source.path());
    fs::remove_file(&ballast).unwrap();
    let out = download();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    whole_or_absent(&dest, source.path());
    assert_eq!(
        listing(&dest)
            .iter()
            .filter(|p| Path::new(p).extension().is_some_and(|e| e == "bin"))
            .count(),
        4
    );
    fs::remove_dir_all(&dest).unwrap();

    // patch
    let work = Tree::new();
    work.file("basis", &pattern(100 << 10, 7), 0o644)
        .file("new", &pattern(600 << 10, 8), 0o644);
    let w = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let out = run(&["signature", &w("basis"), &w("sig")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["delta", &w("sig"), &w("new"), &w("delta")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let patched = small.path().join("patched");
    let patch = || run(&["patch", &w("basis"), &w("delta"), patched.to_str().unwrap()]);
    fill();
    no_space(&patch(), "patch", &patched);
    assert_eq!(listing(small.path()), ["ballast"], "no output, no temporary file");
    fs::remove_file(&ballast).unwrap();
    let out = patch();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(&patched).unwrap(),
        fs::read(work.path().join("new")).unwrap()
    );
}

/// Copies the files of `from` (and their folders) into `to`.
fn copy_files(from: &Path, to: &Path) {
    for rel in listing(from) {
        if rel.ends_with('/') {
            fs::create_dir_all(to.join(&rel)).unwrap();
        } else {
            fs::create_dir_all(to.join(&rel).parent().unwrap()).unwrap();
            fs::copy(from.join(&rel), to.join(&rel)).unwrap();
        }
    }
}

/// A full disk under `checkout` and under both sides of a two-way `sync`: exit 1 naming the lack of
/// space, every file whole or absent, no temporary file; once space is freed the same command
/// completes, and the files the failed run could not write are brought over, never read as deleted
/// (the other side keeps every one of them).
#[test]
fn a_full_disk_under_checkout_and_sync_is_a_clear_error_and_the_rerun_completes() {
    use crate::snapshots::pattern;
    let parent = tempfile::tempdir().unwrap();
    let small = snapsync_testkit::Tmpfs::mount(&parent.path().join("small"), 1 << 20);
    let ballast = small.path().join("ballast");
    let fill = || fs::write(&ballast, vec![0u8; 700 << 10]).unwrap();
    let source = Tree::new();
    for i in 0..4 {
        source.file(&format!("d/f{i}.bin"), &pattern(150 << 10, 10 + i), 0o644);
    }
    let failed = |out: &std::process::Output, what: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.to_lowercase().contains("no space"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    };
    let ok = |out: &std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    };
    let files = |dir: &Path| {
        listing(dir)
            .into_iter()
            .filter(|p| Path::new(p).extension().is_some_and(|e| e == "bin"))
            .count()
    };

    // checkout from the local cache
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let out = run(&["stage", "--cache-dir", cache_arg, source.arg()]);
    ok(&out, "stage");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let dest = small.path().join("checked-out");
    let checkout = || {
        run(&[
            "checkout",
            "--cache-dir",
            cache_arg,
            "--id",
            &id,
            dest.to_str().unwrap(),
        ])
    };
    fill();
    failed(&checkout(), "checkout");
    whole_or_absent(&dest, source.path());
    fs::remove_file(&ballast).unwrap();
    ok(&checkout(), "checkout again");
    assert_eq!(
        crate::util::manifest_of(&dest),
        crate::util::manifest_of(source.path())
    );
    fs::remove_dir_all(&dest).unwrap();

    // sync, the local side full: the remote's files come down on the rerun, none is deleted there
    let remote = tempfile::tempdir().unwrap();
    copy_files(source.path(), remote.path());
    let local = small.path().join("local");
    fs::create_dir(&local).unwrap();
    let sync =
        |local: &Path, remote: &Path| run(&["sync", local.to_str().unwrap(), remote.to_str().unwrap()]);
    fill();
    failed(&sync(&local, remote.path()), "sync into a full local side");
    whole_or_absent(&local, source.path());
    assert_eq!(files(remote.path()), 4, "the remote lost files");
    fs::remove_file(&ballast).unwrap();
    ok(&sync(&local, remote.path()), "sync again");
    ok(&sync(&local, remote.path()), "sync with nothing to do");
    assert_eq!(files(&local), 4);
    assert_eq!(files(remote.path()), 4, "the remote lost files");
    whole_or_absent(&local, source.path());
    whole_or_absent(remote.path(), source.path());
    fs::remove_dir_all(&local).unwrap();

    // sync, the remote side full: the local files go up on the rerun, none is deleted locally
    let local = tempfile::tempdir().unwrap();
    copy_files(source.path(), local.path());
    let remote = small.path().join("remote");
    fs::create_dir(&remote).unwrap();
    fill();
    failed(&sync(local.path(), &remote), "sync into a full remote side");
    whole_or_absent(&remote, source.path());
    assert_eq!(files(local.path()), 4, "the local side lost files");
    fs::remove_file(&ballast).unwrap();
    ok(&sync(local.path(), &remote), "sync again");
    ok(&sync(local.path(), &remote), "sync with nothing to do");
    assert_eq!(files(&remote), 4);
    assert_eq!(files(local.path()), 4, "the local side lost files");
    whole_or_absent(&remote, source.path());
    whole_or_absent(local.path(), source.path());
}

/// Runs `snapsync ARGS`, failing the test if it has not ended within `seconds` (a client that a
/// hostile server keeps busy forever is a bug, not a slow test).
fn run_within(args: &[&str], seconds: u64) -> std::process::Output {
    run_within_env(args, &[], seconds)
}

/// [`run_within`] with `env` added to the environment.
fn run_within_env(args: &[&str], env: &[(&str, &str)], seconds: u64) -> std::process::Output {
    use std::time::{Duration, Instant};
    let mut child = crate::util::snapsync()
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("snapsync starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(seconds) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("snapsync {args:?} still ran after {seconds} s: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Downloads the scripted server's `site` folder into a fresh folder: (output, that folder).
fn download_from(server: &snapsync_testkit::ScriptedFtp) -> (std::process::Output, tempfile::TempDir) {
    download_from_env(server, &[])
}

/// [`download_from`] with `env` added to the environment.
fn download_from_env(
    server: &snapsync_testkit::ScriptedFtp,
    env: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    let local = tempfile::tempdir().unwrap();
    let out = run_within_env(
        &["download", local.path().to_str().unwrap(), &server.url("site")],
        env,
        90,
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    (out, local)
}

const SITE: [(&str, &[u8]); 2] = [("site/a.txt", b"alpha alpha alpha"), ("site/sub/b.txt", b"bravo")];

/// The download failed (exit 1) naming both of [`SITE`]'s files, and kept neither of them nor any
/// temporary file: only the folder it made is there.
fn assert_site_refused(out: &std::process::Output, local: &Path, case: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{case}: {err}");
    assert!(err.contains("a.txt") && err.contains("b.txt"), "{case}: {err}");
    assert_eq!(
        listing(local),
        ["sub/"],
        "{case}: nothing kept, no temporary file: {err}"
    );
}

/// The download failed on a listing of `/site` cut at `cap` bytes, naming the host and the variable
/// that sets the cap, and wrote nothing.
fn assert_listing_cut(out: &std::process::Output, local: &Path, cap: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("listing of /site is longer than {cap} bytes"))
            && err.contains("SNAPSYNC_MAX_LISTING_BYTES")
            && err.contains("127.0.0.1"),
        "{err}"
    );
    assert_eq!(listing(local), Vec::<String>::new(), "{err}");
}

/// The download succeeded and brought [`SITE`] whole.
fn assert_site_downloaded(out: &std::process::Output, local: &Path) {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    for (path, content) in SITE {
        let path = path.strip_prefix("site/").unwrap();
        assert_eq!(fs::read(local.join(path)).unwrap(), content, "{path}");
    }
}

/// The scripted server is a good enough FTP server when it behaves: the misbehaving cases below fail
/// because of their misbehaviour only.
#[test]
fn the_scripted_ftp_server_serves_a_download_when_it_behaves() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    let server = ScriptedFtp::start(&SITE, Misbehaviour::None);
    let (out, local) = download_from(&server);
    assert_site_downloaded(&out, local.path());
}

#[test]
fn an_endless_ftp_listing_is_cut_at_a_cap_with_a_clear_error() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    // The default cap, and one set lower through the environment. (A server per run: every listing
    // of this one is endless, the failed run's lock folder's too, so that lock stays behind.)
    let default = snapsync_store::DEFAULT_MAX_LISTING_BYTES.to_string();
    for (env, cap) in [
        (&[][..], default.as_str()),
        (&[("SNAPSYNC_MAX_LISTING_BYTES", "100000")][..], "100000"),
    ] {
        let server = ScriptedFtp::start(&SITE, Misbehaviour::EndlessListing);
        let (out, local) = download_from_env(&server, env);
        assert_listing_cut(&out, local.path(), cap);
    }
}

#[test]
fn an_endless_ftp_file_is_cut_at_the_size_the_server_listed() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    let server = ScriptedFtp::start(&SITE, Misbehaviour::EndlessFile);
    let (out, local) = download_from(&server);
    assert_site_refused(&out, local.path(), "endless file");
}

#[test]
fn an_ftp_file_shorter_than_its_listed_size_is_not_kept() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    for misbehaviour in [Misbehaviour::ShortFile, Misbehaviour::LyingSize] {
        let server = ScriptedFtp::start(&SITE, misbehaviour);
        let (out, local) = download_from(&server);
        assert_site_refused(&out, local.path(), &format!("{misbehaviour:?}"));
    }
}

#[test]
fn absurd_ftp_times_neither_crash_nor_spoil_a_download() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    let server = ScriptedFtp::start(&SITE, Misbehaviour::AbsurdTimes);
    let (out, local) = download_from(&server);
    assert_site_downloaded(&out, local.path());
    // A second run finds nothing to do: the times it recorded are the ones it reads again.
    let out = run_within(
        &["download", local.path().to_str().unwrap(), &server.url("site")],
        90,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_unsolicited_ftp_reply_is_a_clear_error() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    let server = ScriptedFtp::start(&SITE, Misbehaviour::UnsolicitedReply);
    let (out, local) = download_from(&server);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1") && err.contains("226"), "{err}");
    assert_eq!(listing(local.path()), Vec::<String>::new(), "{err}");
}

/// A listing naming `..`, absolute paths and paths through `..` writes nothing outside the folder; a
/// name longer than the local filesystem allows fails alone, clearly, and the other files arrive.
#[test]
fn hostile_names_in_an_ftp_listing_stay_inside_the_folder() {
    use snapsync_testkit::{Misbehaviour, ScriptedFtp};
    let server = ScriptedFtp::start(&SITE, Misbehaviour::HostileNames);
    let parent = tempfile::tempdir().unwrap();
    let local = parent.path().join("local");
    let out = run_within(&["download", local.to_str().unwrap(), &server.url("site")], 90);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        listing(parent.path())
            .iter()
            .filter(|p| p.contains("escape"))
            .count(),
        0,
        "{err}"
    );
    assert!(!Path::new("/etc/escape").exists());
    assert_eq!(
        fs::read(local.join("a.txt")).unwrap(),
        b"alpha alpha alpha",
        "{err}"
    );
    assert_eq!(fs::read(local.join("sub/b.txt")).unwrap(), b"bravo", "{err}");
    // A 5,000-byte name: this file fails, clearly; the others arrive.
    let long = format!("site/{}", "n".repeat(5000));
    let server = ScriptedFtp::start(&[SITE[0], (long.as_str(), b"long")], Misbehaviour::None);
    let local = tempfile::tempdir().unwrap();
    let out = run_within(
        &["download", local.path().to_str().unwrap(), &server.url("site")],
        90,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nnnnnnnn") && err.to_lowercase().contains("too long"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(listing(local.path()), ["a.txt"], "{err}");
}

/// Runs `snapsync COMMAND --known-hosts FILE FLAGS... LOCAL URL` against the scripted SFTP server's
/// `site` folder, trusting its host key, within 120 s. The run never panics and never prints the
/// password.
fn run_on_sftp(
    server: &snapsync_testkit::ScriptedSftp,
    command: &str,
    flags: &[&str],
    local: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let known_hosts = server.known_hosts();
    let url = server.url("site");
    let mut args = vec![command, "--known-hosts", known_hosts.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend([local.to_str().unwrap(), url.as_str()]);
    let out = run_within_env(&args, env, 120);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains(server.password()), "{err}");
    out
}

/// Downloads the scripted SFTP server's `site` folder into a fresh folder: (output, that folder).
fn download_from_sftp(
    server: &snapsync_testkit::ScriptedSftp,
    env: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    let local = tempfile::tempdir().unwrap();
    let out = run_on_sftp(server, "download", &[], local.path(), env);
    (out, local)
}

/// The scripted SFTP server is a good enough SFTP server when it behaves: the misbehaving cases
/// below fail because of their misbehaviour only.
#[test]
fn the_scripted_sftp_server_serves_a_download_when_it_behaves() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::None);
    let (out, local) = download_from_sftp(&server, &[]);
    assert_site_downloaded(&out, local.path());
    // Nothing left on the server by the run but what it held (its lock is gone).
    assert_eq!(
        server.paths(),
        ["site/", "site/a.txt", "site/sub/", "site/sub/b.txt"]
    );
}

#[test]
fn an_endless_sftp_listing_is_cut_at_a_cap_with_a_clear_error() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    // The default cap, and one set lower through the environment.
    let default = snapsync_store::DEFAULT_MAX_LISTING_BYTES.to_string();
    for (env, cap) in [
        (&[][..], default.as_str()),
        (&[("SNAPSYNC_MAX_LISTING_BYTES", "100000")][..], "100000"),
    ] {
        let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::EndlessListing);
        let (out, local) = download_from_sftp(&server, env);
        assert_listing_cut(&out, local.path(), cap);
    }
}

#[test]
fn an_endless_sftp_file_is_not_kept() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::EndlessFile);
    let (out, local) = download_from_sftp(&server, &[]);
    assert_site_refused(&out, local.path(), "endless file");
}

/// A server whose replies to `READ` carry the id of no request asked: the reads wait for an answer
/// that never comes, so the run ends on the timeout with a clear error, keeps nothing, and does not
/// hang or take the stray replies for data.
#[test]
fn sftp_replies_to_no_request_end_on_the_timeout_and_keep_nothing() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::WrongReplyIds);
    let local = tempfile::tempdir().unwrap();
    let flags = ["--timeout", "1s", "--retries", "1"];
    let out = run_on_sftp(&server, "download", &flags, local.path(), &[]);
    let err = stderr(&out);
    assert!(
        err.contains("download stalled: no answer within 1s") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert_site_refused(&out, local.path(), "replies to no request");
}

/// A file whose listed size is one byte more, or one byte less, than what `READ` gives.
#[test]
fn an_sftp_file_whose_size_lies_is_not_kept() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    for misbehaviour in [SftpMisbehaviour::SizeTooBig, SftpMisbehaviour::SizeTooSmall] {
        let server = ScriptedSftp::start(&SITE, misbehaviour);
        let (out, local) = download_from_sftp(&server, &[]);
        assert_site_refused(&out, local.path(), &format!("{misbehaviour:?}"));
    }
}

#[test]
fn absurd_sftp_times_neither_crash_nor_spoil_a_download() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::AbsurdTimes);
    let (out, local) = download_from_sftp(&server, &[]);
    assert_site_downloaded(&out, local.path());
    // A second run finds nothing to do: the times it recorded are the ones it reads again.
    let out = run_on_sftp(&server, "download", &[], local.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_site_downloaded(&out, local.path());
}

/// A listing naming `.` and `..` as files, names with `/` (`..` inside them, or absolute), a NUL and
/// 5,000 bytes writes nothing outside the folder and nothing under a hostile name; the real files
/// arrive whole.
#[test]
fn hostile_names_in_an_sftp_listing_stay_inside_the_folder() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&SITE, SftpMisbehaviour::HostileNames);
    let parent = tempfile::tempdir().unwrap();
    let local = parent.path().join("local");
    let out = run_on_sftp(&server, "download", &[], &local, &[]);
    let err = stderr(&out);
    assert_eq!(
        listing(parent.path())
            .iter()
            .filter(|p| p.contains("escape") || p.split('/').any(|part| part == "x"))
            .count(),
        0,
        "{err}"
    );
    assert!(!Path::new("/etc/escape").exists());
    // The real files, and nothing else: no temporary file, nothing named by the server's hostile
    // names (the 5,000-byte one cannot be made, and says so).
    assert_eq!(listing(&local), ["a.txt", "sub/", "sub/b.txt"], "{err}");
    assert_eq!(
        fs::read(local.join("a.txt")).unwrap(),
        b"alpha alpha alpha",
        "{err}"
    );
    assert_eq!(fs::read(local.join("sub/b.txt")).unwrap(), b"bravo", "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nnnnnnnn") && err.to_lowercase().contains("too long"),
        "{err}"
    );
}

/// Uploads `local` to the scripted SFTP server's `site` folder with a timeout of 1 s and one retry.
fn upload_to_sftp(server: &snapsync_testkit::ScriptedSftp, local: &Path) -> std::process::Output {
    let flags = ["--timeout", "1s", "--retries", "1"];
    run_on_sftp(server, "upload", &flags, local, &[])
}

/// A server whose disk takes longer than the timeout to make a large upload durable (its `fsync`
/// answers after 2.5 s, the timeout is 1 s) is waited for: a 10 GiB push failed this way on a busy
/// machine. A server that never answers the `fsync` still fails the upload, and the file is not
/// published.
#[test]
fn a_slow_sftp_disk_is_waited_for_and_a_silent_one_fails_the_upload_without_publishing() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let local = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::write(local.path().join("big.bin"), &big).unwrap();
    let server = ScriptedSftp::start(
        &[("site/old.txt", b"old")],
        SftpMisbehaviour::SlowDisk {
            bytes_per_second: 16 << 20,
        },
    );
    let out = upload_to_sftp(&server, local.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(server.file("site/big.bin").is_some_and(|b| b == big), "{err}");

    let local = tempfile::tempdir().unwrap();
    fs::write(local.path().join("small.txt"), b"small").unwrap();
    let server = ScriptedSftp::start(&[("site/old.txt", b"old")], SftpMisbehaviour::FsyncNeverAnswers);
    let out = upload_to_sftp(&server, local.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no answer within 1s") && err.contains("127.0.0.1"),
        "{err}"
    );
    // Not published, no temporary file or lock left on the server.
    assert_eq!(server.paths(), ["site/", "site/old.txt"], "{err}");
}
