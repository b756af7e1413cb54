//! BLAKE3 checksums: the [`Checksum`] value, file hashing, and the directory (merkle) rule.
//!
//! Files below [`MMAP_THRESHOLD`] are read through a per-thread buffer and hashed on the calling thread;
//! the walk runs many of those in parallel. Larger files are memory-mapped and hashed with BLAKE3's
//! multi-threaded `update_rayon`, so a single huge file uses every core. The mapping is guarded against
//! concurrent truncation (see `sigbus.rs`): a file that shrinks under us gives an error, not a crash.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use crate::error::Error;
use crate::sigbus;

/// Files at least this large are memory-mapped and hashed on all cores; smaller ones are read.
///
/// Measured on the 2-core bench machine (docs/BENCHMARKS.md): below a few MiB the `mmap`/`munmap`
/// system calls and TLB shootdowns cost more than copying through a buffer, and files of that size are
/// already hashed in parallel with each other by the walk.
pub const MMAP_THRESHOLD: u64 = 16 * 1024 * 1024;

/// Size of the per-thread read buffer for files below [`MMAP_THRESHOLD`].
const READ_BUFFER: usize = 1024 * 1024;

/// A BLAKE3 digest: the checksum of a file, of a directory (by the merkle rule) or of a manifest.
///
/// Displays and parses as 64 lowercase hex digits, as in the manifest format.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// The checksum of empty content: of an empty file, and of an empty directory.
    pub const EMPTY: Checksum = Checksum(decode_hex_const(
        b"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    ));

    /// Wraps 32 raw digest bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Checksum(bytes)
    }

    /// The 32 raw digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// BLAKE3 of `data`.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        Checksum(*blake3::hash(data).as_bytes())
    }

    /// The 64 lowercase hex digits.
    #[must_use]
    pub fn to_hex(&self) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(byte >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
        }
        Hex(out)
    }

    /// Parses exactly 64 lowercase hex digits (the only form the manifest format allows).
    #[must_use]
    pub fn parse_hex(text: &[u8]) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            out[i] = (lower_hex_value(pair[0])? << 4) | lower_hex_value(pair[1])?;
        }
        Some(Checksum(out))
    }
}

impl From<blake3::Hash> for Checksum {
    fn from(hash: blake3::Hash) -> Self {
        Checksum(*hash.as_bytes())
    }
}

impl FromStr for Checksum {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Checksum::parse_hex(text.as_bytes()).ok_or_else(|| Error::InvalidChecksum {
            text: text.chars().take(80).collect(),
        })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", &*self.to_hex())
    }
}

/// The hex form of a [`Checksum`], on the stack.
#[derive(Clone, Copy)]
pub struct Hex([u8; 64]);

impl std::ops::Deref for Hex {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever written into the array.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

const fn lower_hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

const fn decode_hex_const(text: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        let (Some(high), Some(low)) = (lower_hex_value(text[2 * i]), lower_hex_value(text[2 * i + 1])) else {
            panic!("invalid hex constant");
        };
        out[i] = (high << 4) | low;
        i += 1;
    }
    out
}

/// The checksum of a directory from the checksums of its direct children (snapdir's merkle rule).
///
/// The children's hex checksums are sorted, duplicates removed, concatenated without separator, and
/// the result hashed: `cut -d' ' -f3 | sort -u | tr -d '\n' | b3sum`. An empty directory therefore has
/// [`Checksum::EMPTY`], and two children with equal content count once.
#[must_use]
pub fn directory_checksum(children: impl IntoIterator<Item = Checksum>) -> Checksum {
    let mut children: Vec<Checksum> = children.into_iter().collect();
    // Lowercase hex preserves byte order, so sorting the raw digests sorts their hex forms.
    children.sort_unstable();
    children.dedup();
    let mut hasher = blake3::Hasher::new();
    for child in &children {
        hasher.update(child.to_hex().as_bytes());
    }
    hasher.finalize().into()
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes the file at `path`; returns its checksum and the number of bytes hashed.
///
/// # Errors
/// Any I/O error from opening or reading the file. A memory-mapped file that is truncated while being
/// hashed gives an error for which [`is_truncated_while_mapped`] is true.
pub fn hash_file(path: &Path) -> io::Result<(Checksum, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    hash_open_file(&file, len)
}

/// Hashes an open file whose size was `len` when it was listed.
pub(crate) fn hash_open_file(file: &File, len: u64) -> io::Result<(Checksum, u64)> {
    if len >= MMAP_THRESHOLD
        && let Some(hashed) = sigbus::hash_mapped(file, len, || {})?
    {
        return Ok(hashed);
    }
    hash_read(file)
}

/// Hashes everything `reader` yields, through the per-thread buffer.
///
/// # Errors
/// Any I/O error from `reader`.
pub fn hash_read(mut reader: impl Read) -> io::Result<(Checksum, u64)> {
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < READ_BUFFER {
            buffer.resize(READ_BUFFER, 0);
        }
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        loop {
            let n = match reader.read(buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            total += n as u64;
        }
        Ok((hasher.finalize().into(), total))
    })
}

