//! FTP servers for tests: pyftpdlib (MLSD, MFMT; plain or explicit TLS) and vsftpd (LIST only, no
//! MFMT; plain or TLS), each on a free port of 127.0.0.1 with its own root directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, free_port, pip_install, python, workdir};

/// The user the test FTP servers accept.
pub const FTP_USER: &str = "snapsyncftp";
/// Its password: random for each test run (see [`crate::Secret`]).
pub static FTP_PASSWORD: crate::Secret = crate::Secret::new("ftp-password");

/// The PAM service vsftpd logs the test user in with: the password alone (Debian's `vsftpd` service
/// also wants a login shell from /etc/shells, which the test user must not have).
pub(crate) const PAM_SERVICE_FILE: &str = "/etc/pam.d/snapsync-testkit-vsftpd";
const PAM_SERVICE: &str = "# Made by snapsync's tests (snapsync-testkit) for their vsftpd; `cargo xtask test` removes it.\n\
auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_unix.so\n";

/// Which FTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtpFlavor {
    /// pyftpdlib from PyPI: MLSD, MFMT, UTF-8.
    Pyftpdlib,
    /// vsftpd from apt: `LIST` only, sets times with `MDTM YYYYMMDDHHMMSS path`.
    Vsftpd,
}

/// How an FTP server is started, besides its flavor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FtpOptions {
    /// Explicit TLS (`AUTH TLS`) required on control and data connections.
    pub tls: bool,
    /// The test user may read but not write (pyftpdlib without `-w`, vsftpd with `write_enable=NO`):
    /// every write is refused with `550`.
    pub read_only: bool,
    /// File permissions apply to the server as to any user. vsftpd's sessions run as the test user,
    /// so they always do; pyftpdlib runs as the user who starts it, root in the tests, whom
    /// permissions do not stop: with this it runs without `CAP_DAC_OVERRIDE` and
    /// `CAP_DAC_READ_SEARCH` (through `setpriv`), so that a directory with mode 000 is refused to it.
    pub obey_permissions: bool,
    /// vsftpd only: the bytes per second a transfer may move (`local_max_rate`), for tests that need
    /// a transfer to take a while (a progress bar to watch, a run to interrupt). `None`: no limit.
    pub max_rate: Option<u32>,
}

/// An FTP server on 127.0.0.1 serving a fresh directory.
#[derive(Debug)]
pub struct FtpServer {
    process: Process,
    flavor: FtpFlavor,
    port: u16,
    dir: PathBuf,
    root: PathBuf,
    tls: bool,
    options: FtpOptions,
}

impl FtpServer {
    /// Starts one: `tls` requires explicit TLS (`AUTH TLS`) on control and data connections.
    #[must_use]
    pub fn start(flavor: FtpFlavor, tls: bool) -> FtpServer {
        FtpServer::start_with(
            flavor,
            FtpOptions {
                tls,
                ..FtpOptions::default()
            },
        )
    }

