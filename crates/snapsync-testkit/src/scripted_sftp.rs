//! A small SFTP server written here, whose misbehaviour each test chooses: a test double for hostile
//! servers only (a listing or a file that never ends, sizes that lie, absurd times, names no folder
//! can hold), beside OpenSSH's sshd and never instead of it.
//!
//! It is a real SSH server (russh's server side) with a host key made for it, a `known_hosts` file
//! that trusts that key, and a password made for it (any user name), running the SFTP subsystem
//! (russh-sftp's server side, protocol version 3) over files kept in memory that every session
//! shares: `OPEN`, `READ`, `WRITE`, `CLOSE`, `STAT`, `LSTAT`, `FSTAT`, `SETSTAT`, `FSETSTAT`,
//! `OPENDIR`, `READDIR`, `MKDIR`, `RMDIR`, `REMOVE`, `RENAME`, `REALPATH`, and the extensions
//! `posix-rename@openssh.com` and `hardlink@openssh.com`. Its tokio runtime and every session stop
//! when it is dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::random_u64;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};

/// What the server does wrong. [`SftpMisbehaviour::None`] is an honest server, the baseline that
/// shows the double is good enough for a normal run. The lies are told about the files the server
/// was started with only: files a client writes (its lock, say) are told as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftpMisbehaviour {
    /// Behaves.
    None,
    /// `READDIR` sends the directory's entries, then fresh made-up names (files of one byte),
    /// batch after batch, and never `EOF`.
    EndlessListing,
    /// `READ` sends the file, then zero bytes forever, never `EOF` (sizes are told honestly).
    EndlessFile,
    /// Listings and `STAT` say each file is one byte longer than what `READ` sends.
    SizeTooBig,
    /// Listings and `STAT` say each file is one byte shorter than what `READ` sends.
    SizeTooSmall,
    /// Times are absurd: the last second SFTP can say (2106), 1970's first, and no time at all.
    AbsurdTimes,
    /// Every listing also names entries no folder can hold, as files of 4 bytes that `OPEN` serves:
    /// `.` and `..` (as files), `escape/../../escape`, `/etc/escape`, `a/../../x`, `nul\0name` and a
    /// 5,000-byte name.
    HostileNames,
    /// `fsync@openssh.com` answers only after as long as a disk writing this many bytes a second
    /// would take for the whole file (a slow or busy disk making a large upload durable).
    SlowDisk {
        /// The disk's speed.
        bytes_per_second: u64,
    },
    /// `fsync@openssh.com` never answers (the session's other requests wait behind it, as on
    /// OpenSSH's server, which serves a session's requests in turn).
    FsyncNeverAnswers,
    /// `READ` of a file it was started with answers with the data under another request's id (one
    /// never asked), so the read asked is never answered: replies that match no request.
    WrongReplyIds,
}

/// The names [`SftpMisbehaviour::HostileNames`] adds to every listing.
#[must_use]
pub fn hostile_sftp_names() -> Vec<String> {
    vec![
        ".".to_owned(),
        "..".to_owned(),
        "escape/../../escape".to_owned(),
        "/etc/escape".to_owned(),
        "a/../../x".to_owned(),
        "nul\0name".to_owned(),
        "n".repeat(5000),
    ]
}

/// What a hostile-named file holds.
const HOSTILE_CONTENT: &[u8] = b"evil";
/// The entries in one `READDIR` reply of an endless listing.
const ENDLESS_BATCH: usize = 500;
/// The most bytes one `READ` answers with.
const MAX_READ: u32 = 1 << 16;

/// One file or folder.
#[derive(Clone, Debug)]
enum Node {
    Dir {
        mtime: u32,
    },
    File {
        bytes: Vec<u8>,
        mtime: u32,
        scripted: bool,
    },
}

/// Absolute path (no trailing `/`, the root is `/`) → node.
type Tree = BTreeMap<String, Node>;

