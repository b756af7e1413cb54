//! Sources and destinations: an HTTP simple index (read by content negotiation, JSON or HTML; written
//! through the upload API), or a PEP 503 tree in a store (read and written through the `Store` trait).

use std::fmt;
use std::path::{Path, PathBuf};

use snapsync_store::StoreUrl;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::auth::redact;
use crate::dist::{DistFilename, Metadata};
use crate::error::{Error, Result};
use crate::hashes::{Hasher, Hashes};
use crate::http::{Client, ClientOptions};
use crate::page::{self, DistFile};
use crate::select::Selector;
use crate::tree::StoreIndex;
use crate::upload::Uploader;

/// Where packages are read from or written to, as the user names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An `http://` or `https://` simple index (the URL may carry a user and password).
    Http(Url),
    /// A snapsync store holding a PEP 503 tree: a path, `file://`, `s3://`, `sftp://`…
    Store(StoreUrl),
}

impl Location {
    /// `http(s)://…` is an index; anything else is parsed as a store URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for an HTTP URL that does not parse, the store's error for a bad store URL.
    pub fn parse(text: &str) -> Result<Location> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = Url::parse(text).map_err(|e| Error::InvalidUrl {
                url: Url::parse(text).map_or_else(|_| "(an unparsable URL)".to_owned(), |u| redact(&u)),
                reason: e.to_string(),
            })?;
            Ok(Location::Http(url))
        } else {
            Ok(Location::Store(StoreUrl::parse(text)?))
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Http(url) => f.write_str(&redact(url)),
            Location::Store(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// An HTTP simple index (PEP 503 HTML or PEP 691 JSON).
#[derive(Clone, Debug)]
pub struct HttpIndex {
    client: Client,
}

impl HttpIndex {
    /// The index at `url` (its root page; project pages are `url/<normalised name>/`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for anything but http(s).
    pub fn new(url: &Url, options: &ClientOptions) -> Result<HttpIndex> {
        Ok(HttpIndex {
            client: Client::new(url, options)?,
        })
    }

    /// The index URL, without credentials.
    #[must_use]
    pub fn url(&self) -> &Url {
        &self.client.base
    }

    /// The project names on the root page.
    ///
    /// # Errors
    ///
    /// HTTP failures, a missing root page ([`Error::Status`] 404), a bad page.
    pub async fn projects(&self) -> Result<Vec<String>> {
        let url = &self.client.base;
        let Some((body, format, final_url)) = self.client.get_page(url).await? else {
            return Err(Error::Status {
                url: redact(url),
                status: 404,
                message: "the index has no root page".into(),
            });
        };
        page::parse_root(&body, format, &final_url)
    }

    /// The files of a project; `None` when the index answers 404.
    ///
    /// # Errors
    ///
    /// HTTP failures (other than 404) and bad pages: never an empty list for a page not read.
    pub async fn files(&self, project: &str) -> Result<Option<Vec<DistFile>>> {
        let name = crate::dist::normalize(project);
        let encoded =
            percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).to_string();
        let url = self
            .client
            .base
            .join(&format!("{encoded}/"))
            .map_err(|e| Error::InvalidUrl {
                url: redact(&self.client.base),
                reason: e.to_string(),
            })?;
        match self.client.get_page(&url).await? {
            None => Ok(None),
            Some((body, format, final_url)) => page::parse_project(&body, format, &final_url).map(Some),
        }
    }
}

/// A source of distributions.
#[derive(Clone, Debug)]
pub enum Index {
    /// An HTTP simple index.
    Http(HttpIndex),
    /// A PEP 503 tree in a store.
    Store(StoreIndex),
}

/// A downloaded distribution in a temporary file (removed when this is dropped), its digests checked
/// against the index's sha256 where it gave one.
#[derive(Debug)]
pub struct Download {
    path: tempfile::TempPath,
    /// The file as the index listed it.
    pub file: DistFile,
    /// Its digests.
    pub hashes: Hashes,
}

impl Download {
    /// Where the bytes are.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file at `to` instead of removing it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be moved there.
    pub fn persist(self, to: &Path) -> Result<()> {
        self.path.persist(to).map_err(|e| Error::io(to, e.error))
    }
}

impl Index {
    /// Opens the index a location names.
    ///
    /// # Errors
    ///
    /// A bad URL, or a store that cannot be opened.
    pub fn open(location: &Location, options: &ClientOptions) -> Result<Index> {
        match location {
            Location::Http(url) => Ok(Index::Http(HttpIndex::new(url, options)?)),
            Location::Store(url) => Ok(Index::Store(StoreIndex::open(url, &options.connect)?)),
        }
    }

    /// The index's URL, without a password.
    #[must_use]
    pub fn url(&self) -> String {
        match self {
            Index::Http(index) => index.url().to_string(),
            Index::Store(tree) => tree.url(),
        }
    }

    /// The project names.
    ///
    /// # Errors
    ///
    /// See [`HttpIndex::projects`] and [`StoreIndex::projects`].
    pub async fn projects(&self) -> Result<Vec<String>> {
        match self {
            Index::Http(index) => index.projects().await,
            Index::Store(tree) => tree.projects().await,
        }
    }

    /// The files of a project; `None` when the index has no such project.
    ///
    /// # Errors
    ///
    /// See [`HttpIndex::files`] and [`StoreIndex::files`].
    pub async fn files(&self, project: &str) -> Result<Option<Vec<DistFile>>> {
        match self {
            Index::Http(index) => index.files(project).await,
            Index::Store(tree) => tree.files(project).await,
        }
    }

    /// The files of the project a requirement names that match it (pkgsync's
    /// `Repository(url).distributions('celery>=3.0.15')`), with `pre` and a target Python as in
    /// [`Selector`].
    ///
    /// # Errors
    ///
    /// A bad requirement, [`Error::ProjectNotFound`], or what reading the page gives.
    pub async fn distributions(
        &self,
        requirement: &str,
        pre: bool,
        python: Option<pep440_rs::Version>,
    ) -> Result<Vec<DistFile>> {
        let selector = Selector::new(&[requirement])?.with_pre(pre).with_python(python);
        let project = selector.projects().unwrap_or_default().pop().unwrap_or_default();
        let files = self
            .files(&project)
            .await?
            .ok_or_else(|| Error::ProjectNotFound {
                url: self.url(),
                project: project.clone(),
            })?;
        Ok(selector.select(&project, &files).0)
    }

    /// Downloads a file into a temporary file in `dir`, hashing it as it is written, and checks its
    /// sha256 against the index's.
    ///
    /// # Errors
    ///
    /// [`Error::HashMismatch`] (the temporary file is removed), HTTP or store failures, local I/O.
    pub async fn download(&self, file: &DistFile, dir: &Path) -> Result<Download> {
        let temp = tempfile::Builder::new()
            .prefix(".snapsync-pkg-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let (std_file, path) = temp.into_parts();
        let mut out = tokio::fs::File::from_std(std_file);
        let mut hasher = Hasher::new();
        match self {
            Index::Http(index) => index.client.download(file, &mut out, &mut hasher).await?,
            Index::Store(tree) => tree.download(file, &mut out, &mut hasher).await?,
        }
        out.flush()
            .await
            .map_err(|e| Error::io(PathBuf::from(&*path), e))?;
        drop(out);
        let digests = hasher.finish();
        if let Some(expected) = &file.sha256
            && *expected != digests.sha256
        {
            return Err(Error::HashMismatch {
                filename: file.filename.clone(),
                url: if file.url.scheme() == "store" {
                    self.url()
                } else {
                    redact(&file.url)
                },
                expected: expected.clone(),
                actual: digests.sha256,
            });
        }
        Ok(Download {
            path,
            file: file.clone(),
            hashes: digests,
        })
    }
}

/// Where distributions are uploaded to.
#[derive(Clone, Debug)]
// Made once per run; boxing the HTTP variant would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Destination {
    /// An index that takes uploads: its simple index (to see what it has) and its upload URL.
    Http {
        /// What it has.
        index: HttpIndex,
        /// Where uploads go.
        uploader: Uploader,
    },
    /// A PEP 503 tree in a store.
    Store(StoreIndex),
}

impl Destination {
    /// Opens the destination a location names. For HTTP, the URL is the simple index and the upload
    /// URL is derived from it: `…/+simple/` (devpi) uploads to `…/`, `…/simple/` (pypiserver) to `…/`;
    /// any other URL is the upload URL, with its simple index at `URL/simple/`. Use
    /// [`Destination::http`] when an index is laid out otherwise (PyPI: `https://upload.pypi.org/legacy/`).
    ///
    /// # Errors
    ///
    /// A bad URL, or a store that cannot be opened.
    pub fn open(location: &Location, options: &ClientOptions) -> Result<Destination> {
        match location {
            Location::Store(url) => Ok(Destination::Store(StoreIndex::open(url, &options.connect)?)),
            Location::Http(url) => {
                let mut base = url.clone();
                if !base.path().ends_with('/') {
                    let path = format!("{}/", base.path());
                    base.set_path(&path);
                }
                let path = base.path().to_owned();
                let (index, upload) = if let Some(parent) = path.strip_suffix("+simple/") {
                    let mut upload = base.clone();
                    upload.set_path(parent);
                    (base, upload)
                } else if let Some(parent) = path.strip_suffix("simple/").filter(|p| p.ends_with('/')) {
                    let mut upload = base.clone();
                    upload.set_path(parent);
                    (base, upload)
                } else {
                    let index = base.join("simple/").map_err(|e| Error::InvalidUrl {
                        url: redact(url),
                        reason: e.to_string(),
                    })?;
                    (index, base)
                };
                Destination::http(&index, &upload, options)
            }
        }
    }

    /// An HTTP destination with its simple index and upload URLs given.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for anything but http(s).
    pub fn http(index: &Url, upload: &Url, options: &ClientOptions) -> Result<Destination> {
        Ok(Destination::Http {
            index: HttpIndex::new(index, options)?,
            uploader: Uploader::new(upload, options)?,
        })
    }

    /// The destination's URL (the upload URL for HTTP), without a password.
    #[must_use]
    pub fn url(&self) -> String {
        match self {
            Destination::Http { uploader, .. } => uploader.url().to_owned(),
            Destination::Store(tree) => tree.url(),
        }
    }

    /// What the destination has of a project. A store tree counts only what its project page lists
    /// (a file a killed run put there without its page is sent again, then listed).
    ///
    /// # Errors
    ///
    /// Failures to read: never an empty list for a page that was not read.
    pub async fn files(&self, project: &str) -> Result<Vec<DistFile>> {
        let files = match self {
            Destination::Http { index, .. } => index.files(project).await?,
            Destination::Store(tree) => tree.page_files(project).await?,
        };
        Ok(files.unwrap_or_default())
    }

    /// Uploads a downloaded distribution.
    ///
    /// # Errors
    ///
    /// The upload's typed refusals, or the store's error.
    pub async fn upload(
        &self,
        project: &str,
        download: &Download,
        dist: &DistFilename,
        metadata: &Metadata,
    ) -> Result<()> {
        match self {
            Destination::Http { uploader, .. } => {
                uploader
                    .upload(download.path(), dist, metadata, &download.hashes)
                    .await?;
                // The index took the file; nothing of this run records it (a kill point for the crash
                // harness, as a store's rename is; nothing without the `chaos` feature).
                snapsync_core::chaos::point("after-rename");
                Ok(())
            }
            Destination::Store(tree) => tree.put_file(project, &dist.filename, download.path()).await,
        }
    }
}
