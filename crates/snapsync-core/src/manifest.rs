//! The manifest: snapdir's text format for a directory tree, and the snapshot id derived from it.
//!
//! One line per file or directory, `TYPE PERMISSIONS CHECKSUM SIZE PATH`:
//!
//! ```text
//! D 700 dba5865c0d91b17958e4d2cac98c338f85cbbda07b71a020ab16c391b5e7af4b 0 ./
//! F 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./bar.txt
//! F 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./foo.txt
//! ```
//!
//! - `TYPE` is `F` (file) or `D` (directory); `PERMISSIONS` the octal `mode & 0o7777` without leading
//!   zeros; `CHECKSUM` 64 lowercase hex digits of BLAKE3; `SIZE` decimal bytes (a directory's is the sum
//!   of its children's).
//! - `PATH` is `./`-relative (or absolute under `--absolute`); directories end in `/`; the root is `./`.
//!   The field is everything after the fourth space, so paths keep their spaces. Paths snapdir's format
//!   cannot carry are quoted (see [`crate::escape`]).
//! - Lines are sorted bytewise by the `PATH` field as written and joined by `\n`, with no newline after
//!   the last one. Parsing skips empty lines and lines starting with `#`, and accepts `\r\n`.
//!
//! The snapshot id is BLAKE3 of the rendered text followed by one `\n` (snapdir hashes `echo "$manifest"`).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use crate::error::{Error, Result};
use crate::escape;
use crate::hash::{Checksum, directory_checksum};

/// Whether an entry is a file or a directory. Symlinks are recorded as what they point to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A regular file (`F`).
    File,
    /// A directory (`D`).
    Dir,
}

impl EntryKind {
    /// The letter used in the manifest.
    #[must_use]
    pub const fn letter(self) -> char {
        match self {
            EntryKind::File => 'F',
            EntryKind::Dir => 'D',
        }
    }
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    kind: EntryKind,
    mode: u32,
    checksum: Checksum,
    size: u64,
    path: Box<[u8]>,
    /// Cached `escape::needs_quoting(path)`, so that sorting rarely has to render.
    quoted: bool,
}

impl Entry {
    /// Creates an entry, checking the invariants every manifest line keeps.
    ///
    /// `path` is the raw path as it appears in the manifest before quoting: `./` or `/` first, and a
    /// trailing `/` exactly when `kind` is [`EntryKind::Dir`].
    ///
    /// # Errors
    /// [`Error::InvalidEntry`] when `mode` has bits above `0o7777` or the path has the wrong shape.
    pub fn new(
        kind: EntryKind,
        mode: u32,
        checksum: Checksum,
        size: u64,
        path: impl Into<Box<[u8]>>,
    ) -> Result<Self> {
        let path = path.into();
        let invalid = |reason| Error::InvalidEntry {
            path: escape::render(&path).into_owned(),
            reason,
        };
        if mode > 0o7777 {
            return Err(invalid("permissions above 7777"));
        }
        if !(path.starts_with(b"./") || path.starts_with(b"/")) {
            return Err(invalid("path must start with ./ or /"));
        }
        if path.contains(&0) {
            return Err(invalid("path contains a NUL byte"));
        }
        match kind {
            EntryKind::Dir if !path.ends_with(b"/") => return Err(invalid("directory path must end in /")),
            EntryKind::File if path.ends_with(b"/") => return Err(invalid("file path must not end in /")),
            _ => {}
        }
        let quoted = escape::needs_quoting(&path);
        Ok(Entry {
            kind,
            mode,
            checksum,
            size,
            path,
            quoted,
        })
    }

