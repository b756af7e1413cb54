//! Scanning: each side's files as a listing (path → size, time, and hash where known), through the
//! same filter (`--match`, `--exclude`), so both sides are compared on the same terms.
//!
//! The local side is listed by snapsync-core's `list_tree`, without following links: a symlink is
//! reported and left alone (syncing it would copy what it points to, perhaps outside the folder;
//! deleting through it could leave the folder). `.snapsync` at the local root (where earlier versions
//! kept the sync state) and the remote's lock are never listed;
//! temporary files of an interrupted run are collected so the next run removes them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::TryStreamExt;
use rayon::prelude::*;
use snapsync_core::{EntryType, Exclude, Globs, MacroContext};
use snapsync_store::{Store, is_temp_name};

use crate::decide::Observed;
use crate::error::{Error, Result};

/// The name of the local directory where earlier versions kept the sync state (it now lives outside the
/// folder, see [`crate::StateDir`]); never synced.
pub const STATE_DIR_NAME: &str = ".snapsync";

pub use crate::lock::LOCK_NAME;

/// pyftpsync's default `--exclude` list.
pub const DEFAULT_EXCLUDES: &str = ".DS_Store,.git,.hg,.svn,#recycle";

/// What is synced: files that match `--match` (all when none is given) and are not `--exclude`d.
/// Excluded directories are not entered.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    exclude: Exclude,
    /// `--match`; `None`: every file.
    matches: Option<Globs>,
}

/// What the filter says of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Synced.
    Wanted,
    /// Excluded: invisible to the run.
    Excluded,
    /// Not matched by `--match`: left alone, unless `--delete-unmatched` removes it from the target.
    Unmatched,
}

impl Filter {
    /// A filter from `--match` and `--exclude` patterns; each may be a comma-separated list (as in
    /// pyftpsync). A pattern without `/` matches a name at any depth, one with `/` the path below the
    /// root; `*` stays within a name, `**` crosses directories.
    ///
    /// # Errors
    /// [`Error::Pattern`] for a pattern that does not compile.
    pub fn new(matches: &[String], excludes: &[String]) -> Result<Filter> {
        let split = |patterns: &[String]| -> Vec<String> {
            patterns
                .iter()
                .flat_map(|p| p.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let exclude =
            Exclude::new(&split(excludes), &[], &MacroContext::default()).map_err(Error::Pattern)?;
        let matches = split(matches);
        // The same glob rules as --exclude (and snapshots' excludes): a name at any depth, or a path
        // below the root when the pattern has a `/`.
        let matches = if matches.is_empty() {
            None
        } else {
            Some(Globs::new(&matches).map_err(|e| match e {
                snapsync_core::Error::InvalidPattern { pattern, source } => Error::InvalidMatch {
                    pattern,
                    reason: source.to_string(),
                },
                other => Error::Pattern(other),
            })?)
        };
        Ok(Filter { exclude, matches })
    }

    /// Whether `--match` patterns were given (without them every file is wanted).
    #[must_use]
    pub fn has_matches(&self) -> bool {
        self.matches.is_some()
    }

    /// Whether a directory (path below the root) is entered.
    #[must_use]
    pub fn enters(&self, path: &str) -> bool {
        !self
            .exclude
            .excludes_relative(path.as_bytes(), name(path).as_bytes(), true)
    }

    /// What happens to the file at `path` (its directories are assumed entered).
    #[must_use]
    pub fn verdict(&self, path: &str) -> Verdict {
        let file_name = name(path);
        if self
            .exclude
            .excludes_relative(path.as_bytes(), file_name.as_bytes(), false)
        {
            return Verdict::Excluded;
        }
        match &self.matches {
            None => Verdict::Wanted,
            Some(globs) if globs.matches(path.as_bytes(), file_name.as_bytes(), false) => Verdict::Wanted,
            Some(_) => Verdict::Unmatched,
        }
    }

    /// Whether the directory `path` and every one above it are entered.
    #[must_use]
    pub fn enters_all(&self, path: &str) -> bool {
        self.enters(path) && path.match_indices('/').all(|(i, _)| self.enters(&path[..i]))
    }

    /// The verdict for a file listed with its full path: excluded when any directory on the way is.
    #[must_use]
    pub fn verdict_of_listed(&self, path: &str) -> Verdict {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            if !self.enters(&path[..end]) {
                return Verdict::Excluded;
            }
            end += 1;
        }
        self.verdict(path)
    }
}

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One side's files.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The files to sync, by path.
    pub files: BTreeMap<String, Observed>,
    /// Files `--match` leaves out (for `--delete-unmatched`).
    pub unmatched: BTreeMap<String, Observed>,
    /// Temporary files an interrupted run left behind (local paths; removed by the next real run).
    pub leftovers: Vec<PathBuf>,
    /// What was skipped and why (symlinks, names that are not UTF-8).
    pub warnings: Vec<String>,
    /// Paths that could not be listed or read (a folder or file refused, a listing that broke off),
    /// with why: the run leaves each one and everything below it alone on both sides, keeps their
    /// base entries, reports them and fails. Unknown is never empty.
    pub unknown: Vec<(String, String)>,
    /// Paths left alone on purpose (symbolic links): like unknown ones, nothing below them is
    /// changed on either side, but they are only warnings.
    pub skipped: Vec<String>,
    /// The folders, where the side has folders (for empty folders: the others follow their files).
    pub dirs: BTreeSet<String>,
}

