//! Where command results go: standard output, or a file written under a temporary name and moved into
//! place only when complete (and verified, where the command verifies).
//!
//! The file is a [`snapsync_core::atomic::AtomicFile`]. A failed or killed run therefore never leaves a
//! torn file at the destination: the old file (if any) is untouched, and the leftover is a
//! `.NAME.snapsync-PID-N.tmp` beside it, removed on any error this process sees. Without `--force` an
//! existing file is never replaced, as with rdiff; the final step is a hard link, which fails rather than
//! replace a file that appeared meanwhile.
//!
//! Outputs never destroy what they name: with `--force`, a FIFO or a device is written into where it is
//! (as rdiff does; `patch -f B D /dev/null` discards the result, it does not replace /dev/null), and a
//! symbolic link is followed, so the link stays and its target is replaced whole.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use snapsync_core::atomic::{AtomicFile, WriteOptions};

/// A command's output stream.
pub(crate) enum Output {
    /// Standard output, or a special file (a FIFO, a device) written where it is.
    Stream(BufWriter<File>),
    /// A regular file, written under a temporary name and moved into place.
    File(PendingFile),
}

/// How many symbolic links an output name may go through (as the kernel's limit).
const MAX_LINKS: usize = 40;

impl Output {
    /// `-` for standard output, otherwise the file at `path`. An existing name is refused without
    /// `force`; with it, as rdiff writes: a FIFO or a device is written into where it is (never replaced
    /// by a regular file), and a symbolic link is followed, its target (made if the link dangles)
    /// replaced by a temporary file moved into place, so the link stays a link.
    pub(crate) fn open(path: &Path, force: bool) -> anyhow::Result<Output> {
        if path == Path::new("-") {
            // Straight to file descriptor 1: `io::Stdout` is line-buffered, which would search binary
            // output for newlines and cut the writes at them.
            let stdout = io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot use standard output")?;
            return Ok(Output::Stream(BufWriter::with_capacity(
                1 << 20,
                File::from(stdout),
            )));
        }
        if !force {
            return Ok(Output::File(PendingFile::create(path, false)?));
        }
        let mut target = path.to_path_buf();
        for _ in 0..MAX_LINKS {
            let meta = match fs::symlink_metadata(&target) {
                Ok(meta) => meta,
                // Nothing there (a dangling link's target, or a new name): a new regular file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Output::File(PendingFile::create(&target, true)?));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot use {}", target.display())),
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                let link = fs::read_link(&target)
                    .with_context(|| format!("cannot read the link {}", target.display()))?;
                target = match target.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
                continue;
            }
            if kind.is_file() {
                return Ok(Output::File(PendingFile::create(&target, true)?));
            }
            if kind.is_dir() {
                bail!("{} is a directory", target.display());
            }
            if kind.is_socket() {
                bail!("{} is a socket: it cannot be written to", target.display());
            }
            // A FIFO, a character or a block device: written into, as rdiff does.
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("cannot open {} to write", target.display()))?;
            return Ok(Output::Stream(BufWriter::with_capacity(1 << 20, file)));
        }
        bail!(
            "{}: more than {MAX_LINKS} symbolic links in a row",
            path.display()
        )
    }

    /// Whether the bytes go straight to their destination (standard output, a FIFO, a device) rather
    /// than to a temporary file.
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Output::Stream(_))
    }

    /// Flushes and, for a file, moves it into place (not once Ctrl-C came: the file is then dropped).
    pub(crate) fn commit(self) -> anyhow::Result<()> {
        check_interrupted()?;
        match self {
            Output::Stream(mut out) => Ok(out.flush()?),
            Output::File(file) => file.commit(),
        }
    }
}

/// `Err` once Ctrl-C (or SIGTERM) came, for the commands that stop by failing their next read or write:
/// the command stops there (exit status 3) and a file output is dropped unpublished.
pub(crate) fn check_interrupted() -> io::Result<()> {
    if crate::interrupt::interrupted() {
        Err(io::Error::other("interrupted"))
    } else {
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check_interrupted()?;
        match self {
            Output::Stream(out) => out.write(buf),
            Output::File(file) => file.out.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        check_interrupted()?;
        match self {
            Output::Stream(out) => out.write_all(buf),
            Output::File(file) => file.out.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stream(out) => out.flush(),
            Output::File(file) => file.out.flush(),
        }
    }
}

/// A file being written under a temporary name in its destination directory; dropped unpublished (an
/// error, a failed check), the temporary file is removed.
pub(crate) struct PendingFile {
    out: BufWriter<AtomicFile>,
    path: PathBuf,
    force: bool,
}

impl PendingFile {
    fn create(path: &Path, force: bool) -> anyhow::Result<PendingFile> {
        if !force && fs::symlink_metadata(path).is_ok() {
            bail!("{} exists; use --force to replace it", path.display());
        }
        if path.file_name().is_none() {
            bail!("{} is not a file name", path.display());
        }
        // Flushed with its folder: once the command succeeds, the output is on disk. Without --force the
        // final step fails rather than replace a file that appeared meanwhile.
        let options = if force {
            WriteOptions::DURABLE
        } else {
            WriteOptions::DURABLE.no_clobber()
        };
        let file = AtomicFile::create_for(path, options)
            .with_context(|| format!("cannot create a temporary file beside {}", path.display()))?;
        Ok(PendingFile {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            force,
        })
    }

    fn commit(self) -> anyhow::Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        let temp = file.temp_path().to_path_buf();
        file.persist(&self.path).with_context(|| {
            if self.force {
                format!("cannot move {} to {}", temp.display(), self.path.display())
            } else {
                format!("cannot create {}", self.path.display())
            }
        })?;
        Ok(())
    }
}

/// Parses a size such as `1048576`, `64K`, `10M`, `2G` or `1T` (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let multiplier: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("unknown unit in {text:?} (use K, M, G or T)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 1048576, 64K, 10M, 2G)"))
}

/// A line as it may be printed: a name holding a newline or another control character (legal in a
/// file name) is shown escaped (`a\nb`), so one path is one line and cannot fake others; and the
/// password of any URL in it is replaced by `***` (snapsync-store's `redact_text`, the one redaction
/// every message, warning and error line of the binary goes through).
pub(crate) fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    let line: std::borrow::Cow<'_, str> = if line.contains("://") {
        snapsync_store::redact_text(line).into()
    } else {
        line.into()
    };
    if line.chars().any(char::is_control) {
        line.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_size, printable};

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1TB"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn control_characters_in_names_are_shown_escaped() {
        assert_eq!(printable("upload a.txt"), "upload a.txt");
        assert_eq!(
            printable("conflict: evil\nerror: fake\t.txt"),
            "conflict: evil\\nerror: fake\\t.txt"
        );
    }
}
