//! Writing a file so that a reader sees the old content or the new, never a part of either.
//!
//! Every file snapsync writes in place of another goes through here: an object in a local store, a file
//! of a snapshot being pulled, the sync state, a command's output.
//!
//! 1. [`AtomicFile::create_for`] creates an empty temporary file beside the target, named
//!    `.NAME.snapsync-PID-N.tmp` ([`temp_path`]). Beside it, so that the final rename is atomic (same
//!    folder, same filesystem); with the writer's process id in its name, so that a later run can tell
//!    a leftover of an interrupted write ([`is_temp_name`]) and whether the process that wrote it is
//!    gone. Listings of stores and folders hide such names, and a pull removes them.
//! 2. The caller writes it: it is an [`io::Write`], and [`AtomicFile::as_file_mut`] lends the [`File`]
//!    for the kernel's copy (`io::copy` between files uses `copy_file_range`).
//! 3. [`AtomicFile::persist`] flushes the file to disk, renames it over the target (or, without
//!    [`WriteOptions::replace`], links it to the target, which fails if anything is there: no clobber,
//!    atomically), then flushes the folder so that the new name survives a power cut too. Callers
//!    that flush a whole filesystem once at the end (`syncfs`) turn the flushes off.
//! 4. A write that fails, and a writer dropped before it was persisted, remove the temporary file: the
//!    target is untouched.
//!
//! [`CheckedFile`] adds "publish only what was checked": it counts and hashes (BLAKE3) the bytes as
//! they are written, and [`CheckedFile::persist_if`] renames the file into place only if its size and
//! checksum are the expected ones; otherwise the temporary file is removed and nothing is published.
//!
//! Both are `Send` and own their file, so an async caller writes them on a blocking thread, moving the
//! file there and back for each batch of received bytes:
//!
//! ```
//! use snapsync_core::Checksum;
//! use snapsync_core::atomic::{CheckedFile, WriteOptions};
//! use std::io::Write;
//!
//! let dir = tempfile::tempdir()?;
//! let target = dir.path().join("download.bin");
//! let chunks: [&[u8]; 2] = [b"hello, ", b"world"];
//! let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE)?;
//! for chunk in chunks {
//!     // In async code: `file = spawn_blocking(move || { file.write_all(&chunk)?; Ok(file) }).await??;`
//!     file.write_all(chunk)?;
//! }
//! let expected = Checksum::of(b"hello, world");
//! let published = file.persist_if(&target, Some(12), Some(&expected))?;
//! assert_eq!(published.checksum, expected);
//! assert_eq!(std::fs::read(&target)?, b"hello, world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::hash::{Checksum, update_from_file};

/// How many temporary names are tried before giving up, when a name is taken (by a leftover, or by a
/// process with the same id on another machine writing the same shared folder).
const NAME_ATTEMPTS: u32 = 64;

/// How a file written under a temporary name is published, and how durably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Replace whatever file is at the target (a rename over it). When off, the file is published only
    /// if nothing is at the target (not even a dangling symbolic link), decided atomically at the
    /// rename; otherwise [`AtomicFile::persist`] fails with [`io::ErrorKind::AlreadyExists`].
    pub replace: bool,
    /// Flush the file to disk before it is renamed into place, so that after a power cut the target
    /// holds the old content or the whole new content.
    pub sync_file: bool,
    /// Flush the target's folder after the rename, so that the new name itself survives a power cut.
    pub sync_dir: bool,
}

impl WriteOptions {
    /// Replace the target; the file and its folder flushed: once `persist` returns, the new content is
    /// on disk under its name.
    pub const DURABLE: WriteOptions = WriteOptions {
        replace: true,
        sync_file: true,
        sync_dir: true,
    };

    /// Replace the target and flush nothing: atomic against a killed process, not against a power cut.
    /// For callers that flush the whole filesystem once (`syncfs`) before anything depends on the files.
    pub const UNSYNCED: WriteOptions = WriteOptions {
        replace: true,
        sync_file: false,
        sync_dir: false,
    };

    /// The same, but never replacing a file at the target (see [`WriteOptions::replace`]).
    #[must_use]
    pub const fn no_clobber(self) -> WriteOptions {
        WriteOptions {
            replace: false,
            ..self
        }
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions::DURABLE
    }
}

