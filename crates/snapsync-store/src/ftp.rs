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
//! * **Times**: `head` uses `MLST` or `SIZE` + `MDTM`; `set_mtime` uses `MFMT`, or vsftpd's
//!   `MDTM YYYYMMDDHHMMSS path`, and says [`Error::Unsupported`] where the server has neither.
//! * **Connections** come from a small pool (`connections`, default 4), each logged in once, set to
//!   binary, UTF-8 where the server offers it, passive mode with the control connection's address
//!   (servers behind NAT announce unusable ones). An idle connection is checked with `NOOP` before
//!   reuse and replaced if the server dropped it. Every command has a timeout (`timeout`, default 60 s).
//!
//! Configuration keys (`open_with_config`): `ca_file` (PEM certificates to trust besides the system's;
//! also `SNAPSYNC_CA_FILE`), `connections`, `timeout` (seconds).

use std::collections::HashSet;
use std::fmt;
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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::remote::{self, DirEntry, Kind, fill, parent, temp_name, transient};
use crate::{Capabilities, GetStream, ObjectMeta, PutMode, PutSource, Scheme, Store, StoreUrl, check_key};

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
    /// A store for an `ftp://` or `ftps://` URL. Nothing is connected until the first operation.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL without a host, an unknown configuration key or an unreadable
    /// `ca_file`.
    pub fn open(url: &StoreUrl, config: &[(&str, &str)]) -> Result<FtpStore> {
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
        let mut ca_file = std::env::var_os("SNAPSYNC_CA_FILE").map(std::path::PathBuf::from);
        let mut common = remote::Common {
            timeout: DEFAULT_TIMEOUT,
            connections: DEFAULT_CONNECTIONS,
        };
        for (key, value) in config {
            match *key {
                "ca_file" => ca_file = Some(value.into()),
                key if common.apply(url, key, value)? => {}
                other => return Err(invalid(format!("unknown configuration key {other:?}"))),
            }
        }
        let (timeout, connections) = (common.timeout, common.connections);
        let tls = match url.scheme() {
            Scheme::Ftps => Some(Arc::new(tls_config(ca_file.as_deref()).map_err(invalid)?)),
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

    /// The entries of one server directory; a missing directory has none.
    async fn list_dir(self: &Arc<Self>, dir: String) -> Result<Vec<DirEntry>> {
        let location = format!("{}{}", self.url.with_key(""), dir_suffix(&dir, &self.root));
        let listed = {
            let dir = dir.clone();
            self.run(&location, move |c, features| {
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
            .await
        };
        let (machine, lines) = match listed {
            Ok(v) => v,
            // No such directory (550), or not a directory (pyftpdlib: 501): nothing below it.
            Err(Failure::Reply(reply)) if matches!(reply.status.code(), 550 | 501) => return Ok(Vec::new()),
            Err(f) => return Err(store_error(&location, f)),
        };
        Ok(lines
            .iter()
            .filter_map(|line| {
                if machine {
                    parse_mlsx(line)
                } else {
                    parse_list(line)
                }
            })
            .filter(|e| !matches!(e.name.as_str(), "." | "..") && !e.name.contains('/'))
            .collect())
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

/// A refused command as a store error.
fn refused(location: &str, reply: &Response) -> Error {
    let code = reply.status.code();
    let source = reply_text(reply).into();
    match code {
        550 => Error::NotFound {
            location: location.to_owned(),
        },
        530 | 532 => Error::PermissionDenied {
            location: location.to_owned(),
            source,
        },
        421 | 425 | 426 | 450 | 451 | 452 => Error::Transient {
            location: location.to_owned(),
            source,
        },
        _ => Error::Other {
            location: location.to_owned(),
            source,
        },
    }
}

fn reply_text(reply: &Response) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    format!("the server answered {}", body.trim())
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
    /// Files below `prefix`: the objects, or (`temps`) the temporary files interrupted writes left.
    fn listing(&self, prefix: &str, temps: bool) -> BoxStream<'static, Result<ObjectMeta>> {
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
        remote::walk(start, key_offset, jobs, temps, move |dir| {
            let inner = Arc::clone(&inner);
            async move { inner.list_dir(dir).await }
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
            default_jobs: self.inner.connections,
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, false)
    }

    fn list_leftovers(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing("", true)
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
        if mode == PutMode::Create && self.exists_path(&path, &location).await? {
            return Err(Error::AlreadyExists { location });
        }
        inner.make_dirs(parent(&path), &location).await?;
        let expected = remote::source_len(&source).await?;
        let temp = temp_name(&path);
        let upload = {
            let temp = temp.clone();
            inner
                .run(&location, move |c, _| {
                    let (temp, source) = (temp.clone(), source.clone());
                    Box::pin(async move {
                        let mut transfer = c.put_with_stream(&temp).await?;
                        match source {
                            PutSource::Bytes(bytes) => transfer.write_all(&bytes).await,
                            PutSource::File(file) => match tokio::fs::File::open(&file).await {
                                Ok(file) => {
                                    let mut reader = tokio::io::BufReader::with_capacity(READ_CHUNK, file);
                                    tokio::io::copy_buf(&mut reader, &mut transfer).await.map(drop)
                                }
                                Err(e) => Err(e),
                            },
                        }
                        .map_err(FtpError::ConnectionError)?;
                        transfer.finish().await?;
                        let stored = c.size(&temp).await?;
                        Ok(stored as u64)
                    })
                })
                .await
        };
        let result = match upload {
            Ok(stored) if stored == expected => Ok(()),
            Ok(stored) => Err(transient(
                &location,
                format!("the server holds {stored} of the {expected} bytes sent"),
            )),
            Err(f) => Err(store_error(&location, f)),
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
                .map_err(|f| store_error(&location, f)),
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
                    Err(Error::PermissionDenied {
                        location,
                        source: reply_text(&reply).into(),
                    })
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
        self.inner
            .rename_path(source, target, &location)
            .await
            .map_err(|f| store_error(&location, f))
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

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        assert_eq!(format_timeval(t).unwrap(), "20200913122640");
        assert_eq!(parse_timeval("20200913122640"), Some(t));
    }

    #[test]
    fn urls_configure_the_store() {
        let url = StoreUrl::parse("ftp://me:p%40ss@example.com:2121/data/site/").unwrap();
        let store = FtpStore::open(&url, &[("connections", "2"), ("timeout", "5")]).unwrap();
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
        assert!(!format!("{store:?}").contains("p@ss"));
        let anonymous = FtpStore::open(&StoreUrl::parse("ftp://example.com").unwrap(), &[]).unwrap();
        assert_eq!(anonymous.inner.user, "anonymous");
        assert_eq!(anonymous.inner.root, "");
        let err = FtpStore::open(&url, &[("colour", "blue")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown configuration key"), "{err}");
        let err = FtpStore::open(
            &StoreUrl::parse("ftps://example.com/x").unwrap(),
            &[("ca_file", "/nonexistent/ca.pem")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot read certificates"), "{err}");
    }
}
