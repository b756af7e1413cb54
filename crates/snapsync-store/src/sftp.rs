//! SFTP servers as stores, through `russh` and `russh-sftp`.
//!
//! `sftp://user[:password]@host[:port]/path`: the path is absolute on the server (`/~/path` is relative
//! to the user's home, as with curl).
//!
//! * **Authentication**: a password known without asking (the URL's, the netrc file's, the keyring's:
//!   [`crate::credentials`]), else the keys of a running ssh-agent
//!   ([`ConnectOptions::with_agent_socket`], `SSH_AUTH_SOCK`), else private key files
//!   ([`ConnectOptions::with_ssh_key`], else `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`; an encrypted key
//!   needs [`ConnectOptions::with_ssh_key_passphrase`]), else a password from the prompt, as `ssh`
//!   asks after its keys. Without a user in the URL, the netrc entry's, else `$USER`, else `root`.
//! * **Host keys** are checked against `~/.ssh/known_hosts` (or [`ConnectOptions::with_known_hosts`]).
//!   An unknown host is refused unless the [`HostKeyPolicy`] is `AcceptNew` (the key is then recorded);
//!   a changed key is always refused.
//! * **Writes never tear**: an object goes to `.NAME.snapsync-PID-N.tmp`, made durable with one
//!   `fsync@openssh.com` (where the server has it), its size is checked, then it is renamed over the
//!   key with `posix-rename@openssh.com` (atomic), or linked to it with `hardlink@openssh.com` for
//!   create-if-absent (atomic: the link fails if the key exists).
//! * One SSH connection carries two SFTP channels (one for files, one for the extensions); requests are
//!   pipelined on them. A dropped connection is replaced on the next operation.
//! * **Listings** are read on the raw channel (`OPENDIR`, `READDIR` to `EOF`, `CLOSE`) and capped at
//!   [`ConnectOptions::with_max_listing_bytes`] (default 128 MiB, as FTP's): a server that never ends
//!   a listing is an error naming the folder.
//! * Every operation has a timeout ([`ConnectOptions::with_timeout`], default 60 s);
//!   [`ConnectOptions::with_connections`] is the number of parallel transfers suggested to callers
//!   (default 8).

//!
//! This module is the protocol only, [`RemoteFs`] for SFTP: the session, the requests and what their
//! statuses mean. The temporary-name puts, the listing walk and the rest of
//! [`Store`](crate::Store) are [`RemoteStore`]'s, shared with FTP.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::fs::File;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::connect::{ConnectOptions, HostKeyPolicy};
use crate::credentials::{Login, Target};
use crate::error::{Error, Result};
use crate::ftp::{DEFAULT_MAX_LISTING_BYTES, listing_too_long};
use crate::remote::{
    self, Activity, DirEntry, Fault, Kind, Probe, READ_CHUNK, RemoteFs, RemoteStore, Touching, Written, fill,
    transient, unless_silent,
};
use crate::source::OpenSource;
use crate::{Capabilities, ObjectMeta, StoreUrl};

const DEFAULT_TIMEOUT: Duration = Duration::from_mins(1);
const DEFAULT_JOBS: usize = 8;
/// What one entry of a listing counts for besides its names: about what its attributes take on the
/// wire (flags, size, ids, permissions, times), so that a server sending endless nameless entries
/// still reaches the cap.
const ENTRY_ALLOWANCE: u64 = 64;

/// An SFTP server. See the module documentation.
pub type SftpStore = RemoteStore<Sftp>;