/// Whether a file name is one of the temporary names writers use (`.NAME.snapsync-PID-N.tmp`, or
/// `.snapsync-PID-N.tmp` for [`AtomicFile::create_in`]).
#[must_use]
pub fn is_temp_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b".") && name.ends_with(b".tmp") && name.windows(10).any(|w| w == b".snapsync-")
}

/// The process id in a temporary file's name (`.NAME.snapsync-PID-N.tmp`), if the name is one: whose
/// write it was, so that a leftover of a process that is gone can be told from a write under way.
#[must_use]
pub fn temp_pid(name: &str) -> Option<u32> {
    if !is_temp_name(OsStr::new(name)) {
        return None;
    }
    let (_, tail) = name.rsplit_once(".snapsync-")?;
    tail.split('-').next()?.parse().ok()
}

/// Whether a process with this id runs on this machine (a process of another user counts): a
/// temporary file or a mark whose writer is gone may be removed, one of a live writer never.
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// A fresh temporary name beside `target` for writing it: `.NAME.snapsync-PID-N.tmp`, N counting up in
/// this process (see [`is_temp_name`]).
#[must_use]
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(OsStr::to_string_lossy).unwrap_or_default();
    target.with_file_name(format!(".{name}{}", temp_suffix()))
}

/// `.snapsync-PID-N.tmp`, N counting up in this process.
fn temp_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".snapsync-{}-{n}.tmp", std::process::id())
}

/// Writes `bytes` to `target` through an [`AtomicFile`]: readers see the old content or `bytes`.
///
/// # Errors
/// Any I/O error creating, writing, flushing or renaming the file; the temporary file is then removed
/// and the target left as it was. Without [`WriteOptions::replace`], [`io::ErrorKind::AlreadyExists`]
/// when something is at the target.
pub fn write_atomic(target: &Path, bytes: &[u8], options: WriteOptions) -> io::Result<()> {
    let mut file = AtomicFile::create_for(target, options)?;
    file.write_all(bytes)?;
    file.persist(target).map(drop)
}

/// The temporary name, removed when dropped unless the file was published under its final name.
#[derive(Debug)]
struct TempName {
    path: PathBuf,
    published: bool,
}

impl Drop for TempName {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A file being written under a temporary name, published by [`AtomicFile::persist`] or removed when
/// dropped (see the [module documentation](self)).
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: TempName,
    options: WriteOptions,
}

impl AtomicFile {
    /// Creates an empty temporary file beside `target` (in its folder, which must exist), with the
    /// permissions `File::create` gives (`0o666` less the umask). Nothing is checked at the target
    /// yet: a caller that wants to refuse an existing target before writing checks it first;
    /// [`AtomicFile::persist`] checks again, atomically.
    ///
    /// # Errors
    /// Any I/O error creating the file (the folder is missing or read-only, the disk is full).
    pub fn create_for(target: &Path, options: WriteOptions) -> io::Result<AtomicFile> {
        AtomicFile::create(|| temp_path(target), options)
    }

    /// Creates an empty temporary file in `dir`, named `.snapsync-PID-N.tmp`, for a file whose final name
    /// is not known yet (or a scratch file that is never published: dropping it removes it).
    ///
    /// # Errors
    /// As [`AtomicFile::create_for`].
    pub fn create_in(dir: &Path, options: WriteOptions) -> io::Result<AtomicFile> {
        AtomicFile::create(|| dir.join(temp_suffix()), options)
    }

