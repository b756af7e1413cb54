//! The FTP backend against real servers: pyftpdlib (MLSD, MFMT) and vsftpd (LIST only, no MFMT), each
//! plain and with explicit TLS; and its failures: wrong password, untrusted certificate, a server that
//! goes away mid-upload.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use snapsync_store::conformance::Options;
use snapsync_store::{ConnectOptions, Error, PutMode, PutSource, Store, StoreExt, StoreUrl, open};
use snapsync_testkit::{FTP_USER, FtpFlavor, FtpOptions, FtpServer, Tmpfs};

use super::{bare, chmod, roots, suite};

/// Options that trust the server's certificate, if it has one.
fn options(server: &FtpServer) -> ConnectOptions {
    match server.ca_file() {
        Some(ca) => bare().with_ca_file(ca),
        None => bare(),
    }
}

fn store(server: &FtpServer, path: &str) -> Arc<dyn Store> {
    open(&StoreUrl::parse(&server.url(path)).unwrap(), &options(server)).unwrap()
}

async fn conformance(flavor: FtpFlavor, tls: bool) {
    let server = FtpServer::start(flavor, tls);
    let store = store(&server, "deep/store root");
    suite(Arc::clone(&store), &Options::default()).await;
    roots(&server.url("roots"), &options(&server), true).await;
    // Everything went below the URL's path, and no temporary file was left behind.
    let on_disk = server.root().join("deep/store root");
    assert!(
        on_disk.join("zero").is_dir(),
        "objects are not under the URL's path"
    );
    let leftovers: Vec<_> = walk(server.root())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".snapsync-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn pyftpdlib_passes_the_conformance_suite() {
    conformance(FtpFlavor::Pyftpdlib, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pyftpdlib_with_tls_passes_the_conformance_suite() {
    conformance(FtpFlavor::Pyftpdlib, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vsftpd_passes_the_conformance_suite() {
    conformance(FtpFlavor::Vsftpd, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vsftpd_with_tls_passes_the_conformance_suite() {
    conformance(FtpFlavor::Vsftpd, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_written_on_the_server_are_read_with_their_times() {
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start(flavor, false);
        let dir = server.root().join("site/.hidden");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ü n.txt"), "twelve bytes").unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_mins(25_000_000); // 2017-07-14
        std::fs::File::options()
            .write(true)
            .open(dir.join("ü n.txt"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        let store = store(&server, "site");
        let listed = store.list_all("").await.unwrap();
        assert_eq!(listed.len(), 1, "{flavor:?}: {listed:?}");
        assert_eq!((listed[0].key.as_str(), listed[0].size), (".hidden/ü n.txt", 12));
        // LIST shows old files with their day only; MLSD to the second.
        let listed_time = listed[0].modified.unwrap();
        let slack = match flavor {
            FtpFlavor::Pyftpdlib => Duration::ZERO,
            FtpFlavor::Vsftpd => Duration::from_hours(24),
        };
        assert!(
            listed_time <= when + slack && when <= listed_time + slack,
            "{flavor:?}: listed {listed_time:?}"
        );
        // head is exact on both.
        assert_eq!(store.head(".hidden/ü n.txt").await.unwrap().modified, Some(when));
        assert_eq!(store.get_bytes(".hidden/ü n.txt").await.unwrap(), "twelve bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_permission_denied_and_never_shown() {
    let server = FtpServer::pyftpdlib();
    let url = server.url_with_password("x", "not-the-password");
    let store = open(&StoreUrl::parse(&url).unwrap(), &bare()).unwrap();
    let err = store.list_all("").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let source = std::error::Error::source(&err).unwrap();
    let text = format!("{err} {source} {source:?} {err:?}");
    assert!(!text.contains("not-the-password"), "{text}");
    // Whose login, with which password (where it came from), and the server's answer.
    assert!(
        source.to_string().starts_with(&format!(
            "login refused for {}@127.0.0.1:{} (the password in the URL): 530",
            snapsync_testkit::FTP_USER,
            server.port()
        )),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("netrc"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_clearly() {
    let server = FtpServer::start(FtpFlavor::Pyftpdlib, true);
    // No ca_file: the self-signed certificate is not trusted.
    let store = open(&StoreUrl::parse(&server.url("x")).unwrap(), &bare()).unwrap();
    let err = store.head("k").await.unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(
        !err.is_transient(),
        "a certificate problem is not worth retrying: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_goes_away_mid_upload_leaves_the_old_object_and_the_next_run_completes() {
    let mut server = FtpServer::pyftpdlib();
    let store = store(&server, "data");
    store
        .put(
            "big",
            PutSource::Bytes(Bytes::from_static(b"old version")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let source = tempfile::NamedTempFile::new().unwrap();
    let size = 200 * 1024 * 1024;
    source.as_file().set_len(size).unwrap();
    let upload = {
        let store = Arc::clone(&store);
        let path = source.path().to_path_buf();
        tokio::spawn(async move { store.put("big", PutSource::File(path), PutMode::Overwrite).await })
    };
    // Stop the server once the upload is under way.
    let temp_seen = wait_for(|| {
        walk(server.root())
            .iter()
            .any(|p| p.to_string_lossy().contains(".snapsync-"))
    });
    assert!(temp_seen, "the upload never started");
    server.stop();
    let err = upload.await.unwrap().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        std::fs::read(server.root().join("data/big")).unwrap(),
        b"old version"
    );
    // The server comes back: the same store object reconnects and the upload completes.
    server.restart();
    store
        .put(
            "big",
            PutSource::File(source.path().to_path_buf()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(store.head("big").await.unwrap().size, size);
    assert_eq!(
        std::fs::metadata(server.root().join("data/big")).unwrap().len(),
        size
    );
}

fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ftp_server_is_transient() {
    let port = snapsync_testkit::free_port();
    let url = format!("ftp://u:secret@127.0.0.1:{port}/x");
    let store = open(&StoreUrl::parse(&url).unwrap(), &bare()).unwrap();
    let err = store.head("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");
}

fn error_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// Folders the server will not list are errors that name them, never empty folders (a folder sync
/// would delete what it could not see). Really exercised: vsftpd's sessions run as the test user, not
/// root; pyftpdlib runs without the capabilities that let root read anything. `locked` has mode 000
/// (neither server enters it: `CWD` and `MLSD` answer 550); `blind` has mode 0311 (entered, not read:
/// pyftpdlib answers 550 to `MLSD`, vsftpd sends an empty `LIST` with `226 Transfer done (but failed to
/// open directory)`).
#[tokio::test(flavor = "multi_thread")]
async fn folders_the_server_will_not_list_are_errors_not_empty_folders() {
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start_with(
            flavor,
            FtpOptions {
                obey_permissions: true,
                ..FtpOptions::default()
            },
        );
        let data = server.root().join("data");
        for dir in ["locked/inner", "blind", "open"] {
            std::fs::create_dir_all(data.join(dir)).unwrap();
        }
        std::fs::write(data.join("locked/inner/precious.txt"), b"x").unwrap();
        std::fs::write(data.join("blind/hidden.txt"), b"x").unwrap();
        std::fs::write(data.join("open/seen.txt"), b"x").unwrap();
        std::fs::write(data.join("kept.txt"), b"x").unwrap();
        chmod(&data.join("locked"), 0o000);
        chmod(&data.join("blind"), 0o311);
        let store = store(&server, "data");
        let err = store.list_all("").await.unwrap_err();
        let text = error_text(&err);
        assert!(
            matches!(err, Error::PermissionDenied { .. }),
            "{flavor:?}: {text}"
        );
        assert!(
            text.contains("/data/locked/") || text.contains("/data/blind/"),
            "{flavor:?}: {text}"
        );
        for prefix in ["locked", "blind"] {
            let err = store.list_all(prefix).await.unwrap_err();
            let text = error_text(&err);
            assert!(
                matches!(err, Error::PermissionDenied { .. }),
                "{flavor:?} {prefix}: {text}"
            );
            assert!(text.contains(&format!("/data/{prefix}/")), "{flavor:?}: {text}");
        }
        // What can be listed still is; a prefix that is not there is empty.
        let open: Vec<String> = store
            .list_all("open")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(open, ["open/seen.txt"], "{flavor:?}");
        assert!(store.list_all("missing").await.unwrap().is_empty(), "{flavor:?}");
        // Roots: there, missing, a file, and one whether it exists cannot be told.
        assert!(self::store(&server, "data/locked").root_exists().await.unwrap());
        assert!(!self::store(&server, "data/missing").root_exists().await.unwrap());
        let err = self::store(&server, "data/kept.txt")
            .root_exists()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotADirectory { .. }), "{flavor:?}: {err:?}");
        let err = self::store(&server, "data/locked/inner")
            .root_exists()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { .. }),
            "{flavor:?}: {}",
            error_text(&err)
        );
        assert!(error_text(&err).contains("cannot tell"), "{}", error_text(&err));
        chmod(&data.join("locked"), 0o755);
        chmod(&data.join("blind"), 0o755);
    }
}

/// A server that refuses writes says so, in its words: `550` to `STOR`, `RNFR`, `DELE`, `MKD` is a
/// refusal, not a missing file (reads keep `NotFound`). Really exercised: pyftpdlib without `-w` and
/// vsftpd with `write_enable=NO`.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_account_is_refused_writes_in_the_servers_words() {
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start_with(
            flavor,
            FtpOptions {
                read_only: true,
                ..FtpOptions::default()
            },
        );
        std::fs::create_dir_all(server.root().join("data")).unwrap();
        std::fs::write(server.root().join("data/existing.txt"), b"old").unwrap();
        let store = store(&server, "data");
        let denied = |what: &str, result: snapsync_store::Result<()>| {
            let err = result.unwrap_err();
            let text = error_text(&err);
            assert!(
                matches!(err, Error::PermissionDenied { .. }),
                "{flavor:?} {what}: {text}"
            );
            assert!(
                text.contains("refused the write: 550"),
                "{flavor:?} {what}: {text}"
            );
            assert!(err.hint().unwrap().contains("permissions on the server"));
        };
        let bytes = || PutSource::Bytes(Bytes::from_static(b"new"));
        denied("put", store.put("new.txt", bytes(), PutMode::Overwrite).await);
        denied(
            "put in a new folder",
            store.put("sub/new.txt", bytes(), PutMode::Create).await,
        );
        denied("delete", store.delete("existing.txt").await);
        denied("rename", store.rename("existing.txt", "moved.txt").await);
        denied(
            "lock_create",
            store.lock_create(".lock", Bytes::from_static(b"me")).await,
        );
        denied(
            "create_root",
            self::store(&server, "data/new root").create_root().await,
        );
        // Reads of what is not there are still NotFound.
        assert!(matches!(
            store.get_bytes("missing").await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store.rename("missing", "x").await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store.lock_read(".lock").await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(store.get_bytes("existing.txt").await.unwrap(), "old");
    }
}

/// The FTP lock is a directory: one made but without its body yet reads as an empty body (held, by
/// whom is not said yet); a lock file left by an older version is read, refused and removed as a lock.
#[tokio::test(flavor = "multi_thread")]
async fn ftp_locks_being_made_and_old_lock_files_are_locks() {
    for flavor in [FtpFlavor::Pyftpdlib, FtpFlavor::Vsftpd] {
        let server = FtpServer::start(flavor, false);
        let data = server.root().join("data");
        std::fs::create_dir_all(data.join(".being-made")).unwrap();
        std::fs::write(data.join(".old-lock"), b"old holder").unwrap();
        if flavor == FtpFlavor::Vsftpd {
            let _ = std::process::Command::new("chown")
                .args(["-R", FTP_USER])
                .arg(&data)
                .status();
        }
        let store = store(&server, "data");
        assert_eq!(store.lock_read(".being-made").await.unwrap(), "", "{flavor:?}");
        assert_eq!(
            store.lock_read(".old-lock").await.unwrap(),
            "old holder",
            "{flavor:?}"
        );
        for key in [".being-made", ".old-lock"] {
            assert!(
                matches!(
                    store.lock_create(key, Bytes::from_static(b"me")).await,
                    Err(Error::AlreadyExists { .. })
                ),
                "{flavor:?} {key}"
            );
            store.lock_remove(key).await.unwrap();
            assert!(!data.join(key).exists(), "{flavor:?} {key}");
        }
        // A lock taken: a directory holding its body, as the documentation says listings show it.
        store
            .lock_create(".lock", Bytes::from_static(b"me"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(data.join(".lock/owner")).unwrap(), b"me");
        let keys: Vec<String> = store
            .list_all("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, [".lock/owner"], "{flavor:?}");
        // A heartbeat for a lock that was moved aside does not bring it back.
        store.lock_rename(".lock", ".lock.stale").await.unwrap();
        assert!(matches!(
            store.lock_update(".lock", Bytes::from_static(b"me again")).await,
            Err(Error::NotFound { .. })
        ));
        assert!(!data.join(".lock").exists(), "{flavor:?}");
        assert_eq!(store.lock_read(".lock.stale").await.unwrap(), "me");
    }
}

/// A full server says it is full, in its words, and is not retried as a temporary failure. Really
/// exercised: the folder written to is a tmpfs of 64 KiB, and vsftpd answers
/// `451 Failure writing to local file.` (pyftpdlib 2.2 answers `426 None; transfer aborted.`, its
/// system error lost: nothing tells that from a broken transfer, so it stays a temporary failure;
/// the unit tests check the replies of servers that name the cause).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_ftp_server_says_it_is_out_of_space() {
    {
        let server = FtpServer::pyftpdlib();
        let small = Tmpfs::mount(&server.root().join("small"), 64 * 1024);
        let err = store(&server, "small")
            .put(
                "big",
                PutSource::Bytes(Bytes::from(vec![7u8; 1024 * 1024])),
                PutMode::Overwrite,
            )
            .await
            .unwrap_err();
        assert!(error_text(&err).contains("426"), "{}", error_text(&err));
        drop(small);
    }
    for flavor in [FtpFlavor::Vsftpd] {
        let server = FtpServer::start(flavor, false);
        let small = Tmpfs::mount(&server.root().join("small"), 64 * 1024);
        if flavor == FtpFlavor::Vsftpd {
            let _ = std::process::Command::new("chown")
                .arg(FTP_USER)
                .arg(small.path())
                .status();
        }
        let store = store(&server, "small");
        let err = store
            .put(
                "big",
                PutSource::Bytes(Bytes::from(vec![7u8; 1024 * 1024])),
                PutMode::Overwrite,
            )
            .await
            .unwrap_err();
        let text = error_text(&err);
        assert!(matches!(err, Error::StorageFull { .. }), "{flavor:?}: {text}");
        assert!(!err.is_transient());
        assert!(text.contains("space"), "{flavor:?}: {text}");
        drop(store);
        drop(small);
    }
}
