//! A fault-injecting TCP proxy for tests of what snapsync does when the network misbehaves.
//!
//! [`FaultProxy`] listens on a free port of 127.0.0.1 and forwards every connection to a server;
//! [`Rule`]s choose, by connection number and direction, what goes wrong: the connection is closed as
//! soon as it is accepted ([`Fault::Drop`]), or after some bytes it stops forwarding while keeping
//! both sockets open ([`Fault::Stall`]), closes both sides cleanly ([`Fault::Truncate`]), resets
//! both with an RST (`SO_LINGER` 0, [`Fault::Reset`]), or each chunk is held back a while
//! ([`Fault::Latency`]). A rule is one-shot ([`When::Nth`]: a transient fault) or applies to every
//! connection ([`When::Every`]: a persistent one).
//!
//! In FTP mode ([`FaultProxy::ftp`]) the proxy reads the server's replies on the control connection
//! and rewrites the port of each `227` (`PASV`) and `229` (`EPSV`) reply to a listener of its own,
//! so that data connections go through it too and can be faulted on their own ([`Link::Data`]); and
//! [`Fault::ClosePassive`] closes a control connection right at a passive reply, as vsftpd was seen
//! to do under many connections. This needs plain FTP: on FTPS the control connection is encrypted
//! and the replies cannot be read, so an FTPS server is faulted at the TCP level only
//! ([`FaultProxy::start`], every connection of [`Link::Main`]; its data connections go straight to
//! the server).
//!
//! Std threads, blocking sockets: a thread per direction of each connection. Dropping the proxy
//! closes its listener and every connection it still holds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Which connections a [`Rule`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The connections made to the proxy's own port: every connection of a plain TCP proxy, the
    /// control connections of an FTP one.
    Main,
    /// FTP mode only: the data connections announced by rewritten `PASV` and `EPSV` replies.
    Data,
}

/// Which way the bytes a fault counts flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (an upload's data, commands, requests).
    ToServer,
    /// From the server to the client (a download's data, replies, responses).
    ToClient,
}

/// What goes wrong on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed as soon as it is accepted, before anything reaches the server.
    Drop,
    /// After `after` bytes have gone `direction`, nothing more is forwarded either way, and both
    /// sockets stay open (a server that hangs). `after` 0: from the start.
    Stall {
        /// The direction counted.
        direction: Direction,
        /// Bytes forwarded first.
        after: u64,
    },
    /// After `after` bytes have gone `direction`, both connections are closed cleanly (FIN).
    Truncate {
        /// The direction counted.
        direction: Direction,
        /// Bytes forwarded first.
        after: u64,
    },
    /// After `after` bytes have gone `direction`, both connections are reset (RST: `SO_LINGER` 0).
    Reset {
        /// The direction counted.
        direction: Direction,
        /// Bytes forwarded first.
        after: u64,
    },
    /// Every chunk read is held this long before it is forwarded, both ways.
    Latency(Duration),
    /// FTP mode, control connections: at the first `227` or `229` reply the connection is closed
    /// (FIN to both sides), after forwarding that reply (`reply`: vsftpd's case) or without it.
    ClosePassive {
        /// Whether the client gets the reply first.
        reply: bool,
    },
    /// FTP mode, control connections: the first `227` or `229` reply is cut after its first `bytes`
    /// bytes and the connection closed (a reply the client can only read as malformed).
    CutPassive {
        /// How many bytes of the reply the client gets.
        bytes: usize,
    },
}

/// Which connections of its [`Link`] a rule applies to, counted from when the rule was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Only the k-th (1 is the next one): a transient fault, gone when the client tries again.
    Nth(usize),
    /// Every one: a persistent fault.
    Every,
    /// Every one until the fault has taken effect once (a byte limit that a connection never
    /// reaches does not count): a transient fault where the connection it will meet cannot be
    /// numbered in advance (listings' data connections before an upload's). Connections already
    /// given it when it first takes effect keep it.
    UntilFired,
}

/// A fault, and the connections it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Which kind of connection.
    pub link: Link,
    /// Which of them.
    pub when: When,
    /// What happens to it.
    pub fault: Fault,
}

impl Rule {
    /// `fault` on only the next connection of `link` (transient).
    #[must_use]
    pub fn once(link: Link, fault: Fault) -> Rule {
        Rule {
            link,
            when: When::Nth(1),
            fault,
        }
    }