/// The SFTP protocol under an [`SftpStore`].
pub struct Sftp {
    url: StoreUrl,
    host: String,
    port: u16,
    /// The user and the passwords to try.
    login: Login,
    key_files: Vec<PathBuf>,
    key_passphrase: Option<String>,
    known_hosts: Option<PathBuf>,
    accept_new_host_key: bool,
    /// The ssh-agent socket.
    agent_socket: Option<PathBuf>,
    /// The home directory, for `~/.ssh`.
    home: Option<PathBuf>,
    /// The store's directory on the server, without a trailing `/` (relative to the home when it does
    /// not start with `/`; `""` is the home itself).
    root: String,
    timeout: Duration,
    /// The most bytes one folder's listing may take ([`ConnectOptions::with_max_listing_bytes`]).
    max_listing: u64,
    jobs: usize,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

struct Session {
    handle: Handle<HostCheck>,
    sftp: SftpSession,
    raw: RawSftpSession,
}

/// What the host key check found wrong, for the error message.
#[derive(Clone, Debug)]
enum HostKeyProblem {
    Unknown { fingerprint: String },
    Changed { file: PathBuf, line: usize },
    Unreadable(String),
}

struct HostCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    problem: Arc<Mutex<Option<HostKeyProblem>>>,
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        let record = |p: HostKeyProblem| {
            *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
            Ok(false)
        };
        match russh::keys::check_known_hosts_path(&self.host, self.port, &key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.accept_new => {
                if let Some(dir) = self.known_hosts.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    &key,
                    &self.known_hosts,
                ) {
                    Ok(()) => Ok(true),
                    Err(e) => record(HostKeyProblem::Unreadable(format!(
                        "cannot record the host key in {}: {e}",
                        self.known_hosts.display()
                    ))),
                }
            }
            Ok(false) => record(HostKeyProblem::Unknown {
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            }),
            Err(russh::keys::Error::KeyChanged { line }) => record(HostKeyProblem::Changed {
                file: self.known_hosts.clone(),
                line,
            }),
            Err(e) => record(HostKeyProblem::Unreadable(format!(
                "cannot read {}: {e}",
                self.known_hosts.display()
            ))),
        }
    }
}

impl SftpStore {
    /// A store for an `sftp://` URL, reached with the keys, host key checks, timeout and connections
    /// of `options`. Nothing is connected until the first operation.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL without a host.
    pub fn open(url: &StoreUrl, options: &ConnectOptions) -> Result<SftpStore> {
        let parts = remote::url_parts(url, "sftp://HOST/path")?;
        let port = parts.port.unwrap_or(22);
        let target = Target {
            scheme: "sftp".to_owned(),
            host: parts.host.clone(),
            port,
        };
        let login = Login::new(
            &url.to_string(),
            target,
            parts.user.as_deref(),
            parts.password.as_deref(),
            Some(options.user.clone().unwrap_or_else(|| "root".into())),
            &options.credentials,
        )?;
        let root = match parts.path.strip_prefix("/~") {
            Some(rest) => rest.trim_matches('/').to_owned(),
            None => parts.path.trim_end_matches('/').to_owned(),
        };
        Ok(RemoteStore::new(Sftp {
            url: url.clone(),
            port,
            host: parts.host,
            login,
            key_files: options.ssh_keys.clone(),
            key_passphrase: options.ssh_key_passphrase.clone(),
            known_hosts: options.known_hosts.clone(),
            accept_new_host_key: options.host_key_policy == HostKeyPolicy::AcceptNew,
            agent_socket: options.agent_socket.clone(),
            home: options.home.clone(),
            root,
            timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_listing: options.max_listing_bytes.unwrap_or(DEFAULT_MAX_LISTING_BYTES),
            jobs: options.connections.map_or(DEFAULT_JOBS, NonZeroUsize::get),
            session: tokio::sync::Mutex::default(),
        }))
    }
}

/// russh-sftp's per-request limit, in seconds, for a store whose timeout is `timeout` (see
/// `Sftp::open_session`): ten timeouts, and never less than a day, since an `fsync` may be allowed
/// hours ([`durability_allowance`]). Every request runs under a watch on silence
/// (`Sftp::run_moving`); this only frees, at last, a request whose operation was given up.
fn request_backstop(timeout: Duration) -> u64 {
    timeout.as_secs().max(1).saturating_mul(10).max(86_400)
}

/// The slowest disk, in bytes per second, a server is assumed to write to: an `fsync` of a file of
/// `n` bytes may keep the server silent for `n / SLOWEST_DISK` seconds beyond the timeout (10 GiB:
/// about 21 minutes) before the upload is given up as stalled. A busy or slow disk takes minutes to
/// make gigabytes durable; a timeout that did not allow for it failed a 10 GiB push on a loaded
/// machine (docs/BENCHMARKS.md).
const SLOWEST_DISK: u64 = 8 << 20;

/// How much longer than the timeout the `fsync` of `sent` bytes may keep the server silent.
fn durability_allowance(sent: u64) -> Duration {
    Duration::from_secs(sent / SLOWEST_DISK)
}

