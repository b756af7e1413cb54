//! FTP and FTPS servers as stores, through `suppaftp` (tokio) with rustls for TLS.
//!
//! `ftp://[user[:password]@]host[:port]/path` and `ftps://…` (explicit TLS: `AUTH TLS` on the control
//! connection, `PROT P` for data). The URL's path is the store's root, absolute on the server. The
//! password comes from the URL, a netrc file, the keyring or a prompt ([`crate::credentials`]); without
//! a user (in the URL or the netrc file) the login is anonymous.
//!
//! * **Writes never tear.** An object is uploaded to `.NAME.snapsync-PID-N.tmp` in its directory, its
//!   size is checked with `SIZE`, and it is renamed over the key (`RNFR`/`RNTO`; servers that refuse to
//!   rename over a file get `DELE` first). A killed upload leaves only a temporary file, which listings
//!   do not show. Missing directories are created on the way (`MKD`).
//! * **Listings** use `MLSD` where the server offers `MLST` in `FEAT`, otherwise `LIST -a` parsed as
//!   Unix or DOS lines (`LIST` times are coarse: minutes, or days for old files). Directories are
//!   walked in parallel, one connection each. Symbolic links are not followed and not listed.
//!   Only the prefix asked for may be missing (an empty listing); a directory that a listing found and
//!   the server then refuses to list is an error naming it, never an empty directory, vsftpd's
//!   `226 Transfer done (but failed to open directory)` with an empty `LIST` included.
//! * **Missing or refused?** Servers answer `550` to both. To a read (`RETR`, `SIZE`, `MDTM`, `MLST`) it
//!   is taken as [`Error::NotFound`], to a write (`STOR`, `RNTO`, `MKD`, `DELE`, `RMD`) as
//!   [`Error::PermissionDenied`] with the server's words. Where it matters (the root, a listing's
//!   prefix, a lock) the path is looked for: `CWD` into it proves a directory; otherwise the parent's
//!   listing shows whether the name is there (a parent that cannot be listed either makes it "cannot be
//!   told", an error, unless the parent itself is missing). `452`, `552` and replies that name a full
//!   disk or a quota are [`Error::StorageFull`], never retried.
//! * **Locks** ([`Store::lock_create`]): no FTP file operation is exclusive, but `MKD` is (the second
//!   client's fails), so a lock is the directory `key` with its body in `key/owner` (stored through a
//!   temporary name, like any object; listings show the lock as `key/owner`). A lock directory without
//!   `owner` is a lock being made: [`Store::lock_read`] gives an empty body. A lock file left by an older
//!   version (a plain file at `key`) is read, refused and removed as a lock too.
//! * **Times**: `head` uses `MLST` or `SIZE` + `MDTM`; `set_mtime` uses `MFMT`, or vsftpd's
//!   `MDTM YYYYMMDDHHMMSS path`, and says [`Error::Unsupported`] where the server has neither.
//! * **Connections** come from a small pool ([`ConnectOptions::with_connections`], default 4), each
//!   logged in once, set to binary, UTF-8 where the server offers it, passive mode with the control
//!   connection's address (servers behind NAT announce unusable ones). An idle connection is checked
//!   with `NOOP` before reuse and replaced if the server dropped it. Every command has a timeout
//!   ([`ConnectOptions::with_timeout`], default 60 s).
//!
//! FTPS trusts the system's certificates and those of [`ConnectOptions::with_ca_file`]
//! (`SNAPSYNC_CA_FILE`).
//!
//! This module is the protocol only, [`RemoteFs`] for FTP: connections, commands and what the replies
//! mean. The temporary-name puts, the listing walk, the directory locks and the rest of [`Store`] are
//! [`RemoteStore`]'s, shared with SFTP.
//!
//! [`Store`]: crate::Store
//! [`Store::lock_create`]: crate::Store::lock_create
//! [`Store::lock_read`]: crate::Store::lock_read

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use suppaftp::list::ListParser;
use suppaftp::tokio::{AsyncTlsConnector, ImplAsyncFtpStream, TokioTlsStream, TransferStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::client::TlsStream;
use suppaftp::tokio_rustls::rustls::{self, RootCertStore};
use suppaftp::types::{FileType, Response};
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connect::ConnectOptions;
use crate::credentials::{Login, Target};
use crate::error::{Error, Result};
use crate::remote::{
    self, Activity, DirEntry, Fault, Kind, Probe, READ_CHUNK, RemoteFs, RemoteStore, Touching, Written, fill,
    transient, unless_silent,
};
use crate::source::OpenSource;
use crate::{Capabilities, ObjectMeta, Scheme, StoreUrl, check_key};

type Client = ImplAsyncFtpStream<FlushingTls>;

/// Connections per store unless configured.
const DEFAULT_CONNECTIONS: usize = 4;
/// Per-command timeout unless configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(1);
/// The most bytes of one folder's listing read unless configured: about a million entries, far more
/// than any real folder holds, and a bound on what a server that never ends a listing can make
/// snapsync keep in memory.
pub const DEFAULT_MAX_LISTING_BYTES: u64 = 128 << 20;

/// The error of a listing of `dir` cut at `max` bytes (FTP's and SFTP's).
pub(crate) fn listing_too_long(location: &str, dir: &str, max: u64) -> Error {
    Error::Other {
        location: location.to_owned(),
        source: format!(
            "the server's listing of {dir} is longer than {max} bytes, the most snapsync reads of one \
             folder (SNAPSYNC_MAX_LISTING_BYTES)"
        )
        .into(),
    }
}
/// An idle connection older than this is checked with `NOOP` before it is used again.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);

/// An FTP or FTPS server. See the module documentation.
pub type FtpStore = RemoteStore<Ftp>;

/// The FTP protocol under an [`FtpStore`].
pub struct Ftp {
    url: StoreUrl,
    host: String,
    port: u16,
    /// The user and the passwords to try.
    login: Login,
    /// The store's directory on the server: absolute, without a trailing `/` (`""` for `/`).
    root: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    /// The most bytes one folder's listing may take ([`ConnectOptions::with_max_listing_bytes`]).
    max_listing: u64,
    connections: usize,
    idle: Arc<Mutex<Vec<(Conn, Instant)>>>,
    permits: Arc<Semaphore>,
    /// What the server said in `FEAT`, once a connection has asked.
    features: Mutex<Option<Features>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Features {
    mlst: bool,
    mfmt: bool,
}

struct Conn {
    client: Client,
    features: Features,
}

impl FtpStore {
    /// A store for an `ftp://` or `ftps://` URL, reached with the connections, timeout and CA file of
    /// `options`. Nothing is connected until the first operation.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL without a host, or an unreadable CA file.
    pub fn open(url: &StoreUrl, options: &ConnectOptions) -> Result<FtpStore> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let parts = remote::url_parts(url, "ftp://HOST/path")?;
        let port = parts.port.unwrap_or(21);
        let target = Target {
            scheme: url.scheme().name().to_owned(),
            host: parts.host.clone(),
            port,
        };
        let login = Login::new(
            &url.to_string(),
            target,
            parts.user.as_deref(),
            parts.password.as_deref(),
            None,
            &options.credentials,
        )?;
        let root = parts.path.trim_end_matches('/').to_owned();
        if root.contains(['\r', '\n']) {
            return Err(invalid("the path contains a line break".into()));
        }
        let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let connections = options.connections.map_or(DEFAULT_CONNECTIONS, NonZeroUsize::get);
        let tls = match url.scheme() {
            Scheme::Ftps => Some(Arc::new(tls_config(options.ca_file.as_deref()).map_err(invalid)?)),
            _ => None,
        };
        Ok(RemoteStore::new(Ftp {
            url: url.clone(),
            port,
            host: parts.host,
            login,
            root,
            tls,
            timeout,
            max_listing: options.max_listing_bytes.unwrap_or(DEFAULT_MAX_LISTING_BYTES),
            connections,
            idle: Arc::default(),
            permits: Arc::new(Semaphore::new(connections)),
            features: Mutex::default(),
        }))
    }
}

/// The TLS client configuration: the system's trusted roots plus those in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are not fatal: a `ca_file` may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
            .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A TLS stream that sends what it is given without waiting for a flush.
///
/// suppaftp writes each command with `write_all` and then waits for the reply without flushing; a TLS
/// stream may keep the encrypted command in its buffer (when the socket is not writable at that
/// instant), and then client and server wait for each other forever (seen with vsftpd under parallel
/// transfers). Here every write tries to flush at once, and every read first flushes what is pending.
#[derive(Debug)]
pub(crate) struct FlushingTls(TlsStream<TcpStream>);

impl AsyncRead for FlushingTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let std::task::Poll::Ready(Err(e)) = std::pin::Pin::new(&mut self.0).poll_flush(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushingTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::task::ready!(std::pin::Pin::new(&mut self.0).poll_write(cx, buf))?;
        // Not finished now: the next read or write carries on with it.
        let _ = std::pin::Pin::new(&mut self.0).poll_flush(cx);
        std::task::Poll::Ready(Ok(written))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl TokioTlsStream for FlushingTls {
    type InnerStream = TlsStream<TcpStream>;

    fn tcp_stream(self) -> suppaftp::FtpResult<TcpStream> {
        Ok(self.0.into_inner().0)
    }

    fn get_ref(&self) -> &TcpStream {
        self.0.get_ref().0
    }

    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        &mut self.0
    }
}

/// Makes [`FlushingTls`] streams for suppaftp.
struct FlushingConnector(TlsConnector);

impl fmt::Debug for FlushingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlushingConnector")
    }
}

