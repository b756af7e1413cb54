//! A small FTP server written here, whose misbehaviour each test chooses: a test double for hostile
//! servers only (a listing or a file that never ends, sizes that lie, absurd times, replies that
//! come unasked), beside the real servers and never instead of them.
//!
//! It speaks enough of RFC 959 and RFC 3659 for snapsync's client: `USER`/`PASS` (any user and
//! password), `SYST`, `FEAT` (`MLST`, `UTF8`), `OPTS`, `TYPE`, `PWD`, `CWD`, `PASV`, `EPSV`, `LIST`,
//! `MLSD`, `MLST`, `SIZE`, `MDTM`, `RETR`, `STOR`, `DELE`, `MKD`, `RMD`, `RNFR`/`RNTO`, `NOOP`,
//! `QUIT`. Files live in memory; every session shares them. One thread per session, one listener
//! thread, all stopped when the server is dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does wrong. [`Misbehaviour::None`] is an honest server, the baseline that shows
/// the double is good enough for a normal run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Behaves.
    None,
    /// `LIST` and `MLSD` send the directory's entries, then made-up entries forever.
    EndlessListing,
    /// `RETR` sends the file, then zero bytes forever (sizes are told honestly).
    EndlessFile,
    /// `RETR` sends the first half of the file and says the transfer completed (sizes are told as
    /// the whole file's).
    ShortFile,
    /// Listings and `MLST` say each file is one byte longer than what `RETR` sends (`SIZE`, which
    /// the client asks after a `STOR`, tells the truth, so that uploads work).
    LyingSize,
    /// Times in listings are absurd: the year 9999, the year 0 and text that is no time at all.
    AbsurdTimes,
    /// Every listing also names entries no folder can hold: `.`, `..`, `escape` one folder up
    /// (through `..`), `/etc/escape` and `sub/../../escape` (as files of 4 bytes, whose `RETR` finds
    /// nothing).
    HostileNames,
    /// After the login, one reply nobody asked for (`226`), so every later reply answers the
    /// command before it.
    UnsolicitedReply,
}

/// A running scripted server on 127.0.0.1.
#[derive(Debug)]
pub struct ScriptedFtp {
    port: u16,
    stop: Arc<AtomicBool>,
    files: Arc<Mutex<Tree>>,
    listener: Option<JoinHandle<()>>,
}

/// Path (absolute, no trailing `/`, the root is `/`) → a file's bytes, or `None` for a directory.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

impl ScriptedFtp {
    /// Starts one serving `files` (paths relative to its root, folders made as needed).
    #[must_use]
    pub fn start(files: &[(&str, &[u8])], misbehaviour: Misbehaviour) -> ScriptedFtp {
        let mut tree = Tree::new();
        tree.insert("/".to_owned(), None);
        for (path, content) in files {
            let path = format!("/{}", path.trim_start_matches('/'));
            let mut dir = String::new();
            for part in path
                .split('/')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .split_last()
                .unwrap()
                .1
            {
                dir.push('/');
                dir.push_str(part);
                tree.insert(dir.clone(), None);
            }
            tree.insert(path, Some(content.to_vec()));
        }
        let files = Arc::new(Mutex::new(tree));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted FTP server");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (shared, stopping) = (Arc::clone(&files), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let session = Session {
                            files: Arc::clone(&shared),
                            stop: Arc::clone(&stopping),
                            misbehaviour,
                            cwd: "/".to_owned(),
                            passive: None,
                            rename_from: None,
                        };
                        std::thread::spawn(move || session.serve(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ScriptedFtp {
            port,
            stop,
            files,
            listener: Some(handle),
        }
    }

    /// `ftp://user:password@127.0.0.1:PORT/path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!(
            "ftp://user:password@127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bytes of the file at `path` (relative to the root), if there is one.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&path)
            .cloned()
            .flatten()
    }
}

impl Drop for ScriptedFtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.listener.take() {
            let _ = handle.join();
        }
    }
}

struct Session {
    files: Arc<Mutex<Tree>>,
    stop: Arc<AtomicBool>,
    misbehaviour: Misbehaviour,
    cwd: String,
    passive: Option<TcpListener>,
    rename_from: Option<String>,
}

/// A time in `YYYYMMDDHHMMSS` form, fixed so that tests can compare.
const TIME: &str = "20200102030405";

