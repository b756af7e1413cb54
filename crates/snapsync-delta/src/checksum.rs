//! The rolling (weak) checksums and the strong checksums of librsync.
//!
//! Both rolling sums can be computed from scratch over a block ([`Weak::over`]), slid along by one byte
//! ([`Weak::rotate`]) and shortened from the front ([`Weak::rollout`]); all three agree, which the
//! proptests below check. The from-scratch versions work 32 bytes at a time so the compiler can use SIMD:
//! they run once per matched block, over every byte of the new file that matches.

use crate::format::{StrongKind, WeakKind};

/// A rolling checksum.
pub(crate) trait Weak: Copy + Send + Sync + 'static {
    /// The sum of `block`.
    fn over(block: &[u8]) -> Self;
    /// Slides the window by one byte: `out` leaves at the front, `new` enters at the back.
    fn rotate(&mut self, out: u8, new: u8);
    /// Shortens the window by one byte at the front.
    fn rollout(&mut self, out: u8);
    /// The 32-bit value stored in signatures.
    fn digest(&self) -> u32;
}

/// rsync's rolling checksum: `s1 = Σ(b + 31)`, `s2 = Σ(n - i)(b_i + 31)`, digest `s2 << 16 | s1`, all
/// modulo 2^16 (librsync keeps wider integers, but only the low 16 bits reach the digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rollsum {
    s1: u16,
    s2: u16,
    /// Window length modulo 2^16 (only used in products taken modulo 2^16).
    count: u16,
}

const ROLLSUM_CHAR_OFFSET: u16 = 31;

impl Weak for Rollsum {
    fn over(block: &[u8]) -> Self {
        // Σ b and Σ (n - i) b_i, in 32-bit lanes per 32-byte chunk; wrapping is fine modulo 2^16.
        let n = block.len() as u32;
        let (mut sum, mut weighted) = (0u32, 0u32);
        let mut chunks = block.chunks_exact(32);
        let mut base = 0u32;
        for chunk in &mut chunks {
            let mut s = 0u32;
            let mut t = 0u32;
            for (j, &b) in chunk.iter().enumerate() {
                s = s.wrapping_add(u32::from(b));
                t = t.wrapping_add(u32::from(b).wrapping_mul(j as u32));
            }
            // Σ_j (n - base - j) b_j = (n - base) S - T
            weighted = weighted
                .wrapping_add(n.wrapping_sub(base).wrapping_mul(s))
                .wrapping_sub(t);
            sum = sum.wrapping_add(s);
            base += 32;
        }
        for (j, &b) in chunks.remainder().iter().enumerate() {
            weighted = weighted.wrapping_add(n.wrapping_sub(base + j as u32).wrapping_mul(u32::from(b)));
            sum = sum.wrapping_add(u32::from(b));
        }
        let n64 = u64::from(n);
        let offset = u32::from(ROLLSUM_CHAR_OFFSET);
        Rollsum {
            s1: sum.wrapping_add(n.wrapping_mul(offset)) as u16,
            s2: weighted.wrapping_add(((n64 * (n64 + 1) / 2) as u32).wrapping_mul(offset)) as u16,
            count: n as u16,
        }
    }

    fn rotate(&mut self, out: u8, new: u8) {
        self.s1 = self.s1.wrapping_add(u16::from(new)).wrapping_sub(u16::from(out));
        self.s2 = self
            .s2
            .wrapping_add(self.s1)
            .wrapping_sub(self.count.wrapping_mul(u16::from(out) + ROLLSUM_CHAR_OFFSET));
    }

    fn rollout(&mut self, out: u8) {
        self.s1 = self.s1.wrapping_sub(u16::from(out) + ROLLSUM_CHAR_OFFSET);
        self.s2 = self
            .s2
            .wrapping_sub(self.count.wrapping_mul(u16::from(out) + ROLLSUM_CHAR_OFFSET));
        self.count = self.count.wrapping_sub(1);
    }

    fn digest(&self) -> u32 {
        (u32::from(self.s2) << 16) | u32::from(self.s1)
    }
}

