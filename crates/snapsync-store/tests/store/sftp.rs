//! The SFTP backend against OpenSSH's sshd: the conformance suite, every way to log in, host key checks,
//! and failures (wrong password, a server that goes away).

use std::sync::Arc;

use bytes::Bytes;
use snapsync_store::conformance::Options;
use snapsync_store::{ConnectOptions, Error, HostKeyPolicy, PutMode, PutSource, Store, StoreExt, StoreUrl};
use snapsync_testkit::{SSH_KEY_PASSPHRASE, Sshd};

use super::{bare, chmod, roots, suite};

fn open(url: &str, options: &ConnectOptions) -> Arc<dyn Store> {
    snapsync_store::open(&StoreUrl::parse(url).unwrap(), options).unwrap()
}

/// Options that trust the server's host key (and nothing from the process's environment: no agent,
/// no `~/.ssh`).
fn trusting(server: &Sshd) -> ConnectOptions {
    bare().with_known_hosts(server.known_hosts())
}

fn error_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn sshd_passes_the_conformance_suite() {
    let server = Sshd::start();
    let store = open(&server.url("deep/store root"), &trusting(&server));
    suite(Arc::clone(&store), &Options::default()).await;
    assert!(server.root().join("deep/store root/zero").is_dir());
    roots(&server.url("roots"), &trusting(&server), true).await;
    // Relative to the home (`/~/`): the test user's home is `/`, where it may not write; only ask.
    let home = open(
        &server
            .url("")
            .replacen(&server.root().display().to_string(), "/~", 1),
        &trusting(&server),
    );
    assert!(home.root_exists().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_log_in_with_and_without_a_passphrase() {
    let server = Sshd::start();
    let url = server.url_without_password("k");
    let store = open(&url, &trusting(&server).with_ssh_key(server.key_file()));
    store
        .put(
            "a",
            PutSource::Bytes(Bytes::from_static(b"by key")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(server.root().join("k/a")).unwrap(), b"by key");

    let encrypted = trusting(&server).with_ssh_key(server.encrypted_key_file());
    let err = open(&url, &encrypted).head("a").await.unwrap_err();
    assert!(error_text(&err).contains("passphrase"), "{}", error_text(&err));
    let encrypted = encrypted.with_ssh_key_passphrase(SSH_KEY_PASSPHRASE);
    assert_eq!(open(&url, &encrypted).get_bytes("a").await.unwrap(), "by key");
    // The same from the environment's variables, given rather than read from the process.
    let env = ConnectOptions::from_vars([
        ("SNAPSYNC_KNOWN_HOSTS", server.known_hosts().display().to_string()),
        (
            "SNAPSYNC_SSH_KEY",
            server.encrypted_key_file().display().to_string(),
        ),
        ("SNAPSYNC_SSH_KEY_PASSPHRASE", SSH_KEY_PASSPHRASE.to_owned()),
    ])
    .with_retry(None);
    assert_eq!(open(&url, &env).get_bytes("a").await.unwrap(), "by key");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_changed_host_keys_are_refused() {
    let server = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    // Unknown: refused, with the fingerprint and the way out in the message.
    let empty = dir.path().join("known_hosts");
    let strict = bare().with_known_hosts(&empty);
    let err = open(&server.url("x"), &strict).head("k").await.unwrap_err();
    let text = error_text(&err);
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(
        text.contains("not known") && text.contains("SHA256:") && text.contains("--accept-new-host-key"),
        "{text}"
    );
    assert!(!empty.exists() || std::fs::read_to_string(&empty).unwrap().is_empty());
    // Accepted once on request: recorded, and trusted from then on.
    let accept = strict.clone().with_host_key_policy(HostKeyPolicy::AcceptNew);
    assert!(!open(&server.url("x"), &accept).exists("k").await.unwrap());
    assert!(
        std::fs::read_to_string(&empty)
            .unwrap()
            .contains(&format!("[127.0.0.1]:{}", server.port()))
    );
    assert!(!open(&server.url("x"), &strict).exists("k").await.unwrap());
    // Changed: another server's key recorded for this address is refused, even when new keys are accepted.
    let other = Sshd::start();
    let recorded = std::fs::read_to_string(other.known_hosts())
        .unwrap()
        .replace(&format!("]:{} ", other.port()), &format!("]:{} ", server.port()));
    assert!(recorded.contains(&format!("]:{} ", server.port())), "{recorded}");
    let changed = dir.path().join("changed");
    std::fs::write(&changed, recorded).unwrap();
    let accept = bare()
        .with_known_hosts(&changed)
        .with_host_key_policy(HostKeyPolicy::AcceptNew);
    let err = open(&server.url("x"), &accept).head("k").await.unwrap_err();
    assert!(error_text(&err).contains("CHANGED"), "{}", error_text(&err));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_permission_denied_and_never_shown() {
    let server = Sshd::start();
    let url = server
        .url("x")
        .replacen(snapsync_testkit::SSH_PASSWORD.as_str(), "wrong-pw-123", 1);
    let err = open(&url, &trusting(&server)).head("k").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let text = format!("{} {err:?}", error_text(&err));
    assert!(!text.contains("wrong-pw-123"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_goes_away_is_transient_and_the_store_reconnects() {
    let mut server = Sshd::start();
    let store = open(&server.url("d"), &trusting(&server));
    store
        .put(
            "a",
            PutSource::Bytes(Bytes::from_static(b"old")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    server.stop();
    let err = store.head("a").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    server.restart();
    store
        .put(
            "a",
            PutSource::Bytes(Bytes::from_static(b"new")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(store.get_bytes("a").await.unwrap(), "new");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_agent_logs_in() {
    let server = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = snapsync_testkit::Process::spawn(
        "ssh-agent",
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null()),
    );
    let started = std::time::Instant::now();
    while !socket.exists() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut add = std::process::Command::new("ssh-add");
    add.env("SSH_AUTH_SOCK", &socket).arg(server.key_file());
    assert!(add.output().unwrap().status.success(), "ssh-add failed");
    // No password, and the only key file is encrypted without its passphrase: only the agent can log in.
    let options = trusting(&server)
        .with_agent_socket(&socket)
        .with_ssh_key(server.encrypted_key_file());
    let store = open(&server.url_without_password("a"), &options);
    store
        .put(
            "k",
            PutSource::Bytes(Bytes::from_static(b"via agent")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(server.root().join("a/k")).unwrap(), b"via agent");
    agent.stop();
}

/// Folders the server will not list are errors that name them, never empty folders. Really exercised:
/// sshd's sessions run as the test user, not root; `locked` (mode 000) and `blind` (mode 0311) are
/// root's.
#[tokio::test(flavor = "multi_thread")]
async fn folders_the_server_will_not_list_are_errors_not_empty_folders() {
    let server = Sshd::start();
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
    let store = open(&server.url("data"), &trusting(&server));
    let err = store.list_all("").await.unwrap_err();
    let text = error_text(&err);
    assert!(matches!(err, Error::PermissionDenied { .. }), "{text}");
    assert!(
        text.contains("/data/locked/") || text.contains("/data/blind/"),
        "{text}"
    );
    for prefix in ["locked", "blind"] {
        let err = store.list_all(prefix).await.unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { .. }),
            "{prefix}: {}",
            error_text(&err)
        );
    }
    let open_keys: Vec<String> = store
        .list_all("open")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(open_keys, ["open/seen.txt"]);
    assert!(store.list_all("missing").await.unwrap().is_empty());
    // Roots: there, missing, a file, and one whether it exists cannot be told.
    let root = |path: &str| open(&server.url(path), &trusting(&server));
    assert!(root("data/locked").root_exists().await.unwrap());
    assert!(!root("data/missing").root_exists().await.unwrap());
    let err = root("data/kept.txt").root_exists().await.unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err:?}");
    let err = root("data/locked/inner").root_exists().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    // Nor can a lock be taken there, and the error says why.
    let err = root("data/locked/inner")
        .lock_create(".lock", Bytes::from_static(b"me"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied { .. }),
        "{}",
        error_text(&err)
    );
    chmod(&data.join("locked"), 0o755);
    chmod(&data.join("blind"), 0o755);
}

/// The test servers' system user has no login shell and a password made for this run (not one written
/// in the repository), kept 0600; it still logs in over SFTP (the test sshd also forces SFTP and
/// allows no forwarding).
#[tokio::test(flavor = "multi_thread")]
async fn the_test_user_has_no_shell_and_a_password_of_this_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Sshd::start();
    let passwd = std::process::Command::new("getent")
        .args(["passwd", snapsync_testkit::SSH_USER])
        .output()
        .unwrap();
    let entry = String::from_utf8(passwd.stdout).unwrap();
    let shell = entry.trim_end().rsplit(':').next().unwrap().to_owned();
    assert!(
        shell.ends_with("/nologin") || shell == "/bin/false",
        "the test user has a login shell: {entry}"
    );
    let password = snapsync_testkit::SSH_PASSWORD.as_str();
    assert!(
        password.len() >= 12 && password != "ssh-secret-42",
        "{password:?}"
    );
    let file = snapsync_testkit::workdir().join("secrets/ssh-password");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), password);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // And the password logs in over SFTP (the suite above does the rest).
    let store = open(&server.url("shell-check"), &trusting(&server));
    store
        .put(
            "x",
            PutSource::Bytes(Bytes::from_static(b"x")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
}

/// A listing longer than `max_listing_bytes` is an error naming the folder and the variable, from a
/// server that never ends one (the testkit's scripted SFTP server) as from one that merely holds
/// more than the cap; under the cap the same folder lists whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_sftp_listing_longer_than_the_cap_is_an_error_naming_the_folder() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let site: [(&str, &[u8]); 3] = [("d/a", b"a"), ("d/b", b"b"), ("d/sub/c", b"c")];
    let endless = ScriptedSftp::start(&site, SftpMisbehaviour::EndlessListing);
    let options = bare()
        .with_known_hosts(endless.known_hosts())
        .with_max_listing_bytes(50_000);
    let err = open(&endless.url("d"), &options).list_all("").await.unwrap_err();
    let text = error_text(&err);
    assert!(
        text.contains("listing of /d is longer than 50000 bytes")
            && text.contains("SNAPSYNC_MAX_LISTING_BYTES"),
        "{text}"
    );
    assert!(!text.contains(endless.password()), "{text}");
    // A server that behaves: three entries (with `.` and `..`) fit in 1,000 bytes, not in 200.
    let server = ScriptedSftp::start(&site, SftpMisbehaviour::None);
    let trusting = bare().with_known_hosts(server.known_hosts());
    let keys = |metas: Vec<snapsync_store::ObjectMeta>| metas.into_iter().map(|m| m.key).collect::<Vec<_>>();
    let listed = open(&server.url("d"), &trusting.clone().with_max_listing_bytes(1000))
        .list_all("")
        .await
        .unwrap();
    assert_eq!(keys(listed), ["a", "b", "sub/c"]);
    let err = open(&server.url("d"), &trusting.with_max_listing_bytes(200))
        .list_all("")
        .await
        .unwrap_err();
    assert!(
        error_text(&err).contains("listing of /d is longer than 200 bytes"),
        "{}",
        error_text(&err)
    );
}

/// The scripted SFTP server is a sound enough SFTP server for the store's conformance suite, so that
/// what fails against its misbehaviour fails because of the misbehaviour.
#[tokio::test(flavor = "multi_thread")]
async fn the_scripted_sftp_server_passes_the_conformance_suite() {
    use snapsync_testkit::{ScriptedSftp, SftpMisbehaviour};
    let server = ScriptedSftp::start(&[("store/.keep", b"")], SftpMisbehaviour::None);
    let store = open(
        &server.url("store"),
        &bare().with_known_hosts(server.known_hosts()),
    );
    suite(
        Arc::clone(&store),
        &Options {
            large_object: 4 << 20,
            many_keys: 200,
        },
    )
    .await;
}
