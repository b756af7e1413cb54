//! FTP servers for tests: pyftpdlib (MLSD, MFMT; plain or explicit TLS) and vsftpd (LIST only, no
//! MFMT; plain or TLS), each on a free port of 127.0.0.1 with its own root directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, free_port, pip_install, python, workdir};

/// The user the test FTP servers accept.
pub const FTP_USER: &str = "snapsyncftp";
/// Its password.
pub const FTP_PASSWORD: &str = "ftp-secret-42";

/// Which FTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtpFlavor {
    /// pyftpdlib from PyPI: MLSD, MFMT, UTF-8.
    Pyftpdlib,
    /// vsftpd from apt: `LIST` only, sets times with `MDTM YYYYMMDDHHMMSS path`.
    Vsftpd,
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
}

impl FtpServer {
    /// Starts one: `tls` requires explicit TLS (`AUTH TLS`) on control and data connections.
    #[must_use]
    pub fn start(flavor: FtpFlavor, tls: bool) -> FtpServer {
        let port = free_port();
        let dir = workdir().join(format!("ftp-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("create the FTP root");
        if tls {
            make_certificate(&dir);
        }
        let process = match flavor {
            FtpFlavor::Pyftpdlib => spawn_pyftpdlib(&dir, &root, port, tls),
            FtpFlavor::Vsftpd => spawn_vsftpd(&dir, &root, port, tls),
        };
        FtpServer {
            process,
            flavor,
            port,
            dir,
            root,
            tls,
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

    /// The server's certificate (PEM), for a TLS server.
    #[must_use]
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("cert.pem"))
    }

    /// Store configuration for snapsync's FTP backend (the certificate to trust).
    #[must_use]
    pub fn config(&self) -> Vec<(&'static str, String)> {
        self.ca_file()
            .map(|ca| vec![("ca_file", ca.display().to_string())])
            .unwrap_or_default()
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
            FtpFlavor::Pyftpdlib => spawn_pyftpdlib(&self.dir, &self.root, self.port, self.tls),
            FtpFlavor::Vsftpd => spawn_vsftpd(&self.dir, &self.root, self.port, self.tls),
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

fn spawn_pyftpdlib(dir: &Path, root: &Path, port: u16, tls: bool) -> Process {
    let pythonpath = pip_install("pyftpdlib", &["pyftpdlib==2.*", "pyopenssl"]);
    let mut command = Command::new(python());
    command
        .env("PYTHONPATH", pythonpath)
        .args([
            "-m",
            "pyftpdlib",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-w",
            "-d",
        ])
        .arg(root)
        .args(["-u", FTP_USER, "-P", FTP_PASSWORD])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if tls {
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
fn spawn_vsftpd(dir: &Path, root: &Path, port: u16, tls: bool) -> Process {
    let binary = Path::new("/usr/sbin/vsftpd");
    assert!(
        binary.exists(),
        "vsftpd is not installed (apt-get install vsftpd); the FTP tests need it"
    );
    assert!(
        is_root(),
        "vsftpd must be started as root (it logs in system users); run the tests as root"
    );
    ensure_system_user(FTP_USER, FTP_PASSWORD);
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
         anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\nchroot_local_user=YES\n\
         allow_writeable_chroot=YES\npam_service_name=vsftpd\nsecure_chroot_dir={}\nlocal_root={}\n\
         pasv_enable=YES\nutf8_filesystem=YES\nseccomp_sandbox=NO\nmax_per_ip=0\nmax_clients=0\n\
         xferlog_enable=NO\ndual_log_enable=NO\nsyslog_enable=NO\nvsftpd_log_file=/dev/null\n",
        empty.display(),
        root.display()
    );
    if tls {
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Creates a local system user with a password (and a login shell from /etc/shells), once.
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
            .args(["-M", "-d", "/", "-s", "/bin/bash", user])
            .output();
        assert!(exists(user), "cannot create the test user {user} (useradd)");
    }
    // vsftpd enters the home directory before its configured root: it must exist.
    let _ = Command::new("usermod").args(["-d", "/", user]).output();
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