/// Whether an SFTP failure means the connection is gone (russh-sftp reports a closed channel as
/// "session closed", "sender dropped" or a failed send or receive).
fn connection_lost(error: &SftpError) -> bool {
    match error {
        SftpError::IO(_) | SftpError::Timeout => true,
        SftpError::Status(status) => matches!(
            status.status_code,
            StatusCode::NoConnection | StatusCode::ConnectionLost
        ),
        SftpError::UnexpectedBehavior(text) => ["session closed", "sender dropped", "SendError", "RecvError"]
            .iter()
            .any(|needle| text.contains(needle)),
        _ => false,
    }
}

/// An SFTP failure as a store error.
fn sftp_error(location: &str, error: SftpError) -> Error {
    if connection_lost(&error) {
        return transient(location, error);
    }
    match &error {
        SftpError::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => Error::NotFound {
                location: location.to_owned(),
            },
            StatusCode::PermissionDenied => Error::PermissionDenied {
                location: location.to_owned(),
                source: Box::new(error),
            },
            StatusCode::NoConnection | StatusCode::ConnectionLost => transient(location, error),
            _ => Error::Other {
                location: location.to_owned(),
                source: Box::new(error),
            },
        },
        SftpError::IO(_) | SftpError::Timeout => transient(location, error),
        _ => Error::Other {
            location: location.to_owned(),
            source: Box::new(error),
        },
    }
}