    /// `fault` on every connection of `link` from now on (persistent).
    #[must_use]
    pub fn always(link: Link, fault: Fault) -> Rule {
        Rule {
            link,
            when: When::Every,
            fault,
        }
    }
}

/// A rule, with the number of connections of its link opened before it was added.
#[derive(Clone, Debug)]
struct Armed {
    rule: Rule,
    base: usize,
    /// Set when a connection given this rule's fault saw it take effect.
    fired: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    ftp: bool,
    rules: Mutex<Vec<Armed>>,
    /// Connections accepted, per link (`Main`, `Data`).
    opened: [AtomicUsize; 2],
    /// Faults that took effect.
    fired: AtomicUsize,
    closing: AtomicBool,
    conns: Mutex<Vec<Weak<Conn>>>,
}

/// One proxied connection: the client's socket and the server's.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    server: TcpStream,
    fault: Option<Fault>,
    /// The rule's flag that its fault took effect.
    fired: Option<Arc<AtomicBool>>,
    /// Forwarding stopped for good (a stall, a close, a reset).
    stopped: AtomicBool,
    /// The sockets are being reset: nothing may send a FIN first.
    resetting: AtomicBool,
}

/// A TCP proxy on 127.0.0.1 that injects faults. See the module documentation.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(20);

impl FaultProxy {
    /// A plain TCP proxy to `127.0.0.1:target_port` (any protocol; FTPS and its data connections
    /// are left as they are).
    #[must_use]
    pub fn start(target_port: u16) -> FaultProxy {
        FaultProxy::spawn(SocketAddr::from(([127, 0, 0, 1], target_port)), false)
    }

    /// An FTP-aware proxy to the plain FTP server on `127.0.0.1:target_port`: passive replies are
    /// rewritten so that data connections go through the proxy as well ([`Link::Data`]).
    #[must_use]
    pub fn ftp(target_port: u16) -> FaultProxy {
        FaultProxy::spawn(SocketAddr::from(([127, 0, 0, 1], target_port)), true)
    }