impl Session {
    fn serve(mut self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_mins(2)));
        let Ok(mut out) = stream.try_clone() else { return };
        let mut lines = BufReader::new(stream);
        if reply(&mut out, "220 scripted FTP server ready").is_err() {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let text = line.trim_end_matches(['\r', '\n']);
            let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
            let verb = verb.to_ascii_uppercase();
            match self.command(&verb, arg, &mut out) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Absolute, normalised.
    fn resolve(&self, arg: &str) -> String {
        let joined = if arg.starts_with('/') {
            arg.to_owned()
        } else {
            format!("{}/{arg}", self.cwd)
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// The size this server tells for a file of `len` bytes.
    fn told_size(&self, len: usize) -> usize {
        if self.misbehaviour == Misbehaviour::LyingSize {
            len + 1
        } else {
            len
        }
    }

    /// Handles one command; `Ok(false)` ends the session.
    fn command(&mut self, verb: &str, arg: &str, out: &mut TcpStream) -> std::io::Result<bool> {
        match verb {
            "USER" => reply(out, "331 password please")?,
            "PASS" => {
                reply(out, "230 logged in")?;
                if self.misbehaviour == Misbehaviour::UnsolicitedReply {
                    reply(out, "226 transfer complete (nobody asked)")?;
                }
            }
            "SYST" => reply(out, "215 UNIX Type: L8")?,
            "FEAT" => reply(
                out,
                "211-Features:\r\n MLST type*;size*;modify*;\r\n UTF8\r\n211 End",
            )?,
            "OPTS" | "TYPE" | "NOOP" => reply(out, "200 ok")?,
            "PWD" => reply(out, &format!("257 \"{}\" is the current directory", self.cwd))?,
            "CWD" => {
                let path = self.resolve(arg);
                if matches!(self.tree().get(&path), Some(None)) {
                    self.cwd = path;
                    reply(out, "250 ok")?;
                } else {
                    reply(out, "550 no such directory")?;
                }
            }
            "CDUP" => {
                self.cwd = self.resolve("..");
                reply(out, "250 ok")?;
            }
            "PASV" | "EPSV" => {
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let port = listener.local_addr()?.port();
                self.passive = Some(listener);
                if verb == "PASV" {
                    reply(
                        out,
                        &format!(
                            "227 Entering Passive Mode (127,0,0,1,{},{})",
                            port >> 8,
                            port & 0xff
                        ),
                    )?;
                } else {
                    reply(out, &format!("229 Entering Extended Passive Mode (|||{port}|)"))?;
                }
            }
            "LIST" | "MLSD" => {
                let arg = arg.split(' ').find(|a| !a.starts_with('-')).unwrap_or("");
                let dir = self.resolve(arg);
                if !matches!(self.tree().get(&dir), Some(None)) {
                    reply(out, "550 no such directory")?;
                    return Ok(true);
                }
                let text = self.listing(&dir, verb == "MLSD");
                let endless = self.misbehaviour == Misbehaviour::EndlessListing;
                let machine = verb == "MLSD";
                self.transfer(out, |data| {
                    data.write_all(text.as_bytes())?;
                    if !endless {
                        return Ok(());
                    }
                    for n in 1u64.. {
                        let line = if machine {
                            format!("type=file;size=1;modify={TIME}; junk-{n}\r\n")
                        } else {
                            format!("-rw-r--r--   1 user     user            1 Jan 02  2020 junk-{n}\r\n")
                        };
                        data.write_all(line.as_bytes())?;
                    }
                    Ok(())
                })?;
            }
            "MLST" => {
                let path = self.resolve(arg);
                let fact = self
                    .tree()
                    .get(&path)
                    .cloned()
                    .map(|node| self.facts(node.as_deref()));
                match fact {
                    Some(fact) => reply(out, &format!("250-Listing {path}\r\n {fact} {path}\r\n250 End"))?,
                    None => reply(out, "550 no such file")?,
                }
            }
            "SIZE" => match self.tree().get(&self.resolve(arg)) {
                Some(Some(bytes)) => reply(out, &format!("213 {}", bytes.len()))?,
                _ => reply(out, "550 no such file")?,
            },
            "MDTM" => match self.tree().get(&self.resolve(arg)) {
                Some(Some(_)) if self.misbehaviour == Misbehaviour::AbsurdTimes => {
                    reply(out, "213 99999999999999")?;
                }
                Some(Some(_)) => reply(out, &format!("213 {TIME}"))?,
                _ => reply(out, "550 no such file")?,
            },
            "RETR" => {
                let bytes = self.tree().get(&self.resolve(arg)).cloned().flatten();
                let Some(bytes) = bytes else {
                    reply(out, "550 no such file")?;
                    return Ok(true);
                };
                let misbehaviour = self.misbehaviour;
                self.transfer(out, |data| match misbehaviour {
                    Misbehaviour::EndlessFile => {
                        data.write_all(&bytes)?;
                        let zeros = vec![0u8; 64 << 10];
                        loop {
                            data.write_all(&zeros)?;
                        }
                    }
                    Misbehaviour::ShortFile => data.write_all(&bytes[..bytes.len() / 2]),
                    _ => data.write_all(&bytes),
                })?;
            }
            "STOR" => {
                let path = self.resolve(arg);
                let mut received = Vec::new();
                self.transfer(out, |data| data.read_to_end(&mut received).map(|_| ()))?;
                self.tree().insert(path, Some(received));
            }
            "DELE" => {
                let path = self.resolve(arg);
                let removed = matches!(self.tree().get(&path), Some(Some(_)));
                if removed {
                    self.tree().remove(&path);
                    reply(out, "250 deleted")?;
                } else {
                    reply(out, "550 no such file")?;
                }
            }
            "MKD" => {
                let path = self.resolve(arg);
                let mut tree = self.tree();
                if tree.contains_key(&path) {
                    drop(tree);
                    reply(out, "550 exists")?;
                } else {
                    tree.insert(path.clone(), None);
                    drop(tree);
                    reply(out, &format!("257 \"{path}\" created"))?;
                }
            }
            "RMD" => {
                let path = self.resolve(arg);
                let prefix = format!("{path}/");
                let mut tree = self.tree();
                let empty = !tree.keys().any(|k| k.starts_with(&prefix));
                if matches!(tree.get(&path), Some(None)) && empty {
                    tree.remove(&path);
                    drop(tree);
                    reply(out, "250 removed")?;
                } else {
                    drop(tree);
                    reply(out, "550 not an empty directory")?;
                }
            }
            "RNFR" => {
                let path = self.resolve(arg);
                if self.tree().contains_key(&path) {
                    self.rename_from = Some(path);
                    reply(out, "350 ready for RNTO")?;
                } else {
                    reply(out, "550 no such file")?;
                }
            }
            "RNTO" => {
                let to = self.resolve(arg);
                let Some(from) = self.rename_from.take() else {
                    reply(out, "503 RNFR first")?;
                    return Ok(true);
                };
                let mut tree = self.tree();
                let node = tree.remove(&from).flatten();
                tree.insert(to, node);
                drop(tree);
                reply(out, "250 renamed")?;
            }
            "QUIT" => {
                reply(out, "221 bye")?;
                return Ok(false);
            }
            _ => reply(out, "502 not implemented")?,
        }
        Ok(true)
    }

    /// `type=…;size=…;modify=…;` of an entry (`None`: a directory).
    fn facts(&self, node: Option<&[u8]>) -> String {
        let time = if self.misbehaviour == Misbehaviour::AbsurdTimes {
            "99991231235959"
        } else {
            TIME
        };
        match node {
            Some(bytes) => format!("type=file;size={};modify={time};", self.told_size(bytes.len())),
            None => format!("type=dir;modify={time};"),
        }
    }

    /// The listing of `dir`, machine (`MLSD`) or Unix `ls -l` style.
    fn listing(&self, dir: &str, machine: bool) -> String {
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        let tree = self.tree().clone();
        let mut text = String::new();
        for (i, (path, node)) in tree.iter().enumerate() {
            let Some(name) = path
                .strip_prefix(&prefix)
                .filter(|n| !n.is_empty() && !n.contains('/'))
            else {
                continue;
            };
            if machine {
                let mut facts = self.facts(node.as_deref());
                if self.misbehaviour == Misbehaviour::AbsurdTimes && i % 2 == 0 {
                    facts = facts.replace("99991231235959", "00000000000000");
                }
                let _ = write!(text, "{facts} {name}\r\n");
            } else {
                let (kind, size) = match node {
                    Some(bytes) => ('-', self.told_size(bytes.len())),
                    None => ('d', 0),
                };
                let date = if self.misbehaviour == Misbehaviour::AbsurdTimes {
                    "Feb 31  9999"
                } else {
                    "Jan 02  2020"
                };
                let _ = write!(
                    text,
                    "{kind}rw-r--r--   1 user     user {size:>12} {date} {name}\r\n"
                );
            }
        }
        if self.misbehaviour == Misbehaviour::HostileNames {
            for name in [".", "..", "../escape", "/etc/escape", "sub/../../escape"] {
                if machine {
                    let _ = write!(text, "type=file;size=4;modify={TIME}; {name}\r\n");
                } else {
                    let _ = write!(
                        text,
                        "-rw-r--r--   1 user     user            4 Jan 02  2020 {name}\r\n"
                    );
                }
            }
        }
        text
    }

    /// A transfer on the data connection the last `PASV`/`EPSV` opened: `150`, `work`, close, `226`
    /// (or `426` when the data connection broke, as when the client stopped reading).
    fn transfer(
        &mut self,
        out: &mut TcpStream,
        work: impl FnOnce(&mut TcpStream) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Some(listener) = self.passive.take() else {
            return reply(out, "425 use PASV or EPSV first");
        };
        reply(out, "150 opening data connection")?;
        let mut data = accept(&listener)?;
        let done = work(&mut data);
        let _ = data.shutdown(Shutdown::Both);
        drop(data);
        match done {
            Ok(()) => reply(out, "226 transfer complete"),
            Err(_) => reply(out, "426 data connection broken"),
        }
    }
}

/// The client's data connection, within 30 seconds.
fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn reply(out: &mut TcpStream, text: &str) -> std::io::Result<()> {
    out.write_all(format!("{text}\r\n").as_bytes())?;
    out.flush()
}