impl Sftp {
    /// The open session, or a new one when there is none or the connection has closed.
    async fn session(&self, location: &str) -> Result<Arc<Session>> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref()
            && !session.handle.is_closed()
        {
            return Ok(Arc::clone(session));
        }
        // The timeout applies to each step with the server inside, not to a person typing a password.
        let session = Arc::new(self.connect(location).await?);
        *current = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Forgets a session whose connection failed, so that the next operation makes a new one.
    async fn forget(&self, session: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *current = None;
        }
    }

    async fn connect(&self, location: &str) -> Result<Session> {
        let server = self.url.with_key("");
        log::debug!("connecting to {server}");
        let known_hosts = self
            .known_hosts
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".ssh/known_hosts")))
            .ok_or_else(|| Error::Other {
                location: server.clone(),
                source: "no known_hosts file: HOME is not set".into(),
            })?;
        let problem = Arc::new(Mutex::new(None));
        let check = HostCheck {
            host: self.host.clone(),
            port: self.port,
            known_hosts,
            accept_new: self.accept_new_host_key,
            problem: Arc::clone(&problem),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_mins(10)),
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..client::Config::default()
        });
        let connected = tokio::time::timeout(
            self.timeout,
            client::connect(config, (self.host.as_str(), self.port), check),
        )
        .await
        .map_err(|_| transient(&server, format!("no answer within {:?}", self.timeout)))?;
        let host_problem = problem.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut handle = match (connected, host_problem) {
            (_, Some(problem)) => {
                let text = match problem {
                    HostKeyProblem::Unknown { fingerprint } => format!(
                        "the host key of {}:{} is not known ({fingerprint}); check it and add it to known_hosts \
                         (ssh-keyscan), or accept it once with --accept-new-host-key",
                        self.host, self.port
                    ),
                    HostKeyProblem::Changed { file, line } => format!(
                        "the host key of {}:{} has CHANGED since it was recorded in {} line {line}: this may be \
                         an attack; if the server was reinstalled, remove that line",
                        self.host,
                        self.port,
                        file.display()
                    ),
                    HostKeyProblem::Unreadable(text) => text,
                };
                return Err(Error::PermissionDenied {
                    location: server,
                    source: text.into(),
                });
            }
            (Ok(handle), None) => handle,
            (Err(e), None) => return Err(transient(&server, e)),
        };
        self.authenticate(&mut handle, &server).await?;
        tokio::time::timeout(self.timeout, Self::open_session(handle, location, self.timeout))
            .await
            .map_err(|_| transient(location, format!("no answer within {:?}", self.timeout)))?
    }

    /// The two SFTP channels on a logged-in connection.
    async fn open_session(handle: Handle<HostCheck>, location: &str, timeout: Duration) -> Result<Session> {
        let open_channel = async {
            let channel = handle.channel_open_session().await?;
            channel.request_subsystem(true, "sftp").await?;
            Ok::<_, russh::Error>(channel.into_stream())
        };
        let files = open_channel.await.map_err(|e| transient(location, e))?;
        let sftp = SftpSession::new(files)
            .await
            .map_err(|e| sftp_error(location, e))?;
        // russh-sftp's own limit is per request, and a download keeps many requests in flight: over
        // a slow link the last of them waits its turn well past the timeout while bytes keep
        // coming. Silence is watched above (each operation, each read of a download); this is only
        // a backstop.
        sftp.set_timeout(request_backstop(timeout));
        let extension_channel = async {
            let channel = handle.channel_open_session().await?;
            channel.request_subsystem(true, "sftp").await?;
            Ok::<_, russh::Error>(channel.into_stream())
        };
        let raw = RawSftpSession::new(extension_channel.await.map_err(|e| transient(location, e))?);
        raw.set_timeout(request_backstop(timeout));
        raw.init().await.map_err(|e| sftp_error(location, e))?;
        Ok(Session { handle, sftp, raw })
    }

    /// Logs in: a password known without asking, else the agent's and the files' keys, else the
    /// prompt's passwords (asked again, up to three times, when the server refuses one).
    async fn authenticate(&self, handle: &mut Handle<HostCheck>, server: &str) -> Result<()> {
        let denied = |why: String| Error::PermissionDenied {
            location: server.to_owned(),
            source: why.into(),
        };
        let timed_out = || transient(server, format!("no answer within {:?}", self.timeout));
        let user = self.login.user().unwrap_or("root");
        let mut attempts = self.login.attempts().await;
        let mut keys_refused = None;
        if attempts.known().is_none() {
            match tokio::time::timeout(self.timeout, self.authenticate_with_keys(handle, server, user)).await
            {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(why))) if !attempts.can_ask() => return Err(denied(why)),
                Ok(Ok(Some(why))) => keys_refused = Some(why),
            }
        }
        loop {
            let Some(password) = attempts.next().await? else {
                return Err(denied(keys_refused.unwrap_or_else(|| {
                    format!("no password to log in as {user:?} (none typed)")
                })));
            };
            let result = tokio::time::timeout(
                self.timeout,
                handle.authenticate_password(user, password.as_str()),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| transient(server, e))?;
            if result.success() {
                attempts.accepted();
                return Ok(());
            }
            attempts.refused("the server refused the password")?;
        }
    }

    /// Logs in with the agent's keys, then the key files. `Ok(None)` when one was accepted,
    /// `Ok(Some(why))` when none was.
    async fn authenticate_with_keys(
        &self,
        handle: &mut Handle<HostCheck>,
        server: &str,
        user: &str,
    ) -> Result<Option<String>> {
        let denied = |why: String| Error::PermissionDenied {
            location: server.to_owned(),
            source: why.into(),
        };
        let failed = |e: russh::Error| transient(server, e);
        let rsa_hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        // The agent first, as ssh does.
        if let Some(socket) = &self.agent_socket
            && let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_uds(socket).await
        {
            for identity in agent.request_identities().await.unwrap_or_default() {
                if let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity {
                    let hash = if key.algorithm().is_rsa() { rsa_hash } else { None };
                    if let Ok(result) = handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                        && result.success()
                    {
                        return Ok(None);
                    }
                }
            }
        }
        let candidates: Vec<PathBuf> = if self.key_files.is_empty() {
            self.home
                .as_ref()
                .map(|h| {
                    ["id_ed25519", "id_ecdsa", "id_rsa"]
                        .iter()
                        .map(|n| h.join(".ssh").join(n))
                        .filter(|p| p.exists())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.key_files.clone()
        };
        let mut tried = Vec::new();
        for file in candidates {
            let key = russh::keys::load_secret_key(&file, self.key_passphrase.as_deref()).map_err(|e| {
                denied(format!(
                    "cannot use the private key {}: {e}{}",
                    file.display(),
                    if self.key_passphrase.is_none() {
                        " (is it encrypted? give its passphrase)"
                    } else {
                        ""
                    }
                ))
            })?;
            let hash = if key.algorithm().is_rsa() { rsa_hash } else { None };
            let result = handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(failed)?;
            if result.success() {
                return Ok(None);
            }
            tried.push(file.display().to_string());
        }
        Ok(Some(if tried.is_empty() {
            format!(
                "no password, no ssh-agent key and no private key to log in as {user:?} (give a password in the \
                 URL, ~/.netrc or the keyring, type it on a terminal, or give a key file)"
            )
        } else {
            format!("the server refused the keys of {user:?}: {}", tried.join(", "))
        }))
    }

    /// Runs one SFTP operation on the session; a failed connection is forgotten (and reported as a
    /// temporary failure), and an operation on a connection that turns out to be closed runs again on
    /// a new one.
    async fn run<T, F, Fut>(&self, location: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Session>) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = std::result::Result<T, SftpError>> + Send,
    {
        self.run_moving(location, |session, _| op(session)).await
    }

    /// [`Sftp::run`] of an operation that moves data: its timeout is a limit on silence, `op`
    /// marks the [`Activity`] as its transfer moves (an upload that keeps going is never cut).
    async fn run_moving<T, F, Fut>(&self, location: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Session>, Activity) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = std::result::Result<T, SftpError>> + Send,
    {
        let mut retried = false;
        loop {
            let session = self.session(location).await?;
            let activity = Activity::new();
            let work = op(Arc::clone(&session), activity.clone());
            let result = unless_silent(self.timeout, &activity, work).await.ok_or(());
            match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    let lost = connection_lost(&e) || session.handle.is_closed();
                    if lost {
                        self.forget(&session).await;
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(sftp_error(location, e));
                }
                Err(()) => {
                    self.forget(&session).await;
                    return Err(transient(
                        location,
                        format!("no answer within {:?}", self.timeout),
                    ));
                }
            }
        }
    }

    /// [`Sftp::run`] of a request about one path.
    async fn on<T, F, Fut>(&self, path: &str, location: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<Session>, String) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = std::result::Result<T, SftpError>> + Send,
    {
        let path = path.to_owned();
        self.run(location, move |s| op(s, path.clone())).await
    }
}

