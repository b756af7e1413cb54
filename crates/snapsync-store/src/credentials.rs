//! Credentials for FTP, FTPS, SFTP and package indexes: one resolver, one documented order.
//!
//! A password is looked for in this order, the first that gives one wins:
//!
//! 1. **The URL**: `ftp://user:password@host/…`, percent-decoded.
//! 2. **A netrc file** ([`CredentialOptions::with_netrc_file`]; [`crate::ConnectOptions::from_env`]
//!    names `$NETRC`, else `~/.netrc`): the `machine` entry of the host, else `default`. An entry is
//!    used only when its `login` is the URL's user (or the URL names none: the entry's login is then
//!    the user).
//! 3. **The keyring** ([`CredentialOptions::with_keyring`]): service [`KEYRING_SERVICE`] (`snapsync`),
//!    account `SCHEME://USER@HOST:PORT` ([`Target::account`]), the port written out even when it is
//!    the scheme's default. A keyring that cannot be reached (a headless machine without a backend) is
//!    skipped, with a [`CredentialOptions::with_notice`] message and nothing else.
//! 4. **A prompt** ([`CredentialOptions::with_prompt`]): a callback the front end supplies (the
//!    snapsync binary asks on the terminal with hidden input, only when standard input is one). A
//!    library never reads the terminal itself.
//!
//! A password that was refused ends the login with [`LoginRefused`] ("login refused for
//! user@host"), except a typed one: the prompt asks again, up to [`MAX_PROMPTS`] times. With
//! [`CredentialOptions::with_store_password`], a password that logged in (and did not come from the
//! keyring) is saved to the keyring — after the server accepted it, never before.
//!
//! Passwords live in [`Credentials`] and in this module's private state; every `Debug` here prints
//! `***` for them, and no error carries one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// The keyring's service name for every password snapsync keeps.
pub const KEYRING_SERVICE: &str = "snapsync";

/// How many times a prompt asks for a password the server refuses before the login fails.
pub const MAX_PROMPTS: u32 = 3;

/// A user name and password (or API token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: Option<String>,
}

impl Credentials {
    /// A user and a password.
    #[must_use]
    pub fn new(username: impl Into<String>, password: Option<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password,
        }
    }

    /// An API token: the user `__token__`, the token as the password (as PyPI and devpi take them).
    #[must_use]
    pub fn token(token: impl Into<String>) -> Credentials {
        Credentials::new("__token__", Some(token.into()))
    }

    /// The user and password a URL carries, percent-decoded; `None` when it has no user.
    #[must_use]
    pub fn from_url(url: &url::Url) -> Option<Credentials> {
        if url.username().is_empty() {
            return None;
        }
        Some(Credentials::new(
            decode(url.username()),
            url.password().map(decode),
        ))
    }

    /// The user name.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password or token, to send and nothing else.
    #[must_use]
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Where a password came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordSource {
    /// The URL's userinfo.
    Url,
    /// The netrc file.
    Netrc,
    /// The keyring.
    Keyring,
    /// Typed at a prompt.
    Prompt,
    /// None was found: the login was tried without one.
    Nowhere,
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordSource::Url => "the password in the URL",
            PasswordSource::Netrc => "the password from the netrc file",
            PasswordSource::Keyring => "the password from the keyring",
            PasswordSource::Prompt => "the password typed",
            PasswordSource::Nowhere => {
                "no password (none in the URL, the netrc file or the keyring, and no terminal to ask on)"
            }
        })
    }
}

/// The server a password is for: scheme, host and port (the scheme's default when the URL names none).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `ftp`, `ftps`, `sftp`, `http`, `https`.
    pub scheme: String,
    /// The host name or address, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Target {
    /// The target a URL names (its port, else the scheme's default; `None` without a host or a known
    /// port).
    #[must_use]
    pub fn of_url(url: &url::Url) -> Option<Target> {
        let host = url.host_str().filter(|h| !h.is_empty())?;
        let port = url.port().or_else(|| default_port(url.scheme()))?;
        Some(Target {
            scheme: url.scheme().to_ascii_lowercase(),
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
        })
    }

    /// The keyring account of `user` at this server: `SCHEME://USER@HOST:PORT`.
    #[must_use]
    pub fn account(&self, user: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{user}@{host}:{}", self.scheme, self.port)
    }
}

/// The port a scheme uses when the URL names none.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "ftp" | "ftps" => Some(21),
        "sftp" | "ssh" => Some(22),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A place to keep passwords: the operating system's keyring ([`OsKeyring`], with the `keyring`
/// feature), or anything a program supplies. Errors are the backend's words; they never hold a
/// password.
pub trait Keyring: Send + Sync {
    /// The password kept for `account` of `service`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// The keyring cannot be reached (no backend on this machine, locked, refused).
    fn get(&self, service: &str, account: &str) -> std::result::Result<Option<String>, String>;

