//! How to reach a store: [`ConnectOptions`], and [`open`], the one way to open a store from its URL.
//!
//! Everything a backend needs besides its URL is in a [`ConnectOptions`] value: connection limits and
//! timeouts, the TLS and SSH files, the retry policy, how a local directory flushes, and the
//! environment the stores honour. No backend reads an environment variable itself:
//! [`ConnectOptions::from_env`] reads them all, here, and [`ConnectOptions::from_vars`] takes them from
//! any list instead (a program may open a store with an environment of its choosing; tests do).
//!
//! | Variable | Read as | Used by |
//! |---|---|---|
//! | `SNAPSYNC_MAX_LISTING_BYTES` | [`ConnectOptions::with_max_listing_bytes`] | FTP, FTPS, SFTP: the most bytes of one folder's listing (a value that is not a number counts as unset) |
//! | `SNAPSYNC_CA_FILE` | [`ConnectOptions::with_ca_file`] | FTPS: PEM certificates to trust besides the system's |
//! | `SNAPSYNC_SSH_KEY` | [`ConnectOptions::with_ssh_key`] | SFTP: the private key to log in with |
//! | `SNAPSYNC_SSH_KEY_PASSPHRASE` | [`ConnectOptions::with_ssh_key_passphrase`] | SFTP: the passphrase of an encrypted key |
//! | `SNAPSYNC_KNOWN_HOSTS` | [`ConnectOptions::with_known_hosts`] | SFTP: the `known_hosts` file |
//! | `SSH_AUTH_SOCK` | [`ConnectOptions::with_agent_socket`] | SFTP: the ssh-agent to ask for keys |
//! | `HOME` | [`ConnectOptions::with_home`] | SFTP: `~/.ssh/known_hosts` and `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` when none is given |
//! | `USER` | [`ConnectOptions::with_user`] | SFTP: the user when the URL names none (else `root`) |
//! | `NETRC`, `HOME` | [`CredentialOptions::with_netrc_file`] | FTP, FTPS, SFTP (and package indexes): `$NETRC`, else `~/.netrc`, for a URL without a password (see [`crate::credentials`]) |
//! | `AWS_*` | `object_store`'s `AmazonS3ConfigKey` (`AWS_ENDPOINT_URL` is `aws_endpoint_url`, …) | S3 |
//! | `GOOGLE_*`, `SERVICE_ACCOUNT` | `object_store`'s `GoogleConfigKey` (`SERVICE_ACCOUNT` is `google_service_account`) | GCS |
//! | `AZURE_*`, `IDENTITY_ENDPOINT` | `object_store`'s `AzureConfigKey` (`IDENTITY_ENDPOINT` is `azure_msi_endpoint`) | Azure |
//!
//! An empty `SNAPSYNC_*`, `SSH_AUTH_SOCK`, `HOME` or `USER` counts as unset. The cloud variables are
//! applied as `object_store`'s own `from_env` applies them (a name it does not know is skipped), but
//! from the [`ConnectOptions`], never from the process. A few are read by `object_store`'s credential
//! code itself, at the first request, and are outside this value: `IDENTITY_HEADER` (Azure managed
//! identity), `GCE_METADATA_HOST`, `GCE_METADATA_ROOT`, `GCE_METADATA_IP` and `HOME` (for gcloud's
//! application default credentials) on GCS. FTP and SFTP `copy` goes through a file in the standard
//! library's [`std::env::temp_dir`] (`TMPDIR`).
//!
//! ```
//! use std::time::Duration;
//! use snapsync_store::{ConnectOptions, HostKeyPolicy, StoreUrl};
//!
//! // The process's environment, with what a command line said on top.
//! let options = ConnectOptions::from_env()
//!     .with_timeout(Duration::from_secs(30))
//!     .with_host_key_policy(HostKeyPolicy::AcceptNew);
//! let store = snapsync_store::open(&StoreUrl::parse("memory://connect-example")?, &options)?;
//! assert_eq!(store.url().to_string(), "memory://connect-example");
//!
//! // A chosen environment: nothing is read from the process.
//! let options = ConnectOptions::from_vars([("AWS_REGION", "eu-west-1"), ("USER", "backup")]);
//! assert!(format!("{options:?}").contains("AWS_REGION"));
//! # Ok::<(), snapsync_store::Error>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::credentials::CredentialOptions;
use crate::error::Result;
use crate::{
    FtpStore, LocalStore, ObjectStoreBackend, RetryPolicy, RetryStore, Scheme, SftpStore, Store, StoreUrl,
};

