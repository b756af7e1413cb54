//! The one error type of snapsync-delta.
//!
//! Rules: every variant says which stream it concerns (basis, signature, new file, delta, output), and a
//! corrupt delta names the byte offset in the delta where the problem starts. Messages are lower case,
//! without a trailing period, and do not repeat their `source`. Nothing here panics on bad input, and no
//! allocation is sized by a number read from an input before that number has been checked.

use std::io;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong making or applying a signature or a delta.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading one of the inputs failed.
    #[error("cannot read the {what}")]
    Read {
        /// `basis`, `signature`, `new file` or `delta`.
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Writing the output failed.
    #[error("cannot write the {what}")]
    Write {
        /// `signature`, `delta` or `output`.
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The input does not start with the magic number of the expected format.
    #[error("not a librsync {what}: it starts with {found:#010x}, expected {expected}")]
    BadMagic {
        /// `signature` or `delta`.
        what: &'static str,
        /// The first four bytes, big-endian.
        found: u32,
        /// The accepted magic numbers.
        expected: &'static str,
    },

    /// The input ended in the middle of something.
    #[error("the {what} is truncated: {detail}")]
    Truncated {
        /// `signature` or `delta`.
        what: &'static str,
        /// Where it ended.
        detail: String,
    },

    /// A signature whose header or records cannot be right.
    #[error("corrupt signature: {0}")]
    CorruptSignature(String),

    /// A delta command that cannot be right.
    #[error("corrupt delta at byte {offset}: {reason}")]
    CorruptDelta {
        /// Offset of the command in the delta.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A COPY command reaching past the end of the basis.
    #[error(
        "corrupt delta at byte {offset}: COPY of bytes {start}..{end} but the basis has {basis_len} bytes"
    )]
    CopyOutOfRange {
        /// Offset of the command in the delta.
        offset: u64,
        /// First basis byte to copy.
        start: u64,
        /// One past the last basis byte to copy.
        end: u64,
        /// Length of the basis.
        basis_len: u64,
    },

    /// Applying the delta would produce more than the caller allowed.
    #[error("the patched output would exceed the limit of {limit} bytes")]
    OutputTooLarge {
        /// The limit that was set.
        limit: u64,
    },

    /// Signature parameters that librsync would refuse.
    #[error("invalid signature parameters: {0}")]
    InvalidParams(String),
}

impl Error {
    pub(crate) fn read(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Read { what, source }
    }

    pub(crate) fn write(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Write { what, source }
    }

    /// A line of advice for the user, where there is something they can do.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::BadMagic {
                what: "signature", ..
            } => Some("make the signature with `snapsync signature` or `rdiff signature`"),
            Error::BadMagic { what: "delta", .. } => {
                Some("make the delta with `snapsync delta` or `rdiff delta`")
            }
            Error::CopyOutOfRange { .. } => Some("the delta was made against a different basis file"),
            Error::OutputTooLarge { .. } => Some("raise --max-size if the delta is trusted"),
            _ => None,
        }
    }
}