    /// Keeps `password` for `account` of `service`, replacing what was there.
    ///
    /// # Errors
    /// The keyring cannot be reached or refuses.
    fn set(&self, service: &str, account: &str, password: &str) -> std::result::Result<(), String>;

    /// Forgets the password of `account` of `service` (nothing kept is not an error).
    ///
    /// # Errors
    /// The keyring cannot be reached or refuses.
    fn delete(&self, service: &str, account: &str) -> std::result::Result<(), String>;
}

/// The operating system's keyring through the `keyring` crate: the Keychain on macOS, the Credential
/// Manager on Windows, and on Linux the kernel's keyutils (it works on a headless machine; keys live
/// until reboot) in the user's keyring, so that every process of the user finds what one saved (the
/// crate's default, the session keyring, is the process's own where no login made one: containers,
/// cron, CI). Entries are `keyring-rs:ACCOUNT@SERVICE` there, as the crate names them.
#[cfg(feature = "keyring")]
#[derive(Clone, Copy, Debug, Default)]
pub struct OsKeyring;

#[cfg(feature = "keyring")]
impl OsKeyring {
    #[cfg(target_os = "linux")]
    fn entry(service: &str, account: &str) -> std::result::Result<keyring::Entry, String> {
        use linux_keyutils::{KeyRing, KeyRingIdentifier};
        let user = KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|e| format!("the kernel keyring cannot be reached: {e:?}"))?;
        let credential = keyring::keyutils::KeyutilsCredential {
            session: user,
            persistent: KeyRing::get_persistent(KeyRingIdentifier::User).ok(),
            description: format!("keyring-rs:{account}@{service}"),
        };
        Ok(keyring::Entry::new_with_credential(Box::new(credential)))
    }

    #[cfg(not(target_os = "linux"))]
    fn entry(service: &str, account: &str) -> std::result::Result<keyring::Entry, String> {
        keyring::Entry::new(service, account).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "keyring")]