/// librsync's Rabin-Karp hash: `seed * M^n + Σ b_i * M^(n-1-i)` modulo 2^32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RabinKarp {
    hash: u32,
    /// `M^n` for the current window length `n`.
    mult: u32,
}

const RK_SEED: u32 = 1;
const RK_MULT: u32 = 0x0810_4225;
/// The multiplicative inverse of `RK_MULT` modulo 2^32.
const RK_INVM: u32 = 0x98f0_09ad;
/// `RK_MULT - 1`, which folds the seed's term into the rotation.
const RK_ADJ: u32 = 0x0810_4224;

/// `RK_MULT^(31 - j)` for j in 0..32: the weights of a 32-byte chunk.
const RK_CHUNK_WEIGHTS: [u32; 32] = {
    let mut w = [0u32; 32];
    let mut p = 1u32;
    let mut j = 32;
    while j > 0 {
        j -= 1;
        w[j] = p;
        p = p.wrapping_mul(RK_MULT);
    }
    w
};

/// `RK_MULT^32`.
const RK_MULT_32: u32 = RK_CHUNK_WEIGHTS[0].wrapping_mul(RK_MULT);

fn rk_pow(mut exponent: u64) -> u32 {
    let (mut base, mut result) = (RK_MULT, 1u32);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = result.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exponent >>= 1;
    }
    result
}

impl Weak for RabinKarp {
    fn over(block: &[u8]) -> Self {
        let mut hash = RK_SEED;
        let mut chunks = block.chunks_exact(32);
        for chunk in &mut chunks {
            let dot = chunk.iter().zip(RK_CHUNK_WEIGHTS).fold(0u32, |acc, (&b, w)| {
                acc.wrapping_add(u32::from(b).wrapping_mul(w))
            });
            hash = hash.wrapping_mul(RK_MULT_32).wrapping_add(dot);
        }
        for &b in chunks.remainder() {
            hash = hash.wrapping_mul(RK_MULT).wrapping_add(u32::from(b));
        }
        RabinKarp {
            hash,
            mult: rk_pow(block.len() as u64),
        }
    }

    fn rotate(&mut self, out: u8, new: u8) {
        self.hash = self
            .hash
            .wrapping_mul(RK_MULT)
            .wrapping_add(u32::from(new))
            .wrapping_sub(self.mult.wrapping_mul(u32::from(out).wrapping_add(RK_ADJ)));
    }

    fn rollout(&mut self, out: u8) {
        self.mult = self.mult.wrapping_mul(RK_INVM);
        self.hash = self
            .hash
            .wrapping_sub(self.mult.wrapping_mul(u32::from(out).wrapping_add(RK_ADJ)));
    }

    fn digest(&self) -> u32 {
        self.hash
    }
}

/// The weak sum of `block` of the given kind, from scratch.
pub(crate) fn weak_sum(kind: WeakKind, block: &[u8]) -> u32 {
    match kind {
        WeakKind::Rollsum => Rollsum::over(block).digest(),
        WeakKind::RabinKarp => RabinKarp::over(block).digest(),
    }
}

/// A strong sum, full length (MD4 uses the first 16 bytes).
pub(crate) type Strong = [u8; 32];

fn blake2_params() -> blake2b_simd::Params {
    let mut params = blake2b_simd::Params::new();
    params.hash_length(32);
    params
}

/// The strong sum of one block.
pub(crate) fn strong_sum(kind: StrongKind, block: &[u8]) -> Strong {
    let mut out = [0u8; 32];
    match kind {
        StrongKind::Md4 => {
            use md4::Digest;
            out[..16].copy_from_slice(&md4::Md4::digest(block));
        }
        StrongKind::Blake2 => out.copy_from_slice(blake2_params().hash(block).as_bytes()),
    }
    out
}