/// The server's name for `path`: `.`, the login directory, for `""`.
fn server_path(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn to_seconds(t: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(t))
}

/// The entries of the directory `dir` (`.` and `..` left out), read with `OPENDIR`, `READDIR` until
/// the server says `EOF`, and `CLOSE` (also after a failure), or `None` once the listing has taken
/// more than `max` bytes: its names, long names and [`ENTRY_ALLOWANCE`] for each entry. Each reply
/// marks `activity`: a long listing that keeps coming is not silence; the cap ends one that never
/// does. (russh-sftp's `SftpSession::read_dir` has no cap and copies every entry again at each
/// reply.)
async fn read_dir_capped(
    raw: &RawSftpSession,
    dir: String,
    max: u64,
    activity: &Activity,
) -> std::result::Result<Option<Vec<(String, FileAttributes)>>, SftpError> {
    let handle = raw.opendir(dir).await?.handle;
    let mut entries = Vec::new();
    let mut total = 0u64;
    let outcome = loop {
        match raw.readdir(handle.as_str()).await {
            Ok(name) => {
                activity.touch();
                for file in name.files {
                    total = total
                        .saturating_add(file.filename.len() as u64)
                        .saturating_add(file.longname.len() as u64)
                        .saturating_add(ENTRY_ALLOWANCE);
                    if total > max {
                        break;
                    }
                    if !matches!(file.filename.as_str(), "." | "..") {
                        entries.push((file.filename, file.attrs));
                    }
                }
                if total > max {
                    break Ok(None);
                }
            }
            Err(SftpError::Status(status)) if status.status_code == StatusCode::Eof => {
                break Ok(Some(entries));
            }
            Err(e) => break Err(e),
        }
    };
    // Closed whatever the outcome. A failed close leaves one handle open on the server, nothing
    // more: the listing's own outcome is what counts (a lost connection shows at the next request).
    let _ = raw.close(handle).await;
    outcome
}