#[async_trait]
impl AsyncTlsConnector for FlushingConnector {
    type Stream = FlushingTls;

    async fn connect(&self, domain: &str, stream: TcpStream) -> suppaftp::FtpResult<FlushingTls> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        self.0
            .connect(name, stream)
            .await
            .map(FlushingTls)
            .map_err(|e| FtpError::SecureError(e.to_string()))
    }
}

/// A connection taken from the pool; it goes back when dropped, if the operation marked it reusable.
struct Pooled {
    conn: Option<Conn>,
    idle: Arc<Mutex<Vec<(Conn, Instant)>>>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.reusable
            && let Some(conn) = self.conn.take()
        {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((conn, Instant::now()));
        }
    }
}

impl Pooled {
    fn client(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("a pooled connection").client
    }

    fn features(&self) -> Features {
        self.conn.as_ref().map(|c| c.features).unwrap_or_default()
    }
}

/// How an FTP operation failed: the server refused with a reply (the connection is fine), or
/// something else happened (already a store error).
enum Failure {
    Reply(Response),
    Store(Error),
}

type FtpOutcome<T> = std::result::Result<T, Failure>;

impl Ftp {
    /// A logged-in connection: an idle one that still answers, or a new one.
    async fn conn(&self, location: &str) -> Result<Pooled> {
        Ok(self.conn_reused(location).await?.0)
    }

