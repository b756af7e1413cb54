//! The parallel directory walk that produces a manifest.
//!
//! Each directory is read on one thread; its files are hashed and its subdirectories walked as parallel
//! rayon tasks, so listing and hashing overlap and every core stays busy. A directory's checksum and size
//! are computed once its children are done (see [`crate::directory_checksum`]).
//!
//! What is recorded, matching snapdir:
//! - regular files and directories; sockets, FIFOs and devices are skipped (with a [`Warning`]);
//! - permissions from `lstat`, so a followed symlink shows the link's own bits (`777` on Linux);
//! - symlinks are followed by default and recorded as what they point to; a followed link to a file
//!   records the link's own length as its size (snapdir's behaviour, kept for identical ids);
//! - dangling symlinks are left out (with a [`Warning`]); with `follow_symlinks: false` all symlinks are;
//! - the root path is made absolute and normalised lexically (`.` components and trailing `/` removed,
//!   `..` kept), as snapdir does; under `absolute`, that is the prefix of every path.
//!
//! Where snapsync departs from snapdir: a symlink that leads back to a directory it lies in is not
//! followed (snapdir follows it until the kernel's limit of 40 links and records every level); names that
//! are not UTF-8 are recorded (quoted) instead of failing the walk; names with newlines are quoted
//! instead of breaking the manifest.

use std::fs::{self, File, Metadata};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::exclude::Exclude;
use crate::hash::{self, Checksum, directory_checksum};
use crate::manifest::{Entry, EntryKind, Manifest};

/// Stack for each walk thread: enough for about 2,000 nested directories (the most a 4,096-byte path can
/// hold) with a wide margin, in debug builds too.
const WALK_STACK_SIZE: usize = 64 * 1024 * 1024;

/// How to walk.
#[derive(Clone, Debug)]
pub struct WalkOptions {
    /// Follow symlinks (the default, as snapdir). When false, symlinks are left out entirely.
    pub follow_symlinks: bool,
    /// Write absolute paths instead of `./`-relative ones.
    pub absolute: bool,
    /// What to leave out.
    pub exclude: Exclude,
    /// Threads for listing and hashing; `None` means one per core.
    pub threads: Option<NonZeroUsize>,
    /// Counters the walk updates as it goes, for a progress display.
    pub progress: Option<Arc<Progress>>,
    /// Also return, for every file, where it is and its [`Fingerprint`] when it was hashed (see
    /// [`Walk::sources`]); costs a little memory per file.
    pub record_sources: bool,
    /// Stops the walk early: once cancelled, no file starts hashing and the walk ends in
    /// [`Error::Cancelled`].
    pub cancel: Cancel,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            follow_symlinks: true,
            absolute: false,
            exclude: Exclude::default(),
            threads: None,
            progress: None,
            record_sources: false,
            cancel: Cancel::new(),
        }
    }
}

/// Live counters of a walk in progress.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// Files hashed so far.
    #[must_use]
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Bytes hashed so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Something the walk left out, and why; the manifest is still complete for everything else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// A symlink whose target does not exist (or is a chain too long to resolve).
    #[error("skipped dangling symlink {}", path.display())]
    DanglingSymlink {
        /// The link.
        path: PathBuf,
    },
    /// A symlink to one of the directories that contain it.
    #[error("skipped symlink {} that loops back to a directory containing it", path.display())]
    SymlinkLoop {
        /// The link.
        path: PathBuf,
    },
    /// A socket, FIFO or device.
    #[error("skipped {kind} {}", path.display())]
    SpecialFile {
        /// The entry.
        path: PathBuf,
        /// `socket`, `FIFO`, `block device` or `character device`.
        kind: &'static str,
    },
}

/// The result of a walk.
#[derive(Debug)]
pub struct Walk {
    /// The manifest of the tree.
    pub manifest: Manifest,
    /// Entries left out, in no particular order.
    pub warnings: Vec<Warning>,
    /// The root as used for absolute paths (absolute, lexically normalised).
    pub root: PathBuf,
    /// With [`WalkOptions::record_sources`]: every file hashed, in no particular order.
    pub sources: Vec<Source>,
}

/// A file the walk hashed: where it is, and how it looked when hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The content's checksum.
    pub checksum: Checksum,
    /// The file (for a followed symlink, the link's path; opening it reads the target).
    pub path: PathBuf,
    /// Its metadata when it was hashed.
    pub fingerprint: Fingerprint,
}

/// What identifies a file's content without reading it: if none of these changed, neither did the
/// content (the same test rsync, git and backup tools use). A write changes the modification and change
/// times, whatever it sets the modification time to afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub changed_ns: i128,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