impl Keyring for OsKeyring {
    fn get(&self, service: &str, account: &str) -> std::result::Result<Option<String>, String> {
        match OsKeyring::entry(service, account)?.get_password() {
            Ok(password) => Ok(Some(password)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn set(&self, service: &str, account: &str, password: &str) -> std::result::Result<(), String> {
        OsKeyring::entry(service, account)?
            .set_password(password)
            .map_err(|e| e.to_string())
    }

    fn delete(&self, service: &str, account: &str) -> std::result::Result<(), String> {
        match OsKeyring::entry(service, account)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a prompt is asked for.
#[derive(Clone, Debug)]
pub struct PromptRequest {
    /// The user whose password is wanted.
    pub user: String,
    /// The server.
    pub target: Target,
    /// 1 for the first question, 2 after the server refused the first answer, …
    pub attempt: u32,
}

impl PromptRequest {
    /// The question as a front end may print it: `password for USER at SCHEME://HOST:PORT: `.
    #[must_use]
    pub fn question(&self) -> String {
        format!(
            "password for {} at {}://{}:{}: ",
            self.user, self.target.scheme, self.target.host, self.target.port
        )
    }
}

/// A front end's way to ask the person at the keyboard for a password. `Ok(None)` when it cannot ask
/// (no terminal) or the person gave up (end of input): the login goes on without a password.
pub trait PasswordPrompt: Send + Sync {
    /// Asks for the password `request` describes.
    ///
    /// # Errors
    /// The terminal could not be read.
    fn ask(&self, request: &PromptRequest) -> std::io::Result<Option<String>>;
}

impl<F> PasswordPrompt for F
where
    F: Fn(&PromptRequest) -> std::io::Result<Option<String>> + Send + Sync,
{
    fn ask(&self, request: &PromptRequest) -> std::io::Result<Option<String>> {
        self(request)
    }
}

/// Where netrc entries come from.
#[derive(Clone, Default)]
enum NetrcChoice {
    /// No netrc.
    #[default]
    Off,
    /// This file, read when a password is looked for (a missing file is no entry).
    File(PathBuf),
    /// These entries.
    Parsed(Arc<Netrc>),
}

type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// Where passwords come from besides the URL: a netrc file, a keyring, a prompt; whether a password
/// that logged in is saved; where the resolver's remarks go. See the module documentation for the
/// order. The default has none of them (the URL only).
#[derive(Clone, Default)]
pub struct CredentialOptions {
    netrc: NetrcChoice,
    keyring: Option<Arc<dyn Keyring>>,
    store_password: bool,
    prompt: Option<Arc<dyn PasswordPrompt>>,
    notice: Option<Notice>,
    /// What was typed at the prompt, by account: a second store or index client for the same server
    /// in this process (an index and its upload URL, say) does not ask again. Shared by clones.
    typed: Arc<Mutex<HashMap<String, String>>>,
}

impl fmt::Debug for CredentialOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let netrc = match &self.netrc {
            NetrcChoice::Off => "off".to_owned(),
            NetrcChoice::File(path) => path.display().to_string(),
            NetrcChoice::Parsed(netrc) => format!("{netrc:?}"),
        };
        f.debug_struct("CredentialOptions")
            .field("netrc", &netrc)
            .field("keyring", &self.keyring.is_some())
            .field("store_password", &self.store_password)
            .field("prompt", &self.prompt.is_some())
            .finish_non_exhaustive()
    }
}

impl CredentialOptions {
    /// Read netrc entries from this file when a URL has no password (a missing file has none).
    #[must_use]
    pub fn with_netrc_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.netrc = NetrcChoice::File(path.into());
        self
    }

    /// Use these netrc entries, or none (`--no-netrc`).
    #[must_use]
    pub fn with_netrc(mut self, netrc: Option<Netrc>) -> Self {
        self.netrc = netrc.map_or(NetrcChoice::Off, |n| NetrcChoice::Parsed(Arc::new(n)));
        self
    }

    /// Look passwords up in this keyring, or in none (`--no-keyring`).
    #[must_use]
    pub fn with_keyring(mut self, keyring: Option<Arc<dyn Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Save a password that logged in to the keyring (`--store-password`).
    #[must_use]
    pub fn with_store_password(mut self, store: bool) -> Self {
        self.store_password = store;
        self
    }

    /// Ask for a password with this callback when none is known.
    #[must_use]
    pub fn with_prompt(mut self, prompt: Option<Arc<dyn PasswordPrompt>>) -> Self {
        self.prompt = prompt;
        self
    }

    /// Send the resolver's remarks here (where a password came from, a keyring that cannot be
    /// reached, a password saved): for a front end's verbose output. Never a password.
    #[must_use]
    pub fn with_notice(mut self, notice: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.notice = Some(Arc::new(notice));
        self
    }

    /// Whether a prompt is set.
    #[must_use]
    pub fn has_prompt(&self) -> bool {
        self.prompt.is_some()
    }

    /// The netrc entries: the parsed ones, or the file's (`None` when off or when the file does not
    /// exist).
    ///
    /// # Errors
    /// [`Error::Netrc`] for a file that exists and cannot be parsed, [`Error::Io`] for one that
    /// cannot be read.
    pub fn netrc(&self) -> Result<Option<Arc<Netrc>>> {
        match &self.netrc {
            NetrcChoice::Off => Ok(None),
            NetrcChoice::Parsed(netrc) => Ok(Some(Arc::clone(netrc))),
            NetrcChoice::File(path) => Ok(Netrc::read(path)?.map(Arc::new)),
        }
    }

    pub(crate) fn notice(&self, text: &str) {
        if let Some(notice) = &self.notice {
            notice(text);
        }
    }

    /// The user and password known without asking, in the documented order: the URL's, the netrc
    /// entry's, the keyring's. `user` is the URL's user (`None` when it names none) and `password`
    /// the URL's password, both percent-decoded. The user of the answer is the URL's, else the netrc
    /// entry's login, else `None`.
    ///
    /// # Errors
    /// A netrc file that cannot be read or parsed.
    pub fn lookup(&self, target: &Target, user: Option<&str>, password: Option<&str>) -> Result<Found> {
        if let Some(password) = password {
            return Ok(Found {
                user: user.map(str::to_owned),
                password: Some(password.to_owned()),
                source: Some(PasswordSource::Url),
            });
        }
        let mut user = user.map(str::to_owned);
        if let Some(netrc) = self.netrc()?
            && let Some(entry) = netrc.lookup(&target.host)
        {
            let login = entry.username();
            let fits = match &user {
                Some(user) => login.is_empty() || login == user,
                None => true,
            };
            if fits {
                if user.is_none() && !login.is_empty() {
                    user = Some(login.to_owned());
                }
                if let Some(password) = entry.password() {
                    self.notice(&format!(
                        "{}: the password from the netrc file",
                        target.account(user.as_deref().unwrap_or(""))
                    ));
                    return Ok(Found {
                        user,
                        password: Some(password.to_owned()),
                        source: Some(PasswordSource::Netrc),
                    });
                }
            }
        }
        if let Some(user) = &user
            && let Some(password) = self.keyring_get(target, user)
        {
            return Ok(Found {
                user: Some(user.clone()),
                password: Some(password),
                source: Some(PasswordSource::Keyring),
            });
        }
        Ok(Found {
            user,
            password: None,
            source: None,
        })
    }

    /// The keyring's password for `user` at `target`; a keyring that cannot be reached is only a
    /// notice.
    fn keyring_get(&self, target: &Target, user: &str) -> Option<String> {
        let keyring = self.keyring.as_ref()?;
        let account = target.account(user);
        match keyring.get(KEYRING_SERVICE, &account) {
            Ok(Some(password)) if !password.is_empty() => {
                self.notice(&format!("{account}: the password from the keyring"));
                Some(password)
            }
            Ok(_) => None,
            Err(e) => {
                self.notice(&format!("the keyring cannot be read ({e}); going on without it"));
                None
            }
        }
    }

    /// Asks the prompt, if any, on this thread (for callers outside async code). `Ok(None)` without a
    /// prompt, or when it could not ask.
    ///
    /// # Errors
    /// The terminal could not be read.
    pub fn ask_now(&self, request: &PromptRequest) -> std::io::Result<Option<String>> {
        let Some(prompt) = &self.prompt else {
            return Ok(None);
        };
        if let Some(typed) = self.typed_before(request) {
            return Ok(Some(typed));
        }
        let answer = prompt.ask(request)?;
        self.keep_typed(request, answer.as_deref());
        Ok(answer)
    }

    /// A first question for an account whose password was typed already in this process: that answer.
    fn typed_before(&self, request: &PromptRequest) -> Option<String> {
        if request.attempt > 1 {
            return None;
        }
        let typed = self.typed.lock().unwrap_or_else(PoisonError::into_inner);
        typed.get(&request.target.account(&request.user)).cloned()
    }

    /// A typed password was refused: the next question asks the person again.
    fn forget_typed(&self, target: &Target, user: &str) {
        self.typed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&target.account(user));
    }

    fn keep_typed(&self, request: &PromptRequest, answer: Option<&str>) {
        if let Some(answer) = answer {
            self.typed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(request.target.account(&request.user), answer.to_owned());
        }
    }

    /// Asks the prompt, if any, on a blocking thread. `Ok(None)` without a prompt, or when it could
    /// not ask.
    ///
    /// # Errors
    /// [`Error::Other`] (at `location`) when the terminal could not be read.
    pub async fn ask(&self, request: PromptRequest, location: &str) -> Result<Option<String>> {
        let Some(prompt) = self.prompt.clone() else {
            return Ok(None);
        };
        if let Some(typed) = self.typed_before(&request) {
            return Ok(Some(typed));
        }
        let asked = tokio::task::spawn_blocking(move || {
            let answer = prompt.ask(&request);
            (request, answer)
        })
        .await;
        match asked {
            Ok((request, Ok(answer))) => {
                self.keep_typed(&request, answer.as_deref());
                Ok(answer)
            }
            Ok((_, Err(e))) => Err(Error::Other {
                location: location.to_owned(),
                source: format!("cannot read the password: {e}").into(),
            }),
            Err(e) => Err(Error::Other {
                location: location.to_owned(),
                source: format!("the password prompt failed: {e}").into(),
            }),
        }
    }

    /// After a login with `password` from `source` succeeded: saves it to the keyring when asked to
    /// (and it did not come from there). A keyring that refuses is only a notice.
    pub fn remember(&self, target: &Target, user: &str, password: &str, source: PasswordSource) {
        if !self.store_password || source == PasswordSource::Keyring || password.is_empty() {
            return;
        }
        let account = target.account(user);
        let Some(keyring) = &self.keyring else {
            self.notice(&format!(
                "{account}: the password was not saved: no keyring (built without one, or --no-keyring)"
            ));
            return;
        };
        match keyring.set(KEYRING_SERVICE, &account, password) {
            Ok(()) => self.notice(&format!(
                "{account}: the password was saved to the keyring (service {KEYRING_SERVICE})"
            )),
            Err(e) => self.notice(&format!(
                "{account}: the password could not be saved to the keyring ({e})"
            )),
        }
    }
}

/// What [`CredentialOptions::lookup`] found. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    /// The user: the URL's, else the netrc entry's login.
    pub user: Option<String>,
    /// The password, if one was found.
    pub password: Option<String>,
    /// Where it came from.
    pub source: Option<PasswordSource>,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("source", &self.source)
            .finish()
    }
}