/// A running scripted SFTP server on 127.0.0.1.
pub struct ScriptedSftp {
    port: u16,
    password: String,
    files: Arc<Mutex<Tree>>,
    dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ScriptedSftp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedSftp")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

impl ScriptedSftp {
    /// Starts one serving `files` (paths relative to its root, folders made as needed).
    #[must_use]
    pub fn start(files: &[(&str, &[u8])], misbehaviour: SftpMisbehaviour) -> ScriptedSftp {
        let mtime = now().saturating_sub(3600);
        let mut tree = Tree::new();
        tree.insert("/".to_owned(), Node::Dir { mtime });
        for (path, content) in files {
            let path = format!("/{}", path.trim_start_matches('/'));
            let mut dir = String::new();
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            for part in &parts[..parts.len() - 1] {
                dir.push('/');
                dir.push_str(part);
                tree.insert(dir.clone(), Node::Dir { mtime });
            }
            tree.insert(
                path,
                Node::File {
                    bytes: content.to_vec(),
                    mtime,
                    scripted: true,
                },
            );
        }
        let files = Arc::new(Mutex::new(tree));
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&random_u64().to_le_bytes());
        }
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let password = format!("{:016x}{:016x}", random_u64(), random_u64());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the scripted SFTP server");
        // Bound here, taken over by the runtime in its own task: `start` may be called from inside
        // another runtime (a tokio test), where nothing may block on this one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the scripted SFTP server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().expect("a folder for the scripted SFTP server");
        let public = key.public_key().to_openssh().expect("an OpenSSH public key");
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{port} {public}\n"),
        )
        .expect("write known_hosts");
        let config = Arc::new(russh::server::Config {
            keys: vec![key],
            auth_rejection_time: std::time::Duration::from_millis(100),
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            ..russh::server::Config::default()
        });
        let (shared, secret) = (Arc::clone(&files), password.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let handler = SshSession {
                    files: Arc::clone(&shared),
                    password: secret.clone(),
                    misbehaviour,
                    channels: HashMap::new(),
                };
                let config = Arc::clone(&config);
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        ScriptedSftp {
            port,
            password,
            files,
            dir,
            runtime: Some(runtime),
        }
    }

    /// `sftp://user:PASSWORD@127.0.0.1:PORT/path` (`path` absolute on the server).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!(
            "sftp://user:{}@127.0.0.1:{}/{}",
            self.password,
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The password it takes (from any user).
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `known_hosts` file that trusts this server's host key.
    #[must_use]
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The folder [`ScriptedSftp::known_hosts`] is in (removed with the server).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bytes of the file at `path` (relative to the root), if there is one.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        let path = format!("/{}", path.trim_start_matches('/'));
        match self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&path)
        {
            Some(Node::File { bytes, .. }) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Every path it holds (relative to the root; folders end in `/`).
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(path, _)| path.as_str() != "/")
            .map(|(path, node)| match node {
                Node::Dir { .. } => format!("{}/", &path[1..]),
                Node::File { .. } => path[1..].to_owned(),
            })
            .collect()
    }
}