    fn spawn(target: SocketAddr, ftp: bool) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a port");
        let port = listener.local_addr().expect("the proxy's address").port();
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            target,
            ftp,
            rules: Mutex::default(),
            opened: [AtomicUsize::new(0), AtomicUsize::new(0)],
            fired: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            conns: Mutex::default(),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !shared.closing.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let shared = Arc::clone(&shared);
                            std::thread::spawn(move || serve(&shared, client, Link::Main, shared.target));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })
        };
        FaultProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (a server's URL on 127.0.0.1) with the server's port replaced by the proxy's.
    #[must_use]
    pub fn url(&self, url: &str) -> String {
        let server = format!("127.0.0.1:{}", self.shared.target.port());
        assert!(url.contains(&server), "{url} does not name {server}");
        url.replacen(&server, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// Adds a rule (the first rule that matches a new connection decides its fault); its connections
    /// are counted from now.
    pub fn add(&self, rule: Rule) {
        let base = self.opened(rule.link);
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Armed {
                rule,
                base,
                fired: Arc::default(),
            });
    }

    /// Removes every rule: new connections are forwarded faithfully.
    pub fn clear(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Connections of `link` accepted so far.
    #[must_use]
    pub fn opened(&self, link: Link) -> usize {
        self.shared.opened[link as usize].load(Ordering::SeqCst)
    }

    /// How many times a fault took effect (a byte limit reached, a connection dropped, a passive
    /// reply closed on; a latency rule counts each connection it slows).
    #[must_use]
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for conn in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            if let Some(conn) = conn.upgrade() {
                conn.stopped.store(true, Ordering::SeqCst);
                let _ = conn.client.shutdown(Shutdown::Both);
                let _ = conn.server.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Shared {
    /// The fault for connection `n` (1-based, counted from the proxy's start) of `link`.
    fn fault_for(&self, link: Link, n: usize) -> Option<(Fault, Arc<AtomicBool>)> {
        let rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        rules
            .iter()
            .find(|armed| {
                armed.rule.link == link
                    && match armed.rule.when {
                        When::Nth(k) => n == armed.base + k,
                        When::Every => n > armed.base,
                        When::UntilFired => n > armed.base && !armed.fired.load(Ordering::SeqCst),
                    }
            })
            .map(|armed| (armed.rule.fault, Arc::clone(&armed.fired)))
    }

    fn fire(&self) {
        self.fired.fetch_add(1, Ordering::SeqCst);
    }

    /// A fault took effect on `conn`.
    fn fire_on(&self, conn: &Conn) {
        self.fire();
        if let Some(fired) = &conn.fired {
            fired.store(true, Ordering::SeqCst);
        }
    }
}

/// Proxies one accepted connection of `link` to `target`.
fn serve(shared: &Arc<Shared>, client: TcpStream, link: Link, target: SocketAddr) {
    let n = shared.opened[link as usize].fetch_add(1, Ordering::SeqCst) + 1;
    let (fault, fired) = shared.fault_for(link, n).unzip();
    if fault == Some(Fault::Drop) {
        shared.fire();
        if let Some(fired) = fired {
            fired.store(true, Ordering::SeqCst);
        }
        drop(client);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Arc::new(Conn {
        client,
        server,
        fault,
        fired,
        stopped: AtomicBool::new(false),
        resetting: AtomicBool::new(false),
    });
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&conn));
    if let Some(Fault::Latency(_)) = fault {
        shared.fire_on(&conn);
    }
    // A byte limit of 0 applies before anything is forwarded.
    if let Some(
        Fault::Stall { after: 0, .. } | Fault::Truncate { after: 0, .. } | Fault::Reset { after: 0, .. },
    ) = fault
    {
        shared.fire_on(&conn);
        apply(shared, &conn);
        return;
    }
    let upstream = {
        let (shared, conn) = (Arc::clone(shared), Arc::clone(&conn));
        std::thread::spawn(move || pump(&shared, &conn, Direction::ToServer, link))
    };
    pump(shared, &conn, Direction::ToClient, link);
    let _ = upstream.join();
}

/// Does what a connection's fault does once its byte limit is reached (or at once).
fn apply(shared: &Shared, conn: &Conn) {
    conn.stopped.store(true, Ordering::SeqCst);
    match conn.fault {
        Some(Fault::Stall { .. }) => hold(shared, conn),
        Some(Fault::Reset { .. }) => reset(conn),
        _ => close(conn),
    }
}

/// Keeps a stalled connection open, forwarding nothing, until the proxy goes.
fn hold(shared: &Shared, conn: &Conn) {
    while !shared.closing.load(Ordering::SeqCst) && !conn.resetting.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
    }
    close(conn);
}

/// Closes both sides cleanly (FIN).
fn close(conn: &Conn) {
    conn.stopped.store(true, Ordering::SeqCst);
    let _ = conn.client.shutdown(Shutdown::Both);
    let _ = conn.server.shutdown(Shutdown::Both);
}

/// Resets both sides: with `SO_LINGER` 0, closing a socket sends an RST instead of a FIN. The reads
/// are woken (`shutdown` of the reading side sends nothing); the last owner's drop closes them.
fn reset(conn: &Conn) {
    conn.resetting.store(true, Ordering::SeqCst);
    conn.stopped.store(true, Ordering::SeqCst);
    for socket in [&conn.client, &conn.server] {
        let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
        let _ = socket.shutdown(Shutdown::Read);
    }
}

/// Forwards one direction of a connection until it ends or its fault stops it.
fn pump(shared: &Arc<Shared>, conn: &Arc<Conn>, direction: Direction, link: Link) {
    let (mut from, mut to) = match direction {
        Direction::ToServer => (&conn.client, &conn.server),
        Direction::ToClient => (&conn.server, &conn.client),
    };
    let ftp_replies = shared.ftp && link == Link::Main && direction == Direction::ToClient;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                // The other side's end goes on, unless a reset must reach it first.
                if !conn.resetting.load(Ordering::SeqCst) && !conn.stopped.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
        };
        if conn.stopped.load(Ordering::SeqCst) {
            if conn.resetting.load(Ordering::SeqCst) {
                return;
            }
            hold(shared, conn);
            return;
        }
        if let Some(Fault::Latency(delay)) = conn.fault {
            std::thread::sleep(delay);
        }
        if !ftp_replies {
            if !forward(shared, conn, direction, &mut to, &buf[..n], &mut sent) {
                return;
            }
            continue;
        }
        // FTP replies, a line at a time: passive replies are rewritten (and maybe closed on).
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let answer: Vec<u8> = pending.drain(..=end).collect();
            let passive = answer.starts_with(b"227 ") || answer.starts_with(b"229 ");
            let answer = if passive {
                rewrite_passive(shared, &answer).unwrap_or(answer)
            } else {
                answer
            };
            let shown = match conn.fault {
                Some(Fault::ClosePassive { reply }) => Some(if reply { answer.len() } else { 0 }),
                Some(Fault::CutPassive { bytes }) => Some(bytes.min(answer.len())),
                _ => None,
            };
            if let (true, Some(shown)) = (passive, shown) {
                let _ = to.write_all(&answer[..shown]);
                shared.fire_on(conn);
                close(conn);
                return;
            }
            if !forward(shared, conn, direction, &mut to, &answer, &mut sent) {
                return;
            }
        }
    }
}