    /// Like [`Ftp::conn`], and whether the connection was used before (it may have been dropped by
    /// the server since without anybody noticing).
    async fn conn_reused(&self, location: &str) -> Result<(Pooled, bool)> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| transient(location, e))?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((mut conn, since)) = idle else {
                break;
            };
            if since.elapsed() < CHECK_IDLE_AFTER
                || matches!(
                    tokio::time::timeout(Duration::from_secs(5), conn.client.noop()).await,
                    Ok(Ok(()))
                )
            {
                let pooled = Pooled {
                    conn: Some(conn),
                    idle: Arc::clone(&self.idle),
                    reusable: false,
                    _permit: permit,
                };
                return Ok((pooled, true));
            }
        }
        // The timeout applies to each step with the server inside, not to a person typing a password.
        let conn = self.connect(location).await?;
        let pooled = Pooled {
            conn: Some(conn),
            idle: Arc::clone(&self.idle),
            reusable: false,
            _permit: permit,
        };
        Ok((pooled, false))
    }

    async fn connect(&self, location: &str) -> Result<Conn> {
        let server = self.url.with_key("");
        log::debug!("connecting to {server}");
        let setup = |e: FtpError| match e {
            FtpError::ConnectionError(io) => transient(&server, io),
            FtpError::UnexpectedResponse(reply) => refused(location, &reply),
            other => Error::Other {
                location: server.clone(),
                source: Box::new(other),
            },
        };
        let Some(user) = self.login.user() else {
            return self
                .within(location, async {
                    let mut client = self.open_connection(location).await?;
                    client
                        .login("anonymous", "anonymous@")
                        .await
                        .map_err(|e| match e {
                            FtpError::UnexpectedResponse(reply) => Error::PermissionDenied {
                                location: server.clone(),
                                source: format!("anonymous login refused: {}", reply_text(&reply)).into(),
                            },
                            other => setup(other),
                        })?;
                    self.set_up(client, &setup).await
                })
                .await;
        };
        // The user's passwords in their order (URL, netrc, keyring, prompt); a refused one ends the
        // login unless it was typed, when the prompt asks again. Each password gets a connection of
        // its own (servers may close one after a refusal).
        let mut attempts = self.login.attempts().await;
        loop {
            let password = attempts.next().await?;
            let mut client = self.within(location, self.open_connection(location)).await?;
            let logged_in = self
                .within(location, async {
                    Ok(client.login(user, password.as_deref().unwrap_or_default()).await)
                })
                .await?;
            match logged_in {
                Ok(()) => {
                    attempts.accepted();
                    return self.within(location, self.set_up(client, &setup)).await;
                }
                Err(FtpError::UnexpectedResponse(reply))
                    if matches!(reply.status.code(), 530 | 331 | 332) =>
                {
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.quit()).await;
                    attempts.refused(&reply_line(&reply))?;
                }
                Err(other) => return Err(setup(other)),
            }
        }
    }

    /// `work` under the timeout of one operation.
    async fn within<T>(&self, location: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| transient(location, format!("no answer within {:?}", self.timeout)))?
    }

    /// A connection to the server, through TLS for FTPS, not logged in yet.
    async fn open_connection(&self, location: &str) -> Result<Client> {
        let server = self.url.with_key("");
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| transient(&server, e))?
            .next()
            .ok_or_else(|| transient(&server, format!("{} has no address", self.host)))?;
        let setup = |e: FtpError| match e {
            FtpError::ConnectionError(io) => transient(&server, io),
            FtpError::UnexpectedResponse(reply) => refused(location, &reply),
            other => Error::Other {
                location: server.clone(),
                source: Box::new(other),
            },
        };
        let mut client = Client::connect_timeout(addr, self.timeout).await.map_err(setup)?;
        if let Some(tls) = &self.tls {
            let connector = FlushingConnector(TlsConnector::from(Arc::clone(tls)));
            client = client.into_secure(connector, &self.host).await.map_err(setup)?;
        }
        client.set_passive_nat_workaround(true);
        Ok(client)
    }

    /// A logged-in connection made ready: binary transfers, the server's features, UTF-8.
    async fn set_up(&self, mut client: Client, setup: &impl Fn(FtpError) -> Error) -> Result<Conn> {
        client.transfer_type(FileType::Binary).await.map_err(setup)?;
        let known = *self.features.lock().unwrap_or_else(PoisonError::into_inner);
        let features = if let Some(known) = known {
            known
        } else {
            let feat = client.feat().await.unwrap_or_default();
            let has = |name: &str| feat.keys().any(|k| k.eq_ignore_ascii_case(name));
            let features = Features {
                mlst: has("MLST"),
                mfmt: has("MFMT"),
            };
            *self.features.lock().unwrap_or_else(PoisonError::into_inner) = Some(features);
            if has("UTF8") {
                // Some servers answer 504 although they speak UTF-8 anyway: harmless.
                let _ = client.custom_command("OPTS UTF8 ON", &[Status::CommandOk]).await;
            }
            features
        };
        Ok(Conn { client, features })
    }

    /// Runs `op` on a pooled connection under the timeout. A reply from the server that refuses is
    /// [`Failure::Reply`] (the connection stays usable); anything else ends that connection. A
    /// connection that breaks at once after sitting in the pool was dropped by the server: `op` runs
    /// again on a new one.
    ///
    /// The timeout is a limit on silence: `op` gets an [`Activity`] to mark as its transfer moves
    /// (an upload that keeps going is never cut); an operation that moves no data has the timeout
    /// for all of it.
    async fn run<T: Send>(
        &self,
        location: &str,
        op: impl for<'c> Fn(&'c mut Client, Features, Activity) -> BoxFuture<'c, suppaftp::FtpResult<T>>
        + Send
        + Sync,
    ) -> FtpOutcome<T> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = self.conn_reused(location).await.map_err(Failure::Store)?;
            let features = conn.features();
            let activity = Activity::new();
            let work = op(conn.client(), features, activity.clone());
            let result = unless_silent(self.timeout, &activity, work).await.ok_or(());
            return match result {
                Ok(Ok(value)) => {
                    conn.reusable = true;
                    Ok(value)
                }
                Ok(Err(FtpError::ConnectionError(_))) if reused && !retried => {
                    retried = true;
                    continue;
                }
                Ok(Err(e)) => {
                    let failure = failure(location, e);
                    conn.reusable = matches!(&failure, Failure::Reply(r) if r.status != Status::NotAvailable);
                    Err(failure)
                }
                Err(()) => Err(Failure::Store(transient(
                    location,
                    format!("no answer within {:?}", self.timeout),
                ))),
            };
        }
    }

    /// The entries of one server directory as the server lists them (`.` and `..` included where it
    /// shows them), and whether the server sent no line at all to a `LIST` (see [`RemoteFs::list_dir`]).
    async fn list_raw(&self, dir: &str, location: &str) -> FtpOutcome<(Vec<DirEntry>, bool)> {
        let (owned, max) = (dir.to_owned(), self.max_listing);
        let (machine, lines) = self
            .run(location, move |c, features, _| {
                let dir = owned.clone();
                Box::pin(async move {
                    if features.mlst {
                        Ok((true, capped_lines(c, format!("MLSD {dir}"), max).await?))
                    } else {
                        // `LIST -a` in the directory shows dot files (vsftpd hides them otherwise).
                        c.cwd(&dir).await?;
                        Ok((false, capped_lines(c, "LIST -a".to_owned(), max).await?))
                    }
                })
            })
            .await?;
        let Some(lines) = lines else {
            return Err(Failure::Store(listing_too_long(location, dir, max)));
        };
        Ok((parse_listing(&lines, machine), !machine && lines.is_empty()))
    }

    /// Whether the server's `LIST -a` shows `.` (vsftpd's does): then an empty answer is not an empty
    /// directory. Told from the parent's listing; `false` where that cannot be had (the top of the
    /// server, a parent that cannot be listed).
    async fn lists_dots(&self, dir: &str, location: &str) -> bool {
        let Some((parent, _)) = dir.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
            return false;
        };
        let parent = if parent.is_empty() { "/" } else { parent };
        matches!(
            self.list_raw(parent, location).await,
            Ok((entries, _)) if entries.iter().any(|e| e.name == ".")
        )
    }

    /// Renames `from` to `to` (absolute paths), replacing `to` on servers that refuse to rename over a
    /// file.
    async fn rename_path(&self, from: String, to: String, location: &str) -> FtpOutcome<()> {
        self.run(location, move |c, _, _| {
            let (from, to) = (from.clone(), to.clone());
            Box::pin(async move {
                match c.rename(&from, &to).await {
                    Err(FtpError::UnexpectedResponse(first)) => {
                        // The source must exist for a replace to make sense: a missing source is the error.
                        if c.size(&from).await.is_err() {
                            return Err(FtpError::UnexpectedResponse(first));
                        }
                        c.rm(&to).await?;
                        c.rename(&from, &to).await
                    }
                    other => other,
                }
            })
        })
        .await
    }

    /// Runs the one-path command `op` (`DELE`, `RMD`): `550` (missing, refused, or for `RMD` not
    /// empty) is [`Fault::Refused`].
    async fn remove(
        &self,
        path: &str,
        location: &str,
        op: for<'c> fn(&'c mut Client, String) -> BoxFuture<'c, suppaftp::FtpResult<()>>,
    ) -> Result<(), Fault> {
        let path = path.to_owned();
        match self.run(location, move |c, _, _| op(c, path.clone())).await {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) if reply.status == Status::FileUnavailable => {
                Err(Fault::Refused(write_refused(location, &reply)))
            }
            Err(f) => Err(Fault::Failed(store_error(location, f))),
        }
    }
}