impl Drop for ScriptedSftp {
    fn drop(&mut self) {
        // Also from inside another runtime (a tokio test): nothing here waits.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One SSH connection.
struct SshSession {
    files: Arc<Mutex<Tree>>,
    password: String,
    misbehaviour: SftpMisbehaviour,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for SshSession {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if password == self.password {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.close(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.remove(&channel_id) {
            Some(channel) if name == "sftp" => {
                session.channel_success(channel_id)?;
                let sftp = SftpSession {
                    files: Arc::clone(&self.files),
                    misbehaviour: self.misbehaviour,
                    handles: HashMap::new(),
                    next_handle: 0,
                    endless: 0,
                };
                russh_sftp::server::run(channel.into_stream(), sftp).await;
            }
            _ => session.channel_failure(channel_id)?,
        }
        Ok(())
    }
}

/// What an open handle is.
enum Open {
    /// A folder being listed: whether its entries were sent.
    Dir { path: String, sent: bool },
    /// A file (written to in place when opened for writing).
    File { path: String },
}

/// One SFTP channel.
struct SftpSession {
    files: Arc<Mutex<Tree>>,
    misbehaviour: SftpMisbehaviour,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Names made up so far for endless listings.
    endless: u64,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// A client's path as a key of the tree: absolute, without `.` parts or a trailing `/`.
fn resolve(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The string at the start of an extension's data (a 32-bit length, then the bytes), and the rest.
fn take_string(data: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::try_from(u32::from_be_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let bytes = data.get(4..4 + len)?;
    Some((String::from_utf8(bytes.to_vec()).ok()?, &data[4 + len..]))
}

impl SftpSession {
    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = format!("h{}", self.next_handle);
        self.handles.insert(handle.clone(), open);
        handle
    }

    /// The attributes of `node` as this server tells them.
    fn attrs(&self, node: &Node) -> FileAttributes {
        let (mode, size, mtime, scripted) = match node {
            Node::Dir { mtime } => (0o040_755, 0, *mtime, false),
            Node::File {
                bytes,
                mtime,
                scripted,
            } => (0o100_644, bytes.len() as u64, *mtime, *scripted),
        };
        let size = match self.misbehaviour {
            SftpMisbehaviour::SizeTooBig if scripted => size + 1,
            SftpMisbehaviour::SizeTooSmall if scripted => size.saturating_sub(1),
            _ => size,
        };
        let mtime = match self.misbehaviour {
            // A different absurdity for each file, by its size.
            SftpMisbehaviour::AbsurdTimes => match size % 3 {
                0 => Some(u32::MAX),
                1 => Some(0),
                _ => None,
            },
            _ => Some(mtime),
        };
        FileAttributes {
            size: Some(size),
            uid: Some(0),
            user: None,
            gid: Some(0),
            group: None,
            permissions: Some(mode),
            atime: mtime,
            mtime,
        }
    }

    fn hostile_attrs() -> FileAttributes {
        FileAttributes {
            size: Some(HOSTILE_CONTENT.len() as u64),
            uid: Some(0),
            user: None,
            gid: Some(0),
            group: None,
            permissions: Some(0o100_644),
            atime: Some(now()),
            mtime: Some(now()),
        }
    }

    /// Whether `path`'s last part is one of the hostile names (with `/` in a name, "last part" is
    /// whatever follows the folder the client listed: any path ending in one will do).
    fn hostile(&self, path: &str) -> bool {
        self.misbehaviour == SftpMisbehaviour::HostileNames
            && hostile_sftp_names()
                .iter()
                .any(|name| name.len() > 2 && path.ends_with(name.as_str()))
    }

    fn stat_path(&self, id: u32, path: &str) -> Result<Attrs, StatusCode> {
        if self.hostile(path) {
            return Ok(Attrs {
                id,
                attrs: Self::hostile_attrs(),
            });
        }
        let tree = self.tree();
        let node = tree.get(&resolve(path)).ok_or(StatusCode::NoSuchFile)?;
        Ok(Attrs {
            id,
            attrs: self.attrs(node),
        })
    }
}

impl russh_sftp::server::Handler for SftpSession {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let mut version = Version::new();
        for extension in [
            "posix-rename@openssh.com",
            "hardlink@openssh.com",
            "fsync@openssh.com",
        ] {
            version.extensions.insert(extension.to_owned(), "1".to_owned());
        }
        Ok(version)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(resolve(&path))],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat_path(id, &path)
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat_path(id, &path)
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let path = match self.handles.get(&handle) {
            Some(Open::File { path } | Open::Dir { path, .. }) => path.clone(),
            None => return Err(StatusCode::Failure),
        };
        self.stat_path(id, &path)
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Result<Status, Self::Error> {
        let mut tree = self.tree();
        match tree.get_mut(&resolve(&path)) {
            Some(Node::File { mtime, .. } | Node::Dir { mtime }) => {
                if let Some(t) = attrs.mtime {
                    *mtime = t;
                }
                Ok(ok(id))
            }
            None => Err(StatusCode::NoSuchFile),
        }
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = match self.handles.get(&handle) {
            Some(Open::File { path } | Open::Dir { path, .. }) => path.clone(),
            None => return Err(StatusCode::Failure),
        };
        self.setstat(id, path, attrs).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = resolve(&path);
        match self.tree().get(&path) {
            Some(Node::Dir { .. }) => {}
            Some(Node::File { .. }) => return Err(StatusCode::Failure),
            None => return Err(StatusCode::NoSuchFile),
        }
        let handle = self.handle(Open::Dir { path, sent: false });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let (path, sent) = match self.handles.get_mut(&handle) {
            Some(Open::Dir { path, sent }) => (path.clone(), std::mem::replace(sent, true)),
            _ => return Err(StatusCode::Failure),
        };
        if sent {
            if self.misbehaviour != SftpMisbehaviour::EndlessListing {
                return Err(StatusCode::Eof);
            }
            let mut files = Vec::with_capacity(ENDLESS_BATCH);
            for _ in 0..ENDLESS_BATCH {
                self.endless += 1;
                let attrs = FileAttributes {
                    size: Some(1),
                    permissions: Some(0o100_644),
                    mtime: Some(now()),
                    atime: Some(now()),
                    ..FileAttributes::empty()
                };
                files.push(File::new(format!("endless-{:012}", self.endless), attrs));
            }
            return Ok(Name { id, files });
        }
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        let mut files = vec![
            File::new(".", self.attrs(&Node::Dir { mtime: now() })),
            File::new("..", self.attrs(&Node::Dir { mtime: now() })),
        ];
        {
            let tree = self.tree();
            for (child, node) in tree.range(prefix.clone()..) {
                let Some(name) = child.strip_prefix(&prefix) else {
                    break;
                };
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                files.push(File::new(name, self.attrs(node)));
            }
        }
        if self.misbehaviour == SftpMisbehaviour::HostileNames {
            for name in hostile_sftp_names() {
                files.push(File::new(name, Self::hostile_attrs()));
            }
        }
        Ok(Name { id, files })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        if self.hostile(&filename) {
            let handle = self.handle(Open::File { path: filename });
            return Ok(Handle { id, handle });
        }
        let path = resolve(&filename);
        {
            let mut tree = self.tree();
            match tree.get_mut(&path) {
                Some(Node::Dir { .. }) => return Err(StatusCode::Failure),
                Some(Node::File { .. }) if pflags.contains(OpenFlags::EXCLUDE) => {
                    return Err(StatusCode::Failure);
                }
                Some(Node::File {
                    bytes,
                    mtime,
                    scripted,
                }) => {
                    if pflags.contains(OpenFlags::TRUNCATE) {
                        bytes.clear();
                        *mtime = now();
                        *scripted = false;
                    }
                }
                None if pflags.contains(OpenFlags::CREATE) => {
                    if !matches!(tree.get(parent(&path)), Some(Node::Dir { .. })) {
                        return Err(StatusCode::NoSuchFile);
                    }
                    tree.insert(
                        path.clone(),
                        Node::File {
                            bytes: Vec::new(),
                            mtime: now(),
                            scripted: false,
                        },
                    );
                }
                None => return Err(StatusCode::NoSuchFile),
            }
        }
        let handle = self.handle(Open::File { path });
        Ok(Handle { id, handle })
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Result<Data, Self::Error> {
        let Some(Open::File { path }) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let len = usize::try_from(len.min(MAX_READ)).unwrap_or(0);
        let offset = usize::try_from(offset).map_err(|_| StatusCode::Eof)?;
        let (content, scripted) = if self.hostile(path) {
            (HOSTILE_CONTENT.to_vec(), false)
        } else {
            match self.tree().get(path) {
                Some(Node::File { bytes, scripted, .. }) => (bytes.clone(), *scripted),
                _ => return Err(StatusCode::NoSuchFile),
            }
        };
        if offset >= content.len() {
            if self.misbehaviour == SftpMisbehaviour::EndlessFile && scripted {
                return Ok(Data {
                    id,
                    data: vec![0; len],
                });
            }
            return Err(StatusCode::Eof);
        }
        let end = content.len().min(offset + len);
        let mut data = content[offset..end].to_vec();
        if self.misbehaviour == SftpMisbehaviour::EndlessFile && scripted {
            data.resize(len, 0);
        }
        if self.misbehaviour == SftpMisbehaviour::WrongReplyIds && scripted {
            return Ok(Data {
                id: id.wrapping_add(1 << 30),
                data,
            });
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File { path }) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let path = path.clone();
        let offset = usize::try_from(offset).map_err(|_| StatusCode::Failure)?;
        let mut tree = self.tree();
        let Some(Node::File { bytes, mtime, .. }) = tree.get_mut(&path) else {
            return Err(StatusCode::NoSuchFile);
        };
        if bytes.len() < offset + data.len() {
            bytes.resize(offset + data.len(), 0);
        }
        bytes[offset..offset + data.len()].copy_from_slice(&data);
        *mtime = now();
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn mkdir(&mut self, id: u32, path: String, _attrs: FileAttributes) -> Result<Status, Self::Error> {
        let path = resolve(&path);
        let mut tree = self.tree();
        if tree.contains_key(&path) {
            return Err(StatusCode::Failure);
        }
        if !matches!(tree.get(parent(&path)), Some(Node::Dir { .. })) {
            return Err(StatusCode::NoSuchFile);
        }
        tree.insert(path, Node::Dir { mtime: now() });
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = resolve(&path);
        let mut tree = self.tree();
        if !matches!(tree.get(&path), Some(Node::Dir { .. })) || path == "/" {
            return Err(StatusCode::Failure);
        }
        let below = format!("{path}/");
        if tree
            .range(below.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&below))
        {
            return Err(StatusCode::Failure);
        }
        tree.remove(&path);
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = resolve(&filename);
        let mut tree = self.tree();
        match tree.get(&path) {
            Some(Node::File { .. }) => {
                tree.remove(&path);
                Ok(ok(id))
            }
            Some(Node::Dir { .. }) => Err(StatusCode::Failure),
            None => Err(StatusCode::NoSuchFile),
        }
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status, Self::Error> {
        // SFTP version 3's rename does not replace.
        self.move_path(&oldpath, &newpath, false).map(|()| ok(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Result<Packet, Self::Error> {
        if request == "fsync@openssh.com" {
            let (handle, _) = take_string(&data).ok_or(StatusCode::BadMessage)?;
            let Some(Open::File { path }) = self.handles.get(&handle) else {
                return Err(StatusCode::Failure);
            };
            let size = match self.tree().get(path) {
                Some(Node::File { bytes, .. }) => bytes.len() as u64,
                _ => return Err(StatusCode::NoSuchFile),
            };
            match self.misbehaviour {
                SftpMisbehaviour::SlowDisk { bytes_per_second } => {
                    let millis = size.saturating_mul(1000) / bytes_per_second.max(1);
                    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                }
                SftpMisbehaviour::FsyncNeverAnswers => std::future::pending::<()>().await,
                _ => {}
            }
            return Ok(Packet::Status(ok(id)));
        }
        let (from, rest) = take_string(&data).ok_or(StatusCode::BadMessage)?;
        let (to, _) = take_string(rest).ok_or(StatusCode::BadMessage)?;
        match request.as_str() {
            "posix-rename@openssh.com" => self.move_path(&from, &to, true)?,
            "hardlink@openssh.com" => {
                let (from, to) = (resolve(&from), resolve(&to));
                let mut tree = self.tree();
                let Some(node @ Node::File { .. }) = tree.get(&from).cloned() else {
                    return Err(StatusCode::NoSuchFile);
                };
                if tree.contains_key(&to) {
                    return Err(StatusCode::Failure);
                }
                tree.insert(to, node);
            }
            _ => return Err(StatusCode::OpUnsupported),
        }
        Ok(Packet::Status(ok(id)))
    }
}

impl SftpSession {
    /// Moves `from` (a file, or a folder with everything below it) to `to`, over a file there when
    /// `replace`.
    fn move_path(&self, from: &str, to: &str, replace: bool) -> Result<(), StatusCode> {
        let (from, to) = (resolve(from), resolve(to));
        let mut tree = self.tree();
        let Some(node) = tree.get(&from).cloned() else {
            return Err(StatusCode::NoSuchFile);
        };
        match tree.get(&to) {
            Some(Node::File { .. }) if replace && matches!(node, Node::File { .. }) => {}
            Some(_) => return Err(StatusCode::Failure),
            None => {}
        }
        if !matches!(tree.get(parent(&to)), Some(Node::Dir { .. })) {
            return Err(StatusCode::NoSuchFile);
        }
        let below = format!("{from}/");
        let moved: Vec<(String, Node)> = tree
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (path, node) in moved {
            tree.remove(&path);
            tree.insert(format!("{to}/{}", &path[below.len()..]), node);
        }
        tree.remove(&from);
        tree.insert(to, node);
        Ok(())
    }
}