/// A server refused the password it was given: the cause of the [`Error::PermissionDenied`] a login
/// fails with. Says whose login, with which password (its origin, never its value), and the server's
/// answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRefused {
    /// `user@host:port`.
    pub account: String,
    /// Where the password came from.
    pub source: PasswordSource,
    /// How many passwords were tried.
    pub attempts: u32,
    /// The server's answer, if it gave one.
    pub answer: String,
}

impl fmt::Display for LoginRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "login refused for {} ({}", self.account, self.source)?;
        if self.attempts > 1 {
            write!(f, ", {} tries", self.attempts)?;
        }
        f.write_str(")")?;
        if !self.answer.is_empty() {
            write!(f, ": {}", self.answer)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoginRefused {}

/// The login of one store: its user and the passwords to try, the one that worked kept for the
/// store's other connections. Used by the FTP and SFTP backends.
pub(crate) struct Login {
    target: Target,
    /// The store's URL, for messages.
    location: String,
    /// `None`: no user anywhere (FTP logs in anonymously).
    user: Option<String>,
    /// The URL's or the netrc file's password, found when the store was opened.
    known: Option<(String, PasswordSource)>,
    options: CredentialOptions,
    /// The password a login succeeded with; held while the first login runs, so that other
    /// connections wait for it instead of asking too.
    verified: tokio::sync::Mutex<Option<Verified>>,
    /// Whether the keyring was looked at already (once per store).
    keyring_checked: std::sync::OnceLock<Option<String>>,
}

#[derive(Clone)]
struct Verified {
    password: Option<String>,
    source: PasswordSource,
}

impl Login {
    /// The login for a store at `location`: the URL's user and password, else the netrc entry's
    /// (read now: a netrc file that cannot be parsed fails the opening), else `default_user`.
    pub(crate) fn new(
        location: &str,
        target: Target,
        url_user: Option<&str>,
        url_password: Option<&str>,
        default_user: Option<String>,
        options: &CredentialOptions,
    ) -> Result<Login> {
        // The keyring is looked at when a connection needs it, not here: opening a store stays free.
        let without_keyring = CredentialOptions {
            keyring: None,
            ..options.clone()
        };
        let found = without_keyring.lookup(&target, url_user, url_password)?;
        let known = found.password.zip(found.source);
        Ok(Login {
            target,
            location: location.to_owned(),
            user: found.user.or(default_user),
            known,
            options: options.clone(),
            verified: tokio::sync::Mutex::new(None),
            keyring_checked: std::sync::OnceLock::new(),
        })
    }

    /// The password the URL or the netrc file gave.
    #[cfg(test)]
    pub(crate) fn known_password(&self) -> Option<&str> {
        self.known.as_ref().map(|(p, _)| p.as_str())
    }

    /// The user to log in as (`None`: anonymous).
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Starts a round of login attempts. A password that worked before is tried first (without
    /// waiting for anyone); otherwise the round holds the store's login until it ends, so the
    /// store's connections do not ask for a password each.
    pub(crate) async fn attempts(&self) -> Attempts<'_> {
        let guard = self.verified.lock().await;
        if let Some(verified) = guard.clone() {
            return Attempts {
                login: self,
                guard: None,
                verified: Some(verified),
                current: None,
                asked: 0,
                started: false,
                known_given: false,
            };
        }
        Attempts {
            login: self,
            guard: Some(guard),
            verified: None,
            current: None,
            asked: 0,
            started: false,
            known_given: false,
        }
    }

    fn keyring_password(&self) -> Option<String> {
        let user = self.user.as_deref()?;
        self.keyring_checked
            .get_or_init(|| self.options.keyring_get(&self.target, user))
            .clone()
    }

    fn refused(&self, source: PasswordSource, attempts: u32, answer: String) -> Error {
        Error::PermissionDenied {
            location: self.location.clone(),
            source: Box::new(LoginRefused {
                account: format!(
                    "{}@{}:{}",
                    self.user.as_deref().unwrap_or("anonymous"),
                    self.target.host,
                    self.target.port
                ),
                source,
                attempts,
                answer,
            }),
        }
    }
}

/// One round of login attempts: [`Attempts::next`] gives the password to try, then the caller says
/// [`Attempts::accepted`] or [`Attempts::refused`].
pub(crate) struct Attempts<'a> {
    login: &'a Login,
    guard: Option<tokio::sync::MutexGuard<'a, Option<Verified>>>,
    verified: Option<Verified>,
    current: Option<(Option<String>, PasswordSource)>,
    asked: u32,
    started: bool,
    known_given: bool,
}

