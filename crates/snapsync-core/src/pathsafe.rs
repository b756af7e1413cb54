//! Turning manifest paths into filesystem paths without leaving the destination.
//!
//! A manifest may come from anywhere (a store, a peer, an attacker). Before anything is written for an
//! entry, its path must be a plain relative path (no `..`, no absolute path, no empty or `.` component)
//! and no directory on the way to it inside the destination may be a symlink, which could lead outside.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::escape;

/// The filesystem path, relative to the destination, of a `./`-relative manifest path.
///
/// `./` (the root) gives the empty path. A directory's trailing `/` is dropped.
///
/// # Errors
/// [`Error::UnsafePath`] for an absolute path, a `..` or `.` component, an empty component or a NUL.
pub fn safe_relative_path(path: &[u8]) -> Result<&Path> {
    let unsafe_path = |reason| Error::UnsafePath {
        path: escape::render(path).into_owned(),
        reason,
    };
    let Some(rest) = path.strip_prefix(b"./") else {
        return Err(unsafe_path("not a ./-relative path"));
    };
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Path::new(""));
    }
    if rest.contains(&0) {
        return Err(unsafe_path("contains a NUL byte"));
    }
    for component in rest.split(|&b| b == b'/') {
        match component {
            b"" => return Err(unsafe_path("has an empty component (// or a leading /)")),
            b"." => return Err(unsafe_path("has a . component")),
            b".." => return Err(unsafe_path("has a .. component")),
            _ => {}
        }
    }
    Ok(Path::new(OsStr::from_bytes(rest)))
}

/// Checks that no existing directory between `root` and `root/relative` (exclusive of `root`, inclusive
/// of the parent of the last component) is a symlink, so writing `relative` stays inside `root`.
///
/// Components that do not exist yet are fine: they will be created as real directories.
///
/// # Errors
/// [`Error::UnsafePath`] when a component is a symlink or not a directory; [`Error::Io`] when it
/// cannot be inspected.
pub fn check_no_symlink_parents(root: &Path, relative: &Path) -> Result<()> {
    let mut current = PathBuf::from(root);
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        if components.peek().is_none() {
            break;
        }
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    path: escape::render(relative.as_os_str().as_bytes()).into_owned(),
                    reason: "a parent directory in the destination is a symlink",
                });
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::UnsafePath {
                    path: escape::render(relative.as_os_str().as_bytes()).into_owned(),
                    reason: "a parent in the destination is not a directory",
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(current, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(safe_relative_path(b"./").unwrap(), Path::new(""));
        assert_eq!(safe_relative_path(b"./a/b c/d").unwrap(), Path::new("a/b c/d"));
        assert_eq!(safe_relative_path(b"./dir/").unwrap(), Path::new("dir"));
        assert_eq!(safe_relative_path(b"./..a/b..").unwrap(), Path::new("..a/b.."));
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"./../x",
            b"./a/../../x",
            b"./a/..",
            b".//x",
            b"./a//b",
            b"./.",
            b"./a/./b",
            b"x",
            b"./a\0b",
        ] {
            let err = safe_relative_path(bad).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad:?}");
        }
    }

    #[test]
    fn symlinked_parent_is_refused() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("link")).unwrap();
        std::fs::create_dir(dest.path().join("real")).unwrap();
        assert!(check_no_symlink_parents(dest.path(), Path::new("real/file")).is_ok());
        assert!(check_no_symlink_parents(dest.path(), Path::new("new/deeper/file")).is_ok());
        // The last component itself may be a symlink (it will be replaced by rename, not followed).
        assert!(check_no_symlink_parents(dest.path(), Path::new("link")).is_ok());
        let err = check_no_symlink_parents(dest.path(), Path::new("link/file")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        std::fs::write(dest.path().join("plain"), b"").unwrap();
        assert!(check_no_symlink_parents(dest.path(), Path::new("plain/file")).is_err());
    }
}