/// What SFTP does with a server whose host key is not in the `known_hosts` file yet.
///
/// A key that differs from the one recorded for the host is refused whatever the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it, naming its SHA256 fingerprint (as `ssh -o StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// Trust it and record it in the `known_hosts` file (as `ssh -o StrictHostKeyChecking=accept-new`).
    AcceptNew,
}

/// When a local directory store flushes what it writes to disk.
///
/// Either way a write is atomic against a killed process (a temporary name, then a rename); this is about
/// a crash of the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalDurability {
    /// Each object is flushed before it is renamed into place ([`LocalStore::new`]).
    #[default]
    FlushEachWrite,
    /// Objects are not flushed one by one; [`Store::persist`] flushes the filesystem once, as a barrier
    /// before writing what refers to them ([`LocalStore::batched`]). For a caller that calls it.
    Batched,
}

/// How to reach a store: everything [`open`] needs besides the URL. See the module documentation.
///
/// Start from [`ConnectOptions::default`] (nothing from the environment) or
/// [`ConnectOptions::from_env`], and change what you need with the `with_*` methods. Each setting
/// applies to the backends it names and is ignored by the others. The fields are private, so settings
/// can be added without breaking callers. `Debug` never prints the SSH key passphrase, nor the values of
/// the cloud variables and `object_store` options (they hold credentials).
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) connections: Option<NonZeroUsize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_listing_bytes: Option<u64>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) ssh_keys: Vec<PathBuf>,
    pub(crate) ssh_key_passphrase: Option<String>,
    pub(crate) known_hosts: Option<PathBuf>,
    pub(crate) host_key_policy: HostKeyPolicy,
    pub(crate) agent_socket: Option<PathBuf>,
    pub(crate) home: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) local_durability: LocalDurability,
    /// `AWS_*`, `GOOGLE_*`, `SERVICE_ACCOUNT`, `AZURE_*`, `IDENTITY_ENDPOINT`, in the order given.
    pub(crate) cloud_env: Vec<(String, String)>,
    /// `object_store` configuration keys, applied last.
    pub(crate) object_store_options: Vec<(String, String)>,
    /// FTP, FTPS, SFTP: where passwords come from besides the URL.
    pub(crate) credentials: CredentialOptions,
}