    /// Starts one with `options`.
    #[must_use]
    pub fn start_with(flavor: FtpFlavor, options: FtpOptions) -> FtpServer {
        let tls = options.tls;
        let port = free_port();
        let dir = workdir().join(format!("ftp-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("create the FTP root");
        if tls {
            make_certificate(&dir);
        }
        let process = match flavor {
            FtpFlavor::Pyftpdlib => spawn_pyftpdlib(&dir, &root, port, options),
            FtpFlavor::Vsftpd => spawn_vsftpd(&dir, &root, port, options),
        };
        FtpServer {
            process,
            flavor,
            port,
            dir,
            root,
            tls,
            options,
        }
    }

    /// pyftpdlib, plain FTP.
    #[must_use]
    pub fn pyftpdlib() -> FtpServer {
        FtpServer::start(FtpFlavor::Pyftpdlib, false)
    }

    /// `ftp://USER:PASSWORD@127.0.0.1:PORT/path` (`ftps://` for a TLS server).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{}/{}",
            if self.tls { "ftps" } else { "ftp" },
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The same URL with another password.
    #[must_use]
    pub fn url_with_password(&self, path: &str, password: &str) -> String {
        self.url(path)
            .replacen(&format!(":{FTP_PASSWORD}@"), &format!(":{password}@"), 1)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory the server serves, on this machine.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `path` (below the root, written by the test) the server user's, as the server's own
    /// files would be: vsftpd's sessions run as the test user, who must be able to write there.
    pub fn give(&self, path: &Path) {
        if self.flavor == FtpFlavor::Vsftpd {
            let status = Command::new("chown")
                .arg("-R")
                .arg("--reference")
                .arg(&self.root)
                .arg(path)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of {} failed", path.display());
        }
    }

    /// The server's certificate (PEM), for a TLS server.
    #[must_use]
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("cert.pem"))
    }

    /// Which server this is.
    #[must_use]
    pub fn flavor(&self) -> FtpFlavor {
        self.flavor
    }

    /// Stops the server now, with its sessions.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = match self.flavor {
            FtpFlavor::Pyftpdlib => spawn_pyftpdlib(&self.dir, &self.root, self.port, self.options),
            FtpFlavor::Vsftpd => spawn_vsftpd(&self.dir, &self.root, self.port, self.options),
        };
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `cert.pem` and `key.pem` for 127.0.0.1 into `dir`: a leaf certificate (CA:FALSE, which
/// rustls insists on) with the address as subject alternative name.
pub fn make_certificate(dir: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .args([
            "-days",
            "3650",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("openssl runs (the TLS tests need it)");
    assert!(
        out.status.success(),
        "openssl could not make a certificate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn_pyftpdlib(dir: &Path, root: &Path, port: u16, options: FtpOptions) -> Process {
    let pythonpath = pip_install("pyftpdlib", &["pyftpdlib==2.*", "pyopenssl"]);
    let mut command = if options.obey_permissions {
        // setpriv execs the server: the process is still the one started (and stopped) here.
        without_permission_override(python())
    } else {
        Command::new(python())
    };
    // The user and password go in through the environment, not the command line, which `ps` shows to
    // every user of the machine (the password is the system user's, which vsftpd and sshd take too).
    command
        .env("PYTHONPATH", pythonpath)
        .env("SNAPSYNC_FTP_USER", FTP_USER)
        .env("SNAPSYNC_FTP_PASSWORD", FTP_PASSWORD.as_str())
        .args([
        "-c",
        "import os, runpy, sys; \
         sys.argv[1:1] = ['-u', os.environ.pop('SNAPSYNC_FTP_USER'), '-P', os.environ.pop('SNAPSYNC_FTP_PASSWORD')]; \
         runpy.run_module('pyftpdlib', run_name='__main__', alter_sys=True)",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    // Without -w the user may only read.
    if !options.read_only {
        command.arg("-w");
    }
    command
        .arg("-d")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if options.tls {
        command
            .arg("--tls")
            .arg("--certfile")
            .arg(dir.join("cert.pem"))
            .arg("--keyfile")
            .arg(dir.join("key.pem"))
            .args(["--tls-control-required", "--tls-data-required"]);
    }
    let mut process = Process::spawn("pyftpdlib", &mut command);
    process.wait_for_port(port, Duration::from_mins(1));
    process
}

/// vsftpd runs as root and logs in system users: a user for the tests is created once, and each
/// server's configuration points it at its own root directory.
fn spawn_vsftpd(dir: &Path, root: &Path, port: u16, options: FtpOptions) -> Process {
    let binary = Path::new("/usr/sbin/vsftpd");
    assert!(
        binary.exists(),
        "vsftpd is not installed (apt-get install vsftpd); the FTP tests need it"
    );
    assert!(
        is_root(),
        "vsftpd must be started as root (it logs in system users); run the tests as root"
    );
    ensure_system_user(FTP_USER, &FTP_PASSWORD);
    ensure_pam_service();
    let chown = Command::new("chown")
        .args(["-R", FTP_USER])
        .arg(root)
        .status()
        .expect("chown runs");
    assert!(chown.success(), "chown of the FTP root failed");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("create vsftpd's secure_chroot_dir");
    let mut config = format!(
        "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
         anonymous_enable=NO\nlocal_enable=YES\nwrite_enable={}\nlocal_umask=022\nchroot_local_user=YES\n\
         allow_writeable_chroot=YES\npam_service_name=snapsync-testkit-vsftpd\nsecure_chroot_dir={}\nlocal_root={}\n\
         pasv_enable=YES\nutf8_filesystem=YES\nseccomp_sandbox=NO\nmax_per_ip=0\nmax_clients=0\n\
         xferlog_enable=NO\ndual_log_enable=NO\nsyslog_enable=NO\nvsftpd_log_file=/dev/null\n",
        if options.read_only { "NO" } else { "YES" },
        empty.display(),
        root.display()
    );
    if let Some(rate) = options.max_rate {
        let _ = writeln!(config, "local_max_rate={rate}");
    }
    if options.tls {
        let _ = write!(
            config,
            "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nforce_local_logins_ssl=YES\n\
             force_local_data_ssl=YES\nrequire_ssl_reuse=NO\nssl_ciphers=HIGH\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        );
    }
    let conf = dir.join("vsftpd.conf");
    std::fs::write(&conf, config).expect("write vsftpd.conf");
    // vsftpd prints its startup errors ("500 OOPS ...") on standard input: into a log file.
    let log = dir.join("vsftpd.log");
    let log_file = std::fs::File::create(&log).expect("create vsftpd.log");
    let mut process = Process::spawn(
        "vsftpd",
        Command::new(binary)
            .arg(&conf)
            .stdin(log_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .with_log(&log);
    process.wait_for_port(port, Duration::from_secs(30));
    process
}

/// A command that runs `program` as root runs it, but without the capabilities that let root read and
/// write anything (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, dropped by util-linux's `setpriv`, which
/// then execs it): file modes apply to it as to any user, so `chmod 000` really refuses. For another
/// user, `program` as it is.
#[must_use]
pub fn without_permission_override(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
        ])
        .arg(program);
    command
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The PAM service of the test vsftpd, written once (replaced whole if it differs).
fn ensure_pam_service() {
    if std::fs::read_to_string(PAM_SERVICE_FILE).is_ok_and(|text| text == PAM_SERVICE) {
        return;
    }
    let temp = format!("{PAM_SERVICE_FILE}.{}.tmp", std::process::id());
    std::fs::write(&temp, PAM_SERVICE)
        .and_then(|()| std::fs::rename(&temp, PAM_SERVICE_FILE))
        .unwrap_or_else(|e| panic!("cannot write {PAM_SERVICE_FILE}: {e}"));
}

/// A shell that refuses logins.
fn no_login_shell() -> &'static str {
    ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("/bin/false")
}

/// Creates a local system user with `password` and no login shell (the test servers let it transfer
/// files; nothing lets it run commands), once; an existing one gets the password and the shell.
/// `cargo xtask test` removes it at the end of the run ([`crate::remove_test_users`]).
pub fn ensure_system_user(user: &str, password: &str) {
    let exists = |user: &str| {
        Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists(user) {
        // Parallel test processes may race here: whoever loses finds the user made.
        let _ = Command::new("useradd")
            .args(["-M", "-d", "/", "-s", no_login_shell(), user])
            .output();
        assert!(exists(user), "cannot create the test user {user} (useradd)");
    }
    // vsftpd enters the home directory before its configured root: it must exist.
    let _ = Command::new("usermod")
        .args(["-d", "/", "-s", no_login_shell(), user])
        .output();
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("chpasswd's stdin");
        writeln!(stdin, "{user}:{password}").expect("write to chpasswd");
    }
    assert!(
        child.wait().expect("chpasswd ends").success(),
        "cannot set the test user's password"
    );
}