/// Sends all of `reader` to `file` without flushing it; the bytes sent.
///
/// Not `tokio::io::copy_buf`: it flushes the writer whenever the reader makes it wait, and a flush of
/// a russh-sftp file is an `fsync@openssh.com` round trip, which OpenSSH's single-threaded server
/// carries out before any other request of the session: two per small file, one per wait of a large
/// one (each an fsync of all that file's bytes so far), with every transfer of the session waiting on
/// each. The writes stay pipelined; the caller makes them durable once, at the end.
async fn send_unflushed(
    reader: &mut (impl AsyncBufRead + Unpin),
    file: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<u64> {
    let mut sent = 0u64;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(sent);
        }
        // A write at a time, consumed at once: the source marks the transfer as moving when its
        // bytes are consumed, so a large buffer written whole over a slow link would look silent.
        let n = file.write(chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        reader.consume(n);
        sent += n as u64;
    }
}

#[async_trait]
impl RemoteFs for Sftp {
    type Reader = File;

    const NAME: &'static str = "SftpStore";

    fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_rename: true,
            server_side_copy: false,
            set_mtime: true,
            atomic_create: true,
            directories: true,
            default_jobs: self.jobs,
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn root_path(&self) -> &str {
        &self.root
    }

    /// `NoSuchFile` is plain: a missing prefix lists as empty without a look; a prefix that is a file
    /// (OpenSSH answers with a failure) as well, once `stat` showed the file. A listing longer than
    /// the cap ([`ConnectOptions::with_max_listing_bytes`]) is an error naming the folder.
    async fn list_dir(&self, dir: &str, top: bool, location: &str) -> Result<Vec<DirEntry>> {
        let target = server_path(dir);
        let max = self.max_listing;
        let listed = self
            .run_moving(location, |s, activity| {
                let dir = target.to_owned();
                async move { read_dir_capped(&s.raw, dir, max, &activity).await }
            })
            .await;
        let listed = match listed {
            Ok(Some(entries)) => Ok(entries),
            Ok(None) => return Err(listing_too_long(location, target, max)),
            Err(e) => Err(e),
        };
        let entries = match listed {
            Ok(entries) => entries,
            Err(Error::NotFound { .. }) if top => Vec::new(),
            // Not a directory (a key that is a file): nothing below it.
            Err(e @ Error::Other { .. }) if top => match self.stat(target, location).await {
                Ok(_) => Vec::new(),
                Err(_) => return Err(e),
            },
            // Found in its parent's listing, gone (or no longer a directory) now: not an empty one.
            Err(Error::NotFound { .. }) => {
                return Err(Error::Other {
                    location: location.to_owned(),
                    source: "it was in its parent's listing, then could not be listed: the server says \
                             there is no such directory"
                        .into(),
                });
            }
            // No permission, among others: an error as it is.
            Err(e) => return Err(e),
        };
        Ok(entries
            .into_iter()
            .map(|(name, attrs)| {
                let kind = match attrs.file_type() {
                    t if t.is_file() => Kind::File,
                    t if t.is_dir() => Kind::Dir,
                    _ => Kind::Other,
                };
                DirEntry {
                    name,
                    kind,
                    size: attrs.len(),
                    modified: attrs.mtime.map(to_seconds),
                }
            })
            .collect())
    }

    /// `STAT` (links followed).
    async fn probe(&self, path: &str, location: &str) -> Result<Probe> {
        let meta = self
            .on(server_path(path), location, |s, path| async move {
                s.sftp.metadata(path).await
            })
            .await;
        match meta {
            Ok(meta) if meta.file_type().is_dir() => Ok(Probe::Dir),
            Ok(meta) if meta.file_type().is_file() => Ok(Probe::File),
            Ok(_) => Ok(Probe::Other),
            Err(Error::NotFound { .. }) => Ok(Probe::Missing),
            Err(e) => Err(e),
        }
    }

    /// `LSTAT`.
    async fn stat(&self, path: &str, location: &str) -> Result<ObjectMeta> {
        let meta = self
            .on(path, location, |s, path| async move {
                s.sftp.symlink_metadata(path).await
            })
            .await?;
        if !meta.file_type().is_file() {
            return Err(Error::NotFound {
                location: location.to_owned(),
            });
        }
        Ok(ObjectMeta {
            key: String::new(),
            size: meta.len(),
            modified: meta.mtime.map(to_seconds),
            etag: None,
        })
    }

