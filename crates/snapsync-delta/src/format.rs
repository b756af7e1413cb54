//! librsync's wire formats: magic numbers, signature kinds and parameters, delta commands.
//!
//! Signature: `magic:u32 block_len:u32 strong_len:u32` (big-endian), then one record per basis block:
//! `weak:u32` and `strong_len` bytes of the strong sum. The last block may be shorter than `block_len`.
//!
//! Delta: `0x72730236`, then commands, each a byte followed by big-endian parameters:
//!
//! | byte | command |
//! |---|---|
//! | `0x00` | END |
//! | `0x01`–`0x40` | LITERAL of 1–64 bytes, which follow |
//! | `0x41`–`0x44` | LITERAL with a 1/2/4/8-byte length, then the bytes |
//! | `0x45`–`0x54` | COPY: `0x45 + 4 * w(offset) + w(length)`, w = 0/1/2/3 for 1/2/4/8 bytes |
//! | `0x55`–`0xff` | reserved (an error) |

use crate::error::{Error, Result};

/// Magic number of a delta.
pub const DELTA_MAGIC: u32 = 0x7273_0236;

/// The rolling (weak) checksum of a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeakKind {
    /// rsync's rolling checksum (rdiff `--rollsum=rollsum`).
    Rollsum,
    /// A Rabin-Karp polynomial hash (rdiff's default since librsync 2.2).
    RabinKarp,
}

/// The strong checksum of a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrongKind {
    /// MD4, 16 bytes. Weak: collisions can be made on purpose (see the crate's `# Security`).
    Md4,
    /// BLAKE2b with a 32-byte digest (rdiff's default).
    Blake2,
}

/// Which checksums a signature uses; one magic number each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignatureKind {
    /// The rolling checksum.
    pub weak: WeakKind,
    /// The strong checksum.
    pub strong: StrongKind,
}

impl Default for SignatureKind {
    /// RabinKarp + BLAKE2, as rdiff 2.3.
    fn default() -> Self {
        SignatureKind {
            weak: WeakKind::RabinKarp,
            strong: StrongKind::Blake2,
        }
    }
}

impl SignatureKind {
    /// All four kinds.
    pub const ALL: [SignatureKind; 4] = [
        SignatureKind {
            weak: WeakKind::Rollsum,
            strong: StrongKind::Md4,
        },
        SignatureKind {
            weak: WeakKind::Rollsum,
            strong: StrongKind::Blake2,
        },
        SignatureKind {
            weak: WeakKind::RabinKarp,
            strong: StrongKind::Md4,
        },
        SignatureKind {
            weak: WeakKind::RabinKarp,
            strong: StrongKind::Blake2,
        },
    ];

    /// The magic number that starts a signature of this kind.
    #[must_use]
    pub const fn magic(self) -> u32 {
        let base = match self.strong {
            StrongKind::Md4 => 0x7273_0136,
            StrongKind::Blake2 => 0x7273_0137,
        };
        match self.weak {
            WeakKind::Rollsum => base,
            WeakKind::RabinKarp => base + 0x10,
        }
    }

    /// The kind a magic number stands for.
    #[must_use]
    pub fn from_magic(magic: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.magic() == magic)
    }

    /// Length of the full strong sum: 16 for MD4, 32 for BLAKE2.
    #[must_use]
    pub const fn max_strong_len(self) -> u32 {
        match self.strong {
            StrongKind::Md4 => 16,
            StrongKind::Blake2 => 32,
        }
    }
}

/// Block length rdiff uses when the basis size is unknown (a pipe).
pub const DEFAULT_BLOCK_LEN: u32 = 2048;

/// The longest block snapsync accepts, in signatures it makes or reads: 64 MiB.
///
/// A delta holds a few blocks in memory, so an unchecked header could make a 12-byte signature demand
/// gigabytes. librsync allows up to 2^31-1; its own recommendation (√ of the file size) is 1 MiB for a
/// 1 TiB file.
pub const MAX_BLOCK_LEN: u32 = 64 * 1024 * 1024;

/// The parameters in a signature's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignatureParams {
    /// Checksums used.
    pub kind: SignatureKind,
    /// Bytes per block.
    pub block_len: u32,
    /// Bytes of each block's strong sum that are kept.
    pub strong_len: u32,
}

