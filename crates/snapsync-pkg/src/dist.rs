//! Distribution files: their names (wheels, sdists old and new, eggs) and their metadata, read from the
//! file itself — a wheel's `*.dist-info/METADATA`, an sdist's top-level `PKG-INFO` (`.tar.gz`, `.tgz`,
//! `.tar`, `.zip`), an egg's `EGG-INFO/PKG-INFO`.
//!
//! An sdist with no `PKG-INFO` (old-style, as distutils made them) and one compressed in a format this
//! crate does not decompress (`.tar.bz2`, `.tar.xz`) get the name and version from the file name, as
//! pkgsync did; [`Metadata::from_file`] says which happened. A wheel without `METADATA` is an error.
//!
//! # Security
//!
//! Archives come from the network. Nothing is extracted to disk; a metadata member is read up to
//! [`METADATA_LIMIT`] bytes (whatever size its header claims), and a tar stream is walked for at most
//! [`TAR_ENTRY_LIMIT`] entries and [`TAR_BYTE_LIMIT`] decompressed bytes, so a hostile archive (a
//! decompression bomb, a huge member) costs bounded memory and time and ends in [`Error::Archive`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use pep440_rs::Version;

use crate::error::{Error, Result};

/// The most bytes read from a metadata member (`METADATA`, `PKG-INFO`).
pub const METADATA_LIMIT: u64 = 16 * 1024 * 1024;
/// The most entries of a tar stream walked looking for `PKG-INFO`.
pub const TAR_ENTRY_LIMIT: usize = 100_000;
/// The most decompressed bytes of a tar stream walked looking for `PKG-INFO`.
pub const TAR_BYTE_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// What kind of distribution a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DistKind {
    /// A wheel (`.whl`).
    Wheel,
    /// A source distribution.
    Sdist(SdistFormat),
    /// An egg (`.egg`).
    Egg,
}

impl DistKind {
    /// The upload API's `filetype`.
    #[must_use]
    pub fn filetype(self) -> &'static str {
        match self {
            DistKind::Wheel => "bdist_wheel",
            DistKind::Sdist(_) => "sdist",
            DistKind::Egg => "bdist_egg",
        }
    }
}