/// A download: the data connection, and the connection it belongs to (pooled again once the server
/// has confirmed the transfer).
pub(crate) struct Download {
    transfer: TransferStream<FlushingTls>,
    conn: Pooled,
}

impl AsyncRead for Download {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.transfer).poll_read(cx, buf)
    }
}

/// The lines of a listing (`MLSD` or `LIST`) as the server sends them on the data connection, empty
/// ones left out; `None` once more than `max` bytes came (a server that never ends its listing): the
/// data connection is then closed, and the server's reply to it is read before the next command.
async fn capped_lines(c: &mut Client, command: String, max: u64) -> suppaftp::FtpResult<Option<Vec<String>>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let (_, stream) = c
        .custom_data_command(command, &[Status::AboutToSend, Status::AlreadyOpen])
        .await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let (mut lines, mut total, mut line) = (Vec::new(), 0u64, Vec::new());
    loop {
        line.clear();
        let n = (&mut reader)
            .take(max - total.min(max) + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(FtpError::ConnectionError)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Ok(None);
        }
        let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if !bytes.is_empty() {
            lines.push(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    reader.into_inner().finish().await?;
    Ok(Some(lines))
}

fn failure(location: &str, error: FtpError) -> Failure {
    match error {
        FtpError::UnexpectedResponse(reply) => Failure::Reply(reply),
        FtpError::ConnectionError(io) => Failure::Store(transient(location, io)),
        // A data connection whose TLS handshake broke (pyftpdlib does this on empty listings now
        // and then) is worth another try.
        FtpError::SecureError(text) => Failure::Store(transient(location, text)),
        // A reply cut short or garbled: what a session the server closed while its reply was on the
        // way looks like (vsftpd under many connections, right after `PASV`). That connection is
        // dropped; a new one is worth another try, as lftp and rclone make.
        FtpError::BadResponse => Failure::Store(transient(
            location,
            "the server's reply was cut short or malformed (the connection is dropped)",
        )),
        other => Failure::Store(Error::Other {
            location: location.to_owned(),
            source: Box::new(other),
        }),
    }
}

fn store_error(location: &str, failure: Failure) -> Error {
    match failure {
        Failure::Reply(reply) => refused(location, &reply),
        Failure::Store(e) => e,
    }
}

/// A refused command as a store error. `550` is a missing file here, as it is to the reads (`RETR`,
/// `SIZE`, `MDTM`, `MLST`); writes map their replies with [`write_refused`].
fn refused(location: &str, reply: &Response) -> Error {
    let code = reply.status.code();
    let source = reply_text(reply).into();
    if let Some(full) = out_of_space(location, reply) {
        return full;
    }
    match code {
        550 => Error::NotFound {
            location: location.to_owned(),
        },
        530 | 532 => Error::PermissionDenied {
            location: location.to_owned(),
            source,
        },
        // Insufficient storage (452), exceeded storage allocation (552): retrying does not free space.
        452 | 552 => Error::StorageFull {
            location: location.to_owned(),
            reason: format!("the server is out of space ({})", reply_line(reply)),
        },
        // vsftpd's answer to a write its disk refused: a full disk, most often; retrying does not help.
        451 if reply_line(reply).contains("Failure writing to local file") => Error::StorageFull {
            location: location.to_owned(),
            reason: format!(
                "the server could not write the file, most likely for lack of space ({})",
                reply_line(reply)
            ),
        },
        421 | 425 | 426 | 450 | 451 => Error::Transient {
            location: location.to_owned(),
            source,
        },
        _ => Error::Other {
            location: location.to_owned(),
            source,
        },
    }
}

/// A refused write (`STOR`, `RNTO`, `MKD`, `DELE`, `RMD`) as a store error: `550` there is a refusal
/// (permissions, a read-only account) far more often than a missing file, and `553` (a name not
/// allowed) is one too; the server's words go with it.
fn write_refused(location: &str, reply: &Response) -> Error {
    if let Some(full) = out_of_space(location, reply) {
        return full;
    }
    match reply.status.code() {
        550 | 553 => Error::PermissionDenied {
            location: location.to_owned(),
            source: format!("the server refused the write: {}", reply_line(reply)).into(),
        },
        _ => refused(location, reply),
    }
}

/// Whatever the code, a server that names a full disk or a quota (`451 … No space left on
/// device`, a `426 …` that quotes the system's error, a `550 Disk quota exceeded`) is out of space.
fn out_of_space(location: &str, reply: &Response) -> Option<Error> {
    let words = reply_line(reply).to_ascii_lowercase();
    ((400..600).contains(&reply.status.code())
        && ["no space left on device", "quota exceeded"]
            .iter()
            .any(|w| words.contains(w)))
    .then(|| Error::StorageFull {
        location: location.to_owned(),
        reason: format!("the server is out of space ({})", reply_line(reply)),
    })
}

/// [`store_error`] for a write.
fn write_error(location: &str, failure: Failure) -> Error {
    match failure {
        Failure::Reply(reply) => write_refused(location, &reply),
        Failure::Store(e) => e,
    }
}

fn reply_text(reply: &Response) -> String {
    format!("the server answered {}", reply_line(reply))
}

/// The server's reply as one line: its code and words.
fn reply_line(reply: &Response) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The entries of a directory listing's lines: `MLSD` lines when `machine`, else `LIST` lines. Lines
/// that say nothing usable (`total 12`, garbage) are left out, and so is every entry whose name could
/// not be a name in that directory (empty, or with a `/`).
pub(crate) fn parse_listing(lines: &[String], machine: bool) -> Vec<DirEntry> {
    lines
        .iter()
        .filter_map(|line| {
            if machine {
                parse_mlsx(line)
            } else {
                parse_list(line)
            }
        })
        .filter(|e| !e.name.is_empty() && !e.name.contains('/'))
        .collect()
}

/// One `MLSD` line or the `MLST` answer: `fact=value;fact=value; name`. `None` for a line without
/// facts and a name, or whose name is empty (`type=dir; ` would otherwise name the directory listed).
fn parse_mlsx(line: &str) -> Option<DirEntry> {
    let (facts, name) = line.trim_start().split_once(' ')?;
    // MLST answers with the full path; MLSD with the name.
    let name = name.rsplit('/').next().unwrap_or(name).to_owned();
    if name.is_empty() {
        return None;
    }
    let mut entry = DirEntry {
        name,
        kind: Kind::Other,
        size: 0,
        modified: None,
    };
    for fact in facts.split(';') {
        let Some((key, value)) = fact.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => {
                entry.kind = match value.to_ascii_lowercase().as_str() {
                    "file" => Kind::File,
                    "dir" => Kind::Dir,
                    _ => Kind::Other,
                };
            }
            "size" => entry.size = value.parse().ok()?,
            "modify" => entry.modified = parse_timeval(value),
            _ => {}
        }
    }
    Some(entry)
}

/// One `LIST` line, Unix or DOS style.
fn parse_list(line: &str) -> Option<DirEntry> {
    let file = ListParser::parse_posix(line)
        .or_else(|_| ListParser::parse_dos(line))
        .ok()?;
    let kind = if file.is_symlink() {
        Kind::Other
    } else if file.is_directory() {
        Kind::Dir
    } else {
        Kind::File
    };
    Some(DirEntry {
        name: file.name().to_owned(),
        kind,
        size: file.size() as u64,
        modified: Some(file.modified()),
    })
}

/// `YYYYMMDDHHMMSS[.fff]` in UTC (RFC 3659).
fn parse_timeval(text: &str) -> Option<SystemTime> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let time = chrono::NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S").ok()?;
    let seconds = u64::try_from(time.and_utc().timestamp()).ok()?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(digits.len()).ok()?)
    };
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

