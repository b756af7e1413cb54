//! Network faults between a store and real servers, injected by the testkit's `FaultProxy`: FTP
//! (pyftpdlib and vsftpd, data connections included), SFTP (sshd) and S3 (moto). A transient fault
//! is retried and the transfer completes with the right bytes; a persistent one ends in a temporary
//! failure that names the server (no password) and the operation, with the old object left whole; a
//! stalled server ends in a timeout error instead of a hang; a slow transfer that keeps moving is not
//! cut by the timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use snapsync_store::{
    ConnectOptions, Error, HostKeyPolicy, PutMode, PutSource, RetryPolicy, Store, StoreExt, StoreUrl,
};
use snapsync_testkit::{
    Direction, Fault, FaultProxy, FtpFlavor, FtpServer, Link, Rule, S3Server, Sshd, When,
};

/// Retries as the default policy does, with short waits.
fn retrying(attempts: u32, timeout: Duration) -> ConnectOptions {
    ConnectOptions::default()
        .with_retry(Some(RetryPolicy {
            attempts,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        }))
        .with_timeout(timeout)
}

fn open(url: &str, options: &ConnectOptions) -> Arc<dyn Store> {
    snapsync_store::open(&StoreUrl::parse(url).unwrap(), options).unwrap()
}

/// `len` bytes that differ with `seed`.
fn payload(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect::<Vec<u8>>()
        .into()
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

/// Every file below `dir` whose name is a temporary one.
fn temporary_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temporary_files(&path));
        } else if snapsync_store::is_temp_name(path.file_name().unwrap()) {
            found.push(path);
        }
    }
    found
}

/// The whole object, read as a stream (as downloads read it).
async fn read_all(store: &dyn Store, key: &str) -> snapsync_store::Result<Vec<u8>> {
    let mut got = store.get(key).await?;
    let mut bytes = Vec::new();
    while let Some(piece) = got.stream.next().await {
        bytes.extend_from_slice(&piece?);
    }
    Ok(bytes)
}

/// Runs `work`, failing the test if it has not ended within `limit` (a hang is a failure, not a
/// wait).
async fn ends_within<T>(limit: Duration, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| panic!("still running after {limit:?}: a stalled server hung the operation"))
}

const MIB: usize = 1024 * 1024;

fn reset(direction: Direction, after: u64) -> Fault {
    Fault::Reset { direction, after }
}

