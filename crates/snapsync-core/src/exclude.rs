//! What the walk leaves out: globs (snapsync's vocabulary) and regular expressions (snapdir's).
//!
//! **Globs** (`--exclude`), gitignore-style, matched against the path below the root:
//! - a pattern without `/` matches an entry's name at any depth: `*.log`, `.git`, `node_modules`;
//! - a pattern with a `/` is anchored at the root: `build/out`, `/target`, `docs/**/*.tmp`
//!   (a leading `/` only anchors);
//! - a trailing `/` matches directories only: `cache/`;
//! - `*` and `?` stay within one path component, `**` crosses them, `[abc]` and `{a,b}` work as usual.
//!
//! An excluded directory is not descended into.
//!
//! **Regular expressions** (`--exclude-regex`) behave exactly as snapdir's `--exclude`: each pattern is
//! searched (unanchored) in the entry's absolute path, and the macros `%common%` and `%system%` expand
//! to snapdir's built-in sets; `%system%` also turns off symlink following, as in snapdir.

use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// snapdir's `%common%` set of directory names (`SNAPDIR_COMMON_EXCLUDE_DIRS`).
pub const COMMON_EXCLUDE_DIRS: &str = ".cache|.git|.DS_Store|.vscode-server|.dbus|.gvfs|.local/share/gvfs-metadata|.local/share/Trash|.Trash|node_modules|Trash-1000";

/// snapdir's `%system%` set of absolute prefixes (`SNAPDIR_SYSTEM_EXCLUDE_DIRS`), before the two
/// runtime entries (the home cache and the cache directory) are appended.
pub const SYSTEM_EXCLUDE_DIRS: &str = "/vscode/|/dev/|/proc/|/sys/|/tmp/|/var/run/|/run/|/mnt/|/media/|/lost+found/|/var/snap/lxd/common/ns/shmounts/|/var/snap/lxd/common/ns/mntns/|/var/lib/lxcfs/";

/// Runtime values for the `%system%` macro; snapsync-core reads no environment, the caller supplies them.
#[derive(Clone, Debug, Default)]
pub struct MacroContext {
    /// `$HOME/.cache/`.
    pub home_cache: String,
    /// snapsync's cache directory.
    pub cache_dir: String,
}

/// A compiled set of gitignore-style globs (the rules above): what `--exclude` leaves out, and what
/// folder sync's `--match` selects. The default matches nothing.
#[derive(Clone, Debug, Default)]
pub struct Globs {
    /// Name patterns (no `/`), for files and directories.
    names: Option<GlobSet>,
    /// Name patterns written with a trailing `/`.
    dir_names: Option<GlobSet>,
    /// Root-anchored path patterns.
    paths: Option<GlobSet>,
    /// Root-anchored path patterns written with a trailing `/`.
    dir_paths: Option<GlobSet>,
}

impl Globs {
    /// Compiles glob patterns.
    ///
    /// # Errors
    /// [`Error::InvalidPattern`] for the first pattern that does not compile.
    pub fn new(globs: &[String]) -> Result<Globs> {
        let mut sets: [(GlobSetBuilder, bool); 4] = std::array::from_fn(|_| (GlobSetBuilder::new(), false));
        for pattern in globs {
            let dir_only = pattern.ends_with('/');
            let body = pattern.trim_end_matches('/');
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(Error::InvalidPattern {
                    pattern: pattern.clone(),
                    source: "the pattern matches nothing but the root".into(),
                });
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidPattern {
                    pattern: pattern.clone(),
                    source: Box::new(e),
                })?;
            let (builder, used) = &mut sets[usize::from(anchored) * 2 + usize::from(dir_only)];
            builder.add(glob);
            *used = true;
        }
        let [names, dir_names, paths, dir_paths] = sets.map(|(builder, used)| {
            used.then(|| {
                builder.build().map_err(|e| Error::InvalidPattern {
                    pattern: globs.join(" "),
                    source: Box::new(e),
                })
            })
            .transpose()
        });
        Ok(Globs {
            names: names?,
            dir_names: dir_names?,
            paths: paths?,
            dir_paths: dir_paths?,
        })
    }

    /// True when there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_none() && self.dir_names.is_none() && self.paths.is_none() && self.dir_paths.is_none()
    }

    /// Whether a pattern matches the entry at `relative` (the path below the root, `a/b/c`) named
    /// `name`; patterns with a trailing `/` match only when `is_dir`.
    #[must_use]
    pub fn matches(&self, relative: &[u8], name: &[u8], is_dir: bool) -> bool {
        let matches = |set: &Option<GlobSet>, text: &[u8]| {
            set.as_ref()
                .is_some_and(|s| s.is_match_candidate(&Candidate::new(bytes_path(text))))
        };
        matches(&self.names, name)
            || matches(&self.paths, relative)
            || (is_dir && (matches(&self.dir_names, name) || matches(&self.dir_paths, relative)))
    }
}

/// A compiled set of exclusions: [`Globs`] and snapdir-style regular expressions. The default
/// excludes nothing.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    globs: Globs,
    regex: Option<regex::bytes::Regex>,
    forces_no_follow: bool,
}

impl Exclude {
    /// Compiles glob patterns and snapdir-style regular expressions.
    ///
    /// # Errors
    /// [`Error::InvalidPattern`] for the first pattern that does not compile.
    pub fn new(globs: &[String], regexes: &[String], macros: &MacroContext) -> Result<Self> {
        let globs = Globs::new(globs)?;
        let (regex, forces_no_follow) = compile_regexes(regexes, macros)?;
        Ok(Exclude {
            globs,
            regex,
            forces_no_follow,
        })
    }

