//! Simple-index pages: PEP 503 HTML (with PEP 592 `data-yanked`, `data-requires-python`, PEP 658/714
//! `data-core-metadata`, PEP 629 `pypi:repository-version`) and PEP 691 JSON, parsed into
//! [`DistFile`] lists and project names.
//!
//! HTML is parsed with `tl` (no regular expressions), attribute values are entity-decoded, links are
//! resolved against the page's final URL (after redirects) or its `<base href>`. A page that opened
//! `<html>` and never closed it is taken as truncated and refused: an index that lost its tail must
//! not look like a project with fewer files.

use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};

/// The PEP 691 JSON content type (version 1).
pub const JSON_CONTENT_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// The PEP 691 HTML content type (version 1).
pub const HTML_CONTENT_TYPE: &str = "application/vnd.pypi.simple.v1+html";
/// What a client asks for: JSON first, then HTML (PEP 691 content negotiation).
pub const ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// A file a project page lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistFile {
    /// The file name (the last segment of its URL, percent-decoded, or the JSON `filename`).
    pub filename: String,
    /// Where it is, resolved against the page (credentials never included).
    pub url: Url,
    /// Its sha256 as the index gives it (lower-case hex), if it does.
    pub sha256: Option<String>,
    /// `Requires-Python`, as given.
    pub requires_python: Option<String>,
    /// PEP 592: `Some(reason)` when yanked (an empty reason when none was given).
    pub yanked: Option<String>,
    /// PEP 658/714: the core metadata is at `URL.metadata`; its sha256 if the index gave one.
    pub core_metadata: Option<CoreMetadata>,
    /// The size in bytes, when the index says (PEP 700).
    pub size: Option<u64>,
}

/// PEP 658 metadata availability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreMetadata {
    /// The metadata file's sha256, if given.
    pub sha256: Option<String>,
}

impl DistFile {
    /// The URL of its PEP 658 metadata file, when the index says there is one.
    #[must_use]
    pub fn metadata_url(&self) -> Option<Url> {
        self.core_metadata.as_ref()?;
        let mut url = self.url.clone();
        url.set_fragment(None);
        let path = format!("{}.metadata", url.path());
        url.set_path(&path);
        Some(url)
    }
}

/// The format of a page, from its `Content-Type` (or its first byte when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PEP 503 HTML.
    Html,
    /// PEP 691 JSON.
    Json,
}

impl Format {
    /// Decides from a content type; `None` for one that is neither.
    #[must_use]
    pub fn from_content_type(content_type: Option<&str>, body: &[u8]) -> Option<Format> {
        let Some(content_type) = content_type else {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            return Some(if first == Some(&b'{') {
                Format::Json
            } else {
                Format::Html
            });
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence.starts_with("application/vnd.pypi.simple.") && essence.ends_with("+json") {
            Some(Format::Json)
        } else if essence == "text/html"
            || (essence.starts_with("application/vnd.pypi.simple.") && essence.ends_with("+html"))
        {
            Some(Format::Html)
        } else {
            None
        }
    }
}

fn bad(url: &Url, reason: impl Into<String>) -> Error {
    Error::BadPage {
        url: crate::auth::redact(url),
        reason: reason.into(),
    }
}

/// The files a project page lists.
///
/// # Errors
///
/// [`Error::BadPage`] for a page that is not valid for its format, truncated, or of an API major
/// version other than 1.
pub fn parse_project(body: &[u8], format: Format, url: &Url) -> Result<Vec<DistFile>> {
    match format {
        Format::Html => parse_project_html(body, url),
        Format::Json => parse_project_json(body, url),
    }
}

/// The project names the root page lists.
///
/// # Errors
///
/// As [`parse_project`].
pub fn parse_root(body: &[u8], format: Format, url: &Url) -> Result<Vec<String>> {
    match format {
        Format::Html => {
            let page = Html::parse(body, url)?;
            Ok(page
                .anchors
                .into_iter()
                .map(|a| a.text.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect())
        }
        Format::Json => {
            #[derive(Deserialize)]
            struct Root {
                meta: Meta,
                projects: Vec<Project>,
            }
            #[derive(Deserialize)]
            struct Project {
                name: String,
            }
            let root: Root =
                serde_json::from_slice(body).map_err(|e| bad(url, format!("invalid JSON: {e}")))?;
            check_version(&root.meta.api_version, url)?;
            Ok(root.projects.into_iter().map(|p| p.name).collect())
        }
    }
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "api-version")]
    api_version: String,
}