/// One transient fault per case, each through a fresh proxy (so the store's first connections meet
/// it): uploads and downloads end with the right bytes and leave no temporary file.
async fn transient_ftp_faults(server: &FtpServer) {
    let cases = [
        (
            "a data connection reset mid-upload",
            Rule::once(Link::Data, reset(Direction::ToServer, 300_000)),
            true,
        ),
        (
            "the control connection closed right after the PASV reply",
            Rule::once(Link::Main, Fault::ClosePassive { reply: true }),
            true,
        ),
        (
            // What a session closed while the reply was on its way looks like: a malformed reply.
            "the control connection closed three bytes into the PASV reply",
            Rule::once(Link::Main, Fault::CutPassive { bytes: 3 }),
            true,
        ),
        (
            "the control connection closed instead of the PASV reply",
            Rule::once(Link::Main, Fault::ClosePassive { reply: false }),
            true,
        ),
        (
            "the first connection dropped at accept",
            Rule::once(Link::Main, Fault::Drop),
            true,
        ),
        (
            "a data connection cut cleanly mid-download",
            Rule::once(
                Link::Data,
                Fault::Truncate {
                    direction: Direction::ToClient,
                    after: 300_000,
                },
            ),
            false,
        ),
        (
            "a data connection reset mid-download",
            Rule::once(Link::Data, reset(Direction::ToClient, 300_000)),
            false,
        ),
    ];
    for (seed, (case, rule, upload)) in (1u64..).zip(cases) {
        let proxy = FaultProxy::ftp(server.port());
        let store = open(
            &proxy.url(&server.url("data")),
            &retrying(4, Duration::from_secs(10)),
        );
        let bytes = payload(MIB, seed);
        let key = format!("f{seed}");
        if upload {
            proxy.add(rule);
            ends_within(
                Duration::from_mins(1),
                store.put(&key, PutSource::Bytes(bytes.clone()), PutMode::Overwrite),
            )
            .await
            .unwrap_or_else(|e| panic!("{case}: {}", error_text(&e)));
        } else {
            store
                .put(&key, PutSource::Bytes(bytes.clone()), PutMode::Overwrite)
                .await
                .unwrap();
            proxy.add(rule);
            let got = ends_within(Duration::from_mins(1), read_all(&*store, &key))
                .await
                .unwrap_or_else(|e| panic!("{case}: {}", error_text(&e)));
            assert!(got == bytes, "{case}: the download is not the object");
        }
        assert_eq!(proxy.fired(), 1, "{case}: the fault never happened");
        assert!(
            std::fs::read(server.root().join("data").join(&key)).unwrap() == bytes,
            "{case}: the server does not hold the bytes sent"
        );
        assert_eq!(
            temporary_files(server.root()),
            Vec::<std::path::PathBuf>::new(),
            "{case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_on_pyftpdlib_are_retried_and_transfers_complete() {
    transient_ftp_faults(&FtpServer::pyftpdlib()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_on_vsftpd_are_retried_and_transfers_complete() {
    transient_ftp_faults(&FtpServer::start(FtpFlavor::Vsftpd, false)).await;
}

/// vsftpd under many connections was seen to close a session right after `PASV`: with several
/// transfers at once (4 connections), one such close among them costs a retry, not the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_closed_after_pasv_among_parallel_uploads_costs_only_a_retry() {
    let server = FtpServer::start(FtpFlavor::Vsftpd, false);
    let proxy = FaultProxy::ftp(server.port());
    let store = open(
        &proxy.url(&server.url("many")),
        &retrying(5, Duration::from_secs(10)),
    );
    proxy.add(Rule {
        link: Link::Main,
        when: When::Nth(3),
        fault: Fault::ClosePassive { reply: true },
    });
    let files: Vec<(String, Bytes)> = (0..16u64)
        .map(|i| (format!("dir{}/file{i}", i % 3), payload(64 * 1024, 100 + i)))
        .collect();
    let uploads = futures::stream::iter(files.clone())
        .map(|(key, bytes)| {
            let store = Arc::clone(&store);
            async move { store.put(&key, PutSource::Bytes(bytes), PutMode::Overwrite).await }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>();
    for result in ends_within(Duration::from_mins(2), uploads).await {
        result.unwrap_or_else(|e| panic!("{}", error_text(&e)));
    }
    assert_eq!(proxy.fired(), 1);
    for (key, bytes) in &files {
        assert!(
            std::fs::read(server.root().join("many").join(key)).unwrap() == *bytes,
            "{key}"
        );
    }
    assert!(temporary_files(server.root()).is_empty());
    // And a listing through a fresh store meets the same close.
    proxy.add(Rule::once(Link::Main, Fault::ClosePassive { reply: true }));
    let store = open(
        &proxy.url(&server.url("many")),
        &retrying(5, Duration::from_secs(10)),
    );
    assert_eq!(store.list_all("").await.unwrap().len(), files.len());
    assert_eq!(proxy.fired(), 2);
}

/// Checks a failure left by a persistent fault: temporary (the run may be tried again later), named
/// by the server as the user reaches it (the proxy's port) and the operation, without the password.
fn assert_clear_failure(err: &Error, port: u16, operation: &str, password: &str) {
    let text = error_text(err);
    assert!(err.is_transient(), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "no host in: {text}");
    assert!(text.contains(operation), "no {operation:?} in: {text}");
    assert!(!text.contains(password), "the password shows: {text}");
    assert!(
        !format!("{err:?}").contains(password),
        "the password shows: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_ftp_fault_fails_clearly_and_tears_nothing() {
    let server = FtpServer::pyftpdlib();
    let direct = open(&server.url("data"), &retrying(1, Duration::from_secs(10)));
    direct
        .put(
            "f",
            PutSource::Bytes(Bytes::from_static(b"old")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let proxy = FaultProxy::ftp(server.port());
    let store = open(
        &proxy.url(&server.url("data")),
        &retrying(3, Duration::from_secs(10)),
    );
    // Every data connection is reset mid-upload.
    proxy.add(Rule::always(Link::Data, reset(Direction::ToServer, 100_000)));
    let err = ends_within(
        Duration::from_mins(1),
        store.put("f", PutSource::Bytes(payload(MIB, 7)), PutMode::Overwrite),
    )
    .await
    .unwrap_err();
    assert_clear_failure(
        &err,
        proxy.port(),
        "upload",
        snapsync_testkit::FTP_PASSWORD.as_str(),
    );
    assert_eq!(proxy.fired(), 3, "one try per attempt");
    assert_eq!(std::fs::read(server.root().join("data/f")).unwrap(), b"old");
    assert!(temporary_files(server.root()).is_empty());
    // Every control connection is cut after its first bytes: the listing fails, named.
    proxy.clear();
    proxy.add(Rule::always(
        Link::Main,
        Fault::Truncate {
            direction: Direction::ToClient,
            after: 10,
        },
    ));
    let store = open(
        &proxy.url(&server.url("data")),
        &retrying(2, Duration::from_secs(10)),
    );
    let err = ends_within(Duration::from_mins(1), store.list_all(""))
        .await
        .unwrap_err();
    assert_clear_failure(
        &err,
        proxy.port(),
        "list",
        snapsync_testkit::FTP_PASSWORD.as_str(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_ftp_server_ends_in_a_timeout_not_a_hang() {
    let server = FtpServer::pyftpdlib();
    let direct = open(&server.url("data"), &retrying(1, Duration::from_secs(10)));
    direct
        .put("f", PutSource::Bytes(payload(MIB, 3)), PutMode::Overwrite)
        .await
        .unwrap();
    let proxy = FaultProxy::ftp(server.port());
    let timeout = Duration::from_secs(2);
    // A download whose data connection stops mid-file.
    proxy.add(Rule::always(
        Link::Data,
        Fault::Stall {
            direction: Direction::ToClient,
            after: 300_000,
        },
    ));
    let store = open(&proxy.url(&server.url("data")), &retrying(2, timeout));
    let err = ends_within(Duration::from_secs(30), read_all(&*store, "f"))
        .await
        .unwrap_err();
    let text = error_text(&err);
    assert!(err.is_transient(), "{text}");
    assert!(text.contains("2s"), "the timeout is not named: {text}");
    // An upload whose data connection stops taking bytes.
    proxy.clear();
    proxy.add(Rule::always(
        Link::Data,
        Fault::Stall {
            direction: Direction::ToServer,
            after: 300_000,
        },
    ));
    let err = ends_within(
        Duration::from_secs(30),
        store.put("g", PutSource::Bytes(payload(4 * MIB, 4)), PutMode::Overwrite),
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{}", error_text(&err));
    assert!(!server.root().join("data/g").exists());
    // A server that accepts the connection and never says a word.
    proxy.clear();
    proxy.add(Rule::always(
        Link::Main,
        Fault::Stall {
            direction: Direction::ToClient,
            after: 0,
        },
    ));
    let store = open(&proxy.url(&server.url("data")), &retrying(2, timeout));
    let err = ends_within(Duration::from_secs(30), store.head("f"))
        .await
        .unwrap_err();
    let text = error_text(&err);
    assert!(err.is_transient() && text.contains("2s"), "{text}");
}

/// The timeout is a limit on silence, not on a whole transfer: downloads (FTP, SFTP) and an SFTP
/// upload slowed on every chunk, each taking longer than the timeout in all, complete. (An FTP
/// upload ends with a wait for the server's confirmation while the kernel's send buffer drains,
/// which the client cannot watch: on loopback behind a slowed proxy that drain alone outlasts a short
/// timeout, so it is not part of this test.) Progress is seen per read or per write of the source
/// (SFTP: per write request, up to 256 KiB), so a timeout must exceed what one of those takes.
#[tokio::test(flavor = "multi_thread")]
async fn slow_transfers_that_keep_moving_are_not_timed_out() {
    let server = FtpServer::pyftpdlib();
    let sshd = Sshd::start();
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    let timeout = Duration::from_secs(2);
    let ftp_proxy = FaultProxy::ftp(server.port());
    let ssh_proxy = FaultProxy::start(sshd.port());
    let bytes = payload(8 * MIB, 9);
    // The FTP object goes up unhurried; the SSH login too (the timeout applies from there on).
    let ftp = open(&ftp_proxy.url(&server.url("slow")), &retrying(1, timeout));
    ftp.put("big", PutSource::Bytes(bytes.clone()), PutMode::Overwrite)
        .await
        .unwrap();
    let sftp = open(
        &ssh_proxy.url(&sshd.url("slow")),
        &sftp_options(known_hosts.path(), 1, timeout),
    );
    sftp.put(
        "warm",
        PutSource::Bytes(Bytes::from_static(b"w")),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    ftp_proxy.add(Rule::always(
        Link::Data,
        Fault::Latency(Duration::from_millis(50)),
    ));
    ssh_proxy.add(Rule::always(
        Link::Main,
        Fault::Latency(Duration::from_millis(50)),
    ));
    // The SSH connection is up: slow it by a new one.
    let sftp = open(
        &ssh_proxy.url(&sshd.url("slow")),
        &sftp_options(known_hosts.path(), 1, Duration::from_secs(10)),
    );
    sftp.put(
        "warm",
        PutSource::Bytes(Bytes::from_static(b"w")),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let got = ends_within(Duration::from_mins(2), read_all(&*ftp, "big"))
        .await
        .unwrap_or_else(|e| panic!("FTP download: {}", error_text(&e)));
    assert!(got == bytes, "FTP download");
    // Honest only if the transfer did take longer than the timeout.
    assert!(started.elapsed() > timeout * 2, "FTP: {:?}", started.elapsed());
    drop(sftp);
    let sftp = open(
        &ssh_proxy.url(&sshd.url("slow")),
        &sftp_options(known_hosts.path(), 1, timeout),
    );
    let started = std::time::Instant::now();
    ends_within(
        Duration::from_mins(2),
        sftp.put("big", PutSource::Bytes(bytes.clone()), PutMode::Overwrite),
    )
    .await
    .unwrap_or_else(|e| panic!("SFTP upload: {}", error_text(&e)));
    let got = ends_within(Duration::from_mins(2), read_all(&*sftp, "big"))
        .await
        .unwrap_or_else(|e| panic!("SFTP download: {}", error_text(&e)));
    assert!(got == bytes, "SFTP");
    assert!(started.elapsed() > timeout * 2, "SFTP: {:?}", started.elapsed());
    assert!(ftp_proxy.fired() > 0 && ssh_proxy.fired() > 0);
}

fn sftp_options(known_hosts: &Path, attempts: u32, timeout: Duration) -> ConnectOptions {
    retrying(attempts, timeout)
        .with_known_hosts(known_hosts)
        .with_host_key_policy(HostKeyPolicy::AcceptNew)
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_faults_are_retried_or_fail_clearly_and_a_stall_times_out() {
    let server = Sshd::start();
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    // Transient: the SSH connection reset once mid-upload, once mid-download.
    for (seed, direction) in [(1, Direction::ToServer), (2, Direction::ToClient)] {
        let proxy = FaultProxy::start(server.port());
        let store = open(
            &proxy.url(&server.url("data")),
            &sftp_options(known_hosts.path(), 4, Duration::from_secs(10)),
        );
        let bytes = payload(2 * MIB, seed);
        if direction == Direction::ToServer {
            proxy.add(Rule::once(Link::Main, reset(direction, 600_000)));
        }
        ends_within(
            Duration::from_mins(1),
            store.put("f", PutSource::Bytes(bytes.clone()), PutMode::Overwrite),
        )
        .await
        .unwrap_or_else(|e| panic!("{direction:?}: {}", error_text(&e)));
        if direction == Direction::ToClient {
            // A fresh store: its connection, the next one, is reset mid-download.
            let store = open(
                &proxy.url(&server.url("data")),
                &sftp_options(known_hosts.path(), 4, Duration::from_secs(10)),
            );
            proxy.add(Rule::once(Link::Main, reset(direction, 600_000)));
            let got = ends_within(Duration::from_mins(1), read_all(&*store, "f"))
                .await
                .unwrap_or_else(|e| panic!("{direction:?}: {}", error_text(&e)));
            assert!(got == bytes, "the download is not the object");
        }
        assert_eq!(proxy.fired(), 1, "{direction:?}: the fault never happened");
        assert!(std::fs::read(server.root().join("data/f")).unwrap() == bytes);
        assert!(temporary_files(server.root()).is_empty());
    }
    // Persistent: every connection reset mid-upload.
    let proxy = FaultProxy::start(server.port());
    proxy.add(Rule::always(Link::Main, reset(Direction::ToServer, 600_000)));
    let store = open(
        &proxy.url(&server.url("data")),
        &sftp_options(known_hosts.path(), 3, Duration::from_secs(10)),
    );
    let err = ends_within(
        Duration::from_mins(1),
        store.put("f", PutSource::Bytes(payload(4 * MIB, 3)), PutMode::Overwrite),
    )
    .await
    .unwrap_err();
    assert_clear_failure(
        &err,
        proxy.port(),
        "upload",
        snapsync_testkit::SSH_PASSWORD.as_str(),
    );
    assert!(std::fs::read(server.root().join("data/f")).unwrap() == payload(2 * MIB, 2));
    // Stalled: the server never answers.
    let proxy = FaultProxy::start(server.port());
    proxy.add(Rule::always(
        Link::Main,
        Fault::Stall {
            direction: Direction::ToClient,
            after: 0,
        },
    ));
    let store = open(
        &proxy.url(&server.url("data")),
        &sftp_options(known_hosts.path(), 2, Duration::from_secs(2)),
    );
    let err = ends_within(Duration::from_secs(30), store.head("f"))
        .await
        .unwrap_err();
    let text = error_text(&err);
    assert!(err.is_transient() && text.contains("2s"), "{text}");
}

fn s3(server: &S3Server, proxy: &FaultProxy, attempts: u32, timeout: Duration) -> Arc<dyn Store> {
    let mut options = retrying(attempts, timeout);
    for (key, value) in server.config() {
        let value = if key == "aws_endpoint" {
            format!("http://127.0.0.1:{}", proxy.port())
        } else {
            value
        };
        options = options.with_object_store_option(key, value);
    }
    open("s3://faults/data", &options)
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_faults_are_retried_or_fail_clearly_and_a_stall_times_out() {
    let server = S3Server::start();
    server.create_bucket("faults");
    let proxy = FaultProxy::start(server.endpoint().rsplit(':').next().unwrap().parse().unwrap());
    let store = s3(&server, &proxy, 4, Duration::from_secs(10));
    // Transient: a connection reset mid-upload, and one mid-download.
    let bytes = payload(2 * MIB, 5);
    proxy.add(Rule::once(Link::Main, reset(Direction::ToServer, 600_000)));
    ends_within(
        Duration::from_mins(1),
        store.put("f", PutSource::Bytes(bytes.clone()), PutMode::Overwrite),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", error_text(&e)));
    assert_eq!(proxy.fired(), 1);
    // The client keeps its connection: a fresh store's first connection meets the fault.
    let reader = s3(&server, &proxy, 4, Duration::from_secs(10));
    proxy.add(Rule::once(Link::Main, reset(Direction::ToClient, 600_000)));
    let got = ends_within(Duration::from_mins(1), read_all(&*reader, "f"))
        .await
        .unwrap_or_else(|e| panic!("{}", error_text(&e)));
    assert!(got == bytes);
    assert_eq!(proxy.fired(), 2);
    // Persistent: every connection reset mid-upload; the old object stays.
    proxy.clear();
    proxy.add(Rule::always(Link::Main, reset(Direction::ToServer, 100_000)));
    let store = s3(&server, &proxy, 2, Duration::from_secs(10));
    let err = ends_within(
        Duration::from_mins(2),
        store.put("f", PutSource::Bytes(payload(2 * MIB, 6)), PutMode::Overwrite),
    )
    .await
    .unwrap_err();
    let text = error_text(&err);
    assert!(err.is_transient(), "{text}");
    assert!(
        text.contains("s3://faults/data/f") && text.contains("upload"),
        "{text}"
    );
    proxy.clear();
    let fresh = s3(&server, &proxy, 1, Duration::from_secs(10));
    assert!(read_all(&*fresh, "f").await.unwrap() == bytes);
    // Stalled: the server accepts and never answers.
    proxy.add(Rule::always(
        Link::Main,
        Fault::Stall {
            direction: Direction::ToClient,
            after: 0,
        },
    ));
    let store = s3(&server, &proxy, 2, Duration::from_secs(2));
    let err = ends_within(Duration::from_mins(1), store.head("f"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{}", error_text(&err));
}