    /// File or directory.
    #[must_use]
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// True for a directory.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    /// Permission bits, `mode & 0o7777`.
    #[must_use]
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// BLAKE3 of the content (file) or of the children's checksums (directory).
    #[must_use]
    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    /// Bytes: the file's size, or the sum of a directory's children.
    ///
    /// For a followed symlink to a file this is the length of the link itself, as in snapdir.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The raw path bytes, e.g. `./dir/file` or `./dir/`.
    #[must_use]
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The path as written in the manifest (quoted when it must be).
    #[must_use]
    pub fn rendered_path(&self) -> Cow<'_, str> {
        escape::render(&self.path)
    }

    /// True for a `./`-relative path (false under `--absolute`).
    #[must_use]
    pub fn is_relative(&self) -> bool {
        self.path.starts_with(b"./")
    }

    /// The path below the root without `./` and without a directory's trailing `/`: `dir/file`, `dir`,
    /// and the empty string for the root. `None` for an absolute entry.
    #[must_use]
    pub fn relative_path(&self) -> Option<&[u8]> {
        let rest = self.path.strip_prefix(b"./")?;
        Some(rest.strip_suffix(b"/").unwrap_or(rest))
    }

    fn parent_path(&self) -> Option<&[u8]> {
        let trimmed = self.path.strip_suffix(b"/").unwrap_or(&self.path);
        let cut = trimmed.iter().rposition(|&b| b == b'/')?;
        Some(&self.path[..=cut])
    }

    fn cmp_rendered(&self, other: &Entry) -> Ordering {
        if self.quoted || other.quoted {
            self.rendered_path()
                .as_bytes()
                .cmp(other.rendered_path().as_bytes())
        } else {
            self.path.cmp(&other.path)
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:o} {} {} {}",
            self.kind.letter(),
            self.mode,
            &*self.checksum.to_hex(),
            self.size,
            self.rendered_path()
        )
    }
}

/// A directory tree described line by line: sorted, without duplicate paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<Entry>,
}