fn format_timeval(time: SystemTime) -> Option<String> {
    let seconds = i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let time = chrono::DateTime::from_timestamp(seconds, 0)?;
    Some(time.format("%Y%m%d%H%M%S").to_string())
}

#[async_trait]
impl RemoteFs for Ftp {
    type Reader = Download;

    const NAME: &'static str = "FtpStore";

    fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_rename: true,
            server_side_copy: false,
            // Until a connection has asked the server, assume it can (MFMT or vsftpd's MDTM).
            set_mtime: true,
            atomic_create: false,
            directories: true,
            default_jobs: self.connections,
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn root_path(&self) -> &str {
        if self.root.is_empty() { "/" } else { &self.root }
    }

    fn path(&self, key: &str) -> Result<String> {
        check_key(key)?;
        if key.contains(['\r', '\n']) {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: "FTP cannot name files with line breaks",
            });
        }
        Ok(remote::join(self.root_path(), key))
    }

    /// Servers answer `550` alike to a missing directory and to one they will not list, so for `top`
    /// the directory is looked for ([`RemoteFs::probe`]): one that is there but cannot be listed is
    /// [`Error::PermissionDenied`]. vsftpd answers a directory it cannot open (execute but no read
    /// permission) with an empty listing and a success code: a `LIST -a` without even `.` and `..`
    /// is an error too, on a server whose listings show them.
    async fn list_dir(&self, dir: &str, top: bool, location: &str) -> Result<Vec<DirEntry>> {
        let unlistable = |why: String| Error::PermissionDenied {
            location: location.to_owned(),
            source: why.into(),
        };
        match self.list_raw(dir, location).await {
            Ok((_, true)) if self.lists_dots(dir, location).await => Err(unlistable(
                "the server sent an empty listing, without . and .. (its answer to a directory it cannot \
                 open)"
                    .into(),
            )),
            Ok((entries, _)) => Ok(entries
                .into_iter()
                .filter(|e| !matches!(e.name.as_str(), "." | ".."))
                .collect()),
            // No such directory (550), or not a directory (pyftpdlib: 501), or a refusal (550).
            Err(Failure::Reply(reply)) if matches!(reply.status.code(), 550 | 501) => {
                if !top {
                    return Err(unlistable(format!(
                        "it was in its parent's listing, then could not be listed: {}",
                        reply_text(&reply)
                    )));
                }
                match self.probe(dir, location).await? {
                    Probe::Dir => Err(unlistable(format!(
                        "the directory is there, but cannot be listed: {}",
                        reply_text(&reply)
                    ))),
                    Probe::Missing | Probe::File | Probe::Other => Ok(Vec::new()),
                }
            }
            Err(f) => Err(store_error(location, f)),
        }
    }

    /// `CWD` into it proves a directory. Otherwise (servers answer `550` alike to a missing directory,
    /// to a file and to a directory they will not enter) the parent's listing is looked through for the
    /// name: that tells a missing entry from one that is there. A parent that cannot be listed either
    /// is looked for the same way: when it is missing, so is `path`; when it is there, whether `path`
    /// is cannot be told, and that is an error.
    async fn probe(&self, path: &str, location: &str) -> Result<Probe> {
        let Some((parent, name)) = path.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
            // The top of the server.
            return Ok(Probe::Dir);
        };
        let target = path.to_owned();
        let entered = self
            .run(location, move |c, _, _| {
                let path = target.clone();
                Box::pin(async move { c.cwd(&path).await })
            })
            .await;
        match entered {
            Ok(()) => return Ok(Probe::Dir),
            Err(Failure::Reply(_)) => {}
            Err(Failure::Store(e)) => return Err(e),
        }
        let parent = if parent.is_empty() { "/" } else { parent };
        match self.list_raw(parent, location).await {
            Ok((entries, _)) => {
                let kinds: Vec<Kind> = entries
                    .iter()
                    .filter(|e| e.name == name)
                    .map(|e| e.kind)
                    .collect();
                Ok(if kinds.contains(&Kind::Dir) {
                    Probe::Dir
                } else if kinds.contains(&Kind::File) {
                    Probe::File
                } else if kinds.is_empty() {
                    Probe::Missing
                } else {
                    Probe::Other
                })
            }
            Err(Failure::Reply(reply)) if matches!(reply.status.code(), 550 | 501) => {
                match self.probe(parent, location).await? {
                    Probe::Dir => Err(Error::PermissionDenied {
                        location: location.to_owned(),
                        source: format!(
                            "cannot tell whether it exists: {parent} cannot be listed ({})",
                            reply_text(&reply)
                        )
                        .into(),
                    }),
                    Probe::Missing | Probe::File | Probe::Other => Ok(Probe::Missing),
                }
            }
            Err(f) => Err(store_error(location, f)),
        }
    }

    /// What `MLST` or `SIZE` + `MDTM` say.
    async fn stat(&self, path: &str, location: &str) -> Result<ObjectMeta> {
        let path = path.to_owned();
        let result = self
            .run(location, move |c, features, _| {
                let path = path.clone();
                Box::pin(async move {
                    if features.mlst {
                        let line = c.mlst(Some(&path)).await?;
                        Ok(parse_mlsx(&line)
                            .filter(|e| e.kind == Kind::File)
                            .map(|e| (e.size, e.modified)))
                    } else {
                        let size = c.size(&path).await?;
                        let modified = c.mdtm(&path).await.ok().map(|t| {
                            UNIX_EPOCH
                                + Duration::from_secs(u64::try_from(t.and_utc().timestamp()).unwrap_or(0))
                        });
                        Ok(Some((size as u64, modified)))
                    }
                })
            })
            .await;
        match result {
            Ok(Some((size, modified))) => Ok(ObjectMeta {
                key: String::new(),
                size,
                modified,
                etag: None,
            }),
            Ok(None) => Err(Error::NotFound {
                location: location.to_owned(),
            }),
            Err(f) => Err(store_error(location, f)),
        }
    }

    /// `MKD`: any reply that refuses (`550`, or `521` for one that exists) is [`Fault::Refused`].
    async fn mkdir(&self, path: &str, location: &str) -> Result<(), Fault> {
        let path = path.to_owned();
        let made = self
            .run(location, move |c, _, _| {
                let dir = path.clone();
                Box::pin(async move { c.mkdir(&dir).await })
            })
            .await;
        match made {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) => Err(Fault::Refused(write_refused(location, &reply))),
            Err(Failure::Store(e)) => Err(Fault::Failed(e)),
        }
    }

    async fn rmdir(&self, path: &str, location: &str) -> Result<(), Fault> {
        self.remove(path, location, |c, path| {
            Box::pin(async move { c.rmdir(&path).await })
        })
        .await
    }

    /// `DELE`: `550` is [`Fault::Refused`], as servers answer it to a missing file and to a refusal.
    async fn remove_file(&self, path: &str, location: &str) -> Result<(), Fault> {
        self.remove(path, location, |c, path| {
            Box::pin(async move { c.rm(&path).await })
        })
        .await
    }

    /// `RNFR`/`RNTO` (see [`Ftp::rename_path`]): `550` is [`Fault::Refused`].
    async fn rename(&self, from: &str, to: &str, location: &str) -> Result<(), Fault> {
        match self.rename_path(from.to_owned(), to.to_owned(), location).await {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) if reply.status.code() == 550 => {
                Err(Fault::Refused(write_refused(location, &reply)))
            }
            Err(f) => Err(Fault::Failed(write_error(location, f))),
        }
    }

    /// `STOR`, then `SIZE`.
    async fn write(&self, path: &str, source: &OpenSource, location: &str) -> Result<Written> {
        let (path, source) = (path.to_owned(), source.clone());
        self.run(location, move |c, _, activity| {
            let (path, source) = (path.clone(), source.clone());
            Box::pin(async move {
                let reader = source
                    .reader(READ_CHUNK)
                    .await
                    .map_err(FtpError::ConnectionError)?;
                let mut reader = Touching::new(reader, activity);
                let mut transfer = c.put_with_stream(&path).await?;
                let sent = tokio::io::copy_buf(&mut reader, &mut transfer)
                    .await
                    .map_err(FtpError::ConnectionError)?;
                transfer.finish().await?;
                let size = c.size(&path).await? as u64;
                Ok(Written {
                    sent,
                    size,
                    modified: None,
                })
            })
        })
        .await
        .map_err(|f| write_error(location, f))
    }

    async fn open_read(&self, path: &str, location: &str) -> Result<Download> {
        let mut conn = self.conn(location).await?;
        match tokio::time::timeout(self.timeout, conn.client().retr_as_stream(path)).await {
            Ok(Ok(transfer)) => Ok(Download { transfer, conn }),
            Ok(Err(e)) => {
                let failure = failure(location, e);
                conn.reusable = matches!(failure, Failure::Reply(_));
                Err(store_error(location, failure))
            }
            Err(_) => Err(transient(location, "no answer to RETR")),
        }
    }

    async fn finish_read(&self, download: Download, location: &str) -> Result<()> {
        let Download { transfer, mut conn } = download;
        match transfer.finish().await {
            Ok(()) => {
                conn.reusable = true;
                Ok(())
            }
            Err(e) => Err(transient(
                location,
                format!("the server did not confirm the download: {e}"),
            )),
        }
    }

    /// `REST`, then `RETR` of as much as is wanted; the connection is closed with the transfer.
    async fn read_range(&self, path: &str, range: Range<u64>, location: &str) -> Result<Bytes> {
        let want = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let mut conn = self.conn(location).await?;
        let work = async {
            if range.start > 0 {
                conn.client()
                    .resume_transfer(usize::try_from(range.start).unwrap_or(usize::MAX))
                    .await?;
            }
            let mut transfer = conn.client().retr_as_stream(path).await?;
            let mut buf = BytesMut::with_capacity(want.min(1 << 24));
            fill(&mut transfer, &mut buf, want)
                .await
                .map_err(FtpError::ConnectionError)?;
            // The rest of the file is not wanted: the connection goes with the transfer.
            drop(transfer);
            Ok::<_, FtpError>(buf)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(mut buf)) => {
                buf.truncate(want);
                Ok(buf.freeze())
            }
            Ok(Err(e)) => Err(store_error(location, failure(location, e))),
            Err(_) => Err(transient(location, "no answer to a range read")),
        }
    }

    /// `MFMT`, or vsftpd's `MDTM YYYYMMDDHHMMSS path`; [`Error::Unsupported`] where the server has
    /// neither.
    async fn set_mtime(&self, path: &str, mtime: SystemTime, location: &str) -> Result<()> {
        let Some(stamp) = format_timeval(mtime) else {
            return Err(Error::Other {
                location: location.to_owned(),
                source: format!("{mtime:?} cannot be sent to an FTP server").into(),
            });
        };
        let path = path.to_owned();
        let result = self
            .run(location, move |c, features, _| {
                let (stamp, path) = (stamp.clone(), path.clone());
                Box::pin(async move {
                    // MFMT (RFC draft, most servers) or vsftpd's two-argument MDTM.
                    let verb = if features.mfmt { "MFMT" } else { "MDTM" };
                    c.custom_command(format!("{verb} {stamp} {path}"), &[Status::File])
                        .await
                        .map(drop)
                })
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) if matches!(reply.status.code(), 500 | 501 | 502 | 504) => {
                Err(Error::Unsupported {
                    location: location.to_owned(),
                    operation: "setting a modification time",
                })
            }
            Err(f) => Err(store_error(location, f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn machine_listings_parse() {
        let e = parse_mlsx("type=file;size=1234;modify=20201010101010.5;perm=r; my file.txt").unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("my file.txt", Kind::File, 1234)
        );
        assert_eq!(
            e.modified,
            Some(UNIX_EPOCH + Duration::new(1_602_324_610, 500_000_000))
        );
        let d = parse_mlsx("Type=dir;Modify=20200101000000; sub").unwrap();
        assert_eq!(d.kind, Kind::Dir);
        assert_eq!(parse_mlsx("type=cdir; .").unwrap().kind, Kind::Other);
        let mlst = parse_mlsx(" type=file;size=3;modify=20200101000000; /root/dir/x y").unwrap();
        assert_eq!(mlst.name, "x y");
        assert!(parse_mlsx("garbage").is_none());
    }

    /// Found writing the `ftp_mlsd` fuzz target: `type=dir; ` (an empty name) was a directory named
    /// "", which a listing walk would have entered as the directory it was listing, again and again.
    #[test]
    fn listings_keep_no_entry_without_a_name() {
        let lines = ["type=dir; ", "type=file;size=1; /dir/", "type=file;size=2; ok"].map(String::from);
        let names: Vec<String> = parse_listing(&lines, true).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["ok"]);
        assert!(parse_mlsx("type=dir; ").is_none());
    }

    #[test]
    fn list_lines_parse_unix_and_dos() {
        let unix = parse_list("-rw-r--r--    1 1000     1000         4096 Jan 02  2020 a file").unwrap();
        assert_eq!(
            (unix.name.as_str(), unix.kind, unix.size),
            ("a file", Kind::File, 4096)
        );
        let dir = parse_list("drwxr-xr-x    2 0        0            4096 Nov 23 10:00 .objects").unwrap();
        assert_eq!((dir.name.as_str(), dir.kind), (".objects", Kind::Dir));
        let link = parse_list("lrwxrwxrwx    1 0        0               4 Nov 23 10:00 l -> /etc").unwrap();
        assert_eq!(link.kind, Kind::Other);
        let dos = parse_list("10-19-20  03:19PM                 1234 report.txt").unwrap();
        assert_eq!(
            (dos.name.as_str(), dos.kind, dos.size),
            ("report.txt", Kind::File, 1234)
        );
        let dos_dir = parse_list("10-19-20  03:19PM       <DIR>          docs").unwrap();
        assert_eq!(dos_dir.kind, Kind::Dir);
        assert!(parse_list("total 12").is_none());
    }

    fn reply(code: u32, text: &str) -> Response {
        Response {
            status: Status::from(code),
            body: format!("{code} {text}\r\n").into_bytes(),
        }
    }

    fn source_text(e: &Error) -> String {
        std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn full_servers_are_said_to_be_full_not_temporarily_failing() {
        let loc = "ftp://u:***@h/data/k";
        for (code, text, expected) in [
            (
                452,
                "Insufficient storage space.",
                "ftp://u:***@h/data/k: the server is out of space (452 Insufficient storage space.)",
            ),
            (
                552,
                "Quota exceeded.",
                "ftp://u:***@h/data/k: the server is out of space (552 Quota exceeded.)",
            ),
            (
                451,
                "Failure writing to local file.",
                "ftp://u:***@h/data/k: the server could not write the file, most likely for lack of space \
                 (451 Failure writing to local file.)",
            ),
        ] {
            for err in [
                refused(loc, &reply(code, text)),
                write_refused(loc, &reply(code, text)),
            ] {
                assert!(matches!(err, Error::StorageFull { .. }), "{err:?}");
                assert!(!err.is_transient());
                assert_eq!(err.to_string(), expected);
                assert!(
                    err.hint().unwrap().contains("free some space on the server"),
                    "{err:?}"
                );
            }
        }
        // Any reply that names a full disk or a quota.
        for (code, text) in [
            (451, "Transfer aborted. No space left on device"),
            (426, "No space left on device; transfer aborted."),
            (550, "Disk quota exceeded"),
        ] {
            let err = write_refused(loc, &reply(code, text));
            assert_eq!(
                err.to_string(),
                format!("ftp://u:***@h/data/k: the server is out of space ({code} {text})")
            );
        }
        // Other 4xx replies are still worth another try.
        for code in [421, 425, 426, 450, 451] {
            assert!(refused(loc, &reply(code, "Try later.")).is_transient(), "{code}");
        }
    }

    #[test]
    fn a_refused_write_is_permission_denied_and_a_missing_read_not_found() {
        let loc = "ftp://u:***@h/data/k";
        let read = refused(loc, &reply(550, "No such file or directory."));
        assert!(matches!(read, Error::NotFound { .. }), "{read:?}");
        for (code, text) in [(550, "Not enough privileges."), (553, "File name not allowed.")] {
            let err = write_refused(loc, &reply(code, text));
            assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
            assert_eq!(err.to_string(), "ftp://u:***@h/data/k: access denied");
            assert_eq!(
                source_text(&err),
                format!("the server refused the write: {code} {text}")
            );
            let err = write_error(loc, Failure::Reply(reply(code, text)));
            assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        }
        // A refused login stays what it is, for writes as for reads.
        let login = write_refused(loc, &reply(530, "Not logged in."));
        assert!(matches!(login, Error::PermissionDenied { .. }), "{login:?}");
        assert_eq!(source_text(&login), "the server answered 530 Not logged in.");
        // Replies of several lines read as one.
        let long = Response {
            status: Status::from(550),
            body: b"550-Refused:\r\n550 read-only account\r\n".to_vec(),
        };
        assert_eq!(reply_line(&long), "550-Refused: 550 read-only account");
    }

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        assert_eq!(format_timeval(t).unwrap(), "20200913122640");
        assert_eq!(parse_timeval("20200913122640"), Some(t));
    }

    #[test]
    fn urls_configure_the_store() {
        let url = StoreUrl::parse("ftp://me:p%40ss@example.com:2121/data/site/").unwrap();
        let options = ConnectOptions::default()
            .with_connections(NonZeroUsize::new(2).unwrap())
            .with_timeout(Duration::from_secs(5));
        let store = FtpStore::open(&url, &options).unwrap();
        let inner = &store.fs;
        assert_eq!(
            (
                inner.host.as_str(),
                inner.port,
                inner.login.user(),
                inner.login.known_password()
            ),
            ("example.com", 2121, Some("me"), Some("p@ss"))
        );
        assert_eq!(inner.root, "/data/site");
        assert_eq!(inner.path("a b/c").unwrap(), "/data/site/a b/c");
        assert!(inner.path("bad\nname").is_err());
        assert_eq!(store.capabilities().default_jobs, 2);
        assert_eq!(inner.timeout, Duration::from_secs(5));
        assert!(!format!("{store:?}").contains("p@ss"));
        let anonymous = FtpStore::open(
            &StoreUrl::parse("ftp://example.com").unwrap(),
            &ConnectOptions::default(),
        )
        .unwrap();
        assert_eq!(anonymous.fs.login.user(), None);
        assert_eq!(anonymous.fs.root, "");
        assert_eq!(
            (anonymous.fs.connections, anonymous.fs.timeout),
            (DEFAULT_CONNECTIONS, DEFAULT_TIMEOUT)
        );
        let err = FtpStore::open(
            &StoreUrl::parse("ftps://example.com/x").unwrap(),
            &ConnectOptions::default().with_ca_file("/nonexistent/ca.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot read certificates"), "{err}");
    }
}