/// The strong sums of many blocks; BLAKE2 hashes four at a time with SIMD.
pub(crate) fn strong_sums(kind: StrongKind, blocks: &[&[u8]], out: &mut Vec<Strong>) {
    out.clear();
    match kind {
        StrongKind::Md4 => out.extend(blocks.iter().map(|b| strong_sum(kind, b))),
        StrongKind::Blake2 => {
            let params = blake2_params();
            let mut jobs: Vec<blake2b_simd::many::HashManyJob<'_>> = blocks
                .iter()
                .map(|b| blake2b_simd::many::HashManyJob::new(&params, b))
                .collect();
            blake2b_simd::many::hash_many(jobs.iter_mut());
            out.extend(jobs.iter().map(|job| {
                let mut s = [0u8; 32];
                s.copy_from_slice(job.to_hash().as_bytes());
                s
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// librsync's definitions, byte by byte (rollsum.c, rabinkarp.c).
    fn rollsum_reference(block: &[u8]) -> u32 {
        let (mut s1, mut s2) = (0u64, 0u64);
        for &b in block {
            s1 += u64::from(b) + 31;
            s2 += s1;
        }
        ((s2 as u32) << 16) | (s1 as u32 & 0xffff)
    }

    fn rabinkarp_reference(block: &[u8]) -> u32 {
        block.iter().fold(RK_SEED, |h, &b| {
            h.wrapping_mul(RK_MULT).wrapping_add(u32::from(b))
        })
    }

    #[test]
    fn constants_are_consistent() {
        assert_eq!(RK_MULT.wrapping_mul(RK_INVM), 1);
        assert_eq!(RK_ADJ, RK_MULT - 1);
        assert_eq!(RK_MULT_32, rk_pow(32));
        assert_eq!(Rollsum::over(b"").digest(), 0);
        assert_eq!(RabinKarp::over(b"").digest(), 1);
    }

    proptest! {
        #[test]
        fn from_scratch_matches_the_reference(block in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(Rollsum::over(&block).digest(), rollsum_reference(&block));
            prop_assert_eq!(RabinKarp::over(&block).digest(), rabinkarp_reference(&block));
        }

        #[test]
        fn rolling_matches_from_scratch(data in proptest::collection::vec(any::<u8>(), 2..400), width in 1usize..70) {
            let width = width.min(data.len() - 1);
            let mut r = Rollsum::over(&data[..width]);
            let mut k = RabinKarp::over(&data[..width]);
            for start in 1..=data.len() - width {
                r.rotate(data[start - 1], data[start + width - 1]);
                k.rotate(data[start - 1], data[start + width - 1]);
                prop_assert_eq!(r, Rollsum::over(&data[start..start + width]));
                prop_assert_eq!(k, RabinKarp::over(&data[start..start + width]));
            }
            let tail = &data[data.len() - width..];
            for cut in 1..width {
                r.rollout(tail[cut - 1]);
                k.rollout(tail[cut - 1]);
                prop_assert_eq!(r.digest(), Rollsum::over(&tail[cut..]).digest());
                prop_assert_eq!(k, RabinKarp::over(&tail[cut..]));
            }
        }
    }

    #[test]
    fn strong_sums_match_known_vectors() {
        // RFC 1320: MD4("abc").
        assert_eq!(
            &strong_sum(StrongKind::Md4, b"abc")[..16],
            &[
                0xa4, 0x48, 0x01, 0x7a, 0xaf, 0x21, 0xd8, 0x52, 0x5f, 0xc1, 0x0a, 0xe8, 0x7a, 0xa6, 0x72,
                0x9d
            ]
        );
        // BLAKE2b-256("abc").
        let b = strong_sum(StrongKind::Blake2, b"abc");
        assert_eq!(b[..4], [0xbd, 0xdd, 0x81, 0x3c]);
        let blocks: Vec<Vec<u8>> = (0..9).map(|i| vec![i as u8; i * 100]).collect();
        let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
        let mut many = Vec::new();
        for kind in [StrongKind::Md4, StrongKind::Blake2] {
            strong_sums(kind, &refs, &mut many);
            let one: Vec<Strong> = refs.iter().map(|b| strong_sum(kind, b)).collect();
            assert_eq!(many, one);
        }
    }
}
