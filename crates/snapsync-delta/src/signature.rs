//! Making signatures, reading them back, and indexing them for the delta's lookups.
//!
//! Making one streams the basis through a fixed-size window: while one window's blocks are hashed on all
//! cores, the next window is read. Memory is two windows, whatever the size of the basis.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::checksum::{Strong, strong_sums, weak_sum};
use crate::error::{Error, Result};
use crate::format::{SignatureKind, SignatureParams};

/// Bytes of basis hashed per parallel step (rounded down to whole blocks, at least one block).
const WINDOW: usize = 16 * 1024 * 1024;
/// The first window; later ones double up to [`WINDOW`].
const FIRST_WINDOW: usize = 256 * 1024;
/// Blocks per rayon task at most: enough work to amortise scheduling, few enough to balance the cores.
const MAX_BLOCKS_PER_TASK: usize = 64;

/// What a signature run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureStats {
    /// Bytes of basis read.
    pub basis_bytes: u64,
    /// Blocks described.
    pub blocks: u64,
    /// Bytes of signature written.
    pub signature_bytes: u64,
}

/// Writes the signature of everything `basis` yields to `out`.
///
/// `progress`, if given, is advanced by the number of basis bytes processed.
///
/// # Errors
/// [`Error::InvalidParams`] for bad parameters, [`Error::Read`] / [`Error::Write`] for I/O failures.
pub fn write_signature(
    basis: &mut (dyn Read + Send),
    out: &mut dyn Write,
    params: SignatureParams,
    progress: Option<&AtomicU64>,
) -> Result<SignatureStats> {
    params.check()?;
    let block_len = params.block_len as usize;
    // Windows are whole blocks, so only the last block of the input can be short. They start small and
    // double while the input lasts, so small files cost small buffers.
    let whole_blocks = |bytes: usize| (bytes / block_len).max(1) * block_len;
    let max_window = whole_blocks(WINDOW);
    let mut window = whole_blocks(FIRST_WINDOW).min(max_window);
    let mut stats = SignatureStats::default();
    out.write_all(&params.header())
        .map_err(Error::write("signature"))?;
    stats.signature_bytes = 12;

    let mut current = vec![0u8; window];
    let mut next = Vec::new();
    let mut filled = fill(basis, &mut current)?;
    let mut records = Vec::new();
    while filled > 0 {
        let more = filled == window;
        let next_window = (window * 2).min(max_window);
        if more {
            next.resize(next_window, 0);
        }
        // Hash this window while the next one is read.
        let ((), read) = rayon::join(
            || sign_window(&current[..filled], params, &mut records),
            || {
                if more {
                    fill(basis, &mut next[..next_window])
                } else {
                    Ok(0)
                }
            },
        );
        let next_filled = read?;
        out.write_all(&records).map_err(Error::write("signature"))?;
        stats.basis_bytes += filled as u64;
        stats.blocks += filled.div_ceil(block_len) as u64;
        stats.signature_bytes += records.len() as u64;
        if let Some(progress) = progress {
            progress.fetch_add(filled as u64, Ordering::Relaxed);
        }
        std::mem::swap(&mut current, &mut next);
        filled = next_filled;
        window = next_window;
    }
    out.flush().map_err(Error::write("signature"))?;
    Ok(stats)
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn fill(input: &mut (dyn Read + Send), buf: &mut [u8]) -> Result<usize> {
    fill_from(input, buf, "basis")
}

/// The records of every block in `data` (only the last may be short), in order, into `records`.
fn sign_window(data: &[u8], params: SignatureParams, records: &mut Vec<u8>) {
    let block_len = params.block_len as usize;
    let strong_len = params.strong_len as usize;
    let record_len = 4 + strong_len;
    let blocks = data.len().div_ceil(block_len);
    records.clear();
    records.resize(blocks * record_len, 0);
    // At least four tasks per thread, so small windows use every core too; a multiple of four blocks,
    // which BLAKE2 hashes together.
    let per_task = (blocks / (rayon::current_num_threads() * 4)).clamp(4, MAX_BLOCKS_PER_TASK) & !3;
    records
        .par_chunks_mut(per_task * record_len)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * per_task * block_len;
            let end = (first + per_task * block_len).min(data.len());
            let task_blocks: Vec<&[u8]> = data[first..end].chunks(block_len).collect();
            let mut strongs: Vec<Strong> = Vec::with_capacity(task_blocks.len());
            strong_sums(params.kind.strong, &task_blocks, &mut strongs);
            for ((record, block), strong) in out.chunks_exact_mut(record_len).zip(&task_blocks).zip(&strongs)
            {
                record[..4].copy_from_slice(&weak_sum(params.kind.weak, block).to_be_bytes());
                record[4..].copy_from_slice(&strong[..strong_len]);
            }
        });
}

