//! A PEP 503 tree in any snapsync store (a local folder, S3, SFTP…), for offline mirrors:
//!
//! ```text
//! index.html                    the root page: one link per project
//! <project>/index.html          the project page: one link per file, #sha256=…, data-requires-python, data-yanked
//! <project>/<filename>          the distributions
//! ```
//!
//! `<project>` is the PEP 503 normalised name. Reading accepts any such tree (links relative to the
//! page, inside the store); a project folder without `index.html` lists its files without hashes, and a
//! tree without a root page lists its folders. Writing puts each file through the store (temporary
//! name and rename), then rewrites the project page, then the root page, so a page never lists a file
//! that is not whole.

use std::sync::Arc;

use futures::StreamExt;
use snapsync_store::{ConnectOptions, PutMode, PutSource, Store, StoreExt, StoreUrl};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::dist::normalize;
use crate::error::{Error, Result};
use crate::hashes::Hasher;
use crate::page::{self, DistFile, Format};

const SCHEME_BASE: &str = "store:///";

/// A PEP 503 tree in a store.
#[derive(Clone, Debug)]
pub struct StoreIndex {
    store: Arc<dyn Store>,
}

impl StoreIndex {
    /// The tree at the root of `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> StoreIndex {
        StoreIndex { store }
    }

    /// Opens the store `url` names.
    ///
    /// # Errors
    ///
    /// The store's error when it cannot be opened.
    pub fn open(url: &StoreUrl, options: &ConnectOptions) -> Result<StoreIndex> {
        Ok(StoreIndex::new(snapsync_store::open(url, options)?))
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store's URL (no password), for messages.
    #[must_use]
    pub fn url(&self) -> String {
        self.store.url().to_string()
    }

    /// The URL a page at `dir` (a checked project folder, or the root) is parsed against.
    fn page_url(dir: &str) -> Result<Url> {
        let encoded = percent_encoding::utf8_percent_encode(dir, HREF).to_string();
        let with_slash = if dir.is_empty() {
            String::new()
        } else {
            format!("{encoded}/")
        };
        Url::parse(SCHEME_BASE)
            .and_then(|u| u.join(&with_slash))
            .map_err(|e| Error::InvalidUrl {
                url: dir.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The store key a file's URL points at, when it is inside this store.
    fn key_of(&self, file: &DistFile) -> Result<String> {
        let outside = || Error::InvalidUrl {
            url: file.url.to_string(),
            reason: format!("{} links outside its tree", self.url()),
        };
        if file.url.scheme() != "store" {
            return Err(outside());
        }
        let key = percent_encoding::percent_decode_str(file.url.path().trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| outside())?
            .into_owned();
        snapsync_store::check_key(&key)?;
        Ok(key)
    }

    /// The project names: the root page's links, or (without one) the folders at the root.
    ///
    /// # Errors
    ///
    /// The store's error, or [`Error::BadPage`] for a root page that cannot be parsed.
    pub async fn projects(&self) -> Result<Vec<String>> {
        match self.store.get_bytes("index.html").await {
            Ok(body) => page::parse_root(&body, Format::Html, &Self::page_url("")?),
            Err(snapsync_store::Error::NotFound { .. }) => {
                if !self.store.root_exists().await? {
                    return Err(snapsync_store::Error::NotFound { location: self.url() }.into());
                }
                let mut names: Vec<String> = self
                    .store
                    .list_all("")
                    .await?
                    .into_iter()
                    .filter_map(|m| m.key.split_once('/').map(|(dir, _)| dir.to_owned()))
                    .filter(|dir| !dir.starts_with('.'))
                    .collect();
                names.dedup();
                Ok(names)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The files of a project; `None` when the tree has no such project.
    ///
    /// # Errors
    ///
    /// The store's error, or [`Error::BadPage`] for a page that cannot be parsed.
    pub async fn files(&self, project: &str) -> Result<Option<Vec<DistFile>>> {
        let dir = project_dir(project)?;
        let base = Self::page_url(&dir)?;
        match self.store.get_bytes(&format!("{dir}/index.html")).await {
            Ok(body) => page::parse_project(&body, Format::Html, &base).map(Some),
            Err(snapsync_store::Error::NotFound { .. }) => {
                let files: Vec<DistFile> = self
                    .store
                    .list_all(&dir)
                    .await?
                    .into_iter()
                    .filter_map(|m| {
                        let name = m.key.strip_prefix(&format!("{dir}/"))?.to_owned();
                        let listed = !name.contains('/')
                            && !name.starts_with('.')
                            && name != "index.html"
                            && !name.ends_with(".metadata");
                        if !listed {
                            return None;
                        }
                        Some(DistFile {
                            url: base
                                .join(&percent_encoding::utf8_percent_encode(&name, HREF).to_string())
                                .ok()?,
                            filename: name,
                            sha256: None,
                            requires_python: None,
                            yanked: None,
                            core_metadata: None,
                            size: Some(m.size),
                        })
                    })
                    .collect();
                Ok((!files.is_empty()).then_some(files))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The files a project's page lists; `None` when it has no page (files without one are not counted).
    ///
    /// # Errors
    ///
    /// The store's error, or [`Error::BadPage`].
    pub async fn page_files(&self, project: &str) -> Result<Option<Vec<DistFile>>> {
        let dir = project_dir(project)?;
        match self.store.get_bytes(&format!("{dir}/index.html")).await {
            Ok(body) => page::parse_project(&body, Format::Html, &Self::page_url(&dir)?).map(Some),
            Err(snapsync_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads a file of this tree into `out`.
    pub(crate) async fn download(
        &self,
        file: &DistFile,
        out: &mut tokio::fs::File,
        hasher: &mut Hasher,
    ) -> Result<()> {
        let key = self.key_of(file)?;
        let mut stream = self.store.get(&key).await?.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| Error::io(&key, e))?;
        }
        Ok(())
    }

    /// Puts a distribution (from a local file) at `<project>/<filename>`, replacing what is there.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn put_file(&self, project: &str, filename: &str, path: &std::path::Path) -> Result<()> {
        let key = format!("{}/{filename}", project_dir(project)?);
        snapsync_store::check_key(&key)?;
        self.store
            .put(&key, PutSource::File(path.to_path_buf()), PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Writes `<project>/index.html` listing `files` (each with its hash, requires-python and
    /// yanked reason), keeping only those present in the store.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn write_project_page(&self, project: &str, files: &[DistFile]) -> Result<()> {
        let dir = project_dir(project)?;
        let present: std::collections::BTreeSet<String> = self
            .store
            .list_all(&dir)
            .await?
            .into_iter()
            .filter_map(|m| m.key.strip_prefix(&format!("{dir}/")).map(str::to_owned))
            .collect();
        let mut files: Vec<&DistFile> = files.iter().filter(|f| present.contains(&f.filename)).collect();
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        files.dedup_by(|a, b| a.filename == b.filename);
        let html = render_project(&dir, &files);
        self.store
            .put(
                &format!("{dir}/index.html"),
                PutSource::Bytes(html.into()),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }

    /// Writes the root `index.html` listing every folder that has a project page.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn write_root_page(&self) -> Result<()> {
        let mut names: Vec<String> = self
            .store
            .list_all("")
            .await?
            .into_iter()
            .filter_map(|m| m.key.strip_suffix("/index.html").map(str::to_owned))
            .filter(|dir| !dir.contains('/'))
            .collect();
        names.sort();
        names.dedup();
        let html = render_root(&names);
        self.store
            .put("index.html", PutSource::Bytes(html.into()), PutMode::Overwrite)
            .await?;
        Ok(())
    }
}

/// The folder of a project: its PEP 503 normalised name, which must be a valid project name (so it
/// is one path segment, never `..` or empty).
fn project_dir(project: &str) -> Result<String> {
    let name = normalize(project);
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(name)
    } else {
        Err(Error::InvalidRequirement {
            requirement: project.to_owned(),
            reason: "not a project name".into(),
        })
    }
}

/// What a file name's link escapes (`+` in local versions, spaces, `#`, `%`, quotes).
const HREF: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!');

fn escape(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

fn render_project(project: &str, files: &[&DistFile]) -> String {
    use std::fmt::Write as _;
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n    \
         <title>Links for {0}</title>\n  </head>\n  <body>\n    <h1>Links for {0}</h1>\n",
        escape(project)
    );
    for file in files {
        let mut href = percent_encoding::utf8_percent_encode(&file.filename, HREF).to_string();
        if let Some(sha256) = &file.sha256 {
            let _ = write!(href, "#sha256={sha256}");
        }
        let mut attributes = String::new();
        if let Some(requires) = &file.requires_python {
            let _ = write!(attributes, " data-requires-python=\"{}\"", escape(requires));
        }
        if let Some(reason) = &file.yanked {
            let _ = write!(attributes, " data-yanked=\"{}\"", escape(reason));
        }
        let _ = writeln!(
            html,
            "    <a href=\"{}\"{attributes}>{}</a><br>",
            escape(&href),
            html_escape::encode_text(&file.filename)
        );
    }
    html.push_str("  </body>\n</html>\n");
    html
}

fn render_root(projects: &[String]) -> String {
    use std::fmt::Write as _;
    let mut html = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n    \
         <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for name in projects {
        let href = percent_encoding::utf8_percent_encode(name, HREF).to_string();
        let _ = writeln!(
            html,
            "    <a href=\"{}/\">{}</a><br>",
            escape(&href),
            html_escape::encode_text(name)
        );
    }
    html.push_str("  </body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_pages_parse_back() {
        let base = StoreIndex::page_url("a").unwrap();
        let file = DistFile {
            filename: "a-1.0+local.tar.gz".into(),
            url: base.join("a-1.0%2Blocal.tar.gz").unwrap(),
            sha256: Some("ab".repeat(32)),
            requires_python: Some(">=3.8, <4".into()),
            yanked: Some("broken \"badly\" & <worse>".into()),
            core_metadata: None,
            size: None,
        };
        let html = render_project("a", &[&file]);
        let parsed = page::parse_project(html.as_bytes(), Format::Html, &base).unwrap();
        assert_eq!(parsed, [file]);
        let root = render_root(&["a".into(), "b-c".into()]);
        assert_eq!(
            page::parse_root(root.as_bytes(), Format::Html, &base).unwrap(),
            ["a", "b-c"]
        );
    }
}