impl Fingerprint {
    /// The fingerprint in `meta`.
    #[must_use]
    pub fn of(meta: &Metadata) -> Fingerprint {
        Fingerprint {
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            changed_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The fingerprint of the file at `path` now (following symlinks).
    ///
    /// # Errors
    /// Any error reading the metadata.
    pub fn current(path: &Path) -> io::Result<Fingerprint> {
        fs::metadata(path).map(|m| Fingerprint::of(&m))
    }
}

/// Walks `root` and returns its manifest.
///
/// # Errors
/// [`Error::NotADirectory`] when `root` is not a directory; [`Error::Io`] naming the file or directory
/// that cannot be read; [`Error::ChangedDuringWalk`] / [`Error::VanishedDuringWalk`] when the tree
/// changes under the walk.
pub fn walk(root: &Path, options: &WalkOptions) -> Result<Walk> {
    let root = normalize_root(root)?;
    let target = fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
    if !target.is_dir() {
        return Err(Error::NotADirectory { path: root });
    }
    let own = fs::symlink_metadata(&root).map_err(|e| Error::io(&root, e))?;
    let walker = Walker {
        options,
        follow: options.follow_symlinks && !options.exclude.forces_no_follow(),
        root_prefix: root
            .as_os_str()
            .as_bytes()
            .strip_suffix(b"/")
            .unwrap_or(root.as_os_str().as_bytes())
            .to_vec(),
        entries: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        sources: Mutex::new(Vec::new()),
    };
    let top = Ancestor {
        id: (target.dev(), target.ino()),
        parent: None,
    };
    // The walk recurses once per directory level, inside rayon tasks, so it runs in a pool of its own
    // whose threads have room for the deepest tree a path can name (PATH_MAX bounds it, since every call
    // uses the full path). The stacks are reserved address space; only the pages used are touched.
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(WALK_STACK_SIZE);
    if let Some(threads) = options.threads {
        pool = pool.num_threads(threads.get());
    }
    pool.build()
        .map_err(|e| Error::io(&root, io::Error::other(e)))?
        .install(|| walker.visit_dir(&root, b"", own.mode() & 0o7777, &top))?;
    let Walker {
        entries,
        warnings,
        sources,
        ..
    } = walker;
    let sources = sources
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entries = entries
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let warnings = warnings
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Walk {
        manifest: Manifest::new(entries)?,
        warnings,
        root,
        sources,
    })
}

/// snapdir's root rule: absolute (joined to the current directory), `.` components and trailing slashes
/// dropped, `..` kept, no filesystem access.
fn normalize_root(root: &Path) -> Result<PathBuf> {
    let absolute = if root.is_absolute() {
        root.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::io(".", e))?.join(root)
    };
    Ok(absolute
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect())
}

struct Walker<'a> {
    options: &'a WalkOptions,
    follow: bool,
    /// The root's bytes without a trailing `/` (empty for `/`), for absolute paths.
    root_prefix: Vec<u8>,
    entries: Mutex<Vec<Entry>>,
    warnings: Mutex<Vec<Warning>>,
    sources: Mutex<Vec<Source>>,
}

/// The chain of directories from the root to the one being walked, by (device, inode), to stop loops.
struct Ancestor<'a> {
    id: (u64, u64),
    parent: Option<&'a Ancestor<'a>>,
}

impl Ancestor<'_> {
    fn contains(&self, id: (u64, u64)) -> bool {
        let mut current = Some(self);
        while let Some(a) = current {
            if a.id == id {
                return true;
            }
            current = a.parent;
        }
        false
    }
}

struct FileJob {
    path: PathBuf,
    relative: Vec<u8>,
    mode: u32,
    /// What the manifest records: the file's size, or for a followed symlink the link's length.
    recorded_size: u64,
    /// The size of the content to hash.
    content_size: u64,
}

struct DirJob {
    path: PathBuf,
    relative: Vec<u8>,
    mode: u32,
    id: (u64, u64),
}