/// A signature read into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    params: SignatureParams,
    weak: Vec<u32>,
    /// `strong_len` bytes per block, back to back.
    strong: Vec<u8>,
}

/// Blocks in one signature at most: block numbers are 32-bit.
const MAX_BLOCKS: usize = u32::MAX as usize;

impl Signature {
    /// Reads and checks a signature.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::CorruptSignature`] for an implausible header,
    /// [`Error::Truncated`] when the input ends inside the header or a record, [`Error::Read`].
    pub fn read(input: &mut dyn Read) -> Result<Signature> {
        let mut header = [0u8; 12];
        let got = fill_from(input, &mut header, "signature")?;
        if got < 4 {
            return Err(Error::Truncated {
                what: "signature",
                detail: format!("{got} bytes, too short for a header"),
            });
        }
        let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let Some(kind) = SignatureKind::from_magic(magic) else {
            return Err(Error::BadMagic {
                what: "signature",
                found: magic,
                expected: "0x72730136, 0x72730137, 0x72730146 or 0x72730147",
            });
        };
        if got < 12 {
            return Err(Error::Truncated {
                what: "signature",
                detail: format!("header has {got} of 12 bytes"),
            });
        }
        let params = SignatureParams {
            kind,
            block_len: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            strong_len: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        };
        params.check().map_err(|e| match e {
            Error::InvalidParams(reason) => Error::CorruptSignature(reason),
            other => other,
        })?;
        let record_len = 4 + params.strong_len as usize;
        let mut weak = Vec::new();
        let mut strong = Vec::new();
        // Records are read in batches into a fixed buffer: the input's own size is the only bound.
        let mut buf = vec![0u8; record_len * 4096];
        loop {
            let got = fill_from(input, &mut buf, "signature")?;
            let whole = got / record_len;
            if weak.len() + whole > MAX_BLOCKS {
                return Err(Error::CorruptSignature(format!("more than {MAX_BLOCKS} blocks")));
            }
            for record in buf[..whole * record_len].chunks_exact(record_len) {
                weak.push(u32::from_be_bytes([record[0], record[1], record[2], record[3]]));
                strong.extend_from_slice(&record[4..]);
            }
            if got % record_len != 0 {
                return Err(Error::Truncated {
                    what: "signature",
                    detail: format!(
                        "the record of block {} has {} of {record_len} bytes",
                        weak.len(),
                        got % record_len
                    ),
                });
            }
            if got < buf.len() {
                break;
            }
        }
        Ok(Signature { params, weak, strong })
    }

    /// The header's parameters.
    #[must_use]
    pub fn params(&self) -> SignatureParams {
        self.params
    }

    /// Number of blocks described.
    #[must_use]
    pub fn block_count(&self) -> usize {
        self.weak.len()
    }

    fn strong_of(&self, block: u32) -> &[u8] {
        let len = self.params.strong_len as usize;
        let start = block as usize * len;
        &self.strong[start..start + len]
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
pub(crate) fn fill_from(input: &mut dyn Read, buf: &mut [u8], what: &'static str) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Read { what, source: e }),
        }
    }
    Ok(filled)
}

/// A signature prepared for lookups by weak sum, then strong sum.
///
/// Blocks are sorted by (weak, strong, block number). An open-addressing table maps each weak sum to its
/// run in that order; a bitmap in front of it rejects most weak sums that are in no block with one load,
/// which is what happens at nearly every byte of data that does not match.
#[derive(Debug)]
pub struct IndexedSignature {
    signature: Signature,
    /// Block numbers sorted by (weak, strong, number).
    sorted: Vec<u32>,
    /// Slots: (weak, first index into `sorted`, count); count 0 marks an empty slot.
    table: Vec<(u32, u32, u32)>,
    table_mask: usize,
    filter: Vec<u64>,
    filter_shift: u32,
}