impl Attempts<'_> {
    /// The password known without asking (the one that worked before, the URL's, the netrc
    /// file's, the keyring's), if any. Does not count as an attempt; [`Attempts::next`] gives it
    /// first.
    pub(crate) fn known(&mut self) -> Option<String> {
        if !self.started {
            self.started = true;
            self.current = if let Some(verified) = &self.verified {
                Some((verified.password.clone(), verified.source))
            } else if let Some((password, source)) = &self.login.known {
                Some((Some(password.clone()), *source))
            } else {
                self.login
                    .keyring_password()
                    .map(|p| (Some(p), PasswordSource::Keyring))
            };
        }
        self.current.as_ref().and_then(|(p, _)| p.clone())
    }

    /// Whether a prompt could be asked (the caller may then try other ways first, as SFTP tries
    /// keys, and still ask).
    pub(crate) fn can_ask(&self) -> bool {
        self.verified.is_none() && self.login.options.has_prompt()
    }

    /// The next password to try: first what [`Attempts::known`] gives, then what the prompt gives.
    /// `Ok(None)` when there is none (no prompt, or no answer): the caller tries without one, once.
    ///
    /// # Errors
    /// The prompt could not read the terminal.
    pub(crate) async fn next(&mut self) -> Result<Option<String>> {
        let known = self.known();
        if !self.known_given {
            self.known_given = true;
            if self.current.is_some() {
                return Ok(known);
            }
        }
        let Some(user) = self.login.user.clone() else {
            self.current = Some((None, PasswordSource::Nowhere));
            return Ok(None);
        };
        if !self.can_ask() {
            self.current = Some((None, PasswordSource::Nowhere));
            return Ok(None);
        }
        self.asked += 1;
        let request = PromptRequest {
            user,
            target: self.login.target.clone(),
            attempt: self.asked,
        };
        let answer = self.login.options.ask(request, &self.login.location).await?;
        self.current = Some(match answer {
            Some(password) => (Some(password), PasswordSource::Prompt),
            None => (None, PasswordSource::Nowhere),
        });
        Ok(self.current.as_ref().and_then(|(p, _)| p.clone()))
    }

    /// The server accepted the last password: the store's other connections use it, and it is
    /// saved to the keyring when asked to.
    pub(crate) fn accepted(mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let (password, source) = self.current.take().unwrap_or((None, PasswordSource::Nowhere));
        if let (Some(user), Some(password)) = (self.login.user.as_deref(), password.as_deref()) {
            self.login
                .options
                .remember(&self.login.target, user, password, source);
        }
        *guard = Some(Verified { password, source });
    }

    /// The server refused the last password (`answer`: what it said). `Ok` when the prompt may ask
    /// again; otherwise the error to fail with.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] with a [`LoginRefused`] cause.
    pub(crate) fn refused(&mut self, answer: &str) -> Result<()> {
        let source = self.current.as_ref().map_or(PasswordSource::Nowhere, |(_, s)| *s);
        if source == PasswordSource::Prompt
            && let Some(user) = &self.login.user
        {
            self.login.options.forget_typed(&self.login.target, user);
        }
        let may_ask = match source {
            PasswordSource::Prompt => self.asked < MAX_PROMPTS,
            // A known password that was refused: ask instead when a prompt can.
            PasswordSource::Url
            | PasswordSource::Netrc
            | PasswordSource::Keyring
            | PasswordSource::Nowhere => false,
        };
        if may_ask {
            return Ok(());
        }
        let attempts = if source == PasswordSource::Prompt {
            self.asked
        } else {
            1
        };
        Err(self.login.refused(source, attempts, answer.to_owned()))
    }
}