impl SignatureParams {
    /// Parameters as rdiff 2.3 chooses them (librsync's `rs_sig_args`).
    ///
    /// - `block_len`: `None` gives √`basis_len` rounded down to a multiple of 128, at least 256
    ///   (2048 when the size is unknown);
    /// - `strong_len`: `None` gives the full strong sum (16 or 32 bytes).
    ///
    /// # Errors
    /// [`Error::InvalidParams`] for a zero or oversized block length, or a strong length of 0 or above
    /// the strong sum's size.
    pub fn recommended(
        kind: SignatureKind,
        basis_len: Option<u64>,
        block_len: Option<u32>,
        strong_len: Option<u32>,
    ) -> Result<Self> {
        let block_len = match (block_len, basis_len) {
            (Some(len), _) => len,
            (None, None) => DEFAULT_BLOCK_LEN,
            (None, Some(size)) if size <= 256 * 256 => 256,
            // isqrt of a u64 fits u32.
            (None, Some(size)) => u32::try_from(size.isqrt() & !127).unwrap_or(!127),
        };
        let params = SignatureParams {
            kind,
            block_len,
            strong_len: strong_len.unwrap_or(kind.max_strong_len()),
        };
        params.check()?;
        Ok(params)
    }

    /// The smallest strong length librsync recommends for a basis of `basis_len` bytes: enough bits that
    /// a collision is unlikely even against a new file 16 MiB larger with no matches (`rs_sig_args`).
    #[must_use]
    pub fn min_strong_len(basis_len: u64, block_len: u32) -> u32 {
        let ln2 = |v: u64| v.max(1).ilog2();
        2 + (ln2(basis_len + (1 << 24)) + ln2(basis_len / u64::from(block_len.max(1)) + 1)).div_ceil(8)
    }

    /// Checks the parameters as librsync does when it reads a signature.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] describing the first problem.
    pub fn check(&self) -> Result<()> {
        if self.block_len == 0 || self.block_len > MAX_BLOCK_LEN {
            return Err(Error::InvalidParams(format!(
                "block length {} is not between 1 and {MAX_BLOCK_LEN} (64 MiB)",
                self.block_len
            )));
        }
        if self.strong_len == 0 || self.strong_len > self.kind.max_strong_len() {
            return Err(Error::InvalidParams(format!(
                "strong sum length {} is not between 1 and {} for this signature kind",
                self.strong_len,
                self.kind.max_strong_len()
            )));
        }
        Ok(())
    }

    /// The 12-byte signature header.
    #[must_use]
    pub fn header(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.kind.magic().to_be_bytes());
        out[4..8].copy_from_slice(&self.block_len.to_be_bytes());
        out[8..].copy_from_slice(&self.strong_len.to_be_bytes());
        out
    }
}

pub(crate) const OP_END: u8 = 0x00;
pub(crate) const OP_LITERAL_N1: u8 = 0x41;
pub(crate) const OP_COPY_FIRST: u8 = 0x45;
pub(crate) const OP_COPY_LAST: u8 = 0x54;

/// Widths of the big-endian integers, indexed by the 2-bit width code.
const WIDTHS: [usize; 4] = [1, 2, 4, 8];

/// Width code (0..=3) of the smallest big-endian integer holding `value`.
pub(crate) const fn width_code(value: u64) -> u8 {
    if value <= 0xff {
        0
    } else if value <= 0xffff {
        1
    } else if value <= 0xffff_ffff {
        2
    } else {
        3
    }
}

fn push_int(out: &mut Vec<u8>, value: u64, code: u8) {
    let width = WIDTHS[usize::from(code)];
    out.extend_from_slice(&value.to_be_bytes()[8 - width..]);
}

/// Appends the compact encoding of a LITERAL command header for `len` bytes (`len` > 0).
pub(crate) fn push_literal(out: &mut Vec<u8>, len: u64) {
    debug_assert!(len > 0);
    if len <= 64 {
        out.push(len as u8);
    } else {
        let code = width_code(len);
        out.push(OP_LITERAL_N1 + code);
        push_int(out, len, code);
    }
}

/// Appends the compact encoding of a COPY command (`len` > 0).
pub(crate) fn push_copy(out: &mut Vec<u8>, offset: u64, len: u64) {
    debug_assert!(len > 0);
    let (oc, lc) = (width_code(offset), width_code(len));
    out.push(OP_COPY_FIRST + 4 * oc + lc);
    push_int(out, offset, oc);
    push_int(out, len, lc);
}

/// What a command byte means, before its parameters are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    End,
    /// A literal whose length is in the command byte.
    LiteralInline(u64),
    /// A literal whose length follows in this many bytes.
    Literal {
        len_width: usize,
    },
    /// A copy whose offset and length follow.
    Copy {
        offset_width: usize,
        len_width: usize,
    },
}

pub(crate) fn decode_op(byte: u8) -> Option<Op> {
    match byte {
        OP_END => Some(Op::End),
        1..=64 => Some(Op::LiteralInline(u64::from(byte))),
        0x41..=0x44 => Some(Op::Literal {
            len_width: WIDTHS[usize::from(byte - OP_LITERAL_N1)],
        }),
        OP_COPY_FIRST..=OP_COPY_LAST => {
            let code = byte - OP_COPY_FIRST;
            Some(Op::Copy {
                offset_width: WIDTHS[usize::from(code / 4)],
                len_width: WIDTHS[usize::from(code % 4)],
            })
        }
        _ => None,
    }
}