impl Manifest {
    /// Builds a manifest from entries in any order.
    ///
    /// # Errors
    /// [`Error::InvalidEntry`] for two entries with the same path, or relative and absolute paths mixed.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self> {
        entries.sort_unstable_by(Entry::cmp_rendered);
        if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::InvalidEntry {
                path: pair[0].rendered_path().into_owned(),
                reason: "the path appears twice",
            });
        }
        if let Some(first) = entries.first() {
            let relative = first.is_relative();
            if let Some(odd) = entries.iter().find(|e| e.is_relative() != relative) {
                return Err(Error::InvalidEntry {
                    path: odd.rendered_path().into_owned(),
                    reason: "relative and absolute paths are mixed",
                });
            }
        }
        Ok(Manifest { entries })
    }

    /// The entries, sorted by path as written.
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with the given raw path, if any.
    #[must_use]
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        let probe = Entry {
            kind: EntryKind::File,
            mode: 0,
            checksum: Checksum::EMPTY,
            size: 0,
            quoted: escape::needs_quoting(path),
            path: path.into(),
        };
        self.entries
            .binary_search_by(|e| e.cmp_rendered(&probe))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Parses manifest text (UTF-8; empty lines and `#` comments are skipped).
    ///
    /// Every field must be in the one form [`Manifest::render`] writes (no leading zeros, lowercase hex,
    /// canonical quoting), so a manifest has exactly one text and one id.
    ///
    /// # Errors
    /// [`Error::ManifestSyntax`] naming the first bad line, or [`Error::InvalidEntry`] for duplicates.
    pub fn parse(text: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(text).map_err(|e| Error::ManifestSyntax {
            line: 1 + text[..e.valid_up_to()].split(|&b| b == b'\n').count() - 1,
            reason: "not valid UTF-8".into(),
        })?;
        let mut entries = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line).map_err(|reason| Error::ManifestSyntax {
                line: index + 1,
                reason,
            })?;
            entries.push(entry);
        }
        Manifest::new(entries)
    }

    /// Writes the manifest text: one line per entry, `\n` between lines, none after the last.
    ///
    /// # Errors
    /// Any error from `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.write_all(b"\n")?;
            }
            write!(out, "{entry}")?;
        }
        Ok(())
    }

    /// The manifest text, as [`Manifest::write_to`] writes it.
    #[must_use]
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// The snapshot id: BLAKE3 of the text followed by a newline.
    ///
    /// This is also BLAKE3 of what `snapsync manifest` prints, since it ends the text with a newline.
    #[must_use]
    pub fn id(&self) -> Checksum {
        let mut hasher = blake3::Hasher::new();
        {
            // Buffered: the fields arrive as many tiny writes, and each `update` call has a fixed cost.
            let mut out = io::BufWriter::with_capacity(64 * 1024, &mut hasher);
            // Writing into a hasher cannot fail.
            let _ = self.write_to(&mut out);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        hasher.finalize().into()
    }

    /// The root directory: the directory with the shortest path (`./` in a relative manifest).
    ///
    /// It is usually, but not always, the first line: a quoted path (`"./new\nline"`) sorts before `./`.
    #[must_use]
    pub fn root(&self) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.is_dir())
            .min_by_key(|e| e.path.len())
    }

    /// Checks that the entries describe one tree and agree with each other: one root directory
    /// contains all other entries, every entry's parent directory is listed, and each directory's
    /// checksum and size follow from its direct children.
    ///
    /// A manifest produced by a walk always passes; one read from elsewhere may not.
    ///
    /// # Errors
    /// [`Error::ManifestInconsistent`] naming the first entry that does not fit.
    pub fn check_consistency(&self) -> Result<()> {
        let inconsistent = |e: &Entry, reason: String| Error::ManifestInconsistent {
            path: e.rendered_path().into_owned(),
            reason,
        };
        let Some(root) = self.root() else {
            return Err(Error::ManifestInconsistent {
                path: String::new(),
                reason: "the manifest has no directory entry".into(),
            });
        };
        // Children of each directory: their checksums and the sum of their sizes.
        let mut children: HashMap<&[u8], (Vec<Checksum>, u64)> = self
            .entries
            .iter()
            .filter(|e| e.is_dir())
            .map(|e| (e.path(), (Vec::new(), 0)))
            .collect();
        for entry in self.entries.iter().filter(|e| e.path != root.path) {
            if !entry.path.starts_with(&root.path) {
                return Err(inconsistent(entry, "lies outside the root directory".into()));
            }
            let parent = entry.parent_path().and_then(|p| children.get_mut(p));
            let Some((sums, size)) = parent else {
                return Err(inconsistent(
                    entry,
                    "its parent directory is not in the manifest".into(),
                ));
            };
            sums.push(entry.checksum);
            *size = size.saturating_add(entry.size);
        }
        for entry in self.entries.iter().filter(|e| e.is_dir()) {
            let Some((sums, size)) = children.remove(entry.path()) else {
                continue;
            };
            let expected = directory_checksum(sums);
            if expected != entry.checksum {
                return Err(inconsistent(
                    entry,
                    format!("checksum should be {expected} from its children"),
                ));
            }
            if size != entry.size {
                return Err(inconsistent(
                    entry,
                    format!("size should be {size}, the sum of its children"),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let mut fields = line.splitn(5, ' ');
    let (Some(kind), Some(mode), Some(checksum), Some(size), Some(path)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err("expected `TYPE PERMISSIONS CHECKSUM SIZE PATH`".into());
    };
    let kind = match kind {
        "F" => EntryKind::File,
        "D" => EntryKind::Dir,
        other => return Err(format!("type must be F or D, not {:?}", clip(other))),
    };
    let mode = parse_mode(mode).ok_or_else(|| format!("invalid permissions {:?}", clip(mode)))?;
    let checksum = Checksum::parse_hex(checksum.as_bytes())
        .ok_or_else(|| format!("invalid checksum {:?} (64 lowercase hex digits)", clip(checksum)))?;
    let size = parse_size(size).ok_or_else(|| format!("invalid size {:?}", clip(size)))?;
    let raw = escape::parse(path).map_err(|reason| format!("{reason}: {:?}", clip(path)))?;
    Entry::new(kind, mode, checksum, size, raw.into_owned()).map_err(|e| match e {
        Error::InvalidEntry { reason, .. } => format!("{reason}: {:?}", clip(path)),
        other => other.to_string(),
    })
}

/// Octal without leading zeros (`0` itself allowed), at most `7777`.
fn parse_mode(text: &str) -> Option<u32> {
    let canonical = !text.is_empty()
        && text.len() <= 4
        && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        u32::from_str_radix(text, 8).ok()
    } else {
        None
    }
}

/// Decimal without leading zeros or sign.
fn parse_size(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// At most 80 characters of untrusted text for an error message.
fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TWO_EMPTY_FILES: &str = "\
D 700 dba5865c0d91b17958e4d2cac98c338f85cbbda07b71a020ab16c391b5e7af4b 0 ./
F 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./bar.txt
F 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./foo.txt";

    #[test]
    fn snapdir_golden_parses_renders_and_hashes() {
        let m = Manifest::parse(TWO_EMPTY_FILES.as_bytes()).unwrap();
        assert_eq!(m.render(), TWO_EMPTY_FILES);
        m.check_consistency().unwrap();
        // snapdir's frozen golden id for this manifest (section 4 of docs/rust-port/manifest-spec.md in
        // snapdir's repository, https://github.com/bermi/snapdir).
        assert!(m.id().to_string().starts_with("c678a299"), "{}", m.id());
        assert!(m.id().to_string().ends_with("ae3c27857"), "{}", m.id());
        assert_eq!(m.id(), Checksum::of(format!("{TWO_EMPTY_FILES}\n").as_bytes()));
    }

    #[test]
    fn parse_sorts_and_skips_comments_blank_lines_and_crlf() {
        let shuffled = "# a comment\r\n\nF 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./foo.txt\r\n\
            F 600 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./bar.txt\n\
            D 700 dba5865c0d91b17958e4d2cac98c338f85cbbda07b71a020ab16c391b5e7af4b 0 ./\n";
        assert_eq!(
            Manifest::parse(shuffled.as_bytes()).unwrap().render(),
            TWO_EMPTY_FILES
        );
    }

    #[test]
    fn paths_keep_spaces_and_sort_bytewise() {
        let text = "\
D 755 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./a/
F 644 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./a b  c
D 755 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./";
        let m = Manifest::parse(text.as_bytes()).unwrap();
        let paths: Vec<_> = m
            .entries()
            .iter()
            .map(|e| e.rendered_path().into_owned())
            .collect();
        // ' ' (0x20) sorts before '/' (0x2f).
        assert_eq!(paths, ["./", "./a b  c", "./a/"]);
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        let sum = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        let cases = [
            (format!("X 644 {sum} 0 ./f"), "type must be F or D"),
            (format!("F 0644 {sum} 0 ./f"), "invalid permissions"),
            (format!("F 17777 {sum} 0 ./f"), "invalid permissions"),
            (format!("F 648 {sum} 0 ./f"), "invalid permissions"),
            (format!("F 644 {} 0 ./f", sum.to_uppercase()), "invalid checksum"),
            (format!("F 644 {} 0 ./f", &sum[1..]), "invalid checksum"),
            (format!("F 644 {sum} 01 ./f"), "invalid size"),
            (format!("F 644 {sum} -1 ./f"), "invalid size"),
            (format!("F 644 {sum} 18446744073709551616 ./f"), "invalid size"),
            (format!("F 644 {sum} 0"), "expected `TYPE"),
            (format!("F 644 {sum} 0 f"), "must start with ./ or /"),
            (format!("F 644 {sum} 0 ./f/"), "file path must not end in /"),
            (format!("D 644 {sum} 0 ./d"), "directory path must end in /"),
            (format!("F 644 {sum} 0 \"./unterminated"), "no closing quote"),
        ];
        for (line, expected) in cases {
            let text = format!("D 755 {sum} 0 ./\n{line}");
            let err = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with("manifest line 2: "), "{err}");
            assert!(err.contains(expected), "{line:?} -> {err}");
        }
        let err = Manifest::parse(b"D 755 x 0 ./\n\xff").unwrap_err().to_string();
        assert_eq!(err, "manifest line 2: not valid UTF-8");
        let dup = format!("D 755 {sum} 0 ./\nF 644 {sum} 0 ./f\nF 600 {sum} 0 ./f");
        assert!(
            Manifest::parse(dup.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let mixed = format!("D 755 {sum} 0 ./\nF 644 {sum} 0 /abs/f");
        assert!(
            Manifest::parse(mixed.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("mixed")
        );
    }

    #[test]
    fn consistency_catches_tampering() {
        let good = Manifest::parse(TWO_EMPTY_FILES.as_bytes()).unwrap();
        good.check_consistency().unwrap();
        let tampered = TWO_EMPTY_FILES.replace("0 ./foo.txt", "1 ./foo.txt");
        let err = Manifest::parse(tampered.as_bytes())
            .unwrap()
            .check_consistency()
            .unwrap_err();
        assert!(err.to_string().contains("size should be 1"), "{err}");
        let orphan = format!("{TWO_EMPTY_FILES}\nF 600 {} 0 ./missing/x", Checksum::EMPTY);
        let err = Manifest::parse(orphan.as_bytes())
            .unwrap()
            .check_consistency()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("parent directory is not in the manifest"),
            "{err}"
        );
    }

    #[test]
    fn get_finds_entries_by_raw_path() {
        let m = Manifest::parse(TWO_EMPTY_FILES.as_bytes()).unwrap();
        assert_eq!(m.get(b"./foo.txt").unwrap().mode(), 0o600);
        assert!(m.get(b"./nope").is_none());
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let segment = proptest::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..12,
        );
        (
            any::<bool>(),
            0u32..=0o7777,
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(segment, 1..4),
            any::<bool>(),
        )
            .prop_map(|(dir, mode, sum, size, segments, absolute)| {
                let mut path = if absolute { b"/".to_vec() } else { b"./".to_vec() };
                path.extend(segments.join(&b'/'));
                let kind = if dir {
                    path.push(b'/');
                    EntryKind::Dir
                } else {
                    EntryKind::File
                };
                Entry::new(kind, mode, Checksum::from_bytes(sum), size, path).unwrap()
            })
    }

    proptest! {
        #[test]
        fn parse_of_render_is_identity(entries in proptest::collection::vec(arb_entry(), 0..40)) {
            let Some(first) = entries.first() else { return Ok(()) };
            let relative = first.is_relative();
            let mut entries: Vec<Entry> = entries.iter().filter(|e| e.is_relative() == relative).cloned().collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            entries.dedup_by(|a, b| a.path == b.path);
            let m = Manifest::new(entries).unwrap();
            let text = m.render();
            let back = Manifest::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.render(), text);
            prop_assert_eq!(back.id(), m.id());
        }

        #[test]
        fn directory_checksum_is_the_documented_shell_pipeline(sums in proptest::collection::vec(any::<[u8; 32]>(), 0..20), dup in any::<bool>()) {
            let mut children: Vec<Checksum> = sums.into_iter().map(Checksum::from_bytes).collect();
            if dup && !children.is_empty() {
                children.push(children[0]);
            }
            // `cut -d' ' -f3 | sort -u | tr -d '\n' | b3sum`, with strings.
            let mut hex: Vec<String> = children.iter().map(ToString::to_string).collect();
            hex.sort();
            hex.dedup();
            let expected = Checksum::of(hex.concat().as_bytes());
            children.reverse();
            prop_assert_eq!(directory_checksum(children), expected);
        }
    }
}
