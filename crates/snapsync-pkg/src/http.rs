//! HTTP: the client every index and upload shares (reqwest over rustls), credentials per request, pages
//! read with a size cap, downloads hashed as they are written, and the server's message taken out of an
//! error answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use snapsync_store::{ConnectOptions, CredentialOptions, PasswordSource, PromptRequest, Target};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::auth::{Credentials, Netrc, redact, strip};
use crate::error::{Error, Result};
use crate::hashes::Hasher;
use crate::page::{self, DistFile, Format};

/// How indexes and stores are reached: timeouts, limits, and the store options for `file://`,
/// `s3://`, `sftp://`… trees, whose [`CredentialOptions`] (netrc, keyring, prompt) give index
/// credentials too.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub(crate) connect: ConnectOptions,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) max_page_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_mins(5),
            max_page_bytes: 256 * 1024 * 1024,
        }
    }
}

impl ClientOptions {
    /// Options from the environment: the store options of [`ConnectOptions::from_env`], whose
    /// credentials read the netrc file `$NETRC` or `~/.netrc` (none if it does not exist). The only
    /// place this crate reads the environment.
    ///
    /// # Errors
    ///
    /// A netrc file that exists and cannot be read or parsed.
    pub fn from_env() -> Result<ClientOptions> {
        let connect = ConnectOptions::from_env();
        connect.credentials().netrc()?;
        Ok(ClientOptions {
            connect,
            ..ClientOptions::default()
        })
    }

    /// Uses these netrc entries (or none).
    #[must_use]
    pub fn with_netrc(mut self, netrc: Option<Netrc>) -> Self {
        let credentials = self.connect.credentials().clone().with_netrc(netrc);
        self.connect = self.connect.with_credentials(credentials);
        self
    }

    /// Opens stores (`file://`, `s3://`, `sftp://`…) with these options.
    #[must_use]
    pub fn with_connect_options(mut self, connect: ConnectOptions) -> Self {
        self.connect = connect;
        self
    }

    /// How long connecting, and waiting for each read, may take.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The largest index page read (256 MiB by default).
    #[must_use]
    pub fn with_max_page_bytes(mut self, bytes: u64) -> Self {
        self.max_page_bytes = bytes;
        self
    }

    /// The store options.
    #[must_use]
    pub fn connect_options(&self) -> &ConnectOptions {
        &self.connect
    }
}

/// A client for one server (an index or an upload URL): its URL without credentials, the credentials
/// it was given (the resolver's: URL userinfo, netrc, keyring, prompt), and the netrc for other hosts.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    /// The URL without credentials.
    pub(crate) base: Url,
    credentials: Option<Credentials>,
    netrc: Option<Arc<Netrc>>,
    pub(crate) max_page_bytes: u64,
    /// Where the password came from, the server and the options, to save it to the keyring once a
    /// request with it succeeded (`--store-password`).
    login: Option<Arc<(Target, PasswordSource, CredentialOptions)>>,
    remembered: Arc<AtomicBool>,
}

