//! Applying a delta to a basis, for deltas from anywhere.
//!
//! The delta is read as a stream and checked command by command before anything is done with it: an
//! unknown command byte, a zero or oversized length, a COPY reaching past the end of the basis, a delta
//! that ends inside a command or without END, and data after END are all errors naming the offset in the
//! delta. The output can be capped. Memory is two fixed buffers, whatever the sizes involved.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::format::{DELTA_MAGIC, Op, decode_op, read_be};

/// Bytes moved per read from the basis or the delta.
const CHUNK: usize = 1024 * 1024;

/// A basis to copy from: anything with a length that can be read at an offset.
pub trait Basis: Sync {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads into `buf` from `offset`; returns the number of bytes read (0 at the end).
    ///
    /// # Errors
    /// Any I/O error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Basis for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A basis file, with the length it had when opened.
#[derive(Debug)]
pub struct FileBasis {
    file: File,
    len: u64,
}

impl FileBasis {
    /// Wraps an open file.
    ///
    /// # Errors
    /// [`Error::Read`] when its metadata cannot be read.
    pub fn new(file: File) -> Result<Self> {
        let len = file.metadata().map_err(Error::read("basis"))?.len();
        Ok(FileBasis { file, len })
    }
}

impl Basis for FileBasis {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

/// Limits for deltas that are not trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchOptions {
    /// Refuse to produce more than this many bytes.
    pub max_output: Option<u64>,
}

/// What a patch run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// Bytes of delta read.
    pub delta_bytes: u64,
    /// Bytes written.
    pub output_bytes: u64,
    /// LITERAL commands applied.
    pub literal_cmds: u64,
    /// COPY commands applied.
    pub copy_cmds: u64,
}

/// Applies `delta` to `basis`, writing the result to `out`.
///
/// # Errors
/// [`Error::BadMagic`], [`Error::Truncated`], [`Error::CorruptDelta`], [`Error::CopyOutOfRange`],
/// [`Error::OutputTooLarge`], and I/O errors for each stream.
pub fn apply_delta(
    basis: &dyn Basis,
    delta: &mut dyn Read,
    out: &mut dyn Write,
    options: PatchOptions,
) -> Result<PatchStats> {
    let mut delta = Reader {
        inner: BufReader::with_capacity(CHUNK, delta),
        pos: 0,
    };
    let mut out = BufWriter::with_capacity(CHUNK, out);
    let mut stats = PatchStats::default();
    let mut buf = vec![0u8; CHUNK];

    let mut magic = [0u8; 4];
    let got = delta.read_full(&mut magic)?;
    if got < 4 {
        return Err(Error::Truncated {
            what: "delta",
            detail: format!("{got} bytes, too short for a header"),
        });
    }
    let magic = u32::from_be_bytes(magic);
    if magic != DELTA_MAGIC {
        return Err(Error::BadMagic {
            what: "delta",
            found: magic,
            expected: "0x72730236",
        });
    }

    loop {
        let at = delta.pos;
        let mut byte = [0u8; 1];
        if delta.read_full(&mut byte)? == 0 {
            return Err(Error::Truncated {
                what: "delta",
                detail: format!("it ends at byte {at} without an END command"),
            });
        }
        let op = decode_op(byte[0]).ok_or_else(|| Error::CorruptDelta {
            offset: at,
            reason: format!("command byte {:#04x} is reserved", byte[0]),
        })?;
        match op {
            Op::End => {
                if delta.read_full(&mut byte)? != 0 {
                    return Err(Error::CorruptDelta {
                        offset: delta.pos - 1,
                        reason: "data after the END command".into(),
                    });
                }
                break;
            }
            Op::LiteralInline(len) => literal(&mut delta, &mut out, &mut buf, at, len, options, &mut stats)?,
            Op::Literal { len_width } => {
                let len = delta.param(len_width, at)?;
                if len == 0 {
                    return Err(Error::CorruptDelta {
                        offset: at,
                        reason: "LITERAL of 0 bytes".into(),
                    });
                }
                literal(&mut delta, &mut out, &mut buf, at, len, options, &mut stats)?;
            }
            Op::Copy {
                offset_width,
                len_width,
            } => {
                let start = delta.param(offset_width, at)?;
                let len = delta.param(len_width, at)?;
                if len == 0 {
                    return Err(Error::CorruptDelta {
                        offset: at,
                        reason: "COPY of 0 bytes".into(),
                    });
                }
                let end = start.checked_add(len).filter(|&end| end <= basis.len()).ok_or(
                    Error::CopyOutOfRange {
                        offset: at,
                        start,
                        end: start.saturating_add(len),
                        basis_len: basis.len(),
                    },
                )?;
                grow(&mut stats, len, options)?;
                copy(basis, &mut out, &mut buf, start, end)?;
                stats.copy_cmds += 1;
            }
        }
    }
    out.flush().map_err(Error::write("output"))?;
    stats.delta_bytes = delta.pos;
    Ok(stats)
}

