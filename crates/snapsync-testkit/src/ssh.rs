//! OpenSSH's sshd for SFTP tests: a generated host key, a test user with a password and with keys (one
//! plain, one encrypted), a `known_hosts` file that trusts the server, on a free port of 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, ensure_system_user, free_port, workdir};

/// The user the test sshd accepts.
pub const SSH_USER: &str = "snapsyncssh";
/// Its password.
pub static SSH_PASSWORD: crate::Secret = crate::Secret::new("ssh-password");
/// The passphrase of the encrypted client key.
pub const SSH_KEY_PASSPHRASE: &str = "key-passphrase-7";

/// An sshd serving SFTP (`internal-sftp`) on 127.0.0.1.
#[derive(Debug)]
pub struct Sshd {
    process: Process,
    port: u16,
    dir: PathBuf,
    root: PathBuf,
}

impl Sshd {
    /// Generates keys and starts sshd on a free port. The user's files go to [`Sshd::root`].
    #[must_use]
    pub fn start() -> Sshd {
        let binary = Path::new("/usr/sbin/sshd");
        assert!(
            binary.exists(),
            "sshd is not installed (apt-get install openssh-server); the SFTP tests need it"
        );
        let port = free_port();
        let dir = workdir().join(format!("sshd-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sshd directory");
        // sshd reads the authorized keys as the user: the directory must be readable by everyone.
        chmod(&dir, "0755");
        chmod(&workdir(), "0755");
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("create the SFTP root");
        ensure_system_user(SSH_USER, &SSH_PASSWORD);
        let chown = Command::new("chown")
            .arg(SSH_USER)
            .arg(&root)
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown of the SFTP root failed");
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        keygen(&dir.join("host"), "");
        keygen(&dir.join("client"), "");
        keygen(&dir.join("client-encrypted"), SSH_KEY_PASSPHRASE);
        let mut authorized = std::fs::read_to_string(dir.join("client.pub")).expect("read client.pub");
        authorized
            .push_str(&std::fs::read_to_string(dir.join("client-encrypted.pub")).expect("read the .pub"));
        std::fs::write(dir.join("authorized_keys"), authorized).expect("write authorized_keys");
        let host_key = std::fs::read_to_string(dir.join("host.pub")).expect("read host.pub");
        let mut parts = host_key.split_whitespace();
        let (kind, key) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .expect("write known_hosts");
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nPidFile {pid}\nUsePAM no\nStrictModes no\n\
             PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             AuthorizedKeysFile {auth}\nSubsystem sftp internal-sftp\nForceCommand internal-sftp\nAllowTcpForwarding no\nX11Forwarding no\nPermitTunnel no\nMaxStartups 100\nMaxSessions 64\n",
            host = dir.join("host").display(),
            pid = dir.join("sshd.pid").display(),
            auth = dir.join("authorized_keys").display(),
        );
        std::fs::write(dir.join("sshd_config"), config).expect("write sshd_config");
        let process = spawn(&dir, port);
        Sshd {
            process,
            port,
            dir,
            root,
        }
    }

    /// `sftp://USER:PASSWORD@127.0.0.1:PORT/<root>/path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!(
            "sftp://{SSH_USER}:{SSH_PASSWORD}@127.0.0.1:{}{}/{}",
            self.port,
            self.root.display(),
            path.trim_start_matches('/')
        )
    }

    /// The same without a password (for key logins).
    #[must_use]
    pub fn url_without_password(&self, path: &str) -> String {
        self.url(path).replacen(&format!(":{SSH_PASSWORD}@"), "@", 1)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the user's files are, on this machine.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A `known_hosts` file that trusts this server.
    #[must_use]
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The client's private key (no passphrase).
    #[must_use]
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("client")
    }

    /// A second client key, encrypted with [`SSH_KEY_PASSPHRASE`].
    #[must_use]
    pub fn encrypted_key_file(&self) -> PathBuf {
        self.dir.join("client-encrypted")
    }

    /// Stops the server now, with its sessions (sshd's session processes leave its process group, so
    /// they are found as its descendants).
    pub fn stop(&mut self) {
        kill_descendants(self.process.id());
        self.process.stop();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.process = spawn(&self.dir, self.port);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(dir: &Path, port: u16) -> Process {
    let log = dir.join("sshd.log");
    let mut process = Process::spawn(
        "sshd",
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create sshd.log")),
    )
    .with_log(&log);
    process.wait_for_port(port, Duration::from_secs(30));
    process
}

fn keygen(path: &Path, passphrase: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(path: &Path, mode: &str) {
    let _ = Command::new("chmod").arg(mode).arg(path).status();
}

/// Kills every process below `pid` (children first found, then theirs).
fn kill_descendants(pid: u32) {
    let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output();
    let Ok(out) = out else { return };
    for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(child) = child.parse::<u32>() {
            kill_descendants(child);
            let _ = Command::new("kill").args(["-KILL", &child.to_string()]).status();
        }
    }
}