/// The archive format of an sdist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdistFormat {
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.tar`.
    Tar,
    /// `.zip`.
    Zip,
    /// `.tar.bz2`, `.tbz`: metadata from the file name only.
    TarBz2,
    /// `.tar.xz`, `.txz`: metadata from the file name only.
    TarXz,
}

const SDIST_EXTENSIONS: [(&str, SdistFormat); 8] = [
    (".tar.gz", SdistFormat::TarGz),
    (".tgz", SdistFormat::TarGz),
    (".tar.bz2", SdistFormat::TarBz2),
    (".tbz", SdistFormat::TarBz2),
    (".tar.xz", SdistFormat::TarXz),
    (".txz", SdistFormat::TarXz),
    (".tar", SdistFormat::Tar),
    (".zip", SdistFormat::Zip),
];

/// A distribution's file name, taken apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DistFilename {
    /// The whole file name.
    pub filename: String,
    /// The project name as the file name spells it.
    pub name: String,
    /// The version as the file name spells it (not necessarily PEP 440).
    pub version: String,
    /// Wheel, sdist or egg.
    pub kind: DistKind,
    /// The upload API's `pyversion`: a wheel's python tag, an egg's `pyX.Y`, `source` for an sdist.
    pub pyversion: String,
}

impl DistFilename {
    /// Parses a distribution file name. `project`, when known (the index page the file is on), settles
    /// where the name ends in an sdist's `NAME-VERSION` (names and legacy versions may both contain `-`);
    /// without it the name ends at the first `-` followed by a digit after which a PEP 440 version follows
    /// (else at the first `-` followed by a digit).
    ///
    /// # Errors
    ///
    /// [`Error::BadFilename`] for anything else (unknown extension, too few parts, path separators).
    pub fn parse(filename: &str, project: Option<&str>) -> Result<DistFilename> {
        let bad = |reason: &str| Error::BadFilename {
            filename: filename.to_owned(),
            reason: reason.to_owned(),
        };
        if filename.contains(['/', '\\', '\0']) || filename.starts_with('.') {
            return Err(bad("it is a path, not a file name"));
        }
        if let Some(stem) = filename.strip_suffix(".whl") {
            let parts: Vec<&str> = stem.split('-').collect();
            if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
                return Err(bad("a wheel is NAME-VERSION(-BUILD)-PY-ABI-PLATFORM.whl"));
            }
            return Ok(DistFilename {
                filename: filename.to_owned(),
                name: parts[0].to_owned(),
                version: parts[1].to_owned(),
                kind: DistKind::Wheel,
                pyversion: parts[parts.len() - 3].to_owned(),
            });
        }
        if let Some(stem) = filename.strip_suffix(".egg") {
            let parts: Vec<&str> = stem.split('-').collect();
            if parts.len() < 2 || parts[0].is_empty() || parts[1].is_empty() {
                return Err(bad("an egg is NAME-VERSION(-PYVERSION(-PLATFORM)).egg"));
            }
            return Ok(DistFilename {
                filename: filename.to_owned(),
                name: parts[0].to_owned(),
                version: parts[1].to_owned(),
                kind: DistKind::Egg,
                pyversion: parts
                    .get(2)
                    .map_or("", |p| p.strip_prefix("py").unwrap_or(p))
                    .to_owned(),
            });
        }
        let lower = filename.to_ascii_lowercase();
        let Some((stem, format)) = SDIST_EXTENSIONS
            .iter()
            .find(|(ext, _)| lower.ends_with(ext))
            .map(|(ext, format)| (&filename[..filename.len() - ext.len()], *format))
        else {
            return Err(bad(
                "not .whl, .egg, .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar or .zip",
            ));
        };
        let (name, version) = split_sdist_stem(stem, project)
            .ok_or_else(|| bad("an sdist is NAME-VERSION followed by its extension"))?;
        Ok(DistFilename {
            filename: filename.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            kind: DistKind::Sdist(format),
            pyversion: "source".to_owned(),
        })
    }

    /// The PEP 503 normalised project name.
    #[must_use]
    pub fn normalized_name(&self) -> String {
        normalize(&self.name)
    }

    /// The version, parsed as PEP 440.
    ///
    /// # Errors
    ///
    /// [`Error::BadFilename`] when it is not a PEP 440 version.
    pub fn parsed_version(&self) -> Result<Version> {
        Version::from_str(&self.version).map_err(|e| Error::BadFilename {
            filename: self.filename.clone(),
            reason: format!("version {:?} is not PEP 440: {e}", self.version),
        })
    }
}

fn split_sdist_stem<'a>(stem: &'a str, project: Option<&str>) -> Option<(&'a str, &'a str)> {
    let hyphens: Vec<usize> = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .filter(|&i| i > 0 && i + 1 < stem.len())
        .collect();
    if let Some(project) = project {
        let wanted = normalize(project);
        if let Some(&i) = hyphens.iter().find(|&&i| normalize(&stem[..i]) == wanted) {
            return Some((&stem[..i], &stem[i + 1..]));
        }
    }
    let digit_after = |&&i: &&usize| stem.as_bytes()[i + 1].is_ascii_digit();
    hyphens
        .iter()
        .filter(digit_after)
        .find(|&&i| Version::from_str(&stem[i + 1..]).is_ok())
        .or_else(|| hyphens.iter().find(digit_after))
        .map(|&i| (&stem[..i], &stem[i + 1..]))
}

/// PEP 503 name normalisation: runs of `-`, `_`, `.` become one `-`, lower case.
#[must_use]
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Core metadata (the `METADATA` / `PKG-INFO` format): header fields in order, and the body (the long
/// description, for metadata 2.1 and later).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `(Field-Name, value)` in file order; multi-use fields (`Classifier`, `Requires-Dist`…) repeat.
    pub fields: Vec<(String, String)>,
    /// The message body, if any.
    pub body: Option<String>,
    /// Read from the distribution; `false` when made from the file name (an sdist without metadata).
    pub from_file: bool,
}

impl Metadata {
    /// Parses core metadata text (RFC 822 style: `Name: value` lines, continuation lines indented,
    /// a blank line, the body).
    #[must_use]
    pub fn parse(text: &str) -> Metadata {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut lines = text.split_inclusive('\n');
        let mut body = None;
        for raw in lines.by_ref() {
            let line = raw.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let rest: String = lines.by_ref().collect();
                if !rest.trim().is_empty() {
                    body = Some(rest);
                }
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    // setuptools indents continued descriptions with 8 spaces and a `|`.
                    let continued = line.strip_prefix("        ").unwrap_or(line.trim_start());
                    let continued = continued.strip_prefix('|').unwrap_or(continued);
                    value.push('\n');
                    value.push_str(continued);
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Metadata {
            fields,
            body,
            from_file: true,
        }
    }

    /// The metadata an sdist without any gets: its name and version from the file name.
    #[must_use]
    pub fn from_filename(dist: &DistFilename) -> Metadata {
        Metadata {
            fields: vec![
                ("Metadata-Version".into(), "1.0".into()),
                ("Name".into(), dist.name.clone()),
                ("Version".into(), dist.version.clone()),
            ],
            body: None,
            from_file: false,
        }
    }

    /// The first value of a field (names compare case-insensitively).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the metadata of the distribution at `path`, whose file name is `dist` (the file itself may
/// have a temporary name). Blocking: call it from a blocking thread in async code.
///
/// # Errors
///
/// [`Error::Archive`] when the archive cannot be read, a wheel or egg has no metadata, or a limit is
/// passed; [`Error::Io`] when the file cannot be opened.
pub fn read_metadata(path: &Path, dist: &DistFilename) -> Result<Metadata> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let archive_error = |reason: String| Error::archive(path, format!("{}: {reason}", dist.filename));
    let text = match dist.kind {
        DistKind::Wheel => {
            let text = zip_member(file, &archive_error, |name| wheel_metadata_rank(name, dist))?;
            Some(text.ok_or_else(|| archive_error("no *.dist-info/METADATA".into()))?)
        }
        DistKind::Egg => {
            let text = zip_member(file, &archive_error, |name| {
                (name == "EGG-INFO/PKG-INFO").then_some(0)
            })?;
            Some(text.ok_or_else(|| archive_error("no EGG-INFO/PKG-INFO".into()))?)
        }
        DistKind::Sdist(SdistFormat::Zip) => {
            zip_member(file, &archive_error, |name| sdist_metadata_rank(name, dist))?
        }
        DistKind::Sdist(SdistFormat::TarGz) => tar_member(
            flate2::read::GzDecoder::new(BufReader::new(file)),
            &archive_error,
            dist,
        )?,
        DistKind::Sdist(SdistFormat::Tar) => tar_member(BufReader::new(file), &archive_error, dist)?,
        DistKind::Sdist(SdistFormat::TarBz2 | SdistFormat::TarXz) => None,
    };
    Ok(text.map_or_else(|| Metadata::from_filename(dist), |text| Metadata::parse(&text)))
}

/// Which `*.dist-info/METADATA` to read: the one of this name and version first (0), any other
/// top-level one after (1).
fn wheel_metadata_rank(name: &str, dist: &DistFilename) -> Option<u8> {
    let dir = name.strip_suffix(".dist-info/METADATA")?;
    if dir.contains('/') {
        return None;
    }
    let wanted = format!("{}-{}", dist.name, dist.version);
    Some(u8::from(normalize(dir) != normalize(&wanted)))
}

/// Which `PKG-INFO` of an sdist to read: `NAME-VERSION/PKG-INFO` of the file's own stem first, any other
/// `TOP/PKG-INFO` after; deeper ones (an `.egg-info` folder's) never.
fn sdist_metadata_rank(name: &str, dist: &DistFilename) -> Option<u8> {
    let name = name.strip_prefix("./").unwrap_or(name);
    let dir = name.strip_suffix("/PKG-INFO")?;
    if dir.contains('/') || dir.is_empty() {
        return None;
    }
    let wanted = format!("{}-{}", dist.name, dist.version);
    Some(u8::from(normalize(dir) != normalize(&wanted)))
}

/// Reads a member (at most [`METADATA_LIMIT`] bytes) as UTF-8 (lossily).
fn read_limited(reader: impl Read, archive_error: &dyn Fn(String) -> Error, member: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(METADATA_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| archive_error(format!("{member}: {e}")))?;
    if bytes.len() as u64 > METADATA_LIMIT {
        return Err(archive_error(format!(
            "{member} is larger than {METADATA_LIMIT} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn zip_member(
    file: File,
    archive_error: &dyn Fn(String) -> Error,
    rank: impl Fn(&str) -> Option<u8>,
) -> Result<Option<String>> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| archive_error(format!("not a zip file: {e}")))?;
    let mut best: Option<(u8, usize)> = None;
    for index in 0..archive.len() {
        let Some(Ok(name)) = archive.name_for_index(index) else {
            continue;
        };
        if let Some(r) = rank(&name)
            && best.is_none_or(|(b, _)| r < b)
        {
            best = Some((r, index));
        }
    }
    let Some((_, index)) = best else { return Ok(None) };
    let member = archive
        .by_index(index)
        .map_err(|e| archive_error(format!("cannot read member {index}: {e}")))?;
    let name = member
        .name()
        .map_or_else(|_| format!("member {index}"), |n| n.to_string());
    read_limited(member, archive_error, &name).map(Some)
}

fn tar_member(
    reader: impl Read,
    archive_error: &dyn Fn(String) -> Error,
    dist: &DistFilename,
) -> Result<Option<String>> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| archive_error(format!("not a tar archive: {e}")))?;
    let mut walked: u64 = 0;
    let mut fallback: Option<String> = None;
    for (count, entry) in entries.enumerate() {
        if count >= TAR_ENTRY_LIMIT || walked > TAR_BYTE_LIMIT {
            return Err(archive_error(format!(
                "no PKG-INFO within the first {TAR_ENTRY_LIMIT} entries or {TAR_BYTE_LIMIT} bytes"
            )));
        }
        let entry = entry.map_err(|e| archive_error(format!("broken tar archive: {e}")))?;
        walked = walked
            .saturating_add(entry.header().entry_size().unwrap_or(0))
            .saturating_add(512);
        let path = entry
            .path()
            .map_err(|e| archive_error(format!("bad path in tar archive: {e}")))?
            .to_string_lossy()
            .into_owned();
        match sdist_metadata_rank(&path, dist) {
            Some(0) => return read_limited(entry, archive_error, &path).map(Some),
            Some(_) if fallback.is_none() => fallback = Some(read_limited(entry, archive_error, &path)?),
            _ => {}
        }
    }
    Ok(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(filename: &str, project: Option<&str>) -> (String, String, DistKind, String) {
        let d = DistFilename::parse(filename, project).unwrap();
        (d.name, d.version, d.kind, d.pyversion)
    }

    #[test]
    fn file_names() {
        assert_eq!(
            parse("tiny_one-1.0-py3-none-any.whl", None),
            ("tiny_one".into(), "1.0".into(), DistKind::Wheel, "py3".into())
        );
        assert_eq!(
            parse("pkg-1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", None).3,
            "cp311"
        );
        assert_eq!(
            parse("python-dateutil-1.5.tar.gz", None),
            (
                "python-dateutil".into(),
                "1.5".into(),
                DistKind::Sdist(SdistFormat::TarGz),
                "source".into()
            )
        );
        // A legacy version with a hyphen: the project name settles it.
        assert_eq!(parse("foo-bar-1.0-1.zip", Some("Foo.Bar")).1, "1.0-1");
        assert_eq!(parse("foo-2-bar-1.0.tar.gz", None).0, "foo-2-bar");
        assert_eq!(parse("Old.Style-0.9.tgz", None).0, "Old.Style");
        assert_eq!(parse("setuptools-0.6c11-py2.7.egg", None).3, "2.7");
        for bad in [
            "x.whl",
            "a-b-c.whl",
            "noversion.tar.gz",
            "pkg-1.0.exe",
            "../pkg-1.0.tar.gz",
            "pkg-.zip",
        ] {
            assert!(
                matches!(DistFilename::parse(bad, None), Err(Error::BadFilename { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("Foo.._-Bar_baz"), "foo-bar-baz");
        assert_eq!(normalize("tiny_one"), "tiny-one");
    }

    #[test]
    fn metadata_text() {
        let text = "Metadata-Version: 1.1\nName: a\nVersion: 1\nDescription: first\n        |second\n        third\n\
                    Classifier: X\nClassifier: Y\n\nbody line\n";
        let m = Metadata::parse(text);
        assert_eq!(m.get("name"), Some("a"));
        assert_eq!(m.get("Description"), Some("first\nsecond\nthird"));
        assert_eq!(m.get_all("classifier").collect::<Vec<_>>(), ["X", "Y"]);
        assert_eq!(m.body.as_deref(), Some("body line\n"));
    }
}