/// Counts `len` more output bytes against the limit.
fn grow(stats: &mut PatchStats, len: u64, options: PatchOptions) -> Result<()> {
    let total = stats.output_bytes.checked_add(len);
    match (total, options.max_output) {
        (Some(total), Some(limit)) if total > limit => Err(Error::OutputTooLarge { limit }),
        (Some(total), _) => {
            stats.output_bytes = total;
            Ok(())
        }
        (None, limit) => Err(Error::OutputTooLarge {
            limit: limit.unwrap_or(u64::MAX),
        }),
    }
}

fn literal(
    delta: &mut Reader<'_>,
    out: &mut dyn Write,
    buf: &mut [u8],
    at: u64,
    len: u64,
    options: PatchOptions,
    stats: &mut PatchStats,
) -> Result<()> {
    grow(stats, len, options)?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let got = delta.read_full(&mut buf[..n])?;
        if got < n {
            return Err(Error::Truncated {
                what: "delta",
                detail: format!(
                    "the LITERAL at byte {at} needs {len} bytes but the delta ends after {}",
                    len - left + got as u64
                ),
            });
        }
        out.write_all(&buf[..n]).map_err(Error::write("output"))?;
        left -= n as u64;
    }
    stats.literal_cmds += 1;
    Ok(())
}

fn copy(basis: &dyn Basis, out: &mut dyn Write, buf: &mut [u8], start: u64, end: u64) -> Result<()> {
    let mut at = start;
    while at < end {
        let n = usize::try_from(end - at).unwrap_or(usize::MAX).min(buf.len());
        let got = basis.read_at(&mut buf[..n], at).map_err(Error::read("basis"))?;
        if got == 0 {
            return Err(Error::Read {
                what: "basis",
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("it ended at byte {at} while being read"),
                ),
            });
        }
        out.write_all(&buf[..got]).map_err(Error::write("output"))?;
        at += got as u64;
    }
    Ok(())
}

/// The delta stream, counting its offset.
struct Reader<'a> {
    inner: BufReader<&'a mut dyn Read>,
    pos: u64,
}

impl Reader<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Read {
                        what: "delta",
                        source: e,
                    });
                }
            }
        }
        self.pos += filled as u64;
        Ok(filled)
    }

    /// A command parameter of `width` bytes, for the command at `at`.
    fn param(&mut self, width: usize, at: u64) -> Result<u64> {
        let mut bytes = [0u8; 8];
        if self.read_full(&mut bytes[..width])? < width {
            return Err(Error::Truncated {
                what: "delta",
                detail: format!("it ends inside the command at byte {at}"),
            });
        }
        let value = read_be(&bytes[..width]);
        // librsync reads parameters as signed 64-bit integers and refuses negative ones.
        if value > i64::MAX as u64 {
            return Err(Error::CorruptDelta {
                offset: at,
                reason: format!("parameter {value} is out of range"),
            });
        }
        Ok(value)
    }
}
