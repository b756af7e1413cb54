//! The digests of a distribution, computed in one pass as it is downloaded (or read): sha256 (checked
//! against the index, sent as `sha256_digest`), md5 and BLAKE2b-256 (sent as twine sends them).

use std::io::Read;
use std::path::Path;

use md5::Digest as _;

use crate::error::{Error, Result};

/// A file's size and digests, lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashes {
    /// sha256.
    pub sha256: String,
    /// md5.
    pub md5: String,
    /// BLAKE2b with a 32-byte digest.
    pub blake2_256: String,
    /// Bytes.
    pub size: u64,
}

/// Digests being computed.
pub(crate) struct Hasher {
    sha256: sha2::Sha256,
    md5: md5::Md5,
    blake2: blake2b_simd::State,
    size: u64,
}

impl Hasher {
    pub(crate) fn new() -> Hasher {
        Hasher {
            sha256: sha2::Sha256::new(),
            md5: md5::Md5::new(),
            blake2: blake2b_simd::Params::new().hash_length(32).to_state(),
            size: 0,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.md5.update(bytes);
        self.blake2.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub(crate) fn finish(self) -> Hashes {
        Hashes {
            sha256: hex(&self.sha256.finalize()),
            md5: hex(&self.md5.finalize()),
            blake2_256: self.blake2.finalize().to_hex().to_string(),
            size: self.size,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The digests of a local file. Blocking.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be read.
pub fn hash_file(path: &Path) -> Result<Hashes> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Hasher::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let mut h = Hasher::new();
        h.update(b"abc");
        let h = h.finish();
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            h.blake2_256,
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
        assert_eq!(h.size, 3);
    }
}