impl Default for ConnectOptions {
    /// No environment, every backend's defaults, and [`RetryPolicy::default`].
    fn default() -> Self {
        ConnectOptions {
            connections: None,
            timeout: None,
            max_listing_bytes: None,
            ca_file: None,
            ssh_keys: Vec::new(),
            ssh_key_passphrase: None,
            known_hosts: None,
            host_key_policy: HostKeyPolicy::default(),
            agent_socket: None,
            home: None,
            user: None,
            retry: Some(RetryPolicy::default()),
            local_durability: LocalDurability::default(),
            cloud_env: Vec::new(),
            object_store_options: Vec::new(),
            credentials: CredentialOptions::default(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |pairs: &[(String, String)]| pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        f.debug_struct("ConnectOptions")
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .field("max_listing_bytes", &self.max_listing_bytes)
            .field("ca_file", &self.ca_file)
            .field("ssh_keys", &self.ssh_keys)
            .field(
                "ssh_key_passphrase",
                &self.ssh_key_passphrase.as_ref().map(|_| "***"),
            )
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("agent_socket", &self.agent_socket)
            .field("home", &self.home)
            .field("user", &self.user)
            .field("retry", &self.retry)
            .field("local_durability", &self.local_durability)
            .field("cloud_env", &names(&self.cloud_env))
            .field("object_store_options", &names(&self.object_store_options))
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Whether `name` is a variable the object-store clients are configured from.
fn is_cloud_variable(name: &str) -> bool {
    ["AWS_", "GOOGLE_", "AZURE_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || matches!(name, "SERVICE_ACCOUNT" | "IDENTITY_ENDPOINT")
}

impl ConnectOptions {
    /// The options the process's environment gives: [`ConnectOptions::from_vars`] of
    /// [`std::env::vars_os`]. The only place in snapsync-store that reads the environment.
    #[must_use]
    pub fn from_env() -> ConnectOptions {
        ConnectOptions::from_vars(std::env::vars_os())
    }

    /// The options an environment gives, from `(name, value)` pairs (see the table in the module
    /// documentation); other variables are ignored. The rest is as in [`ConnectOptions::default`].
    #[must_use]
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> ConnectOptions
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut options = ConnectOptions::default();
        let (mut netrc, mut home) = (None, None);
        for (name, value) in vars {
            let (Some(name), value) = (name.as_ref().to_str(), value.as_ref()) else {
                continue;
            };
            if is_cloud_variable(name) {
                // As `object_store`'s `from_env`: a value that is not UTF-8 is skipped.
                if let Some(value) = value.to_str() {
                    options.cloud_env.push((name.to_owned(), value.to_owned()));
                }
                continue;
            }
            if value.is_empty() {
                continue;
            }
            let path = || PathBuf::from(value);
            match name {
                "SNAPSYNC_CA_FILE" => options.ca_file = Some(path()),
                "SNAPSYNC_MAX_LISTING_BYTES" => {
                    options.max_listing_bytes = value.to_str().and_then(|v| v.parse().ok());
                }
                "SNAPSYNC_SSH_KEY" => options.ssh_keys = vec![path()],
                "SNAPSYNC_KNOWN_HOSTS" => options.known_hosts = Some(path()),
                "SSH_AUTH_SOCK" => options.agent_socket = Some(path()),
                "HOME" => {
                    options.home = Some(path());
                    home = Some(path());
                }
                "NETRC" => netrc = Some(path()),
                "SNAPSYNC_SSH_KEY_PASSPHRASE" => {
                    options.ssh_key_passphrase = value.to_str().map(str::to_owned);
                }
                "USER" => options.user = value.to_str().map(str::to_owned),
                _ => {}
            }
        }
        if let Some(file) = crate::Netrc::default_path(netrc, home) {
            options.credentials = options.credentials.with_netrc_file(file);
        }
        options
    }

    /// FTP: connections at once (default 4). SFTP: parallel transfers suggested to callers in
    /// [`crate::Capabilities::default_jobs`] (default 8; SFTP uses one connection). Others: ignored.
    #[must_use]
    pub fn with_connections(mut self, connections: NonZeroUsize) -> Self {
        self.connections = Some(connections);
        self
    }

    /// How long a server may stay silent before the operation fails as a temporary error. FTP and
    /// SFTP (default 60 s): connecting and logging in, a command, and a transfer that stops moving
    /// (the limit is on silence: a slow transfer that keeps moving is never cut). Object stores:
    /// connecting and each wait for an answer or the next piece of one (`object_store`'s
    /// `connect_timeout` and `read_timeout`); without it they keep 10 s to connect and 15 minutes per
    /// request (the `object_store` option `timeout`).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// FTP, SFTP: the most bytes one folder's listing may take before the listing fails (default
    /// [`crate::DEFAULT_MAX_LISTING_BYTES`], 128 MiB): a server that never ends a listing is cut off
    /// there instead of filling memory until the timeout. FTP counts the listing's lines; SFTP each
    /// entry's name and long name, and 64 bytes for its attributes.
    #[must_use]
    pub fn with_max_listing_bytes(mut self, bytes: u64) -> Self {
        self.max_listing_bytes = Some(bytes);
        self
    }

    /// FTPS: also trust the certificates in this PEM file (a self-signed server's, say).
    #[must_use]
    pub fn with_ca_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(file.into());
        self
    }

    /// SFTP: log in with this private key too (after the ssh-agent's keys, and the keys given before it,
    /// in order). Without any, `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa` are tried.
    #[must_use]
    pub fn with_ssh_key(mut self, file: impl Into<PathBuf>) -> Self {
        self.ssh_keys.push(file.into());
        self
    }

    /// SFTP: log in with these private keys instead of those given before (`SNAPSYNC_SSH_KEY`'s, say);
    /// see [`ConnectOptions::with_ssh_key`].
    #[must_use]
    pub fn with_ssh_keys<P: Into<PathBuf>>(mut self, files: impl IntoIterator<Item = P>) -> Self {
        self.ssh_keys = files.into_iter().map(Into::into).collect();
        self
    }

    /// SFTP: the passphrase of encrypted private keys. `Debug` does not print it.
    #[must_use]
    pub fn with_ssh_key_passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.ssh_key_passphrase = Some(passphrase.into());
        self
    }

    /// SFTP: check host keys against this file (OpenSSH's format) instead of `~/.ssh/known_hosts`.
    #[must_use]
    pub fn with_known_hosts(mut self, file: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(file.into());
        self
    }

    /// SFTP: what to do with a host that is not in the `known_hosts` file yet (default: refuse it).
    #[must_use]
    pub fn with_host_key_policy(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key_policy = policy;
        self
    }

    /// SFTP: the ssh-agent socket to ask for keys (from `SSH_AUTH_SOCK`; none by default).
    #[must_use]
    pub fn with_agent_socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.agent_socket = Some(socket.into());
        self
    }

    /// SFTP: the home directory whose `.ssh` holds the default `known_hosts` file and keys (from `HOME`).
    #[must_use]
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// SFTP: the user to log in as when the URL names none (from `USER`; else `root`).
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Every store: retry operations that fail with a temporary error ([`RetryStore`]) with this policy,
    /// or not at all (`None`). Default: [`RetryPolicy::default`].
    #[must_use]
    pub fn with_retry(mut self, policy: Option<RetryPolicy>) -> Self {
        self.retry = policy;
        self
    }

    /// Local directories: when writes are flushed to disk (default: each one).
    #[must_use]
    pub fn with_local_durability(mut self, durability: LocalDurability) -> Self {
        self.local_durability = durability;
        self
    }

    /// S3, GCS and Azure: an `object_store` configuration key (`aws_endpoint`, `aws_allow_http`,
    /// `azure_storage_account_key`, `google_service_account`, `timeout`, …), applied after the
    /// environment's variables and snapsync's client defaults. A key the URL's client does not know
    /// makes [`open`] fail. `Debug` prints the key, not the value.
    #[must_use]
    pub fn with_object_store_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.object_store_options.push((key.into(), value.into()));
        self
    }