impl Listing {
    /// Whether `path` is, or lies below, a path this side could not read or left alone.
    #[must_use]
    pub fn protects(&self, path: &str) -> bool {
        self.unknown
            .iter()
            .map(|(p, _)| p.as_str())
            .chain(self.skipped.iter().map(String::as_str))
            .any(|p| is_within(path, p))
    }

    /// A file of either kind.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&Observed> {
        self.files.get(path).or_else(|| self.unmatched.get(path))
    }
}

/// Lists the local folder `root`; with `checksum`, every file's BLAKE3 too (in parallel).
///
/// # Errors
/// [`Error::Io`] when the root cannot be read; unreadable entries below it are warnings.
pub fn scan_local(root: &Path, filter: &Filter, checksum: bool) -> Result<Listing> {
    let mut listing = Listing::default();
    // The core's listing walk: links not followed, a folder entered only when the filter enters it
    // (and its name is UTF-8; `.snapsync` at the root, where earlier versions kept the state, never).
    let enter = |relative: &[u8], _: &[u8]| {
        std::str::from_utf8(relative).is_ok_and(|path| path != STATE_DIR_NAME && filter.enters(path))
    };
    let tree = snapsync_core::list_tree(root, &enter).map_err(|e| Error::io(root, e))?;
    let mut unlisted = BTreeSet::new();
    for problem in tree.unreadable {
        let path = String::from_utf8_lossy(&problem.relative).into_owned();
        let why = match (problem.what, problem.relative.is_empty()) {
            ("listed", true) => format!("its listing failed ({})", problem.error),
            ("listed", false) => {
                unlisted.insert(path.clone());
                format!("cannot be listed ({})", problem.error)
            }
            _ => format!("cannot be read ({})", problem.error),
        };
        listing.unknown.push((path, why));
    }
    for entry in tree.entries {
        let Ok(path) = std::str::from_utf8(&entry.relative).map(str::to_owned) else {
            let relative = entry.relative_lossy();
            listing
                .warnings
                .push(format!("{relative}: the name is not UTF-8; left out"));
            continue;
        };
        if path == STATE_DIR_NAME {
            continue;
        }
        match entry.kind {
            EntryType::Symlink => {
                if filter.verdict(&path) != Verdict::Excluded {
                    listing
                        .warnings
                        .push(format!("{path}: a symbolic link; left alone"));
                    listing.skipped.push(path);
                }
            }
            EntryType::Dir => {
                if filter.enters(&path) && !unlisted.contains(&path) {
                    listing.dirs.insert(path);
                }
            }
            EntryType::File => {
                if is_temp_name(OsStr::new(name(&path))) {
                    listing.leftovers.push(root.join(&path));
                    continue;
                }
                let observed = observed(&entry.metadata);
                match filter.verdict(&path) {
                    Verdict::Excluded => {}
                    Verdict::Wanted => {
                        listing.files.insert(path, observed);
                    }
                    Verdict::Unmatched => {
                        listing.unmatched.insert(path, observed);
                    }
                }
            }
            // Sockets, FIFOs and devices are not synced.
            EntryType::Special(_) => {}
        }
    }
    if checksum {
        let hashed: Vec<(String, io::Result<[u8; 32]>)> = listing
            .files
            .par_iter()
            .map(|(path, _)| {
                let hash = snapsync_core::hash_file(&root.join(path)).map(|(c, _)| *c.as_bytes());
                (path.clone(), hash)
            })
            .collect();
        for (path, hash) in hashed {
            match hash {
                Ok(hash) => {
                    if let Some(o) = listing.files.get_mut(&path) {
                        o.hash = Some(hash);
                    }
                }
                Err(e) => {
                    // Kept in the listing (it is there) but unknown: nothing is done to it either way.
                    listing.unknown.push((path, format!("cannot be read ({e})")));
                }
            }
        }
    }
    listing.unknown.sort();
    listing.warnings.sort();
    listing.skipped.sort();
    listing.leftovers.sort();
    Ok(listing)
}

pub use snapsync_core::atomic::temp_pid;

/// Whether `path` is `dir` or lies below it (`""` holds everything).
#[must_use]
pub fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// What a local file's metadata says.
#[must_use]
pub fn observed(meta: &fs::Metadata) -> Observed {
    Observed {
        size: meta.len(),
        mtime: meta.modified().ok(),
        hash: None,
    }
}