    /// `MKDIR`: a status (OpenSSH says `Failure` for one that exists) is [`Fault::Refused`].
    async fn mkdir(&self, path: &str, location: &str) -> Result<(), Fault> {
        let made = self
            .on(path, location, |s, path| async move {
                match s.sftp.create_dir(path).await {
                    Err(SftpError::Status(status)) => Ok(Err(SftpError::Status(status))),
                    other => other.map(Ok),
                }
            })
            .await
            .map_err(Fault::Failed)?;
        made.map_err(|status| Fault::Refused(sftp_error(location, status)))
    }

    /// `RMDIR`: OpenSSH answers a directory that is not empty, missing or not a directory alike.
    async fn rmdir(&self, path: &str, location: &str) -> Result<(), Fault> {
        let result = self
            .on(
                path,
                location,
                |s, path| async move { s.sftp.remove_dir(path).await },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e @ (Error::NotFound { .. } | Error::Other { .. })) => Err(Fault::Refused(e)),
            Err(e) => Err(Fault::Failed(e)),
        }
    }

    /// `REMOVE`: `NoSuchFile` is plain, and fine.
    async fn remove_file(&self, path: &str, location: &str) -> Result<(), Fault> {
        let result = self
            .on(
                path,
                location,
                |s, path| async move { s.sftp.remove_file(path).await },
            )
            .await;
        match result {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Fault::Failed(e)),
        }
    }

    /// `posix-rename@openssh.com`: replaces the target atomically.
    async fn rename(&self, from: &str, to: &str, location: &str) -> Result<(), Fault> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.run(location, move |s| {
            let mut data = Vec::new();
            for part in [&from, &to] {
                data.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                data.extend_from_slice(part.as_bytes());
            }
            async move {
                match s.raw.extended("posix-rename@openssh.com", data).await? {
                    Packet::Status(status) if status.status_code != StatusCode::Ok => {
                        Err(SftpError::Status(status))
                    }
                    _ => Ok(()),
                }
            }
        })
        .await
        .map_err(Fault::Failed)
    }

    /// `hardlink@openssh.com`, which fails when `to` exists.
    async fn hard_link(&self, from: &str, to: &str, location: &str) -> Result<bool> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.run(location, move |s| {
            let (from, to) = (from.clone(), to.clone());
            async move { s.sftp.hardlink(from.as_str(), to.as_str()).await }
        })
        .await
    }

    /// `OPEN` (create, truncate), the bytes (pipelined, never flushed on the way: [`send_unflushed`]),
    /// one `fsync@openssh.com`, `CLOSE`, then `LSTAT` (the size and time, as `stat`).
    async fn write(&self, path: &str, source: &OpenSource, location: &str) -> Result<Written> {
        let (path, source) = (path.to_owned(), source.clone());
        self.run_moving(location, move |s, activity| {
            let (path, source) = (path.clone(), source.clone());
            async move {
                // Not an I/O error: that would count as a lost connection.
                let reader = source
                    .reader(READ_CHUNK)
                    .await
                    .map_err(|e| SftpError::UnexpectedBehavior(e.to_string()))?;
                let mut reader = Touching::new(reader, activity.clone());
                let mut file = s
                    .sftp
                    .open_with_flags(
                        path.as_str(),
                        OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                    )
                    .await?;
                let sent = send_unflushed(&mut reader, &mut file).await?;
                // One `fsync@openssh.com`: the bytes are on the server's disk before the rename
                // publishes them, as a local store's write is. The server answers only once its disk
                // has them all, which can be gigabytes still in its page cache: that silence is
                // allowed for as a disk of `SLOWEST_DISK` would need.
                activity.allow(durability_allowance(sent));
                file.sync_all().await?;
                file.shutdown().await?;
                let meta = s.sftp.symlink_metadata(path.as_str()).await?;
                Ok(Written {
                    sent,
                    size: meta.len(),
                    modified: meta.mtime.map(to_seconds),
                })
            }
        })
        .await
    }

    async fn open_read(&self, path: &str, location: &str) -> Result<File> {
        self.on(path, location, |s, path| async move { s.sftp.open(path).await })
            .await
    }

    async fn finish_read(&self, file: File, _location: &str) -> Result<()> {
        // Closed in the background when dropped.
        drop(file);
        Ok(())
    }

    async fn read_range(&self, path: &str, range: Range<u64>, location: &str) -> Result<Bytes> {
        let want = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let start = range.start;
        self.on(path, location, |s, path| async move {
            let mut file = s.sftp.open(path).await?;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            let mut buf = BytesMut::with_capacity(want.min(1 << 24));
            fill(&mut file, &mut buf, want).await?;
            buf.truncate(want);
            Ok(buf.freeze())
        })
        .await
    }

    /// `SETSTAT` of both times (seconds since 1970, in 32 bits).
    async fn set_mtime(&self, path: &str, mtime: SystemTime, location: &str) -> Result<()> {
        let seconds = mtime
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u32::try_from(d.as_secs()).ok())
            .ok_or_else(|| Error::Other {
                location: location.to_owned(),
                source: format!("{mtime:?} cannot be sent over SFTP (seconds since 1970 in 32 bits)").into(),
            })?;
        let attrs = FileAttributes {
            atime: Some(seconds),
            mtime: Some(seconds),
            ..FileAttributes::empty()
        };
        self.on(path, location, |s, path| {
            let attrs = attrs.clone();
            async move { s.sftp.set_metadata(path, attrs).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn urls_configure_the_store() {
        let url = StoreUrl::parse("sftp://me:p%40ss@example.com:2222/srv/data/").unwrap();
        let options = ConnectOptions::default()
            .with_connections(NonZeroUsize::new(3).unwrap())
            .with_host_key_policy(HostKeyPolicy::AcceptNew);
        let store = SftpStore::open(&url, &options).unwrap();
        let inner = &store.fs;
        assert_eq!(
            (
                inner.host.as_str(),
                inner.port,
                inner.login.user(),
                inner.login.known_password()
            ),
            ("example.com", 2222, Some("me"), Some("p@ss"))
        );
        assert_eq!(inner.root, "/srv/data");
        assert!(inner.accept_new_host_key);
        assert_eq!(inner.path("a b/c").unwrap(), "/srv/data/a b/c");
        assert_eq!(store.capabilities().default_jobs, 3);
        assert!(!format!("{store:?}").contains("p@ss"));
        let home = SftpStore::open(
            &StoreUrl::parse("sftp://me@h/~/backups").unwrap(),
            &ConnectOptions::default(),
        )
        .unwrap();
        assert_eq!(home.fs.root, "backups");
        assert_eq!(home.fs.path("k").unwrap(), "backups/k");
        assert!(!home.fs.accept_new_host_key);
        assert_eq!((home.fs.jobs, home.fs.timeout), (DEFAULT_JOBS, DEFAULT_TIMEOUT));
        // Without a user in the URL: the environment's, else root.
        let url = StoreUrl::parse("sftp://h/x").unwrap();
        let options = ConnectOptions::from_vars([("USER", "backup")]);
        assert_eq!(
            SftpStore::open(&url, &options).unwrap().fs.login.user(),
            Some("backup")
        );
        let nobody = SftpStore::open(&url, &ConnectOptions::default()).unwrap();
        assert_eq!(nobody.fs.login.user(), Some("root"));
    }

    /// A writer that keeps what it is sent and counts the flushes asked of it.
    #[derive(Default)]
    struct CountingWriter {
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.flushes += 1;
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A flush of an SFTP file is an fsync the server does before anything else: an upload must not
    /// ask for one each time its source makes it wait (as `tokio::io::copy_buf` does, two or more per
    /// file), which made an upload of many small files wait on the server's disk at every file.
    #[tokio::test]
    async fn an_upload_sends_everything_without_a_flush_even_from_a_source_that_waits() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // A source that makes the writer wait between its chunks, as a file read on a blocking
        // thread does.
        let (mut source_end, reader) = tokio::io::duplex(4096);
        let sending = data.clone();
        let feeder = tokio::spawn(async move {
            for chunk in sending.chunks(3000) {
                source_end.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut reader = tokio::io::BufReader::with_capacity(8192, reader);
        let mut writer = CountingWriter::default();
        let sent = send_unflushed(&mut reader, &mut writer).await.unwrap();
        feeder.await.unwrap();
        assert_eq!(sent, data.len() as u64);
        assert!(writer.bytes == data, "the bytes arrived changed");
        assert_eq!(writer.flushes, 0);
    }
}
