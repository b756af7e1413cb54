//! Passwords of the test servers' system users: random for each test run, never written in the
//! repository. The first test process that needs one makes it and publishes it under
//! `workdir()/secrets/NAME` (mode 0600, by a hard link, so that parallel processes agree on one);
//! the others read it. `cargo xtask test` removes the users and the secrets when the run ends
//! ([`remove_test_users`]).

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::workdir;

/// A password made for this test run, shown as itself (it is `Display` and derefs to `str`).
pub struct Secret {
    name: &'static str,
    value: OnceLock<String>,
}

impl Secret {
    pub(crate) const fn new(name: &'static str) -> Secret {
        Secret {
            name,
            value: OnceLock::new(),
        }
    }

    /// The password (made on first use in this run).
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.value.get_or_init(|| load_or_make(self.name))
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn dir() -> PathBuf {
    workdir().join("secrets")
}

fn load_or_make(name: &str) -> String {
    let dir = dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    if let Ok(text) = fs::read_to_string(&path) {
        return text;
    }
    // 96 random bits as letters and digits (no character a URL or a netrc file would need to quote).
    let mut bytes = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let password: String = bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect();
    let password = format!("t{password}");
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
        file.write_all(password.as_bytes()).expect("write the secret");
    }
    // Published whole by a hard link, which fails if another process published first: then use theirs.
    let published = fs::hard_link(&temp, &path);
    let _ = fs::remove_file(&temp);
    match published {
        Ok(()) => password,
        Err(_) => fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    }
}

/// Removes what the tests added to this machine: the system users of the FTP and SSH test servers
/// (made by [`crate::ensure_system_user`]), the PAM service vsftpd logs them in with, and this run's
/// passwords. Does nothing for what is not there; returns what it removed.
#[must_use]
pub fn remove_test_users() -> Vec<String> {
    let mut removed = Vec::new();
    for user in [crate::FTP_USER, crate::SSH_USER] {
        let exists = Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success());
        if exists
            && Command::new("userdel")
                .arg(user)
                .output()
                .is_ok_and(|o| o.status.success())
        {
            removed.push(format!("user {user}"));
        }
    }
    if fs::remove_file(crate::ftp::PAM_SERVICE_FILE).is_ok() {
        removed.push(crate::ftp::PAM_SERVICE_FILE.to_owned());
    }
    if fs::remove_dir_all(dir()).is_ok() {
        removed.push(dir().display().to_string());
    }
    removed
}
