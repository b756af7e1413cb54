//! Credentials for indexes: a user and password in the URL (percent-decoded), a netrc file, API tokens
//! (the user `__token__` with the token as the password, as PyPI and devpi take them).
//!
//! A password is kept only in [`Credentials`], whose `Debug` shows `***`; URLs are stripped of their
//! password ([`strip`]) before any request is made or any message is written, so no error can carry it.

use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{Error, Result};

/// A user name and password (or API token) for HTTP basic authentication.
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

    /// An API token: the user `__token__`, the token as the password.
    #[must_use]
    pub fn token(token: impl Into<String>) -> Credentials {
        Credentials::new("__token__", Some(token.into()))
    }

    /// The user and password a URL carries, percent-decoded; `None` when it has no user.
    #[must_use]
    pub fn from_url(url: &Url) -> Option<Credentials> {
        if url.username().is_empty() {
            return None;
        }
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
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

/// The URL without user or password (what is requested; credentials go in a header).
#[must_use]
pub fn strip(url: &Url) -> Url {
    let mut url = url.clone();
    // Only URLs that cannot have a user ("cannot-be-a-base") refuse these, and they have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The URL as it may be shown: the password replaced by `***`, the user kept.
#[must_use]
pub fn redact(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else {
        url.to_string()
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
    ///
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
            Err(e) => Err(Error::io(path, e)),
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
    ///
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
        let url = Url::parse("https://al%40ce:p%3Ass@example.com/simple/").unwrap();
        let creds = Credentials::from_url(&url).unwrap();
        assert_eq!(creds.username(), "al@ce");
        assert_eq!(creds.password(), Some("p:ss"));
        assert!(!format!("{creds:?}").contains("p:ss"));
        assert_eq!(redact(&url), "https://al%40ce:***@example.com/simple/");
        assert_eq!(strip(&url).as_str(), "https://example.com/simple/");
        assert_eq!(Credentials::from_url(&strip(&url)), None);
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
}