/// Writes `data` on, minding the connection's byte limit in `direction`; false when forwarding
/// ended (the fault took effect, or the other side is gone).
fn forward(
    shared: &Shared,
    conn: &Conn,
    direction: Direction,
    to: &mut &TcpStream,
    data: &[u8],
    sent: &mut u64,
) -> bool {
    let limit = match conn.fault {
        Some(
            Fault::Stall { direction: d, after }
            | Fault::Truncate { direction: d, after }
            | Fault::Reset { direction: d, after },
        ) if d == direction => Some(after),
        _ => None,
    };
    let len = data.len() as u64;
    if let Some(after) = limit
        && *sent + len >= after
    {
        let head = usize::try_from(after - *sent)
            .unwrap_or(data.len())
            .min(data.len());
        let _ = to.write_all(&data[..head]);
        let _ = to.flush();
        *sent = after;
        shared.fire_on(conn);
        apply(shared, conn);
        return false;
    }
    *sent += len;
    to.write_all(data).is_ok()
}

/// A `227` or `229` reply with the port replaced by a listener of the proxy's that forwards one data
/// connection to the server's port; `None` when the reply cannot be read.
fn rewrite_passive(shared: &Arc<Shared>, line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let (port, rewritten): (u16, Box<dyn Fn(u16) -> String>) = if text.starts_with("227") {
        // 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).
        let open = text.find('(')?;
        let close = open + text[open..].find(')')?;
        let numbers: Vec<u8> = text[open + 1..close]
            .split(',')
            .map(|n| n.trim().parse().ok())
            .collect::<Option<_>>()?;
        let [_, _, _, _, high, low] = numbers[..] else {
            return None;
        };
        let (head, tail) = (text[..open].to_owned(), text[close + 1..].to_owned());
        (
            u16::from(high) * 256 + u16::from(low),
            Box::new(move |p| format!("{head}(127,0,0,1,{},{}){tail}", p / 256, p % 256)),
        )
    } else {
        // 229 Entering Extended Passive Mode (|||port|)
        let open = text.find("(|||")?;
        let close = open + 4 + text[open + 4..].find('|')?;
        let port = text[open + 4..close].parse().ok()?;
        let (head, tail) = (text[..open].to_owned(), text[close..].to_owned());
        (port, Box::new(move |p| format!("{head}(|||{p}{tail}")))
    };
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    let proxy_port = listener.local_addr().ok()?.port();
    listener.set_nonblocking(true).ok()?;
    let target = SocketAddr::new(shared.target.ip(), port);
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let started = Instant::now();
        while !shared.closing.load(Ordering::SeqCst) && started.elapsed() < Duration::from_mins(1) {
            match listener.accept() {
                Ok((client, _)) => {
                    drop(listener);
                    serve(&shared, client, Link::Data, target);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Some(rewritten(proxy_port).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each connection with `greeting`, then echoes what it reads, and counts
    /// the bytes it received.
    struct Echo {
        port: u16,
        received: Arc<AtomicUsize>,
    }

    fn echo(greeting: &'static [u8]) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let _ = stream.write_all(greeting);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n, Ordering::SeqCst);
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo { port, received }
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    /// Reads until the end of the stream: the bytes, and how it ended.
    fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    #[test]
    fn without_rules_bytes_go_through_both_ways() {
        let server = echo(b"hello\n");
        let proxy = FaultProxy::start(server.port);
        let mut stream = connect(&proxy);
        let mut greeting = [0u8; 6];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"hello\n");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = stream.try_clone().unwrap();
        let expected = payload.clone();
        let echoed = std::thread::spawn(move || {
            let mut back = vec![0u8; expected.len()];
            reader.read_exact(&mut back).unwrap();
            back == expected
        });
        stream.write_all(&payload).unwrap();
        assert!(echoed.join().unwrap());
        assert_eq!((proxy.opened(Link::Main), proxy.fired()), (1, 0));
    }

    #[test]
    fn truncate_forwards_exactly_the_bytes_before_it_then_closes_cleanly() {
        let server = echo(b"0123456789abcdef");
        let proxy = FaultProxy::start(server.port);
        proxy.add(Rule::always(
            Link::Main,
            Fault::Truncate {
                direction: Direction::ToClient,
                after: 10,
            },
        ));
        let mut stream = connect(&proxy);
        let (got, end) = read_to_end(&mut stream);
        assert_eq!(got, b"0123456789");
        assert!(end.is_ok(), "a clean close, not {end:?}");
        assert_eq!(proxy.fired(), 1);
    }

    #[test]
    fn reset_ends_the_connection_with_an_rst_after_its_bytes() {
        let server = echo(b"");
        let proxy = FaultProxy::start(server.port);
        proxy.add(Rule::once(
            Link::Main,
            Fault::Reset {
                direction: Direction::ToServer,
                after: 5,
            },
        ));
        let mut stream = connect(&proxy);
        stream.write_all(b"abcdefgh").unwrap();
        let (got, end) = read_to_end(&mut stream);
        // The server got the 5 bytes before the limit (and echoed what it could before the reset).
        assert!(b"abcde".starts_with(&got), "{got:?}");
        let error = end.expect_err("a reset, not a clean end");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        assert!(
            wait(|| server.received.load(Ordering::SeqCst) == 5),
            "{}",
            server.received.load(Ordering::SeqCst)
        );
        // One-shot: the next connection is faithful.
        let mut again = connect(&proxy);
        again.write_all(b"xyz").unwrap();
        let mut back = [0u8; 3];
        again.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"xyz");
        assert_eq!((proxy.opened(Link::Main), proxy.fired()), (2, 1));
    }

    #[test]
    fn stall_keeps_the_connection_open_and_silent() {
        let server = echo(b"0123456789");
        let proxy = FaultProxy::start(server.port);
        proxy.add(Rule::always(
            Link::Main,
            Fault::Stall {
                direction: Direction::ToClient,
                after: 4,
            },
        ));
        let mut stream = connect(&proxy);
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"0123");
        // Nothing more comes, yet the connection is not closed: the read times out.
        stream.write_all(b"ping").unwrap();
        let mut buf = [0u8; 16];
        let error = stream.read(&mut buf).expect_err("a stall, not data or an end");
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{error}"
        );
        // Dropping the proxy ends it.
        drop(proxy);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)));
    }

    #[test]
    fn drop_closes_the_chosen_connection_before_the_server_sees_it() {
        let server = echo(b"hi");
        let proxy = FaultProxy::start(server.port);
        proxy.add(Rule {
            link: Link::Main,
            when: When::Nth(2),
            fault: Fault::Drop,
        });
        let mut first = connect(&proxy);
        let mut hi = [0u8; 2];
        first.read_exact(&mut hi).unwrap();
        let mut second = connect(&proxy);
        let (got, _) = read_to_end(&mut second);
        assert!(got.is_empty());
        let mut third = connect(&proxy);
        third.read_exact(&mut hi).unwrap();
        assert_eq!(proxy.fired(), 1);
    }

    #[test]
    fn latency_delays_every_chunk() {
        let server = echo(b"");
        let proxy = FaultProxy::start(server.port);
        proxy.add(Rule::always(
            Link::Main,
            Fault::Latency(Duration::from_millis(200)),
        ));
        let mut stream = connect(&proxy);
        let started = Instant::now();
        stream.write_all(b"x").unwrap();
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).unwrap();
        // There and back: two chunks, each held 200 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    /// A fake FTP server's control connection: a greeting, then a passive reply for every `PASV` or
    /// `EPSV`, with a data listener that sends `DATA` to whoever connects.
    fn fake_ftp() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let _ = stream.write_all(b"220 ready\r\n");
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                        let data = TcpListener::bind("127.0.0.1:0").unwrap();
                        let p = data.local_addr().unwrap().port();
                        std::thread::spawn(move || {
                            if let Ok((mut s, _)) = data.accept() {
                                let _ = s.write_all(b"DATA");
                            }
                        });
                        let reply = if line.starts_with("EPSV") {
                            format!("229 Entering Extended Passive Mode (|||{p}|)\r\n")
                        } else {
                            format!(
                                "227 Entering Passive Mode (10,9,8,7,{},{}).\r\n",
                                p / 256,
                                p % 256
                            )
                        };
                        let _ = stream.write_all(reply.as_bytes());
                        line.clear();
                    }
                });
            }
        });
        port
    }

    /// Sends `command` and reads the reply line.
    fn ask(stream: &mut TcpStream, command: &str) -> String {
        stream.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        read_line(stream)
    }

    fn read_line(stream: &mut TcpStream) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stream.read(&mut byte).unwrap_or(0) == 1 {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        String::from_utf8(line).unwrap()
    }

    /// The data port a passive reply names.
    fn passive_port(reply: &str) -> u16 {
        if let Some(rest) = reply.split("(|||").nth(1) {
            return rest.split('|').next().unwrap().parse().unwrap();
        }
        let inside = reply.split('(').nth(1).unwrap().split(')').next().unwrap();
        let n: Vec<u16> = inside.split(',').map(|n| n.parse().unwrap()).collect();
        assert_eq!(&n[..4], [127, 0, 0, 1], "{reply}");
        n[4] * 256 + n[5]
    }

    #[test]
    fn ftp_mode_routes_data_connections_through_the_proxy_where_they_can_be_faulted() {
        let proxy = FaultProxy::ftp(fake_ftp());
        let mut control = connect(&proxy);
        assert_eq!(read_line(&mut control), "220 ready\r\n");
        for command in ["PASV", "EPSV"] {
            let reply = ask(&mut control, command);
            let port = passive_port(&reply);
            assert_ne!(port, 0);
            let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (got, _) = read_to_end(&mut data);
            assert_eq!(got, b"DATA", "{command}: {reply}");
        }
        assert_eq!(proxy.opened(Link::Data), 2);
        // The next data connection is cut after 2 bytes.
        proxy.add(Rule::once(
            Link::Data,
            Fault::Truncate {
                direction: Direction::ToClient,
                after: 2,
            },
        ));
        let port = passive_port(&ask(&mut control, "PASV"));
        let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(read_to_end(&mut data).0, b"DA");
        assert_eq!(proxy.fired(), 1);
    }

    #[test]
    fn ftp_mode_can_close_a_control_connection_right_after_its_passive_reply() {
        let proxy = FaultProxy::ftp(fake_ftp());
        proxy.add(Rule::once(Link::Main, Fault::ClosePassive { reply: true }));
        let mut control = connect(&proxy);
        assert_eq!(read_line(&mut control), "220 ready\r\n");
        let reply = ask(&mut control, "PASV");
        assert!(reply.starts_with("227 "), "{reply}");
        let (rest, _) = read_to_end(&mut control);
        assert!(rest.is_empty(), "closed after the reply");
        // Without the reply.
        proxy.add(Rule::once(Link::Main, Fault::ClosePassive { reply: false }));
        let mut control = connect(&proxy);
        assert_eq!(read_line(&mut control), "220 ready\r\n");
        assert_eq!(ask(&mut control, "EPSV"), "");
        // The third is left alone.
        let mut control = connect(&proxy);
        read_line(&mut control);
        assert!(ask(&mut control, "PASV").starts_with("227 "));
        assert_eq!(proxy.fired(), 2);
        // Cut three bytes into the reply.
        proxy.add(Rule::once(Link::Main, Fault::CutPassive { bytes: 3 }));
        let mut control = connect(&proxy);
        read_line(&mut control);
        assert_eq!(ask(&mut control, "PASV"), "227");
        assert!(read_to_end(&mut control).0.is_empty(), "closed after the cut");
        assert_eq!(proxy.fired(), 3);
    }

    fn wait(mut condition: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if condition() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }
}
