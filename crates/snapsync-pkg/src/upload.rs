//! The upload API (the "legacy" API PyPI, pypiserver and devpi take, as twine speaks it): a multipart
//! `POST` with `:action=file_upload`, `protocol_version=1`, the metadata fields, the digests and the
//! file as `content`. The file is streamed from disk, never held in memory.
//!
//! Answers: 2xx is done; 409 is [`Error::UploadExists`], 401/403 [`Error::UploadDenied`], 400
//! [`Error::UploadRejected`], anything else [`Error::UploadFailed`] — each with the server's message.

use std::path::Path;

use reqwest::multipart::{Form, Part};
use url::Url;

use crate::auth::redact;
use crate::dist::{DistFilename, Metadata};
use crate::error::{Error, Result};
use crate::hashes::Hashes;
use crate::http::{Client, ClientOptions, http_error, server_message};

/// Metadata fields with one value: (core metadata field, upload form field).
const SINGLE: [(&str, &str); 18] = [
    ("Metadata-Version", "metadata_version"),
    ("Summary", "summary"),
    ("Home-page", "home_page"),
    ("Author", "author"),
    ("Author-email", "author_email"),
    ("Maintainer", "maintainer"),
    ("Maintainer-email", "maintainer_email"),
    ("License", "license"),
    ("License-Expression", "license_expression"),
    ("Keywords", "keywords"),
    ("Download-URL", "download_url"),
    ("Comment", "comment"),
    ("Requires-Python", "requires_python"),
    ("Description-Content-Type", "description_content_type"),
    ("Description", "description"),
    ("Name", "name"),
    ("Version", "version"),
    ("Author-Email", "author_email"),
];

/// Metadata fields that may repeat: (core metadata field, upload form field).
const MULTI: [(&str, &str); 15] = [
    ("Platform", "platform"),
    ("Supported-Platform", "supported_platform"),
    ("Classifier", "classifiers"),
    ("Provides", "provides"),
    ("Requires", "requires"),
    ("Obsoletes", "obsoletes"),
    ("Project-URL", "project_urls"),
    ("Provides-Dist", "provides_dist"),
    ("Obsoletes-Dist", "obsoletes_dist"),
    ("Requires-Dist", "requires_dist"),
    ("Requires-External", "requires_external"),
    ("Provides-Extra", "provides_extras"),
    ("Dynamic", "dynamic"),
    ("License-File", "license_files"),
    ("Import-Name", "import_names"),
];

/// The form fields of an upload (everything but the file), in the order they are sent.
#[must_use]
pub fn upload_fields(dist: &DistFilename, metadata: &Metadata, hashes: &Hashes) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = vec![
        (":action".into(), "file_upload".into()),
        ("protocol_version".into(), "1".into()),
        ("filetype".into(), dist.kind.filetype().into()),
        ("pyversion".into(), dist.pyversion.clone()),
        ("sha256_digest".into(), hashes.sha256.clone()),
        ("md5_digest".into(), hashes.md5.clone()),
        ("blake2_256_digest".into(), hashes.blake2_256.clone()),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (header, form) in SINGLE {
        if seen.contains(form) {
            continue;
        }
        if let Some(value) = metadata.get(header) {
            seen.insert(form);
            fields.push((form.into(), value.into()));
        }
    }
    // Names and versions come from the file name when the metadata has none (an old-style sdist).
    for (form, value) in [("name", &dist.name), ("version", &dist.version)] {
        if !seen.contains(form) {
            fields.push((form.into(), value.clone()));
        }
    }
    // Metadata 2.1+ keeps the description in the body.
    if !seen.contains("description")
        && let Some(body) = &metadata.body
    {
        fields.push(("description".into(), body.clone()));
    }
    if !seen.contains("metadata_version") {
        fields.push(("metadata_version".into(), "1.0".into()));
    }
    for (header, form) in MULTI {
        for value in metadata.get_all(header) {
            fields.push((form.into(), value.into()));
        }
    }
    fields
}

/// Uploads distributions to one upload URL.
#[derive(Clone, Debug)]
pub struct Uploader {
    client: Client,
    shown: String,
}

impl Uploader {
    /// An uploader for `url` (credentials in the URL or the netrc entry of its host).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for anything but http(s).
    pub fn new(url: &Url, options: &ClientOptions) -> Result<Uploader> {
        Ok(Uploader {
            client: Client::new(url, options)?,
            shown: redact(url),
        })
    }