/// A big-endian unsigned integer of 1 to 8 bytes.
pub(crate) fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_match_librsync() {
        let magics: Vec<u32> = SignatureKind::ALL.iter().map(|k| k.magic()).collect();
        assert_eq!(magics, [0x7273_0136, 0x7273_0137, 0x7273_0146, 0x7273_0147]);
        assert_eq!(SignatureKind::default().magic(), 0x7273_0147);
        for kind in SignatureKind::ALL {
            assert_eq!(SignatureKind::from_magic(kind.magic()), Some(kind));
        }
        assert_eq!(SignatureKind::from_magic(DELTA_MAGIC), None);
    }

    #[test]
    fn recommended_parameters_follow_rs_sig_args() {
        let k = SignatureKind::default();
        let p = |size, block| SignatureParams::recommended(k, size, block, None).unwrap();
        assert_eq!(p(None, None).block_len, 2048);
        assert_eq!(p(Some(0), None).block_len, 256);
        assert_eq!(p(Some(65_536), None).block_len, 256);
        assert_eq!(p(Some(65_537), None).block_len, 256);
        assert_eq!(p(Some(1 << 30), None).block_len, 32_768);
        assert_eq!(p(Some(1_000_000), None).block_len, 896);
        assert_eq!(p(Some(1 << 30), Some(100)).block_len, 100);
        assert_eq!(p(None, None).strong_len, 32);
        assert_eq!(
            SignatureParams::recommended(SignatureKind::ALL[0], None, None, None)
                .unwrap()
                .strong_len,
            16
        );
        assert!(SignatureParams::recommended(k, None, Some(0), None).is_err());
        assert!(SignatureParams::recommended(k, None, None, Some(33)).is_err());
        assert!(SignatureParams::recommended(SignatureKind::ALL[0], None, None, Some(17)).is_err());
        assert!(SignatureParams::recommended(k, None, None, Some(0)).is_err());
        // 2 + (ln2(2^30 + 2^24) + ln2(2^30 / 2^15 + 1) + 7) / 8 = 2 + (30 + 15 + 7) / 8 = 8
        assert_eq!(SignatureParams::min_strong_len(1 << 30, 1 << 15), 8);
    }

    #[test]
    fn commands_use_the_compact_widths() {
        let enc = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            f(&mut v);
            v
        };
        assert_eq!(enc(&|v| push_literal(v, 1)), [0x01]);
        assert_eq!(enc(&|v| push_literal(v, 64)), [0x40]);
        assert_eq!(enc(&|v| push_literal(v, 65)), [0x41, 65]);
        assert_eq!(enc(&|v| push_literal(v, 256)), [0x42, 1, 0]);
        assert_eq!(enc(&|v| push_literal(v, 1 << 16)), [0x43, 0, 1, 0, 0]);
        assert_eq!(enc(&|v| push_literal(v, 1 << 32)), [0x44, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(enc(&|v| push_copy(v, 0, 1)), [0x45, 0, 1]);
        assert_eq!(
            enc(&|v| push_copy(v, 0x1_0000, 0x100)),
            [0x45 + 8 + 1, 0, 1, 0, 0, 1, 0]
        );
        assert_eq!(enc(&|v| push_copy(v, 1 << 40, 1 << 40)).len(), 17);
        assert_eq!(enc(&|v| push_copy(v, 1 << 40, 1 << 40))[0], 0x54);
    }

    #[test]
    fn every_command_byte_decodes() {
        assert_eq!(decode_op(0), Some(Op::End));
        assert_eq!(decode_op(0x40), Some(Op::LiteralInline(64)));
        assert_eq!(decode_op(0x44), Some(Op::Literal { len_width: 8 }));
        assert_eq!(
            decode_op(0x45),
            Some(Op::Copy {
                offset_width: 1,
                len_width: 1
            })
        );
        assert_eq!(
            decode_op(0x46),
            Some(Op::Copy {
                offset_width: 1,
                len_width: 2
            })
        );
        assert_eq!(
            decode_op(0x49),
            Some(Op::Copy {
                offset_width: 2,
                len_width: 1
            })
        );
        assert_eq!(
            decode_op(0x54),
            Some(Op::Copy {
                offset_width: 8,
                len_width: 8
            })
        );
        for reserved in 0x55..=0xff {
            assert_eq!(decode_op(reserved), None);
        }
        assert_eq!(read_be(&[1, 2]), 0x0102);
        assert_eq!(read_be(&[0xff; 8]), u64::MAX);
    }
}
