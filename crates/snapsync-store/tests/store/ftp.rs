//! The FTP backend against real servers: pyftpdlib (MLSD, MFMT) and vsftpd (LIST only, no MFMT), each
//! plain and with explicit TLS; and its failures: wrong password, untrusted certificate, a server that
//! goes away mid-upload.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use snapsync_store::conformance::Options;
use snapsync_store::{Error, PutMode, PutSource, Store, StoreExt, StoreUrl, open_with_config};
use snapsync_testkit::{FtpFlavor, FtpServer};

use super::{pairs, suite};

fn store(server: &FtpServer, path: &str) -> Arc<dyn Store> {
    let config = server.config();
    open_with_config(&StoreUrl::parse(&server.url(path)).unwrap(), &pairs(&config)).unwrap()
}

async fn conformance(flavor: FtpFlavor, tls: bool) {
    let server = FtpServer::start(flavor, tls);
    let store = store(&server, "deep/store root");
    suite(Arc::clone(&store), &Options::default()).await;
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
    let store = open_with_config(&StoreUrl::parse(&url).unwrap(), &[]).unwrap();
    let err = store.list_all("").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(text.contains("login"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_clearly() {
    let server = FtpServer::start(FtpFlavor::Pyftpdlib, true);
    // No ca_file: the self-signed certificate is not trusted.
    let store = open_with_config(&StoreUrl::parse(&server.url("x")).unwrap(), &[]).unwrap();
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
    let store = open_with_config(&StoreUrl::parse(&url).unwrap(), &[]).unwrap();
    let err = store.head("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");
}