/// Feeds `len` bytes of `file`, starting at `offset`, into `hasher`: a large range from the start of the
/// file memory-mapped and hashed on all cores (as [`hash_file`] does), anything else read through the
/// per-thread buffer. The file's position is not used or moved.
///
/// # Errors
/// Any I/O error from reading; a file that ends before `offset + len` is `UnexpectedEof`.
pub(crate) fn update_from_file(
    hasher: &mut blake3::Hasher,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if offset == 0 && len >= MMAP_THRESHOLD && sigbus::update_mapped(hasher, file, len, || {})? {
        return Ok(());
    }
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < READ_BUFFER {
            buffer.resize(READ_BUFFER, 0);
        }
        let mut done = 0u64;
        while done < len {
            let want = usize::try_from(len - done).map_or(buffer.len(), |left| left.min(buffer.len()));
            let n = match file.read_at(&mut buffer[..want], offset + done) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended after {done} of {len} bytes"),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            done += n as u64;
        }
        Ok(())
    })
}

/// True when `error` says a memory-mapped file shrank while it was being hashed.
#[must_use]
pub fn is_truncated_while_mapped(error: &io::Error) -> bool {
    sigbus::is_truncation(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn empty_constant_is_blake3_of_nothing() {
        assert_eq!(Checksum::EMPTY, Checksum::of(b""));
        assert_eq!(
            Checksum::EMPTY.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let c = Checksum::of(b"foo\n");
        assert_eq!(
            c.to_string(),
            "49dc870df1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
        );
        assert_eq!(c.to_string().parse::<Checksum>().unwrap(), c);
        assert!(
            "49DC870DF1DE7FD60794CEBCE449F5CCDAE575AFFAA67A24B62ACB03E039DB92"
                .parse::<Checksum>()
                .is_err()
        );
        assert!("49dc".parse::<Checksum>().is_err());
        assert!(
            "g9dc870df1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
                .parse::<Checksum>()
                .is_err()
        );
    }

    #[test]
    fn directory_checksum_matches_snapdir_goldens() {
        // An empty directory.
        assert_eq!(directory_checksum([]), Checksum::EMPTY);
        // Two empty files collapse under `sort -u` (snapdir's manifest spec, section 3).
        assert_eq!(
            directory_checksum([Checksum::EMPTY, Checksum::EMPTY]).to_string(),
            "dba5865c0d91b17958e4d2cac98c338f85cbbda07b71a020ab16c391b5e7af4b"
        );
    }

    #[test]
    fn read_and_mapped_paths_agree() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 1023, 1024 * 1024 + 7, MMAP_THRESHOLD as usize + 4097] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let (sum, n) = hash_file(&path).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(sum, Checksum::of(&data), "len {len}");
        }
    }

    #[test]
    fn files_larger_than_a_window_hash_the_same_as_in_memory() {
        // Two whole windows and a ragged end, with bytes that differ everywhere.
        let len = usize::try_from(2 * sigbus::WINDOW).unwrap() + 12_345;
        let mut content = vec![0u8; len];
        let mut state = 0x1234_5678_u32;
        for byte in &mut content {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *byte = state.to_le_bytes()[3];
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, &content).unwrap();
        let file = File::open(&path).unwrap();
        assert!(crate::install_sigbus_guard());
        let (sum, n) = sigbus::hash_mapped(&file, len as u64, || {}).unwrap().unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(sum, Checksum::of(&content));
        // Shrunk to less than one window after the first was mapped: an error, as for one mapping.
        let result = sigbus::hash_mapped(&file, len as u64, || {
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(4096)
                .unwrap();
        });
        assert!(is_truncated_while_mapped(&result.unwrap_err()));
    }

    #[test]
    fn truncation_while_mapped_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks");
        let mut f = File::create(&path).unwrap();
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..32 {
            f.write_all(&chunk).unwrap();
        }
        drop(f);
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        assert!(crate::install_sigbus_guard());
        let result = sigbus::hash_mapped(&file, len, || {
            // Another process truncating the file after it was mapped: touching the pages past the
            // new end raises SIGBUS, which the guard must turn into an error.
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(1024 * 1024)
                .unwrap();
        });
        let err = result.expect_err("a truncated mapping must not hash successfully");
        assert!(is_truncated_while_mapped(&err), "{err}");

        // The guard is reusable: the next mapping hashes normally.
        std::fs::write(&path, vec![1u8; MMAP_THRESHOLD as usize]).unwrap();
        let file = File::open(&path).unwrap();
        let (sum, n) = sigbus::hash_mapped(&file, MMAP_THRESHOLD, || {})
            .unwrap()
            .unwrap();
        assert_eq!(n, MMAP_THRESHOLD);
        assert_eq!(sum, Checksum::of(&vec![1u8; MMAP_THRESHOLD as usize]));
    }
}