    fn create(mut name: impl FnMut() -> PathBuf, options: WriteOptions) -> io::Result<AtomicFile> {
        let mut attempts = 1;
        loop {
            let path = name();
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file,
                        temp: TempName {
                            path,
                            published: false,
                        },
                        options,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < NAME_ATTEMPTS => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the file is being written.
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        &self.temp.path
    }

    /// The open file (for its metadata, permissions or times).
    #[must_use]
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// The open file, to write it directly (`io::copy` from another file uses the kernel's copy).
    pub fn as_file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Publishes the file at `target` as the options say (flushed, renamed or linked, folder flushed)
    /// and returns it, still open. `target` should be the one the file was created for, or at least in
    /// the same folder: a rename across filesystems fails.
    ///
    /// The folder flush is best effort: the file is in place by then, so a failure could not be undone,
    /// and some filesystems refuse to open or flush a folder.
    ///
    /// # Errors
    /// Any I/O error flushing or renaming; without [`WriteOptions::replace`],
    /// [`io::ErrorKind::AlreadyExists`] when something is at `target`. The temporary file is then
    /// removed and `target` left as it was.
    pub fn persist(self, target: &Path) -> io::Result<File> {
        let AtomicFile {
            file,
            mut temp,
            options,
        } = self;
        if options.sync_file {
            file.sync_all()?;
        }
        if options.replace {
            fs::rename(&temp.path, target)?;
            temp.published = true;
        } else {
            // A hard link is created only if nothing is at the target, atomically; the temporary name
            // is then dropped (by `temp`).
            fs::hard_link(&temp.path, target)?;
        }
        // Published; whatever records it (a sync state, a manifest) is not written yet.
        crate::chaos::point("after-rename");
        if options.sync_dir {
            sync_folder_of(target);
        }
        Ok(file)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.file.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Flushes the folder holding `path`, best effort (see [`AtomicFile::persist`]).
fn sync_folder_of(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// A file published by [`CheckedFile::persist_if`].
#[derive(Debug)]
pub struct Published {
    /// The file, still open.
    pub file: File,
    /// The bytes written.
    pub size: u64,
    /// BLAKE3 of the bytes written.
    pub checksum: Checksum,
}

/// An [`AtomicFile`] that counts and hashes (BLAKE3) what is written to it, and is published only if
/// that is what was expected ([`CheckedFile::persist_if`]).
#[derive(Debug)]
pub struct CheckedFile {
    file: AtomicFile,
    hasher: blake3::Hasher,
    size: u64,
    /// A copy failed part way: the file may hold bytes that were not hashed.
    broken: bool,
}

impl CheckedFile {
    /// An empty temporary file beside `target`, as [`AtomicFile::create_for`].
    ///
    /// # Errors
    /// As [`AtomicFile::create_for`].
    pub fn create_for(target: &Path, options: WriteOptions) -> io::Result<CheckedFile> {
        AtomicFile::create_for(target, options).map(CheckedFile::new)
    }

    /// An empty temporary file in `dir`, as [`AtomicFile::create_in`].
    ///
    /// # Errors
    /// As [`AtomicFile::create_in`].
    pub fn create_in(dir: &Path, options: WriteOptions) -> io::Result<CheckedFile> {
        AtomicFile::create_in(dir, options).map(CheckedFile::new)
    }

    fn new(file: AtomicFile) -> CheckedFile {
        CheckedFile {
            file,
            hasher: blake3::Hasher::new(),
            size: 0,
            broken: false,
        }
    }

    /// Where the file is being written.
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        self.file.temp_path()
    }

    /// The bytes written so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// BLAKE3 of the bytes written so far.
    #[must_use]
    pub fn checksum(&self) -> Checksum {
        self.hasher.finalize().into()
    }

    /// Sets the file's permissions (before it is published, so it never appears with others).
    ///
    /// # Errors
    /// What the operating system says.
    pub fn set_permissions(&self, permissions: Permissions) -> io::Result<()> {
        self.file.as_file().set_permissions(permissions)
    }

    /// Sets the file's modification time.
    ///
    /// # Errors
    /// What the operating system says.
    pub fn set_modified(&self, time: SystemTime) -> io::Result<()> {
        self.file.as_file().set_modified(time)
    }

    /// Appends all of `from` with the kernel's copy (`copy_file_range`: no trip through this process,
    /// and shared blocks where the filesystem can), then hashes what arrived by reading it back from the
    /// temporary file, so that the check is on the new file itself. Returns the bytes copied.
    ///
    /// # Errors
    /// Any I/O error reading `from`, writing or reading back; the file can then not be published.
    pub fn copy_from(&mut self, from: &mut File) -> io::Result<u64> {
        let start = self.size;
        let copied = io::copy(from, self.file.as_file_mut()).and_then(|copied| {
            update_from_file(&mut self.hasher, self.file.as_file(), start, copied).map(|()| copied)
        });
        match copied {
            Ok(copied) => {
                self.size += copied;
                // The bytes under the temporary name, not published (a copy by the kernel passes no
                // `write` of this file, where the point otherwise is).
                crate::chaos::point("mid-file");
                Ok(copied)
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Publishes the file at `target` (as [`AtomicFile::persist`]) if it has `expected_size` bytes and
    /// the BLAKE3 `expected_hash`, where given; otherwise removes it, leaving `target` as it was.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] or [`Error::HashMismatch`] (checked in that order) when the file is not
    /// what was expected; [`Error::Write`] when flushing or renaming fails (without
    /// [`WriteOptions::replace`], of kind [`io::ErrorKind::AlreadyExists`] when something is at
    /// `target`), or when an earlier [`CheckedFile::copy_from`] failed.
    pub fn persist_if(
        self,
        target: &Path,
        expected_size: Option<u64>,
        expected_hash: Option<&Checksum>,
    ) -> Result<Published> {
        let write_error = |source| Error::Write {
            path: target.to_path_buf(),
            source,
        };
        if self.broken {
            return Err(write_error(io::Error::other(
                "a copy into its temporary file failed part way",
            )));
        }
        if let Some(expected) = expected_size
            && expected != self.size
        {
            return Err(Error::SizeMismatch {
                path: target.to_path_buf(),
                expected,
                actual: self.size,
            });
        }
        let checksum = self.checksum();
        if let Some(expected) = expected_hash
            && *expected != checksum
        {
            return Err(Error::HashMismatch {
                path: target.to_path_buf(),
                expected: *expected,
                actual: checksum,
            });
        }
        let file = self.file.persist(target).map_err(write_error)?;
        Ok(Published {
            file,
            size: self.size,
            checksum,
        })
    }
}

impl Write for CheckedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        // Some bytes under the temporary name, not published.
        crate::chaos::point("mid-file");
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::hash::MMAP_THRESHOLD;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_running_process_is_alive_and_a_reaped_one_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
        assert!(!process_alive(0), "0 names no process");
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn temporary_names_are_recognised_and_carry_the_process_id() {
        let temp = temp_path(Path::new("/x/dir/a.txt"));
        assert_eq!(temp.parent(), Some(Path::new("/x/dir")));
        let name = temp.file_name().unwrap();
        assert!(is_temp_name(name), "{temp:?}");
        let name = name.to_str().unwrap();
        let prefix = format!(".a.txt.snapsync-{}-", std::process::id());
        assert!(name.starts_with(&prefix), "{name}");
        assert_ne!(temp, temp_path(Path::new("/x/dir/a.txt")), "each name is fresh");
        for other in ["a.txt", ".a.txt", "a.snapsync-1-2.tmp", ".a.snapsync-1-2.txt"] {
            assert!(!is_temp_name(OsStr::new(other)), "{other}");
        }

        let dir = tempfile::tempdir().unwrap();
        let scratch = AtomicFile::create_in(dir.path(), WriteOptions::UNSYNCED).unwrap();
        assert!(is_temp_name(scratch.temp_path().file_name().unwrap()));
        assert_eq!(scratch.temp_path().parent(), Some(dir.path()));
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_atomic(&target, b"first", WriteOptions::DURABLE).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first");
        write_atomic(&target, b"second, longer", WriteOptions::UNSYNCED).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn the_new_file_gets_the_permissions_file_create_gives() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let target = dir.path().join("atomic");
        write_atomic(&target, b"x", WriteOptions::UNSYNCED).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode(&target), mode(&plain));
    }

    /// A reader never sees a torn file, while a writer keeps replacing it with contents of other
    /// sizes: each read is one whole version. Writing in place (truncate, then write) fails this.
    #[test]
    fn a_reader_sees_the_old_or_the_new_content_never_a_mix() {
        const ROUNDS: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let version = |i: usize| vec![b'a' + (i % 26) as u8; 64 * 1024 + (i % 7) * 4099];
        write_atomic(&target, &version(0), WriteOptions::UNSYNCED).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(2));
        let reader = {
            let (target, done, start) = (target.clone(), Arc::clone(&done), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    let content = fs::read(&target).expect("the target is always there");
                    let whole = content.len() >= 64 * 1024
                        && (content.len() - 64 * 1024) % 4099 == 0
                        && content.iter().all(|b| *b == content[0]);
                    assert!(whole, "a torn file of {} bytes", content.len());
                    reads += 1;
                }
                reads
            })
        };
        start.wait();
        for i in 1..ROUNDS {
            write_atomic(&target, &version(i), WriteOptions::UNSYNCED).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(fs::read(&target).unwrap(), version(ROUNDS - 1));
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_dropped_writer_leaves_no_temporary_file_and_the_old_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        fs::write(&target, b"old").unwrap();
        let mut file = AtomicFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"half of the new con").unwrap();
        let temp = file.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(file);
        assert!(!temp.exists());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["out"]);

        // The same for a checked file dropped on another thread (as an async caller's would be).
        let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"new").unwrap();
        std::thread::spawn(move || drop(file)).join().unwrap();
        assert_eq!(names(dir.path()), ["out"]);
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_target() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a non-empty folder is at the target.
        let target = dir.path().join("busy");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"kept").unwrap();
        let err = write_atomic(&target, b"new", WriteOptions::DURABLE).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::IsADirectory | io::ErrorKind::DirectoryNotEmpty
            ),
            "{err}"
        );
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"kept");
        assert_eq!(names(dir.path()), ["busy"]);

        // The copy fails: the source is a folder.
        let target = dir.path().join("copy");
        fs::write(&target, b"old").unwrap();
        let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"start").unwrap();
        let mut folder = File::open(dir.path()).unwrap();
        assert!(file.copy_from(&mut folder).is_err());
        let err = file.persist_if(&target, None, None).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["busy", "copy"]);

        // Nothing can be created: the folder is missing.
        let missing = dir.path().join("missing/out");
        assert!(write_atomic(&missing, b"new", WriteOptions::DURABLE).is_err());
        assert_eq!(names(dir.path()), ["busy", "copy"]);
    }

    #[test]
    fn no_clobber_refuses_anything_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriteOptions::DURABLE.no_clobber();
        let target = dir.path().join("new");
        write_atomic(&target, b"first", options).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first");
        let err = write_atomic(&target, b"second", options).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"first");

        // A dangling symbolic link counts as something, and is not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let err = write_atomic(&link, b"x", options).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("nowhere").exists());

        // A file that appears while the new one is being written wins.
        let racing = dir.path().join("racing");
        let mut file = CheckedFile::create_for(&racing, options).unwrap();
        file.write_all(b"mine").unwrap();
        fs::write(&racing, b"theirs").unwrap();
        let err = file.persist_if(&racing, Some(4), None).unwrap_err();
        assert!(
            matches!(&err, Error::Write { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(fs::read(&racing).unwrap(), b"theirs");
        assert_eq!(names(dir.path()), ["link", "new", "racing"]);
    }

    #[test]
    fn a_size_or_hash_mismatch_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        fs::write(&target, b"old").unwrap();
        let right = Checksum::of(b"new content");

        let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"new cont").unwrap();
        let err = file.persist_if(&target, Some(11), Some(&right)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 11,
                    actual: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} was not written: 8 bytes arrived, 11 were expected",
                target.display()
            )
        );

        let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"new CONTENT").unwrap();
        let actual = file.checksum();
        let err = file.persist_if(&target, Some(11), Some(&right)).unwrap_err();
        assert!(
            matches!(err, Error::HashMismatch { expected, actual: a, .. } if expected == right && a == actual),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("not the expected {right}")),
            "{err}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);

        let mut file = CheckedFile::create_for(&target, WriteOptions::DURABLE).unwrap();
        file.write_all(b"new ").unwrap();
        file.write_all(b"content").unwrap();
        let published = file.persist_if(&target, Some(11), Some(&right)).unwrap();
        assert_eq!((published.size, published.checksum), (11, right));
        assert_eq!(fs::read(&target).unwrap(), b"new content");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_copy_is_hashed_from_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        // Small, and large enough to be hashed through a mapping; after a write, and from the start.
        for (prefix, len) in [
            (&b""[..], 1000usize),
            (&b"head"[..], 3 << 20),
            (&b""[..], MMAP_THRESHOLD as usize + 4097),
        ] {
            let content: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let source = dir.path().join("source");
            fs::write(&source, &content).unwrap();
            let target = dir.path().join("copy");
            let mut file = CheckedFile::create_for(&target, WriteOptions::UNSYNCED).unwrap();
            file.write_all(prefix).unwrap();
            assert_eq!(
                file.copy_from(&mut File::open(&source).unwrap()).unwrap(),
                len as u64
            );
            let whole = [prefix, &content].concat();
            let published = file
                .persist_if(&target, Some(whole.len() as u64), Some(&Checksum::of(&whole)))
                .unwrap();
            assert_eq!(published.size, whole.len() as u64);
            assert_eq!(fs::read(&target).unwrap(), whole);
        }
    }
}
