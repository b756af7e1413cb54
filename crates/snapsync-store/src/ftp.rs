//! FTP and FTPS servers as stores, through `suppaftp` (tokio) with rustls for TLS.
//!
//! `ftp://[user[:password]@]host[:port]/path` and `ftps://…` (explicit TLS: `AUTH TLS` on the control
//! connection, `PROT P` for data). The URL's path is the store's root, absolute on the server. Without
//! a user the login is anonymous.
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

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use suppaftp::list::ListParser;
use suppaftp::tokio::{AsyncTlsConnector, ImplAsyncFtpStream, TokioTlsStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::client::TlsStream;
use suppaftp::tokio_rustls::rustls::{self, RootCertStore};
use suppaftp::types::{FileType, Response};
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connect::ConnectOptions;
use crate::error::{Error, Result};
use crate::remote::{self, DirEntry, Kind, Listed, fill, parent, temp_name, transient};
use crate::source::OpenSource;
use crate::{
    Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Scheme, Store, StoreExt, StoreUrl, check_key,
};

type Client = ImplAsyncFtpStream<FlushingTls>;

/// Connections per store unless configured.
const DEFAULT_CONNECTIONS: usize = 4;
/// Per-command timeout unless configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(1);
/// An idle connection older than this is checked with `NOOP` before it is used again.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);
/// Bytes per piece of a download.
const READ_CHUNK: usize = 256 * 1024;

/// An FTP or FTPS server. See the module documentation.
pub struct FtpStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: StoreUrl,
    host: String,
    port: u16,
    user: String,
    password: String,
    /// The store's directory on the server: absolute, without a trailing `/` (`""` for `/`).
    root: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    connections: usize,
    idle: Mutex<Vec<(Conn, Instant)>>,
    permits: Arc<Semaphore>,
    /// Directories known to exist (created or seen), so each is made once.
    made_dirs: Mutex<HashSet<String>>,
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

impl fmt::Debug for FtpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpStore")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
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
        let (user, password) = match parts.user {
            None => ("anonymous".to_owned(), "anonymous@".to_owned()),
            Some(user) => (user, parts.password.unwrap_or_default()),
        };
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
        Ok(FtpStore {
            inner: Arc::new(Inner {
                url: url.clone(),
                port: parts.port.unwrap_or(21),
                host: parts.host,
                user,
                password,
                root,
                tls,
                timeout,
                connections,
                idle: Mutex::default(),
                permits: Arc::new(Semaphore::new(connections)),
                made_dirs: Mutex::default(),
                features: Mutex::default(),
            }),
        })
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
    inner: Arc<Inner>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.reusable
            && let Some(conn) = self.conn.take()
        {
            self.inner
                .idle
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

/// What is at a server path, as [`Inner::probe`] found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Missing,
    Dir,
    File,
    /// A link, or another kind of entry.
    Other,
}

/// The name of the file that holds an FTP lock's body, inside the lock's directory.
const LOCK_OWNER: &str = "owner";

impl Inner {
    fn location(&self, key: &str) -> String {
        self.url.with_key(key)
    }

    /// The absolute server path of a key.
    fn path(&self, key: &str) -> Result<String> {
        check_key(key)?;
        if key.contains(['\r', '\n']) {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: "FTP cannot name files with line breaks",
            });
        }
        Ok(format!("{}/{key}", self.root))
    }

    /// A logged-in connection: an idle one that still answers, or a new one.
    async fn conn(self: &Arc<Self>, location: &str) -> Result<Pooled> {
        Ok(self.conn_reused(location).await?.0)
    }

    /// Like [`Inner::conn`], and whether the connection was used before (it may have been dropped by
    /// the server since without anybody noticing).
    async fn conn_reused(self: &Arc<Self>, location: &str) -> Result<(Pooled, bool)> {
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
                    inner: Arc::clone(self),
                    reusable: false,
                    _permit: permit,
                };
                return Ok((pooled, true));
            }
        }
        let conn = tokio::time::timeout(self.timeout, self.connect(location))
            .await
            .map_err(|_| transient(location, format!("no answer within {:?}", self.timeout)))??;
        let pooled = Pooled {
            conn: Some(conn),
            inner: Arc::clone(self),
            reusable: false,
            _permit: permit,
        };
        Ok((pooled, false))
    }

    async fn connect(&self, location: &str) -> Result<Conn> {
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
        client
            .login(self.user.as_str(), self.password.as_str())
            .await
            .map_err(|e| match e {
                FtpError::UnexpectedResponse(reply) => Error::PermissionDenied {
                    location: server.clone(),
                    source: format!("login as {:?} refused: {}", self.user, reply_text(&reply)).into(),
                },
                other => setup(other),
            })?;
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
    async fn run<T: Send>(
        self: &Arc<Self>,
        location: &str,
        op: impl for<'c> Fn(&'c mut Client, Features) -> BoxFuture<'c, suppaftp::FtpResult<T>> + Send + Sync,
    ) -> FtpOutcome<T> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = self.conn_reused(location).await.map_err(Failure::Store)?;
            let features = conn.features();
            let result = tokio::time::timeout(self.timeout, op(conn.client(), features)).await;
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
                Err(_) => Err(Failure::Store(transient(
                    location,
                    format!("no answer within {:?}", self.timeout),
                ))),
            };
        }
    }

    /// Creates the directories down to `dir` (an absolute server path) that are not known to exist:
    /// the store's root and its parents included (`MKD` of an existing one fails, which is ignored;
    /// a real problem shows in the upload that follows).
    async fn make_dirs(self: &Arc<Self>, dir: &str, location: &str) -> Result<()> {
        let missing = remote::missing_dirs(&self.made_dirs, dir);
        if missing.is_empty() {
            return Ok(());
        }
        let dirs = missing.clone();
        self.run(location, move |c, _| {
            let dirs = dirs.clone();
            Box::pin(async move {
                for dir in &dirs {
                    match c.mkdir(dir).await {
                        Ok(()) | Err(FtpError::UnexpectedResponse(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
        })
        .await
        .map_err(|f| store_error(location, f))?;
        self.made_dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(missing);
        Ok(())
    }

    /// The entries of one server directory as the server lists them (`.` and `..` included where it
    /// shows them), and whether the server sent no line at all to a `LIST` (see [`Inner::list_dir`]).
    async fn list_raw(self: &Arc<Self>, dir: &str, location: &str) -> FtpOutcome<(Vec<DirEntry>, bool)> {
        let dir = dir.to_owned();
        let (machine, lines) = self
            .run(location, move |c, features| {
                let dir = dir.clone();
                Box::pin(async move {
                    if features.mlst {
                        Ok((true, c.mlsd(Some(&dir)).await?))
                    } else {
                        // `LIST -a` in the directory shows dot files (vsftpd hides them otherwise).
                        c.cwd(&dir).await?;
                        Ok((false, c.list(Some("-a")).await?))
                    }
                })
            })
            .await?;
        let entries = lines
            .iter()
            .filter_map(|line| {
                if machine {
                    parse_mlsx(line)
                } else {
                    parse_list(line)
                }
            })
            .filter(|e| !e.name.contains('/'))
            .collect();
        Ok((entries, !machine && lines.is_empty()))
    }

    /// The entries of one server directory.
    ///
    /// Only the prefix asked for (`top`) may be missing or a file: nothing is below it then. Servers
    /// answer `550` alike to a missing directory and to one they will not list, so for `top` the
    /// directory is looked for ([`Inner::probe`]): one that is there but cannot be listed is
    /// [`Error::PermissionDenied`]. A directory the walk found in its parent's listing and cannot list
    /// is an error as well, never an empty directory. vsftpd answers a directory it cannot open
    /// (execute but no read permission) with an empty listing and a success code: a `LIST -a` without
    /// even `.` and `..` is an error too, on a server whose listings show them.
    async fn list_dir(self: &Arc<Self>, dir: String, top: bool) -> Result<Vec<DirEntry>> {
        let location = format!("{}{}", self.url.with_key(""), dir_suffix(&dir, &self.root));
        let unlistable = |why: String| Error::PermissionDenied {
            location: location.clone(),
            source: why.into(),
        };
        match self.list_raw(&dir, &location).await {
            Ok((_, true)) if self.lists_dots(&dir, &location).await => Err(unlistable(
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
                match self.probe(&dir, &location).await? {
                    Probe::Dir => Err(unlistable(format!(
                        "the directory is there, but cannot be listed: {}",
                        reply_text(&reply)
                    ))),
                    Probe::Missing | Probe::File | Probe::Other => Ok(Vec::new()),
                }
            }
            Err(f) => Err(store_error(&location, f)),
        }
    }

    /// Whether the server's `LIST -a` shows `.` (vsftpd's does): then an empty answer is not an empty
    /// directory. Told from the parent's listing; `false` where that cannot be had (the top of the
    /// server, a parent that cannot be listed).
    async fn lists_dots(self: &Arc<Self>, dir: &str, location: &str) -> bool {
        let Some((parent, _)) = dir.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
            return false;
        };
        let parent = if parent.is_empty() { "/" } else { parent };
        matches!(
            self.list_raw(parent, location).await,
            Ok((entries, _)) if entries.iter().any(|e| e.name == ".")
        )
    }

    /// What is at the server path `path`: a directory, a file, something else, or nothing.
    ///
    /// `CWD` into it proves a directory. Otherwise (servers answer `550` alike to a missing directory,
    /// to a file and to a directory they will not enter) the parent's listing is looked through for the
    /// name: that tells a missing entry from one that is there. A parent that cannot be listed either
    /// is looked for the same way: when it is missing, so is `path`; when it is there, whether `path`
    /// is cannot be told, and that is an error.
    async fn probe(self: &Arc<Self>, path: &str, location: &str) -> Result<Probe> {
        let Some((parent, name)) = path.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
            // The top of the server.
            return Ok(Probe::Dir);
        };
        let target = path.to_owned();
        let entered = self
            .run(location, move |c, _| {
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
                match Box::pin(self.probe(parent, location)).await? {
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

    /// What `MLST` or `SIZE` + `MDTM` say about a file; `None` when it is not a file.
    async fn stat(self: &Arc<Self>, path: String, location: &str) -> Result<ObjectMeta> {
        let result = self
            .run(location, move |c, features| {
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
            }),
            Ok(None) => Err(Error::NotFound {
                location: location.to_owned(),
            }),
            Err(f) => Err(store_error(location, f)),
        }
    }

    /// Renames `from` to `to` (absolute paths), replacing `to` on servers that refuse to rename over a
    /// file.
    /// One `MKD path` (no parents); a refusal is the server's reply.
    async fn mkdir(self: &Arc<Self>, path: String, location: &str) -> FtpOutcome<()> {
        self.run(location, move |c, _| {
            let dir = path.clone();
            Box::pin(async move { c.mkdir(&dir).await })
        })
        .await
    }

    async fn rename_path(self: &Arc<Self>, from: String, to: String, location: &str) -> FtpOutcome<()> {
        self.run(location, move |c, _| {
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

    /// Stores `body` at the server path `path` through a temporary name beside it (its size checked,
    /// then renamed over `path`), without making any directory: a missing one is an error.
    async fn store_bytes(self: &Arc<Self>, path: &str, body: Bytes, location: &str) -> Result<()> {
        let temp = temp_name(path);
        let expected = body.len() as u64;
        let upload = {
            let temp = temp.clone();
            self.run(location, move |c, _| {
                let (temp, body) = (temp.clone(), body.clone());
                Box::pin(async move {
                    let mut transfer = c.put_with_stream(&temp).await?;
                    tokio::io::AsyncWriteExt::write_all(&mut transfer, &body)
                        .await
                        .map_err(FtpError::ConnectionError)?;
                    transfer.finish().await?;
                    Ok(c.size(&temp).await? as u64)
                })
            })
            .await
        };
        let result = match upload {
            Ok(stored) if stored == expected => self
                .rename_path(temp.clone(), path.to_owned(), location)
                .await
                .map_err(|f| write_error(location, f)),
            Ok(stored) => Err(transient(
                location,
                format!("the server holds {stored} of the {expected} bytes sent"),
            )),
            Err(f) => Err(write_error(location, f)),
        };
        if result.is_err() {
            self.remove_quietly(temp, location).await;
        }
        result
    }

    async fn remove_quietly(self: &Arc<Self>, path: String, location: &str) {
        let _ = self
            .run(location, move |c, _| {
                let path = path.clone();
                Box::pin(async move { c.rm(&path).await })
            })
            .await;
    }
}

fn dir_suffix(dir: &str, root: &str) -> String {
    dir.strip_prefix(root)
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("{rest}/"))
        .unwrap_or_default()
}

fn failure(location: &str, error: FtpError) -> Failure {
    match error {
        FtpError::UnexpectedResponse(reply) => Failure::Reply(reply),
        FtpError::ConnectionError(io) => Failure::Store(transient(location, io)),
        // A data connection whose TLS handshake broke (pyftpdlib does this on empty listings now
        // and then) is worth another try.
        FtpError::SecureError(text) => Failure::Store(transient(location, text)),
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

/// One `MLSD` line or the `MLST` answer: `fact=value;fact=value; name`.
fn parse_mlsx(line: &str) -> Option<DirEntry> {
    let (facts, name) = line.trim_start().split_once(' ')?;
    // MLST answers with the full path; MLSD with the name.
    let name = name.rsplit('/').next().unwrap_or(name).to_owned();
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

impl FtpStore {
    /// What is below `prefix`: the objects (and directories), or the temporary files interrupted
    /// writes left.
    fn listing(&self, prefix: &str, listed: Listed) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.trim_matches('/');
        let start = if prefix.is_empty() {
            if inner.root.is_empty() {
                "/".to_owned()
            } else {
                inner.root.clone()
            }
        } else {
            match inner.path(prefix) {
                Ok(path) => path,
                Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
            }
        };
        let (key_offset, jobs) = (inner.root.len() + 1, inner.connections);
        remote::walk(start, key_offset, jobs, listed, move |dir, top| {
            let inner = Arc::clone(&inner);
            async move { inner.list_dir(dir, top).await }
        })
    }
}

#[async_trait]
impl Store for FtpStore {
    fn url(&self) -> &StoreUrl {
        &self.inner.url
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_rename: true,
            server_side_copy: false,
            // Until a connection has asked the server, assume it can (MFMT or vsftpd's MDTM).
            set_mtime: true,
            atomic_create: false,
            directories: true,
            default_jobs: self.inner.connections,
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::Objects)
    }

    fn list_with_dirs(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Listed::ObjectsAndDirs)
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", Listed::Leftovers)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let mut meta = self.inner.stat(path, &location).await?;
        key.clone_into(&mut meta.key);
        Ok(meta)
    }

    async fn get(&self, key: &str) -> Result<GetStream> {
        let meta = self.head(key).await?;
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let inner = &self.inner;
        let mut conn = inner.conn(&location).await?;
        let transfer = match tokio::time::timeout(inner.timeout, conn.client().retr_as_stream(&path)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let failure = failure(&location, e);
                conn.reusable = matches!(failure, Failure::Reply(_));
                return Err(store_error(&location, failure));
            }
            Err(_) => return Err(transient(&location, "no answer to RETR")),
        };
        let size = meta.size;
        let timeout = inner.timeout;
        let state = Some((conn, transfer, 0u64, location));
        let stream = futures::stream::unfold(state, move |state| async move {
            let (mut conn, mut transfer, got, location) = state?;
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            let fault = |what: String| Error::Transient {
                location: location.clone(),
                source: what.into(),
            };
            match tokio::time::timeout(timeout, fill(&mut transfer, &mut buf, READ_CHUNK)).await {
                Err(_) => Some((Err(fault(format!("download stalled for {timeout:?}"))), None)),
                Ok(Err(e)) => Some((Err(fault(format!("download broke off: {e}"))), None)),
                Ok(Ok(())) if buf.is_empty() => {
                    if got != size {
                        return Some((
                            Err(fault(format!("download ended after {got} of {size} bytes"))),
                            None,
                        ));
                    }
                    match tokio::time::timeout(timeout, transfer.finish()).await {
                        Ok(Ok(())) => {
                            conn.reusable = true;
                            None
                        }
                        Ok(Err(e)) => Some((
                            Err(fault(format!("the server did not confirm the download: {e}"))),
                            None,
                        )),
                        Err(_) => Some((Err(fault("the server did not confirm the download".into())), None)),
                    }
                }
                Ok(Ok(())) => {
                    let got = got + buf.len() as u64;
                    if got > size {
                        return Some((
                            Err(fault(format!(
                                "the server sent more than the {size} bytes it listed"
                            ))),
                            None,
                        ));
                    }
                    Some((Ok(buf.freeze()), Some((conn, transfer, got, location))))
                }
            }
        });
        Ok(GetStream {
            meta,
            stream: stream.boxed(),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let want = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let inner = &self.inner;
        let mut conn = inner.conn(&location).await?;
        let work = async {
            if range.start > 0 {
                conn.client()
                    .resume_transfer(usize::try_from(range.start).unwrap_or(usize::MAX))
                    .await?;
            }
            let mut transfer = conn.client().retr_as_stream(&path).await?;
            let mut buf = BytesMut::with_capacity(want.min(1 << 24));
            fill(&mut transfer, &mut buf, want)
                .await
                .map_err(FtpError::ConnectionError)?;
            // The rest of the file is not wanted: the connection goes with the transfer.
            drop(transfer);
            Ok::<_, FtpError>(buf)
        };
        match tokio::time::timeout(inner.timeout, work).await {
            Ok(Ok(mut buf)) => {
                buf.truncate(want);
                Ok(buf.freeze())
            }
            Ok(Err(e)) => Err(store_error(&location, failure(&location, e))),
            Err(_) => Err(transient(&location, "no answer to a range read")),
        }
    }

    async fn put(&self, key: &str, source: PutSource, mode: PutMode) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let inner = &self.inner;
        // A local file is opened (and stamped) first: a wrong one is refused before anything is sent.
        let source = OpenSource::open(source, &location).await?;
        if mode == PutMode::Create && self.exists_path(&path, &location).await? {
            return Err(Error::AlreadyExists { location });
        }
        inner.make_dirs(parent(&path), &location).await?;
        let expected = source.len();
        let temp = temp_name(&path);
        let upload = {
            let (temp, source) = (temp.clone(), source.clone());
            inner
                .run(&location, move |c, _| {
                    let (temp, source) = (temp.clone(), source.clone());
                    Box::pin(async move {
                        let mut reader = source
                            .reader(READ_CHUNK)
                            .await
                            .map_err(FtpError::ConnectionError)?;
                        let mut transfer = c.put_with_stream(&temp).await?;
                        let sent = tokio::io::copy_buf(&mut reader, &mut transfer)
                            .await
                            .map_err(FtpError::ConnectionError)?;
                        transfer.finish().await?;
                        let stored = c.size(&temp).await?;
                        Ok((sent, stored as u64))
                    })
                })
                .await
        };
        // Before anything is published: the source must still be what was stamped, and all of it sent.
        let checked = source.check(upload.as_ref().ok().map(|(sent, _)| *sent)).await;
        let result = match (checked, upload) {
            (Err(changed), _) => Err(changed),
            (Ok(()), Ok((_, stored))) if stored == expected => Ok(()),
            (Ok(()), Ok((_, stored))) => Err(transient(
                &location,
                format!("the server holds {stored} of the {expected} bytes sent"),
            )),
            (Ok(()), Err(f)) => Err(write_error(&location, f)),
        };
        let result = match result {
            Ok(()) if mode == PutMode::Create && self.exists_path(&path, &location).await? => {
                Err(Error::AlreadyExists {
                    location: location.clone(),
                })
            }
            Ok(()) => inner
                .rename_path(temp.clone(), path, &location)
                .await
                .map_err(|f| write_error(&location, f)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            inner.remove_quietly(temp, &location).await;
        }
        result
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let result = {
            let path = path.clone();
            self.inner
                .run(&location, move |c, _| {
                    let path = path.clone();
                    Box::pin(async move { c.rm(&path).await })
                })
                .await
        };
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) if reply.status == Status::FileUnavailable => {
                // Gone already is fine; anything else that answers 550 (a permission) is not.
                if self.exists_path(&path, &location).await? {
                    Err(write_refused(&location, &reply))
                } else {
                    Ok(())
                }
            }
            Err(f) => Err(store_error(&location, f)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        // FTP has no server-side copy.
        remote::copy_through_local(self, from, to).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.inner.path(from)?, self.inner.path(to)?);
        let location = self.inner.location(from);
        self.inner
            .make_dirs(parent(&target), &self.inner.location(to))
            .await?;
        match self.inner.rename_path(source.clone(), target, &location).await {
            Ok(()) => Ok(()),
            // A missing source, or a refused rename.
            Err(Failure::Reply(reply)) if reply.status.code() == 550 => {
                if self.exists_path(&source, &location).await? {
                    Err(write_refused(&location, &reply))
                } else {
                    Err(Error::NotFound { location })
                }
            }
            Err(f) => Err(write_error(&location, f)),
        }
    }

    async fn create_dir(&self, key: &str) -> Result<()> {
        let (path, location) = (self.inner.path(key)?, self.inner.location(key));
        self.inner.make_dirs(&path, &location).await?;
        // make_dirs leaves refusals to the upload that follows; here nothing follows: look.
        match self.inner.probe(&path, &location).await? {
            Probe::Dir => Ok(()),
            Probe::Missing => Err(Error::PermissionDenied {
                location,
                source: "the server did not make the folder".into(),
            }),
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
        }
    }

    async fn root_exists(&self) -> Result<bool> {
        let inner = &self.inner;
        let location = inner.url.to_string();
        if inner.root.is_empty() {
            return Ok(true);
        }
        match inner.probe(&inner.root, &location).await? {
            Probe::Dir => Ok(true),
            Probe::Missing => Ok(false),
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
        }
    }

    async fn create_root(&self) -> Result<()> {
        let inner = &self.inner;
        let location = inner.url.to_string();
        // Every part from the top: those that exist refuse, which is fine.
        let parts = remote::missing_dirs(&Mutex::default(), &inner.root);
        let mut refusal = None;
        for dir in &parts {
            match inner.mkdir(dir.clone(), &location).await {
                Ok(()) => {}
                Err(Failure::Reply(reply)) => refusal = Some(reply),
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        match inner.probe(&inner.root, &location).await? {
            Probe::Dir => {
                inner
                    .made_dirs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(parts);
                Ok(())
            }
            Probe::File | Probe::Other => Err(Error::NotADirectory { location }),
            Probe::Missing => {
                // A file in the way of a part, or a refusal.
                for dir in &parts {
                    if matches!(inner.probe(dir, &location).await?, Probe::File | Probe::Other) {
                        return Err(Error::NotADirectory {
                            location: remote::path_location(&inner.url, dir),
                        });
                    }
                }
                Err(match refusal {
                    Some(reply) => write_refused(&location, &reply),
                    None => Error::NotFound { location },
                })
            }
        }
    }

    async fn lock_create(&self, key: &str, body: Bytes) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let inner = &self.inner;
        inner.make_dirs(parent(&path), &location).await?;
        // MKD is the one exclusive operation FTP has: of racing clients, one makes the directory.
        let mut attempt = 0;
        loop {
            match inner.mkdir(path.clone(), &location).await {
                Ok(()) => break,
                Err(Failure::Reply(reply)) => match inner.probe(&path, &location).await? {
                    // Refused, or made and removed again in between: once more, then it is a refusal.
                    Probe::Missing if attempt < 2 => attempt += 1,
                    Probe::Missing => return Err(write_refused(&location, &reply)),
                    Probe::Dir | Probe::File | Probe::Other => return Err(Error::AlreadyExists { location }),
                },
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        // The lock is ours; until its body is in, a reader sees an empty one (being created).
        let owner = format!("{path}/{LOCK_OWNER}");
        if let Err(e) = inner.store_bytes(&owner, body, &location).await {
            let _ = self.lock_remove(key).await;
            return Err(e);
        }
        Ok(())
    }

    async fn lock_read(&self, key: &str) -> Result<Bytes> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        match self.get_bytes(&format!("{key}/{LOCK_OWNER}")).await {
            Ok(body) => Ok(body),
            Err(Error::NotFound { .. }) => match self.inner.probe(&path, &location).await? {
                // Made, its body not stored yet: held, by somebody who has not said who yet.
                Probe::Dir => Ok(Bytes::new()),
                // A lock file (written with a create-if-absent put, as older versions did).
                Probe::File => self.get_bytes(key).await,
                Probe::Missing | Probe::Other => Err(Error::NotFound { location }),
            },
            Err(e) => Err(e),
        }
    }

    async fn lock_update(&self, key: &str, body: Bytes) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let owner = format!("{path}/{LOCK_OWNER}");
        // Never makes the directory: a lock that is gone stays gone.
        match self.inner.store_bytes(&owner, body, &location).await {
            Ok(()) => Ok(()),
            Err(e @ (Error::PermissionDenied { .. } | Error::NotFound { .. })) => {
                match self.inner.probe(&path, &location).await? {
                    Probe::Dir => Err(e),
                    Probe::Missing | Probe::File | Probe::Other => Err(Error::NotFound { location }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn lock_remove(&self, key: &str) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let inner = &self.inner;
        // The body, and whatever an interrupted write left beside it.
        let files = match inner.list_raw(&path, &location).await {
            Ok((entries, _)) => entries
                .into_iter()
                .filter(|e| e.kind == Kind::File)
                .map(|e| format!("{path}/{}", e.name))
                .collect(),
            // Missing, or a file: told below.
            Err(Failure::Reply(_)) => Vec::new(),
            Err(Failure::Store(e)) => return Err(e),
        };
        let target = path.clone();
        let removed = inner
            .run(&location, move |c, _| {
                let (dir, files) = (target.clone(), files.clone());
                Box::pin(async move {
                    for file in &files {
                        match c.rm(file).await {
                            Ok(()) | Err(FtpError::UnexpectedResponse(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    c.rmdir(&dir).await
                })
            })
            .await;
        remote::forget_dirs(&inner.made_dirs, &path);
        match removed {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) => match inner.probe(&path, &location).await? {
                Probe::Missing => Ok(()),
                // A lock file (older versions).
                Probe::File => self.delete(key).await,
                Probe::Dir | Probe::Other => Err(write_refused(&location, &reply)),
            },
            Err(Failure::Store(e)) => Err(e),
        }
    }

    async fn lock_rename(&self, key: &str, to: &str) -> Result<()> {
        let (source, target) = (self.inner.path(key)?, self.inner.path(to)?);
        let location = self.inner.location(key);
        let inner = &self.inner;
        inner.make_dirs(parent(&target), &inner.location(to)).await?;
        let from = source.clone();
        // The whole directory, body and all, in one RNFR/RNTO.
        let renamed = inner
            .run(&location, move |c, _| {
                let (from, to) = (from.clone(), target.clone());
                Box::pin(async move { c.rename(&from, &to).await })
            })
            .await;
        remote::forget_dirs(&inner.made_dirs, &source);
        match renamed {
            Ok(()) => Ok(()),
            Err(Failure::Reply(reply)) => match inner.probe(&source, &location).await? {
                Probe::Missing => Err(Error::NotFound { location }),
                Probe::Dir | Probe::File | Probe::Other => Err(write_refused(&location, &reply)),
            },
            Err(Failure::Store(e)) => Err(e),
        }
    }

    async fn remove_empty_dir(&self, key: &str) -> Result<bool> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let target = path.clone();
        let result = self
            .inner
            .run(&location, move |c, _| {
                let path = target.clone();
                Box::pin(async move { c.rmdir(&path).await })
            })
            .await;
        match result {
            Ok(()) => {
                remote::forget_dirs(&self.inner.made_dirs, &path);
                Ok(true)
            }
            // Not empty, missing or not a directory: servers answer 550 to all three.
            Err(Failure::Reply(reply)) if reply.status == Status::FileUnavailable => Ok(false),
            Err(f) => Err(store_error(&location, f)),
        }
    }

    async fn set_mtime(&self, key: &str, mtime: SystemTime) -> Result<()> {
        let path = self.inner.path(key)?;
        let location = self.inner.location(key);
        let Some(stamp) = format_timeval(mtime) else {
            return Err(Error::Other {
                location,
                source: format!("{mtime:?} cannot be sent to an FTP server").into(),
            });
        };
        let result = self
            .inner
            .run(&location, move |c, features| {
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
                    location,
                    operation: "setting a modification time",
                })
            }
            Err(f) => Err(store_error(&location, f)),
        }
    }
}

impl FtpStore {
    async fn exists_path(&self, path: &str, location: &str) -> Result<bool> {
        match self.inner.stat(path.to_owned(), location).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let inner = &store.inner;
        assert_eq!(
            (
                inner.host.as_str(),
                inner.port,
                inner.user.as_str(),
                inner.password.as_str()
            ),
            ("example.com", 2121, "me", "p@ss")
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
        assert_eq!(anonymous.inner.user, "anonymous");
        assert_eq!(anonymous.inner.root, "");
        assert_eq!(
            (anonymous.inner.connections, anonymous.inner.timeout),
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