fn check_version(version: &str, url: &Url) -> Result<()> {
    if version.split('.').next() == Some("1") {
        Ok(())
    } else {
        Err(bad(url, format!("repository API version {version} is not 1.x")))
    }
}

struct Anchor {
    href: String,
    text: String,
    attributes: Vec<(String, Option<String>)>,
}

impl Anchor {
    /// `None`: absent; `Some(None)`: present without a value (`data-yanked` alone means yanked).
    // Absent, present without a value and present with one are three different answers here.
    #[allow(clippy::option_option)]
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

struct Html {
    base: Url,
    anchors: Vec<Anchor>,
}

impl Html {
    fn parse(body: &[u8], url: &Url) -> Result<Html> {
        let text = std::str::from_utf8(body).map_err(|e| bad(url, format!("not UTF-8: {e}")))?;
        let lower = text.to_ascii_lowercase();
        if lower.contains("<html") && !lower.contains("</html") {
            return Err(bad(url, "truncated: <html> is never closed"));
        }
        let dom =
            tl::parse(text, tl::ParserOptions::default()).map_err(|e| bad(url, format!("not HTML: {e}")))?;
        let parser = dom.parser();
        let mut base = url.clone();
        let mut anchors = Vec::new();
        for node in dom.nodes() {
            let Some(tag) = node.as_tag() else { continue };
            let name = tag.name().as_utf8_str().to_ascii_lowercase();
            let attributes: Vec<(String, Option<String>)> = tag
                .attributes()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.map(|v| html_escape::decode_html_entities(&v).into_owned()),
                    )
                })
                .collect();
            let get = |key: &str| {
                attributes
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| v.clone())
            };
            match name.as_str() {
                "base" => {
                    if let Some(href) = get("href") {
                        base = url
                            .join(&href)
                            .map_err(|e| bad(url, format!("bad <base href>: {e}")))?;
                    }
                }
                "meta" if get("name").as_deref() == Some("pypi:repository-version") => {
                    check_version(&get("content").unwrap_or_default(), url)?;
                }
                "a" => {
                    if let Some(href) = get("href") {
                        let text = html_escape::decode_html_entities(&tag.inner_text(parser)).into_owned();
                        anchors.push(Anchor {
                            href,
                            text,
                            attributes,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(Html { base, anchors })
    }
}

/// `algo=hex` in a fragment or an attribute: the sha256, if that is the algorithm.
fn sha256_of(pair: &str) -> Option<String> {
    let (algo, hex) = pair.split_once('=')?;
    (algo.eq_ignore_ascii_case("sha256") && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn filename_of(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let name = percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty()).then_some(name)
}

fn parse_project_html(body: &[u8], url: &Url) -> Result<Vec<DistFile>> {
    let page = Html::parse(body, url)?;
    let mut files = Vec::new();
    for anchor in &page.anchors {
        let mut link = page
            .base
            .join(&anchor.href)
            .map_err(|e| bad(url, format!("bad link {:?}: {e}", anchor.href)))?;
        let sha256 = link.fragment().and_then(sha256_of);
        link.set_fragment(None);
        let Some(filename) = filename_of(&link) else {
            continue;
        };
        // PEP 714 names it data-core-metadata; PEP 658's data-dist-info-metadata is the fallback.
        let core = anchor
            .attribute("data-core-metadata")
            .or_else(|| anchor.attribute("data-dist-info-metadata"));
        let core_metadata = match core {
            None | Some(Some("false")) => None,
            Some(value) => Some(CoreMetadata {
                sha256: value.and_then(sha256_of),
            }),
        };
        files.push(DistFile {
            filename,
            url: link,
            sha256,
            requires_python: anchor
                .attribute("data-requires-python")
                .flatten()
                .map(str::to_owned)
                .filter(|s| !s.trim().is_empty()),
            yanked: anchor
                .attribute("data-yanked")
                .map(|reason| reason.unwrap_or("").to_owned()),
            core_metadata,
            size: None,
        });
    }
    Ok(files)
}

/// `bool` or an object of hashes (PEP 691/714 `core-metadata`), or a reason string / `bool` (`yanked`).
#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOr<T> {
    Bool(bool),
    Value(T),
}

fn parse_project_json(body: &[u8], url: &Url) -> Result<Vec<DistFile>> {
    #[derive(Deserialize)]
    struct Page {
        meta: Meta,
        files: Vec<File>,
    }
    #[derive(Deserialize)]
    struct File {
        filename: String,
        url: String,
        #[serde(default)]
        hashes: std::collections::BTreeMap<String, String>,
        #[serde(rename = "requires-python", default)]
        requires_python: Option<String>,
        #[serde(default)]
        yanked: Option<BoolOr<String>>,
        #[serde(rename = "core-metadata", default)]
        core_metadata: Option<BoolOr<std::collections::BTreeMap<String, String>>>,
        #[serde(rename = "dist-info-metadata", default)]
        dist_info_metadata: Option<BoolOr<std::collections::BTreeMap<String, String>>>,
        #[serde(default)]
        size: Option<u64>,
    }
    let page: Page = serde_json::from_slice(body).map_err(|e| bad(url, format!("invalid JSON: {e}")))?;
    check_version(&page.meta.api_version, url)?;
    let mut files = Vec::with_capacity(page.files.len());
    for file in page.files {
        if file.filename.contains(['/', '\\']) {
            return Err(bad(url, format!("file name {:?} is a path", file.filename)));
        }
        let mut link = url
            .join(&file.url)
            .map_err(|e| bad(url, format!("bad url {:?}: {e}", file.url)))?;
        link.set_fragment(None);
        let sha256 = file
            .hashes
            .get("sha256")
            .and_then(|hex| sha256_of(&format!("sha256={hex}")));
        let core_metadata = match file.core_metadata.or(file.dist_info_metadata) {
            None | Some(BoolOr::Bool(false)) => None,
            Some(BoolOr::Bool(true)) => Some(CoreMetadata { sha256: None }),
            Some(BoolOr::Value(hashes)) => Some(CoreMetadata {
                sha256: hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
            }),
        };
        files.push(DistFile {
            filename: file.filename,
            url: link,
            sha256,
            requires_python: file.requires_python.filter(|s| !s.trim().is_empty()),
            yanked: match file.yanked {
                None | Some(BoolOr::Bool(false)) => None,
                Some(BoolOr::Bool(true)) => Some(String::new()),
                Some(BoolOr::Value(reason)) => Some(reason),
            },
            core_metadata,
            size: file.size,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "dcc3a40854e1182bb82c11b578b62528b8a3055294de4eb0c35fd78e0f20cadd";

    #[test]
    fn html_attributes_fragments_and_relative_links() {
        let page = format!(
            "<!DOCTYPE html><html><head><meta name=\"pypi:repository-version\" content=\"1.1\"></head><body>\
             <a href=\"../../files/a-1.0.tar.gz#sha256={HEX}\" data-requires-python=\"&gt;=3.8\">a-1.0.tar.gz</a>\
             <a href=\"https://other.example/a-2.0%2Blocal-py3-none-any.whl#md5=abc\" data-yanked=\"\" \
              data-dist-info-metadata=\"sha256={HEX}\">x</a>\
             <a href=\"a-3.0.zip\" data-yanked=\"broken &amp; bad\" data-core-metadata=\"true\">a-3.0.zip</a>\
             </body></html>"
        );
        let url = Url::parse("https://i.example/simple/a/").unwrap();
        let files = parse_project(page.as_bytes(), Format::Html, &url).unwrap();
        assert_eq!(files[0].url.as_str(), "https://i.example/files/a-1.0.tar.gz");
        assert_eq!(files[0].sha256.as_deref(), Some(HEX));
        assert_eq!(files[0].requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(files[0].yanked, None);
        assert_eq!(files[1].filename, "a-2.0+local-py3-none-any.whl");
        assert_eq!(files[1].sha256, None);
        assert_eq!(files[1].yanked.as_deref(), Some(""));
        assert_eq!(
            files[1].core_metadata.as_ref().unwrap().sha256.as_deref(),
            Some(HEX)
        );
        assert_eq!(
            files[1].metadata_url().unwrap().as_str(),
            "https://other.example/a-2.0%2Blocal-py3-none-any.whl.metadata"
        );
        assert_eq!(files[2].yanked.as_deref(), Some("broken & bad"));
        assert_eq!(files[2].url.as_str(), "https://i.example/simple/a/a-3.0.zip");
        assert!(files[2].core_metadata.is_some());
    }

    #[test]
    fn base_href_truncation_and_versions() {
        let url = Url::parse("https://i.example/simple/a/").unwrap();
        let page =
            "<html><head><base href=\"/pkgs/\"></head><body><a href=\"a-1.tar.gz\">a</a></body></html>";
        let files = parse_project(page.as_bytes(), Format::Html, &url).unwrap();
        assert_eq!(files[0].url.as_str(), "https://i.example/pkgs/a-1.tar.gz");
        let truncated = "<html><body><a href=\"a-1.tar.gz\">a</a><a hr";
        assert!(matches!(
            parse_project(truncated.as_bytes(), Format::Html, &url),
            Err(Error::BadPage { .. })
        ));
        let v2 = "<html><head><meta name=\"pypi:repository-version\" content=\"2.0\"></head></html>";
        assert!(parse_project(v2.as_bytes(), Format::Html, &url).is_err());
        assert!(
            parse_project(
                b"{\"meta\":{\"api-version\":\"2.0\"},\"files\":[]}",
                Format::Json,
                &url
            )
            .is_err()
        );
        assert!(
            parse_project(
                b"{\"meta\":{\"api-version\":\"1.0\"},\"files\":[",
                Format::Json,
                &url
            )
            .is_err()
        );
    }

    #[test]
    fn json_pages() {
        let url = Url::parse("http://d.example/u/dev/+simple/a/").unwrap();
        let body = format!(
            "{{\"meta\":{{\"api-version\":\"1.1\"}},\"name\":\"a\",\"files\":[\
             {{\"filename\":\"a-1.0.tar.gz\",\"url\":\"../../+f/dcc/a-1.0.tar.gz\",\"hashes\":{{\"sha256\":\"{HEX}\"}},\
               \"requires-python\":\">=3.6\",\"yanked\":\"bad\",\"core-metadata\":{{\"sha256\":\"{HEX}\"}},\"size\":5}},\
             {{\"filename\":\"a-2.0.tar.gz\",\"url\":\"a-2.0.tar.gz\",\"hashes\":{{}},\"yanked\":false,\"dist-info-metadata\":true}}]}}"
        );
        let files = parse_project(body.as_bytes(), Format::Json, &url).unwrap();
        assert_eq!(
            files[0].url.as_str(),
            "http://d.example/u/dev/+f/dcc/a-1.0.tar.gz"
        );
        assert_eq!(files[0].yanked.as_deref(), Some("bad"));
        assert_eq!(files[0].size, Some(5));
        assert_eq!(files[1].yanked, None);
        assert_eq!(files[1].core_metadata, Some(CoreMetadata { sha256: None }));
        let root = b"{\"meta\":{\"api-version\":\"1.0\"},\"projects\":[{\"name\":\"a\"},{\"name\":\"B_c\"}]}";
        assert_eq!(parse_root(root, Format::Json, &url).unwrap(), ["a", "B_c"]);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type(Some(JSON_CONTENT_TYPE), b""),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(Some("text/html; charset=utf-8"), b""),
            Some(Format::Html)
        );
        assert_eq!(
            Format::from_content_type(Some("application/octet-stream"), b""),
            None
        );
        assert_eq!(Format::from_content_type(None, b" {"), Some(Format::Json));
    }
}