/// One `machine` (or `default`) entry of a netrc file.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    /// `None` for `default`.
    machine: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// A parsed netrc file: `machine HOST login USER password PASS` entries and an optional `default`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<Entry>,
}

impl fmt::Debug for Netrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machines: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.machine.as_deref().unwrap_or("default"))
            .collect();
        f.debug_struct("Netrc")
            .field("machines", &machines)
            .finish_non_exhaustive()
    }
}

impl Netrc {
    /// Reads and parses a netrc file; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Io`] when it exists and cannot be read, [`Error::Netrc`] when it cannot be parsed.
    pub fn read(path: &Path) -> Result<Option<Netrc>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Netrc::parse(&text)
                .map(Some)
                .map_err(|(line, reason)| Error::Netrc {
                    path: path.to_path_buf(),
                    line,
                    reason,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                location: path.display().to_string(),
                source: e,
            }),
        }
    }

    /// The netrc file to read: `$NETRC`, else `HOME/.netrc` (from the given variables' values).
    #[must_use]
    pub fn default_path(netrc_var: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
        netrc_var.or_else(|| home.map(|h| h.join(".netrc")))
    }

    /// Parses netrc text (`machine`, `default`, `login`, `password`, `account`, `macdef`; tokens
    /// separated by any white space, double-quoted tokens with backslash escapes).
    ///
    /// # Errors
    /// The 1-based line and what is wrong (never a password).
    pub fn parse(text: &str) -> std::result::Result<Netrc, (usize, String)> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut tokens = Tokens::new(text);
        while let Some((line, token)) = tokens.next_token() {
            match token.as_str() {
                "machine" => {
                    let Some((_, host)) = tokens.next_token() else {
                        return Err((line, "machine without a host name".into()));
                    };
                    entries.push(Entry {
                        machine: Some(host),
                        login: None,
                        password: None,
                    });
                }
                "default" => entries.push(Entry {
                    machine: None,
                    login: None,
                    password: None,
                }),
                "login" | "password" | "account" => {
                    let Some((_, value)) = tokens.next_token() else {
                        return Err((line, format!("{token} without a value")));
                    };
                    let Some(entry) = entries.last_mut() else {
                        return Err((line, format!("{token} before any machine")));
                    };
                    match token.as_str() {
                        "login" => entry.login = Some(value),
                        "password" => entry.password = Some(value),
                        _ => {}
                    }
                }
                "macdef" => tokens.skip_macro(),
                // The token itself is not shown: a misplaced one may be a password.
                _ => {
                    return Err((
                        line,
                        "unexpected word (expected machine, default, login, password, account or macdef)"
                            .into(),
                    ));
                }
            }
        }
        Ok(Netrc { entries })
    }

    /// The credentials for `host`: its `machine` entry, else `default`.
    #[must_use]
    pub fn lookup(&self, host: &str) -> Option<Credentials> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.machine.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(host)))
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        Some(Credentials::new(
            entry.login.clone().unwrap_or_default(),
            entry.password.clone(),
        ))
    }
}