    /// FTP, FTPS, SFTP: where passwords come from besides the URL (netrc, keyring, prompt), replacing
    /// what was set ([`ConnectOptions::from_env`] sets the netrc file).
    #[must_use]
    pub fn with_credentials(mut self, credentials: CredentialOptions) -> Self {
        self.credentials = credentials;
        self
    }

    /// The timeout set with [`ConnectOptions::with_timeout`], if any (front ends give it to their
    /// other clients, a package index's).
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Where passwords come from besides the URL.
    #[must_use]
    pub fn credentials(&self) -> &CredentialOptions {
        &self.credentials
    }

    /// The cloud variables whose names start with `prefix`, as `object_store` keys (the name in lower
    /// case) and values, in the order given.
    pub(crate) fn cloud_config<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (String, &'a str)> + 'a {
        self.cloud_env
            .iter()
            .filter(move |(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
    }

    /// The value of the cloud variable `name` (the last one given).
    pub(crate) fn cloud_variable(&self, name: &str) -> Option<&str> {
        self.cloud_env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Opens the store a URL names, reached as `options` say, and wrapped in a [`RetryStore`] unless
/// `options` has no retry policy. Nothing is connected yet: a server that cannot be reached, or
/// credentials that do not work, fail the first operation.
///
/// | URL | store |
/// |---|---|
/// | a path, `file://` | [`LocalStore`] (flushed per [`ConnectOptions::with_local_durability`]) |
/// | `memory://`, `s3://`, `gs://`, `az://` | [`ObjectStoreBackend`] |
/// | `ftp://`, `ftps://` | [`FtpStore`] |
/// | `sftp://` | [`SftpStore`] |
///
/// # Errors
/// [`crate::Error::InvalidUrl`] for a URL that a backend cannot use (no host), a configuration that
/// does not build (an unknown `object_store` option, an unreadable CA file).
pub fn open(url: &StoreUrl, options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match url.scheme() {
        Scheme::File => Arc::new(match options.local_durability {
            LocalDurability::FlushEachWrite => LocalStore::new(url.clone()),
            LocalDurability::Batched => LocalStore::batched(url.clone()),
        }),
        Scheme::Memory | Scheme::S3 | Scheme::Gcs | Scheme::Azure => {
            Arc::new(ObjectStoreBackend::open(url, options)?)
        }
        Scheme::Ftp | Scheme::Ftps => Arc::new(FtpStore::open(url, options)?),
        Scheme::Sftp => Arc::new(SftpStore::open(url, options)?),
    };
    Ok(match options.retry {
        Some(policy) => Arc::new(RetryStore::new(store, policy)),
        None => store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_from_the_variables_given() {
        let options = ConnectOptions::from_vars([
            ("SNAPSYNC_CA_FILE", "/etc/ca.pem"),
            ("SNAPSYNC_SSH_KEY", "/keys/deploy"),
            ("SNAPSYNC_SSH_KEY_PASSPHRASE", "open sesame"),
            ("SNAPSYNC_KNOWN_HOSTS", "/keys/known_hosts"),
            ("SSH_AUTH_SOCK", "/run/agent.sock"),
            ("HOME", "/home/me"),
            ("USER", "me"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("SERVICE_ACCOUNT", "/keys/old.json"),
            ("GOOGLE_SERVICE_ACCOUNT", "/keys/gcs.json"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("IDENTITY_ENDPOINT", "http://169.254.169.254/msi"),
            ("PATH", "/usr/bin"),
            ("EDITOR", "vi"),
        ]);
        assert_eq!(
            options.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(options.ssh_keys, [PathBuf::from("/keys/deploy")]);
        assert_eq!(options.ssh_key_passphrase.as_deref(), Some("open sesame"));
        assert_eq!(
            options.known_hosts.as_deref(),
            Some(std::path::Path::new("/keys/known_hosts"))
        );
        assert_eq!(
            options.agent_socket.as_deref(),
            Some(std::path::Path::new("/run/agent.sock"))
        );
        assert_eq!(options.home.as_deref(), Some(std::path::Path::new("/home/me")));
        assert_eq!(options.user.as_deref(), Some("me"));
        let aws: Vec<(String, &str)> = options.cloud_config("AWS_").collect();
        assert_eq!(
            aws,
            [
                ("aws_endpoint_url".to_owned(), "http://127.0.0.1:9000"),
                ("aws_secret_access_key".to_owned(), "s3cr3t")
            ]
        );
        let gcs: Vec<(String, &str)> = options.cloud_config("GOOGLE_").collect();
        assert_eq!(gcs, [("google_service_account".to_owned(), "/keys/gcs.json")]);
        assert_eq!(options.cloud_variable("SERVICE_ACCOUNT"), Some("/keys/old.json"));
        assert_eq!(
            options.cloud_variable("IDENTITY_ENDPOINT"),
            Some("http://169.254.169.254/msi")
        );
        assert_eq!(options.cloud_variable("AWS_REGION"), None);
        // Nothing else is taken, and the defaults stay.
        assert_eq!(options.cloud_env.len(), 6);
        assert_eq!(options.retry, Some(RetryPolicy::default()));
        assert_eq!(options.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!((options.connections, options.timeout), (None, None));
    }

    #[test]
    fn an_empty_environment_gives_the_defaults_and_empty_values_count_as_unset() {
        let none: [(&str, &str); 0] = [];
        let empty = ConnectOptions::from_vars(none);
        assert_eq!(format!("{empty:?}"), format!("{:?}", ConnectOptions::default()));
        let blank = ConnectOptions::from_vars([("HOME", ""), ("USER", ""), ("SNAPSYNC_CA_FILE", "")]);
        assert_eq!((blank.home, blank.user, blank.ca_file), (None, None, None));
        // A later variable of the same name wins, as in a process environment.
        let twice = ConnectOptions::from_vars([("USER", "a"), ("USER", "b")]);
        assert_eq!(twice.user.as_deref(), Some("b"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let options = ConnectOptions::from_vars([
            ("SNAPSYNC_SSH_KEY_PASSPHRASE", "open sesame"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ])
        .with_object_store_option("azure_storage_account_key", "a2V5")
        .with_ssh_key("/keys/deploy");
        let shown = format!("{options:?}");
        for secret in ["open sesame", "s3cr3t", "a2V5"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        // What is set shows, without the value.
        for name in [
            "ssh_key_passphrase: Some(\"***\")",
            "AWS_SECRET_ACCESS_KEY",
            "azure_storage_account_key",
            "/keys/deploy",
        ] {
            assert!(shown.contains(name), "{shown}");
        }
        let alternate = format!("{options:#?}");
        assert!(!alternate.contains("open sesame"), "{alternate}");
    }

    #[test]
    fn builders_set_what_they_name() {
        let options = ConnectOptions::default()
            .with_connections(NonZeroUsize::new(3).unwrap())
            .with_timeout(Duration::from_secs(5))
            .with_ssh_key("/a")
            .with_ssh_key("/b")
            .with_ssh_keys(["/c", "/d"])
            .with_ssh_key("/e")
            .with_host_key_policy(HostKeyPolicy::AcceptNew)
            .with_retry(None)
            .with_local_durability(LocalDurability::Batched);
        assert_eq!(options.connections.map(NonZeroUsize::get), Some(3));
        assert_eq!(options.timeout, Some(Duration::from_secs(5)));
        assert_eq!(options.ssh_keys, ["/c", "/d", "/e"].map(PathBuf::from));
        assert_eq!(options.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(options.retry, None);
        assert_eq!(options.local_durability, LocalDurability::Batched);
    }
}