/// A class of blocks with the same weak and strong sum: a range of [`IndexedSignature::sorted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl IndexedSignature {
    /// Builds the lookup structures.
    #[must_use]
    pub fn new(signature: Signature) -> IndexedSignature {
        let n = signature.block_count();
        let mut sorted: Vec<u32> = (0..n as u32).collect();
        sorted.par_sort_unstable_by(|&a, &b| {
            (signature.weak[a as usize], signature.strong_of(a), a).cmp(&(
                signature.weak[b as usize],
                signature.strong_of(b),
                b,
            ))
        });
        let slots = (n * 2).next_power_of_two().max(16);
        let mut table = vec![(0u32, 0u32, 0u32); slots];
        let filter_bits = (n * 16).next_power_of_two().clamp(1 << 12, 1 << 28);
        let mut filter = vec![0u64; filter_bits / 64];
        let filter_shift = 32 - filter_bits.trailing_zeros();
        let mut i = 0;
        while i < n {
            let weak = signature.weak[sorted[i] as usize];
            let mut j = i + 1;
            while j < n && signature.weak[sorted[j] as usize] == weak {
                j += 1;
            }
            let mut slot = spread(weak) as usize & (slots - 1);
            while table[slot].2 != 0 {
                slot = (slot + 1) & (slots - 1);
            }
            table[slot] = (weak, i as u32, (j - i) as u32);
            let bit = (spread(weak) >> filter_shift) as usize;
            filter[bit / 64] |= 1 << (bit % 64);
            i = j;
        }
        IndexedSignature {
            signature,
            sorted,
            table,
            table_mask: slots - 1,
            filter,
            filter_shift,
        }
    }

    /// The signature's parameters.
    #[must_use]
    pub fn params(&self) -> SignatureParams {
        self.signature.params
    }

    /// Number of blocks.
    #[must_use]
    pub fn block_count(&self) -> usize {
        self.signature.block_count()
    }

    /// Whether some block may have this weak sum (false means certainly none).
    #[inline]
    pub(crate) fn may_contain(&self, weak: u32) -> bool {
        let bit = (spread(weak) >> self.filter_shift) as usize;
        self.filter[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The blocks whose weak sum is `weak` and whose strong sum is that of `data` (computed only if some
    /// block has that weak sum).
    pub(crate) fn find(&self, weak: u32, data: &[u8]) -> Option<Class> {
        let run = self.weak_run(weak)?;
        let strong = crate::checksum::strong_sum(self.signature.params.kind.strong, data);
        self.strong_class(run, &strong)
    }

    /// The blocks with weak sum `weak`, if any: a range of the sorted blocks.
    #[inline]
    pub(crate) fn weak_run(&self, weak: u32) -> Option<Class> {
        if !self.may_contain(weak) {
            return None;
        }
        let mut slot = spread(weak) as usize & self.table_mask;
        loop {
            let (w, start, count) = self.table[slot];
            if count == 0 {
                return None;
            }
            if w == weak {
                return Some(Class {
                    start,
                    end: start + count,
                });
            }
            slot = (slot + 1) & self.table_mask;
        }
    }

    /// The blocks of `run` (one weak sum) whose strong sum is the first `strong_len` bytes of `strong`.
    pub(crate) fn strong_class(&self, run: Class, strong: &Strong) -> Option<Class> {
        let strong = &strong[..self.signature.params.strong_len as usize];
        let blocks = &self.sorted[run.start as usize..run.end as usize];
        // Within a run the blocks are sorted by strong sum (then number): the class is found by two
        // binary searches, so a file of identical blocks (all zeros) costs log n per lookup, not n.
        let first = blocks.partition_point(|&b| self.signature.strong_of(b) < strong);
        let end = first + blocks[first..].partition_point(|&b| self.signature.strong_of(b) == strong);
        (end > first).then(|| Class {
            start: run.start + first as u32,
            end: run.start + end as u32,
        })
    }

    /// The block of `class` to copy: `preferred` if it is in the class (so a COPY can continue), else the
    /// first, as librsync does.
    pub(crate) fn choose(&self, class: Class, preferred: Option<u64>) -> u32 {
        let blocks = &self.sorted[class.start as usize..class.end as usize];
        if let Some(p) = preferred.and_then(|p| u32::try_from(p).ok())
            && blocks.binary_search(&p).is_ok()
        {
            return p;
        }
        blocks[0]
    }
}

/// Mixes a weak sum so that both the table and the filter see well-spread bits.
#[inline]
fn spread(weak: u32) -> u32 {
    weak.wrapping_mul(0x9e37_79b1).rotate_left(15) ^ weak
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{StrongKind, WeakKind};

    fn params(kind: SignatureKind, block_len: u32, strong_len: u32) -> SignatureParams {
        SignatureParams {
            kind,
            block_len,
            strong_len,
        }
    }

    #[test]
    fn signature_round_trips_through_read() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for kind in SignatureKind::ALL {
            let p = params(kind, 300, kind.max_strong_len() - 3);
            let mut out = Vec::new();
            let stats = write_signature(&mut data.as_slice(), &mut out, p, None).unwrap();
            assert_eq!(stats.blocks, 34);
            assert_eq!(out.len() as u64, stats.signature_bytes);
            assert_eq!(out.len(), 12 + 34 * (4 + p.strong_len as usize));
            let sig = Signature::read(&mut out.as_slice()).unwrap();
            assert_eq!(sig.params(), p);
            assert_eq!(sig.block_count(), 34);
            assert_eq!(sig.weak[33], weak_sum(kind.weak, &data[9900..]));
        }
    }

    #[test]
    fn empty_basis_has_a_header_only() {
        let mut out = Vec::new();
        let p = params(SignatureKind::default(), 2048, 32);
        write_signature(&mut [].as_slice(), &mut out, p, None).unwrap();
        assert_eq!(out, p.header());
        assert_eq!(Signature::read(&mut out.as_slice()).unwrap().block_count(), 0);
    }

    #[test]
    fn hostile_signatures_are_refused_clearly() {
        let good = params(
            SignatureKind {
                weak: WeakKind::Rollsum,
                strong: StrongKind::Md4,
            },
            8,
            16,
        )
        .header();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated: 0 bytes"),
            (vec![0x72, 0x73], "truncated: 2 bytes"),
            (
                b"PK\x03\x04 not a sig".to_vec(),
                "not a librsync signature: it starts with 0x504b0304",
            ),
            (good[..7].to_vec(), "header has 7 of 12 bytes"),
            ([&good[..4], &[0, 0, 0, 0], &good[8..]].concat(), "block length 0"),
            (
                [&good[..4], &[0x80, 0, 0, 0], &good[8..]].concat(),
                "block length 2147483648",
            ),
            ([&good[..8], &[0, 0, 0, 17]].concat(), "strong sum length 17"),
            ([&good[..8], &[0, 0, 0, 0]].concat(), "strong sum length 0"),
            (
                [&good[..], &[1, 2, 3]].concat(),
                "the record of block 0 has 3 of 20 bytes",
            ),
        ];
        for (bytes, expected) in cases {
            let err = Signature::read(&mut bytes.as_slice()).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn lookups_find_classes_and_prefer_continuations() {
        // Blocks 0, 2 and 3 are identical; block 1 differs.
        let block_a = [7u8; 16];
        let block_b = [9u8; 16];
        let data = [block_a, block_b, block_a, block_a].concat();
        let p = params(SignatureKind::default(), 16, 32);
        let mut out = Vec::new();
        write_signature(&mut data.as_slice(), &mut out, p, None).unwrap();
        let index = IndexedSignature::new(Signature::read(&mut out.as_slice()).unwrap());
        let weak = weak_sum(WeakKind::RabinKarp, &block_a);
        let class = index.find(weak, &block_a).unwrap();
        assert_eq!(class.end - class.start, 3);
        assert_eq!(index.choose(class, None), 0, "librsync takes the first");
        assert_eq!(index.choose(class, Some(3)), 3, "but a continuation wins");
        assert_eq!(index.choose(class, Some(1)), 0);
        assert!(
            index.find(weak, &block_b).is_none(),
            "same weak, different strong"
        );
        assert!(index.find(weak ^ 1, &block_a).is_none());
    }
}