impl Walker<'_> {
    /// Walks one directory; records its entry and its files' entries; returns its checksum and size.
    fn visit_dir(
        &self,
        dir: &Path,
        relative: &[u8],
        mode: u32,
        ancestors: &Ancestor<'_>,
    ) -> Result<(Checksum, u64)> {
        let (files, dirs) = self.list(dir, relative, ancestors)?;
        let (files, subdirs) = rayon::join(
            || {
                files
                    .into_par_iter()
                    .map(|job| self.hash_file(job))
                    .collect::<Result<Vec<(Entry, Option<Source>)>>>()
            },
            || {
                dirs.into_par_iter()
                    .map(|job| {
                        let ancestors = Ancestor {
                            id: job.id,
                            parent: Some(ancestors),
                        };
                        self.visit_dir(&job.path, &job.relative, job.mode, &ancestors)
                    })
                    .collect::<Result<Vec<(Checksum, u64)>>>()
            },
        );
        let (files, subdirs) = (files?, subdirs?);
        let (files, sources): (Vec<Entry>, Vec<Option<Source>>) = files.into_iter().unzip();
        if self.options.record_sources {
            self.sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(sources.into_iter().flatten());
        }
        let size = files
            .iter()
            .map(Entry::size)
            .chain(subdirs.iter().map(|d| d.1))
            .fold(0u64, u64::saturating_add);
        let checksum = directory_checksum(
            files
                .iter()
                .map(Entry::checksum)
                .chain(subdirs.iter().map(|d| d.0)),
        );
        let own = Entry::new(
            EntryKind::Dir,
            mode,
            checksum,
            size,
            self.manifest_path(relative, true),
        )?;
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.extend(files);
        entries.push(own);
        Ok((checksum, size))
    }

    /// Reads a directory and sorts its entries into files to hash and directories to walk.
    fn list(
        &self,
        dir: &Path,
        relative: &[u8],
        ancestors: &Ancestor<'_>,
    ) -> Result<(Vec<FileJob>, Vec<DirJob>)> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for dirent in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let dirent = dirent.map_err(|e| Error::io(dir, e))?;
            let name = dirent.file_name();
            let path = dirent.path();
            if self
                .options
                .exclude
                .excludes_absolute(path.as_os_str().as_bytes())
            {
                continue;
            }
            let own = match dirent.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::VanishedDuringWalk { path });
                }
                Err(e) => return Err(Error::io(path, e)),
            };
            let is_link = own.file_type().is_symlink();
            let target = if is_link {
                if !self.follow {
                    continue;
                }
                match fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) =>
                    {
                        self.warn(Warning::DanglingSymlink { path });
                        continue;
                    }
                    Err(e) => return Err(Error::io(path, e)),
                }
            } else {
                own.clone()
            };
            let child = child_relative(relative, name.as_bytes());
            let is_dir = target.is_dir();
            if self
                .options
                .exclude
                .excludes_relative(&child, name.as_bytes(), is_dir)
            {
                continue;
            }
            let mode = own.mode() & 0o7777;
            if is_dir {
                let id = (target.dev(), target.ino());
                if ancestors.contains(id) {
                    self.warn(Warning::SymlinkLoop { path });
                    continue;
                }
                dirs.push(DirJob {
                    path,
                    relative: child,
                    mode,
                    id,
                });
            } else if target.is_file() {
                files.push(FileJob {
                    path,
                    relative: child,
                    mode,
                    recorded_size: own.len(),
                    content_size: target.len(),
                });
            } else {
                self.warn(Warning::SpecialFile {
                    path,
                    kind: special_kind(&target),
                });
            }
        }
        Ok((files, dirs))
    }

    fn hash_file(&self, job: FileJob) -> Result<(Entry, Option<Source>)> {
        if self.options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&job.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::VanishedDuringWalk { path: job.path });
            }
            Err(e) => return Err(Error::io(job.path, e)),
        };
        // The entry was a regular file when listed; if it was swapped for something else since (a FIFO
        // would block a read forever), the tree changed.
        let before = file.metadata().map_err(|e| Error::io(&job.path, e))?;
        let changed = |actual| Error::ChangedDuringWalk {
            path: job.path.clone(),
            expected: job.content_size,
            actual,
        };
        if !before.is_file() {
            return Err(changed(0));
        }
        // A mapping covers the length it is given, so a file that grew since it was listed must be caught
        // here, or its checksum would be that of a prefix.
        if before.len() != job.content_size {
            return Err(changed(before.len()));
        }
        let (checksum, hashed) = match hash::hash_open_file(&file, job.content_size) {
            Ok(done) => done,
            Err(e) if hash::is_truncated_while_mapped(&e) => {
                return Err(changed(file.metadata().map_or(0, |m| m.len())));
            }
            Err(e) => return Err(Error::io(job.path, e)),
        };
        // Written to while being hashed: the checksum may mix old and new bytes.
        let after = file.metadata().map_err(|e| Error::io(&job.path, e))?;
        if hashed != job.content_size
            || after.len() != before.len()
            || after.modified().ok() != before.modified().ok()
        {
            return Err(changed(after.len().max(hashed)));
        }
        if let Some(progress) = &self.options.progress {
            progress.files.fetch_add(1, Ordering::Relaxed);
            progress.bytes.fetch_add(hashed, Ordering::Relaxed);
        }
        let entry = Entry::new(
            EntryKind::File,
            job.mode,
            checksum,
            job.recorded_size,
            self.manifest_path(&job.relative, false),
        )?;
        let source = self.options.record_sources.then(|| Source {
            checksum,
            path: job.path,
            fingerprint: Fingerprint::of(&after),
        });
        Ok((entry, source))
    }

    /// The path written in the manifest for an entry `relative` below the root (empty for the root).
    fn manifest_path(&self, relative: &[u8], is_dir: bool) -> Vec<u8> {
        let mut path = if self.options.absolute {
            let mut p = self.root_prefix.clone();
            p.push(b'/');
            p
        } else {
            b"./".to_vec()
        };
        if !relative.is_empty() {
            path.extend_from_slice(relative);
            if is_dir {
                path.push(b'/');
            }
        }
        path
    }

    fn warn(&self, warning: Warning) {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(warning);
    }
}

/// The path below the root of the entry `name` in the directory at `relative` (both walks').
pub(crate) fn child_relative(relative: &[u8], name: &[u8]) -> Vec<u8> {
    let mut child = Vec::with_capacity(relative.len() + 1 + name.len());
    child.extend_from_slice(relative);
    if !child.is_empty() {
        child.push(b'/');
    }
    child.extend_from_slice(name);
    child
}

pub(crate) fn special_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}