/// The netrc tokenizer: white space separates tokens; a token may be double-quoted.
struct Tokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn next_token(&mut self) -> Option<(usize, String)> {
        while let Some(&c) = self.chars.peek() {
            if c == '#' {
                // A comment runs to the end of the line.
                while let Some(&c) = self.chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.chars.next();
                }
            } else if c.is_whitespace() {
                if c == '\n' {
                    self.line += 1;
                }
                self.chars.next();
            } else {
                break;
            }
        }
        let line = self.line;
        let first = self.chars.next()?;
        let mut token = String::new();
        if first == '"' {
            while let Some(c) = self.chars.next() {
                match c {
                    '"' => break,
                    '\\' => token.extend(self.chars.next()),
                    '\n' => {
                        self.line += 1;
                        token.push(c);
                    }
                    _ => token.push(c),
                }
            }
        } else {
            token.push(first);
            while let Some(&c) = self.chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                self.chars.next();
            }
        }
        Some((line, token))
    }

    /// Skips a macro definition: its name, then everything up to an empty line.
    fn skip_macro(&mut self) {
        let mut previous = ' ';
        for c in self.chars.by_ref() {
            if c == '\n' {
                self.line += 1;
                if previous == '\n' {
                    return;
                }
            }
            previous = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_percent_decoded_and_never_shown() {
        let url = url::Url::parse("https://al%40ce:p%3Ass@example.com/simple/").unwrap();
        let creds = Credentials::from_url(&url).unwrap();
        assert_eq!(creds.username(), "al@ce");
        assert_eq!(creds.password(), Some("p:ss"));
        assert!(!format!("{creds:?}").contains("p:ss"));
    }

    #[test]
    fn netrc_machines_default_quotes_comments_and_macros() {
        let text = "# comment\nmachine a.example login alice password \"se cret\"\n\
                    macdef init\ncd x\nquit\n\nmachine b.example\n  login bob\n  password pw\n\
                    default login anon password anonpw\n";
        let netrc = Netrc::parse(text).unwrap();
        let a = netrc.lookup("A.example").unwrap();
        assert_eq!((a.username(), a.password()), ("alice", Some("se cret")));
        let b = netrc.lookup("b.example").unwrap();
        assert_eq!((b.username(), b.password()), ("bob", Some("pw")));
        let other = netrc.lookup("c.example").unwrap();
        assert_eq!(other.username(), "anon");
        assert!(!format!("{netrc:?}").contains("pw"));
    }

    #[test]
    fn netrc_errors_name_the_line_not_the_secret() {
        let (line, reason) = Netrc::parse("machine a\n login x\n password").unwrap_err();
        assert_eq!(line, 3);
        assert!(reason.contains("password without a value"));
        let (line, reason) = Netrc::parse("login x").unwrap_err();
        assert_eq!((line, reason.as_str()), (1, "login before any machine"));
        let (_, reason) = Netrc::parse("machine a login x bogus-secret-word").unwrap_err();
        assert!(reason.starts_with("unexpected word"));
        assert!(!reason.contains("bogus"));
        assert_eq!(
            Netrc::parse("machine a").unwrap().lookup("a").unwrap().password(),
            None
        );
    }

    /// A keyring in memory that counts its calls.
    #[derive(Default)]
    struct MemoryKeyring {
        entries: Mutex<Vec<(String, String, String)>>,
        broken: bool,
    }

    impl Keyring for MemoryKeyring {
        fn get(&self, service: &str, account: &str) -> std::result::Result<Option<String>, String> {
            if self.broken {
                return Err("no backend".into());
            }
            Ok(self
                .entries
                .lock()
                .unwrap()
                .iter()
                .find(|(s, a, _)| s == service && a == account)
                .map(|(_, _, p)| p.clone()))
        }

        fn set(&self, service: &str, account: &str, password: &str) -> std::result::Result<(), String> {
            if self.broken {
                return Err("no backend".into());
            }
            self.entries
                .lock()
                .unwrap()
                .push((service.into(), account.into(), password.into()));
            Ok(())
        }

        fn delete(&self, service: &str, account: &str) -> std::result::Result<(), String> {
            self.entries
                .lock()
                .unwrap()
                .retain(|(s, a, _)| s != service || a != account);
            Ok(())
        }
    }

    fn target() -> Target {
        Target::of_url(&url::Url::parse("ftp://h.example/x").unwrap()).unwrap()
    }

    #[test]
    fn the_order_is_url_netrc_keyring() {
        let keyring = Arc::new(MemoryKeyring::default());
        keyring
            .set(KEYRING_SERVICE, "ftp://al@h.example:21", "from-keyring")
            .unwrap();
        let netrc = Netrc::parse("machine h.example login al password from-netrc").unwrap();
        let options = CredentialOptions::default()
            .with_netrc(Some(netrc))
            .with_keyring(Some(keyring.clone()));
        let url = options.lookup(&target(), Some("al"), Some("from-url")).unwrap();
        assert_eq!(
            (url.password.as_deref(), url.source),
            (Some("from-url"), Some(PasswordSource::Url))
        );
        let netrc = options.lookup(&target(), Some("al"), None).unwrap();
        assert_eq!(
            (netrc.password.as_deref(), netrc.source),
            (Some("from-netrc"), Some(PasswordSource::Netrc))
        );
        // No user in the URL: the netrc entry's login is the user.
        let nouser = options.lookup(&target(), None, None).unwrap();
        assert_eq!(nouser.user.as_deref(), Some("al"));
        // Another user than the entry's: not the entry's password; the keyring's.
        let other = options
            .with_netrc(None)
            .lookup(&target(), Some("al"), None)
            .unwrap();
        assert_eq!(
            (other.password.as_deref(), other.source),
            (Some("from-keyring"), Some(PasswordSource::Keyring))
        );
        assert!(!format!("{other:?}").contains("from-keyring"));
    }

    #[test]
    fn a_netrc_entry_of_another_login_is_not_used() {
        let netrc = Netrc::parse("machine h.example login bob password bobs").unwrap();
        let options = CredentialOptions::default().with_netrc(Some(netrc));
        let found = options.lookup(&target(), Some("al"), None).unwrap();
        assert_eq!((found.user.as_deref(), found.password), (Some("al"), None));
    }

    #[test]
    fn accounts_name_scheme_user_host_and_port() {
        assert_eq!(target().account("al"), "ftp://al@h.example:21");
        let sftp = Target::of_url(&url::Url::parse("sftp://[::1]:2222/x").unwrap()).unwrap();
        assert_eq!(sftp.account("me"), "sftp://me@[::1]:2222");
    }

    #[test]
    fn a_broken_keyring_is_a_notice_and_nothing_else() {
        let notes = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&notes);
        let options = CredentialOptions::default()
            .with_keyring(Some(Arc::new(MemoryKeyring {
                broken: true,
                ..MemoryKeyring::default()
            })))
            .with_store_password(true)
            .with_notice(move |n| seen.lock().unwrap().push(n.to_owned()));
        let found = options.lookup(&target(), Some("al"), None).unwrap();
        assert_eq!(found.password, None);
        options.remember(&target(), "al", "pw", PasswordSource::Prompt);
        let notes = notes.lock().unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| !n.contains("pw ")), "{notes:?}");
    }

    #[tokio::test]
    async fn a_typed_password_is_asked_again_up_to_three_times_and_a_known_one_is_not() {
        let asked = Arc::new(Mutex::new(0u32));
        let count = Arc::clone(&asked);
        let keyring = Arc::new(MemoryKeyring::default());
        let options = CredentialOptions::default()
            .with_keyring(Some(keyring.clone()))
            .with_store_password(true)
            .with_prompt(Some(Arc::new(move |r: &PromptRequest| {
                *count.lock().unwrap() += 1;
                assert_eq!(r.question(), "password for al at ftp://h.example:21: ");
                Ok(Some(format!("typed-{}", r.attempt)))
            })));
        let login = Login::new("ftp://al@h.example/", target(), Some("al"), None, None, &options).unwrap();
        let mut attempts = login.attempts().await;
        assert_eq!(attempts.known(), None);
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("typed-1"));
        attempts.refused("530").unwrap();
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("typed-2"));
        attempts.refused("530").unwrap();
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("typed-3"));
        let err = attempts.refused("530 no").unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("login refused for al@h.example:21"), "{text}");
        assert!(text.contains("3 tries"), "{text}");
        assert!(!text.contains("typed-"), "{text}");
        drop(attempts);
        // The right one on the second try: saved to the keyring, and used by the next connection.
        let mut attempts = login.attempts().await;
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("typed-1"));
        attempts.refused("530").unwrap();
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("typed-2"));
        attempts.accepted();
        assert_eq!(
            keyring
                .get(KEYRING_SERVICE, "ftp://al@h.example:21")
                .unwrap()
                .as_deref(),
            Some("typed-2")
        );
        let mut again = login.attempts().await;
        assert_eq!(again.next().await.unwrap().as_deref(), Some("typed-2"));
        assert_eq!(*asked.lock().unwrap(), 5);

        // A password from the URL that is refused is an error at once, with no question.
        let url = Login::new(
            "ftp://al:***@h.example/",
            target(),
            Some("al"),
            Some("pw"),
            None,
            &options,
        )
        .unwrap();
        let mut attempts = url.attempts().await;
        assert_eq!(attempts.next().await.unwrap().as_deref(), Some("pw"));
        let err = attempts.refused("530").unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("the password in the URL"), "{cause}");
        assert_eq!(*asked.lock().unwrap(), 5);
    }
}