    /// The upload URL, password removed.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Uploads the distribution at `path` (named `dist.filename`) with its metadata and digests.
    ///
    /// # Errors
    ///
    /// The typed refusals listed in the module documentation, [`Error::Http`] when the server cannot
    /// be reached, [`Error::Io`] when the file cannot be opened.
    pub async fn upload(
        &self,
        path: &Path,
        dist: &DistFilename,
        metadata: &Metadata,
        hashes: &Hashes,
    ) -> Result<()> {
        let mut form = Form::new();
        for (name, value) in upload_fields(dist, metadata, hashes) {
            form = form.text(name, value);
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        let size = file.metadata().await.map_err(|e| Error::io(path, e))?.len();
        // After the first piece, the server holds part of the file and has not taken it (a kill point
        // for the crash harness; nothing without the `chaos` feature).
        let mut pieces = 0u64;
        let stream = futures::StreamExt::inspect(tokio_util::io::ReaderStream::new(file), move |_| {
            if pieces > 0 {
                snapsync_core::chaos::point("mid-file");
            }
            pieces += 1;
        });
        let body = reqwest::Body::wrap_stream(stream);
        let part = Part::stream_with_length(body, size)
            .file_name(dist.filename.clone())
            .mime_str("application/octet-stream")
            .map_err(|e| http_error(&self.client.base, e))?;
        form = form.part("content", part);
        let sent = self
            .client
            .request(reqwest::Method::POST, &self.client.base)
            .multipart(form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // A server that refuses the request (wrong password) may answer and close before the file
            // is all sent: the client then sees a broken pipe, not the answer. Asked again without the
            // file (nothing can be stored), it gives its answer; a refusal is reported as such.
            Err(e) if closed_while_sending(&e) => {
                let mut probe = Form::new();
                for (name, value) in upload_fields(dist, metadata, hashes) {
                    probe = probe.text(name, value);
                }
                match self
                    .client
                    .request(reqwest::Method::POST, &self.client.base)
                    .multipart(probe)
                    .send()
                    .await
                {
                    Ok(answer) if matches!(answer.status().as_u16(), 401 | 403) => answer,
                    _ => return Err(http_error(&self.client.base, e)),
                }
            }
            Err(e) => return Err(http_error(&self.client.base, e)),
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            self.client.succeeded(&self.client.base);
            return Ok(());
        }
        let message = server_message(response).await;
        let url = self.shown.clone();
        let filename = dist.filename.clone();
        Err(match status {
            409 => Error::UploadExists {
                url,
                filename,
                message,
            },
            401 | 403 => Error::UploadDenied {
                url,
                filename,
                status,
                message,
            },
            400 => Error::UploadRejected {
                url,
                filename,
                message,
            },
            _ => Error::UploadFailed {
                url,
                filename,
                status,
                message,
            },
        })
    }
}

/// Whether a request failed because the server closed the connection while the body was being sent.
fn closed_while_sending(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_as_twine_sends_them() {
        let dist = DistFilename::parse("tiny_one-1.0-py3-none-any.whl", None).unwrap();
        let metadata = Metadata::parse(
            "Metadata-Version: 2.1\nName: tiny-one\nVersion: 1.0\nClassifier: A\nClassifier: B\n\
             Requires-Python: >=3.8\nProvides-Extra: x\n\nlong text\n",
        );
        let hashes = Hashes {
            sha256: "s".into(),
            md5: "m".into(),
            blake2_256: "b".into(),
            size: 1,
        };
        let fields = upload_fields(&dist, &metadata, &hashes);
        let get = |k: &str| {
            fields
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(":action"), ["file_upload"]);
        assert_eq!(get("protocol_version"), ["1"]);
        assert_eq!(get("filetype"), ["bdist_wheel"]);
        assert_eq!(get("pyversion"), ["py3"]);
        assert_eq!(get("name"), ["tiny-one"]);
        assert_eq!(get("classifiers"), ["A", "B"]);
        assert_eq!(get("requires_python"), [">=3.8"]);
        assert_eq!(get("provides_extras"), ["x"]);
        assert_eq!(get("description"), ["long text\n"]);
        assert_eq!(get("sha256_digest"), ["s"]);

        let old = DistFilename::parse("old-style-0.9.tar.gz", None).unwrap();
        let fields = upload_fields(&old, &Metadata::from_filename(&old), &hashes);
        assert!(fields.contains(&("name".into(), "old-style".into())));
        assert!(fields.contains(&("version".into(), "0.9".into())));
        assert!(fields.contains(&("pyversion".into(), "source".into())));
        assert!(fields.contains(&("filetype".into(), "sdist".into())));
    }
}
