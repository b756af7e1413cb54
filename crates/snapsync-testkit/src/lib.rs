//! Test support for snapsync: real servers started on 127.0.0.1 for the tests that need them, and
//! reference tools installed from PyPI or npm into the target directory once, and package indexes
//! (pypiserver, devpi) with tiny distributions for the package mirror.
//!
//! Nothing here is skipped: when a server cannot be installed or does not start, the call panics with
//! what went wrong, and the test fails. Servers run in their own process group and are stopped, with
//! everything they started, when their handle is dropped.
//!
//! This is test-only code: it panics instead of returning errors.
#![forbid(unsafe_code)]
// Test support: a failure to set up is a failed test, said as loudly as possible.
#![allow(clippy::missing_panics_doc)]

mod ftp;
mod pkg;
mod proxy;
mod scripted_ftp;
mod scripted_sftp;
mod secret;
mod servers;
mod ssh;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use ftp::{
    FTP_PASSWORD, FTP_USER, FtpFlavor, FtpOptions, FtpServer, ensure_system_user, make_certificate,
    without_permission_override,
};
pub use pkg::{DevpiServer, PKG_PASSWORD, PKG_USER, PypiServer, StaticHttpServer, make_dists, twine_upload};
pub use proxy::{Direction, Fault, FaultProxy, Link, Rule, When};
pub use scripted_ftp::{Misbehaviour, ScriptedFtp};
pub use scripted_sftp::{ScriptedSftp, SftpMisbehaviour, hostile_sftp_names};
pub use secret::{Secret, remove_test_users};
pub use servers::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
pub use ssh::{SSH_KEY_PASSPHRASE, SSH_PASSWORD, SSH_USER, Sshd};

/// Where installed tools and server data live: `target/testkit` of the workspace, or
/// `$SNAPSYNC_TESTKIT_DIR`.
#[must_use]
pub fn workdir() -> PathBuf {
    let dir = std::env::var_os("SNAPSYNC_TESTKIT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testkit"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A port on 127.0.0.1 that was free a moment ago, for a server started next.
///
/// Chosen at random below the kernel's ephemeral range (`ip_local_port_range`), never from it: a port
/// the kernel hands out for `bind(0)` is also what it hands to the next outgoing connection, so a
/// client of another test could take it before the server binds (seen in CI: sshd's "Address already
/// in use"). Below that range only listening servers take ports, and a port is checked free first
/// and never handed out twice by one process.
#[must_use]
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut given = GIVEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let span = u64::from(high - low);
        let port = low + u16::try_from(random_u64() % span).unwrap_or(0);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    // A machine using every port below its ephemeral range: take one from the kernel.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// 64 bits that differ from call to call and from process to process (the standard library's
/// random hash keys, seeded per process): enough for a test server's key, password or port.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The id of a process that ran and was reaped: one that is gone, as a killed run's is.
#[must_use]
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("`true` runs");
    let pid = child.id();
    child.wait().expect("`true` ends");
    pid
}

/// The real Python interpreter (not a pyenv shim, whose pid is not the server's): `$SNAPSYNC_TEST_PYTHON`
/// or the `sys.executable` of `python3`.
#[must_use]
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("SNAPSYNC_TEST_PYTHON") {
                return PathBuf::from(p);
            }
            let out = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 runs (the tests need Python 3 with pip)");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Installs `requirements` from PyPI with pip into `workdir()/pip/NAME` once (all test processes share
/// it) and returns that directory, for `PYTHONPATH`.
#[must_use]
pub fn pip_install(name: &str, requirements: &[&str]) -> PathBuf {
    install(&workdir().join("pip").join(name), |staging| {
        let out = Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--target",
            ])
            .arg(staging)
            .args(requirements)
            .output()
            .expect("python -m pip runs");
        assert!(
            out.status.success(),
            "pip install {requirements:?} failed (the tests need PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// Installs npm `packages` into `workdir()/npm/NAME` once and returns that directory.
#[must_use]
pub fn npm_install(name: &str, packages: &[&str]) -> PathBuf {
    install(&workdir().join("npm").join(name), |staging| {
        std::fs::write(
            staging.join("package.json"),
            r#"{"name":"snapsync-testkit","private":true}"#,
        )
        .expect("write package.json");
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .args(packages)
            .current_dir(staging)
            .output()
            .expect("npm runs (the tests need Node.js and npm)");
        assert!(
            out.status.success(),
            "npm install {packages:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// Runs `fill` on a staging directory and renames it to `target`, unless `target` is complete already.
/// Concurrent test processes may race here; the loser of the rename uses the winner's copy.
fn install(target: &Path, fill: impl FnOnce(&Path)) -> PathBuf {
    let done = target.join(".complete");
    if !done.exists() {
        let staging = target.with_extension(format!("staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).expect("create a staging directory");
        fill(&staging);
        std::fs::write(staging.join(".complete"), "").expect("mark complete");
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("create the install directory");
        }
        if std::fs::rename(&staging, target).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    assert!(
        done.exists(),
        "{} is incomplete; delete it and run again",
        target.display()
    );
    target.to_path_buf()
}

/// A server process in its own process group, stopped (with all it started) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: String,
    stopped: bool,
    log: Option<PathBuf>,
}

impl Process {
    /// Starts `command` in a new process group.
    #[must_use]
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child,
            name: name.to_owned(),
            stopped: false,
            log: None,
        }
    }

    /// Names the file the server logs to: a server that fails to start has it quoted in the panic.
    #[must_use]
    pub fn with_log(mut self, log: &Path) -> Process {
        self.log = Some(log.to_path_buf());
        self
    }

    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .map(|text| format!("; its log says:\n{text}"))
            .unwrap_or_default()
    }

    /// Waits until something accepts connections on `port`; panics, with the server's exit status if
    /// it died, when nothing does within `timeout`.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited before it listened on port {port}: {status}{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not listen on port {port} within {timeout:?}{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server now, with everything it started (the tests of a server going away
    /// mid-transfer use this). Stopping a stopped server does nothing.
    pub fn stop(&mut self) {
        self.signal("KILL");
    }

    /// Asks the server to shut down (SIGTERM), as an operator stopping it would, and waits for it;
    /// kills it if it has not gone within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) {
        if self.stopped {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("KILL");
    }

    fn signal(&mut self, signal: &str) {
        if self.stopped {
            return;
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.wait();
        self.stopped = true;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tmpfs mounted on a directory, to fill a disk in a test; unmounted when dropped. Mounting
/// needs root (`CAP_SYS_ADMIN`), as vsftpd does.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes on `path` (created if missing).
    #[must_use]
    pub fn mount(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the disk-full tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server's session may still have a file open there.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
