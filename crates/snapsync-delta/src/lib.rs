//! snapsync-delta: rsync-style binary deltas in librsync's formats.
//!
//! A **signature** describes a basis file block by block (a rolling checksum and a strong checksum per
//! block); a **delta** against that signature describes a new file as COPYs of basis blocks and LITERAL
//! bytes; **patching** the basis with the delta rebuilds the new file. All three formats are librsync's,
//! so files made here and by `rdiff` 2.3 are interchangeable in both directions.
//!
//! - Streaming: signature and delta read their input once, through fixed windows; patch needs a basis it
//!   can read at offsets ([`Basis`]) and streams the delta. Memory does not grow with file size.
//! - Parallel: signature hashes blocks on all cores; delta scans windows in parallel chunks and stitches
//!   them so the matches are exactly those of a sequential scan.
//! - Hostile input gives an [`Error`], never a panic, and no allocation is sized by an unchecked number.
//!
//! ```
//! use snapsync_delta::{delta, patch, signature, PatchOptions, SignatureKind, SignatureParams};
//!
//! let basis = b"The quick brown fox jumps over the lazy dog. ".repeat(100);
//! let mut new = basis.clone();
//! new.splice(1000..1010, *b"a brand new middle");
//!
//! let params = SignatureParams::recommended(SignatureKind::default(), Some(basis.len() as u64), None, None)?;
//! let sig = signature(&basis, params)?;
//! let d = delta(&sig, &new)?;
//! assert!(d.len() < new.len() / 4);
//! assert_eq!(patch(&basis, &d, PatchOptions::default())?, new);
//! # Ok::<(), snapsync_delta::Error>(())
//! ```
//!
//! # Security
//!
//! - **MD4 is broken.** Collisions can be made on purpose, so whoever controls the new file (or the
//!   basis) can make a block that passes for another, and the patched result is then wrong. Use BLAKE2
//!   (the default) for anything that matters, and prefer the full strong length (32 bytes).
//! - **Even BLAKE2 with a short strong length** (`--sum-size`) can collide by chance on large files;
//!   [`SignatureParams::min_strong_len`] gives librsync's minimum for a basis size.
//! - **Verify the result.** A delta made against a different basis patches "successfully" into garbage.
//!   Compare a strong hash of the output with one taken from the original new file (the CLI's
//!   `snapsync patch --expect-blake3` does this before it moves the output into place).
//! - **Cap untrusted deltas.** A small delta can describe a huge output (a COPY of the whole basis, many
//!   times over): set [`PatchOptions::max_output`] when the delta comes from elsewhere.

#![forbid(unsafe_code)]

mod checksum;
mod delta;
mod error;
mod format;
mod patch;
mod signature;

pub use delta::{DeltaStats, write_delta};
pub use error::{Error, Result};
pub use format::{
    DEFAULT_BLOCK_LEN, DELTA_MAGIC, MAX_BLOCK_LEN, SignatureKind, SignatureParams, StrongKind, WeakKind,
};
pub use patch::{Basis, FileBasis, PatchOptions, PatchStats, apply_delta};
pub use signature::{IndexedSignature, Signature, SignatureStats, write_signature};

/// The signature of `basis`, in memory.
///
/// # Errors
/// [`Error::InvalidParams`].
pub fn signature(basis: &[u8], params: SignatureParams) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_signature(&mut &basis[..], &mut out, params, None)?;
    Ok(out)
}

/// The delta from the basis described by `signature` to `new`, in memory.
///
/// # Errors
/// Any error reading the signature.
pub fn delta(signature: &[u8], new: &[u8]) -> Result<Vec<u8>> {
    let index = IndexedSignature::new(Signature::read(&mut &signature[..])?);
    let mut out = Vec::new();
    write_delta(&index, &mut &new[..], &mut out, None)?;
    Ok(out)
}

/// `basis` patched with `delta`, in memory.
///
/// # Errors
/// Any error in the delta, including [`Error::OutputTooLarge`] past `options.max_output`.
pub fn patch(basis: &[u8], delta: &[u8], options: PatchOptions) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    apply_delta(&basis, &mut &delta[..], &mut out, options)?;
    Ok(out)
}