/// Lists the remote store.
///
/// # Errors
/// The store's error when it cannot be listed.
pub async fn scan_remote(store: &dyn Store, filter: &Filter) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut stream = store.list_with_dirs("");
    while let Some(meta) = stream.try_next().await.map_err(Error::Store)? {
        // The lock, and the state of a folder that is itself synced elsewhere, are never synced.
        if meta.key.starts_with(LOCK_NAME) || meta.key.starts_with(".snapsync/") {
            continue;
        }
        if let Some(dir) = meta.key.strip_suffix('/') {
            if filter.enters_all(dir) {
                listing.dirs.insert(dir.to_owned());
            }
            continue;
        }
        let observed = Observed {
            size: meta.size,
            mtime: meta.modified,
            hash: None,
        };
        match filter.verdict_of_listed(&meta.key) {
            Verdict::Wanted => {
                listing.files.insert(meta.key, observed);
            }
            Verdict::Unmatched => {
                listing.unmatched.insert(meta.key, observed);
            }
            Verdict::Excluded => {}
        }
    }
    Ok(listing)
}

/// Seconds are what most remotes keep: times compared across sides are compared at that precision.
#[must_use]
pub fn whole_seconds(time: Option<SystemTime>) -> Option<SystemTime> {
    let since = time?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(matches: &[&str], excludes: &[&str]) -> Filter {
        let owned = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        Filter::new(&owned(matches), &owned(excludes)).unwrap()
    }

    #[test]
    fn default_excludes_hide_version_control_at_any_depth() {
        let f = filter(&[], &[DEFAULT_EXCLUDES]);
        assert!(!f.enters(".git"));
        assert!(!f.enters("sub/.svn"));
        assert_eq!(f.verdict("a/.DS_Store"), Verdict::Excluded);
        assert_eq!(f.verdict_of_listed("x/.git/config"), Verdict::Excluded);
        assert_eq!(f.verdict_of_listed("x/.gitignore"), Verdict::Wanted);
        assert_eq!(f.verdict_of_listed("#recycle/a"), Verdict::Excluded);
    }

    #[test]
    fn match_selects_files_by_name_or_path_and_leaves_the_rest_unmatched() {
        let f = filter(&["*.html,*.css", "img/*.png"], &[]);
        assert_eq!(f.verdict("index.html"), Verdict::Wanted);
        assert_eq!(f.verdict("deep/er/site.css"), Verdict::Wanted);
        assert_eq!(f.verdict("img/a.png"), Verdict::Wanted);
        assert_eq!(f.verdict("other/img/a.png"), Verdict::Unmatched);
        assert_eq!(f.verdict("notes.txt"), Verdict::Unmatched);
        // Directories are always entered by --match; only --exclude prunes them.
        assert!(f.enters("img"));
    }

    #[test]
    fn exclusion_wins_over_match() {
        let f = filter(&["*.txt"], &["secret.txt", "private"]);
        assert_eq!(f.verdict("secret.txt"), Verdict::Excluded);
        assert_eq!(f.verdict_of_listed("private/a.txt"), Verdict::Excluded);
        assert_eq!(f.verdict_of_listed("public/a.txt"), Verdict::Wanted);
    }

    #[test]
    fn temporary_names_carry_the_pid_of_their_run() {
        assert_eq!(temp_pid(".a.txt.snapsync-4242-7.tmp"), Some(4242));
        assert_eq!(temp_pid(".a.snapsync-b.snapsync-17-3af0.tmp"), Some(17));
        assert_eq!(temp_pid("a.txt"), None);
        assert_eq!(temp_pid(".a.snapsync-x-1.tmp"), None);
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Filter::new(&["[".into()], &[]).is_err());
        assert!(Filter::new(&[], &["{a".into()]).is_err());
    }

    #[test]
    fn the_local_scan_skips_state_links_and_excludes_and_collects_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".snapsync/sync")).unwrap();
        fs::write(root.join(".snapsync/sync/x"), "state").unwrap();
        fs::create_dir_all(root.join("sub/.git")).unwrap();
        fs::write(root.join("sub/.git/HEAD"), "ref").unwrap();
        fs::write(root.join("sub/a.txt"), "aaa").unwrap();
        fs::write(root.join("b.log"), "bb").unwrap();
        fs::write(root.join(".b.log.snapsync-1-2.tmp"), "torn").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let f = filter(&["*.txt"], &[DEFAULT_EXCLUDES]);
        let listing = scan_local(root, &f, true).unwrap();
        assert_eq!(listing.files.keys().collect::<Vec<_>>(), ["sub/a.txt"]);
        assert_eq!(listing.files["sub/a.txt"].size, 3);
        assert_eq!(
            listing.files["sub/a.txt"].hash,
            Some(*blake3::hash(b"aaa").as_bytes())
        );
        assert_eq!(listing.unmatched.keys().collect::<Vec<_>>(), ["b.log"]);
        assert_eq!(listing.leftovers, [root.join(".b.log.snapsync-1-2.tmp")]);
        assert_eq!(listing.warnings.len(), 1, "{:?}", listing.warnings);
        assert!(listing.warnings[0].contains("link"));
    }
}