    /// True when nothing is excluded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty() && self.regex.is_none()
    }

    /// True when `%system%` was used: snapdir then stops following symlinks.
    #[must_use]
    pub fn forces_no_follow(&self) -> bool {
        self.forces_no_follow
    }

    /// The regex test, on the absolute path, before anything is known about the entry.
    pub(crate) fn excludes_absolute(&self, absolute: &[u8]) -> bool {
        self.regex.as_ref().is_some_and(|re| re.is_match(absolute))
    }

    /// The glob test, on the path below the root (`a/b/c`) and the entry's name.
    #[must_use]
    pub fn excludes_relative(&self, relative: &[u8], name: &[u8], is_dir: bool) -> bool {
        self.globs.matches(relative, name, is_dir)
    }
}

fn bytes_path(bytes: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn compile_regexes(
    patterns: &[String],
    macros: &MacroContext,
) -> Result<(Option<regex::bytes::Regex>, bool)> {
    let mut forces_no_follow = false;
    let mut groups = Vec::with_capacity(patterns.len());
    for pattern in patterns.iter().filter(|p| !p.is_empty()) {
        let mut expanded = pattern.clone();
        if expanded.contains("%system%") {
            let set = format!(
                "(^({SYSTEM_EXCLUDE_DIRS}|{}|{}))",
                macros.home_cache, macros.cache_dir
            );
            expanded = expanded.replace("%system%", &set);
            forces_no_follow = true;
        }
        if expanded.contains("%common%") {
            expanded = expanded.replace("%common%", &format!("(/({COMMON_EXCLUDE_DIRS})($|/))"));
        }
        // Each pattern on its own first, so an error names the pattern the user wrote.
        regex::bytes::Regex::new(&expanded).map_err(|e| Error::InvalidPattern {
            pattern: pattern.clone(),
            source: Box::new(e),
        })?;
        groups.push(format!("(?:{expanded})"));
    }
    if groups.is_empty() {
        return Ok((None, false));
    }
    let combined = regex::bytes::Regex::new(&groups.join("|")).map_err(|e| Error::InvalidPattern {
        pattern: patterns.join(" "),
        source: Box::new(e),
    })?;
    Ok((Some(combined), forces_no_follow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(patterns: &[&str]) -> Exclude {
        let patterns: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        Exclude::new(&patterns, &[], &MacroContext::default()).unwrap()
    }

    fn name_of(rel: &str) -> &[u8] {
        rel.rsplit('/').next().unwrap().as_bytes()
    }

    fn excluded(e: &Exclude, rel: &str, dir: bool) -> bool {
        e.excludes_relative(rel.as_bytes(), name_of(rel), dir)
    }

    #[test]
    fn name_patterns_match_at_any_depth() {
        let e = globs(&["*.log", ".git"]);
        assert!(excluded(&e, "a.log", false));
        assert!(excluded(&e, "deep/er/b.log", false));
        assert!(excluded(&e, "x/.git", true));
        assert!(!excluded(&e, "x/.gitignore", false));
        assert!(!excluded(&e, "log", false));
    }

    #[test]
    fn slash_patterns_are_anchored() {
        let e = globs(&["build/out", "/target", "docs/**/*.tmp"]);
        assert!(excluded(&e, "build/out", true));
        assert!(!excluded(&e, "sub/build/out", true));
        assert!(excluded(&e, "target", true));
        assert!(!excluded(&e, "sub/target", true));
        assert!(excluded(&e, "docs/a/b/c.tmp", false));
        assert!(excluded(&e, "docs/c.tmp", false));
        assert!(!excluded(&e, "docs/a/c.tmpx", false));
    }

    #[test]
    fn star_stays_in_one_component() {
        let e = globs(&["src/*.rs"]);
        assert!(excluded(&e, "src/main.rs", false));
        assert!(!excluded(&e, "src/bin/main.rs", false));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        let e = globs(&["cache/"]);
        assert!(excluded(&e, "a/cache", true));
        assert!(!excluded(&e, "a/cache", false));
    }

    #[test]
    fn regexes_follow_snapdir() {
        let macros = MacroContext {
            home_cache: "/home/u/.cache/".into(),
            cache_dir: "/home/u/.cache/snapsync".into(),
        };
        let e = Exclude::new(&[], &["%common%".into(), "\\.bak$".into()], &macros).unwrap();
        assert!(!e.forces_no_follow());
        assert!(e.excludes_absolute(b"/p/.git/config"));
        assert!(e.excludes_absolute(b"/p/node_modules"));
        assert!(!e.excludes_absolute(b"/p/.gitignore"));
        assert!(e.excludes_absolute(b"/p/x.bak"));
        let s = Exclude::new(&[], &["%system%".into()], &macros).unwrap();
        assert!(s.forces_no_follow());
        assert!(s.excludes_absolute(b"/proc/1"));
        assert!(s.excludes_absolute(b"/home/u/.cache/x"));
        assert!(!s.excludes_absolute(b"/data/proc/1"));
    }

    #[test]
    fn bad_patterns_name_themselves() {
        let err = Exclude::new(&["a[".into()], &[], &MacroContext::default()).unwrap_err();
        assert_eq!(err.to_string(), "invalid exclude pattern \"a[\"");
        let err = Exclude::new(&[], &["(".into()], &MacroContext::default()).unwrap_err();
        assert_eq!(err.to_string(), "invalid exclude pattern \"(\"");
        assert!(Exclude::new(&["/".into()], &[], &MacroContext::default()).is_err());
    }
}