impl Client {
    pub(crate) fn new(url: &Url, options: &ClientOptions) -> Result<Client> {
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::InvalidUrl {
                url: redact(url),
                reason: "not an http:// or https:// URL".into(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("snapsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(|e| Error::Http {
                url: redact(url),
                source: e,
            })?;
        let resolver = options.connect.credentials();
        let netrc = resolver.netrc()?;
        let (credentials, login) = match Target::of_url(url) {
            Some(target) => {
                let given = Credentials::from_url(url);
                let found = resolver.lookup(
                    &target,
                    given.as_ref().map(Credentials::username),
                    given.as_ref().and_then(Credentials::password),
                )?;
                let (password, source) = match (&found.user, found.password) {
                    (Some(user), None) => {
                        // A user without a password anywhere: ask, where the front end can.
                        let request = PromptRequest {
                            user: user.clone(),
                            target: target.clone(),
                            attempt: 1,
                        };
                        match resolver.ask_now(&request) {
                            Ok(Some(password)) => (Some(password), Some(PasswordSource::Prompt)),
                            Ok(None) => (None, None),
                            Err(e) => {
                                return Err(Error::Store(snapsync_store::Error::Other {
                                    location: redact(url),
                                    source: format!("cannot read the password: {e}").into(),
                                }));
                            }
                        }
                    }
                    (_, password) => (password, found.source),
                };
                let login = source.map(|s| Arc::new((target, s, resolver.clone())));
                (found.user.map(|u| Credentials::new(u, password)), login)
            }
            None => (None, None),
        };
        let mut base = strip(url);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Client {
            http,
            base,
            credentials,
            netrc,
            max_page_bytes: options.max_page_bytes,
            login,
            remembered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The credentials for a request to `url`: this server's for its own origin, else the netrc
    /// entry of that host (never this server's password sent to another host).
    fn credentials_for(&self, url: &Url) -> Option<Credentials> {
        if url.origin() == self.base.origin() && self.credentials.is_some() {
            return self.credentials.clone();
        }
        self.netrc.as_ref()?.lookup(url.host_str()?)
    }

    /// An upload to `url` was accepted: if it carried this server's password, that password works
    /// and is saved to the keyring when asked to (once). Only uploads count: an index may serve its
    /// pages to anyone, whatever password comes with the request.
    pub(crate) fn succeeded(&self, url: &Url) {
        if url.origin() != self.base.origin() || self.remembered.swap(true, Ordering::Relaxed) {
            return;
        }
        if let (Some(login), Some(credentials)) = (&self.login, &self.credentials)
            && let Some(password) = credentials.password()
        {
            let (target, source, resolver) = &**login;
            resolver.remember(target, credentials.username(), password, *source);
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, strip(url));
        match self.credentials_for(url) {
            Some(c) => request.basic_auth(c.username(), c.password()),
            None => request,
        }
    }

    /// GETs an index page. `Ok(None)` for a 404 (no such project); any other failure is an error.
    pub(crate) async fn get_page(&self, url: &Url) -> Result<Option<(Vec<u8>, Format, Url)>> {
        let response = self
            .request(reqwest::Method::GET, url)
            .header(ACCEPT, page::ACCEPT)
            .send()
            .await
            .map_err(|e| http_error(url, e))?;
        let final_url = response.url().clone();
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Status {
                url: redact(url),
                status: status.as_u16(),
                message: server_message(response).await,
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| http_error(url, e))?;
            if (body.len() + chunk.len()) as u64 > self.max_page_bytes {
                return Err(Error::TooLarge {
                    url: redact(url),
                    limit: self.max_page_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let format =
            Format::from_content_type(content_type.as_deref(), &body).ok_or_else(|| Error::BadPage {
                url: redact(url),
                reason: format!(
                    "content type {} is not a simple index",
                    content_type.as_deref().unwrap_or("(none)")
                ),
            })?;
        Ok(Some((body, format, final_url)))
    }

    /// Downloads `file` into `out`, hashing what is written.
    pub(crate) async fn download(
        &self,
        file: &DistFile,
        out: &mut tokio::fs::File,
        hasher: &mut Hasher,
    ) -> Result<()> {
        let url = &file.url;
        let response = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| http_error(url, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Status {
                url: redact(url),
                status: status.as_u16(),
                message: server_message(response).await,
            });
        }
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| http_error(url, e))?;
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io(url.path(), e))?;
        }
        Ok(())
    }
}

pub(crate) fn http_error(url: &Url, error: reqwest::Error) -> Error {
    Error::Http {
        url: redact(url),
        source: error.without_url(),
    }
}

/// The gist of an error answer: a JSON `message`/`detail`/`error`, an HTML page's `<pre>` (pypiserver),
/// `<h1>`-less text or `<title>`, or the plain text; white space collapsed, at most 500 characters.
pub(crate) async fn server_message(response: reqwest::Response) -> String {
    let reason = response.status().canonical_reason().unwrap_or("").to_owned();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let message = if is_json {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                ["message", "detail", "error"]
                    .iter()
                    .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))
            })
            .unwrap_or(text)
    } else if text.to_ascii_lowercase().contains("<html") || text.contains("<pre") {
        html_message(&text)
    } else {
        text
    };
    let collapsed: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let collapsed = if collapsed.is_empty() { reason } else { collapsed };
    match collapsed.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &collapsed[..i]),
        None => collapsed,
    }
}

fn html_message(text: &str) -> String {
    let Ok(dom) = tl::parse(text, tl::ParserOptions::default()) else {
        return text.to_owned();
    };
    let parser = dom.parser();
    let inner = |tag_name: &str| {
        dom.nodes().iter().filter_map(|n| n.as_tag()).find_map(|t| {
            t.name()
                .as_utf8_str()
                .eq_ignore_ascii_case(tag_name)
                .then(|| html_escape::decode_html_entities(&t.inner_text(parser)).into_owned())
        })
    };
    inner("pre")
        .or_else(|| inner("body"))
        .or_else(|| inner("title"))
        .unwrap_or_else(|| text.to_owned())
}
