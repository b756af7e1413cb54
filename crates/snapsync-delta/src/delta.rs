//! Making a delta: librsync's greedy matching, scanned in parallel, written in the compact encoding.
//!
//! **The matching** is librsync's: at position `x` of the new file, if the block `[x, x + block_len)`
//! has the weak and strong sum of some basis block, COPY it and continue at `x + block_len`; otherwise
//! the byte at `x` is literal and the scan continues at `x + 1` (the weak sum rolls). Near the end, where
//! less than a block remains, the shorter tail `[x, end)` is tried at each position, which finds the
//! basis's own short last block. So snapsync finds the same matches as rdiff.
//!
//! **In parallel:** where to go after position `x` depends only on the bytes at `x`, not on how the scan
//! got there. So a window of the new file is cut into chunks scanned independently, then stitched in
//! order: when the scan of one chunk runs into the next chunk at a position that chunk's own scan also
//! visited, the two agree from there on; when it lands inside one of that chunk's matches instead, it is
//! continued sequentially until it reaches a visited position (at most one block later).
//!
//! **The encoding** is never larger than rdiff's for the same matches: among identical basis blocks the
//! one that continues the previous COPY is chosen (rdiff always takes the first), so runs of repeated
//! blocks merge into one COPY; and literal runs are not cut every 64 KiB.
//!
//! **Memory** is the indexed signature plus one window of the new file (32 MiB), whatever its size.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::checksum::{RabinKarp, Rollsum, Strong, Weak, strong_sums};
use crate::error::{Error, Result};
use crate::format::{DELTA_MAGIC, OP_END, WeakKind, push_copy, push_literal};
use crate::signature::{Class, IndexedSignature, fill_from};

/// How the scan is cut up: fixed in production, tiny in tests so that every stitching case happens.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// Bytes of new file scanned per window.
    window: usize,
    /// A chunk is at least this long (a shorter window span is scanned by one thread).
    min_chunk: u64,
    /// Chunks per window at most.
    max_chunks: u64,
    /// Literal runs are written in LITERAL commands of this many bytes (the last one shorter).
    max_literal: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            window: 32 * 1024 * 1024,
            min_chunk: 1024 * 1024,
            max_chunks: rayon::current_num_threads() as u64 * 4,
            max_literal: 8 * 1024 * 1024,
        }
    }
}
/// The first window; later ones double up to the tuned size.
const FIRST_WINDOW: usize = 256 * 1024;
/// Output is written in pieces of about this size.
const OUT_BUFFER: usize = 1024 * 1024;

/// What a delta run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes of new file read.
    pub new_bytes: u64,
    /// LITERAL commands written.
    pub literal_cmds: u64,
    /// Bytes carried literally.
    pub literal_bytes: u64,
    /// COPY commands written.
    pub copy_cmds: u64,
    /// Bytes copied from the basis.
    pub copy_bytes: u64,
    /// Bytes of delta written, magic and END included.
    pub delta_bytes: u64,
}

/// Writes the delta that turns the basis described by `signature` into what `new` yields.
///
/// `progress`, if given, is advanced by the number of new-file bytes processed.
///
/// # Errors
/// [`Error::Read`] for the new file, [`Error::Write`] for the delta.
pub fn write_delta(
    signature: &IndexedSignature,
    new: &mut (dyn Read + Send),
    out: &mut dyn Write,
    progress: Option<&AtomicU64>,
) -> Result<DeltaStats> {
    delta_with(signature, new, out, progress, Tuning::default())
}

fn delta_with(
    signature: &IndexedSignature,
    new: &mut (dyn Read + Send),
    out: &mut dyn Write,
    progress: Option<&AtomicU64>,
    tuning: Tuning,
) -> Result<DeltaStats> {
    match signature.params().kind.weak {
        WeakKind::Rollsum => Delta::<Rollsum>::new(signature, tuning).run(new, out, progress),
        WeakKind::RabinKarp => Delta::<RabinKarp>::new(signature, tuning).run(new, out, progress),
    }
}

/// A block of the new file that matches a class of basis blocks.
#[derive(Clone, Copy, Debug)]
struct Match {
    /// Offset in the new file.
    pos: u64,
    /// Bytes matched: the block length, or less for the tail.
    len: u64,
    class: Class,
}

/// Blocks checked ahead of the scan in a matching region (BLAKE2 hashes four at a time).
const LOOK_AHEAD: usize = 4;

/// Results of [`Delta::look_ahead`]: (position, weak sum, matching class once resolved).
struct Ahead<W> {
    entries: Vec<(u64, W, Option<Class>)>,
    strongs: Vec<Strong>,
}

impl<W: Weak> Default for Ahead<W> {
    fn default() -> Self {
        Ahead {
            entries: Vec::with_capacity(LOOK_AHEAD),
            strongs: Vec::with_capacity(LOOK_AHEAD),
        }
    }
}

impl<W: Weak> Ahead<W> {
    fn at(&self, x: u64) -> Option<(W, Option<Class>)> {
        self.entries
            .iter()
            .find(|e| e.0 == x)
            .map(|&(_, weak, class)| (weak, class))
    }
}

struct Delta<'s, W> {
    signature: &'s IndexedSignature,
    block_len: u64,
    tuning: Tuning,
    _weak: std::marker::PhantomData<W>,
}

impl<'s, W: Weak> Delta<'s, W> {
    fn new(signature: &'s IndexedSignature, tuning: Tuning) -> Self {
        let block_len = u64::from(signature.params().block_len);
        Delta {
            signature,
            block_len,
            tuning,
            _weak: std::marker::PhantomData,
        }
    }

    fn run(
        &self,
        new: &mut (dyn Read + Send),
        out: &mut dyn Write,
        progress: Option<&AtomicU64>,
    ) -> Result<DeltaStats> {
        let block_len = self.block_len as usize;
        let max_literal = self.tuning.max_literal.max(1);
        let max_window = self.tuning.window.max(4 * block_len);
        // Windows start small and double while the input lasts, so small files cost small buffers.
        let mut window = max_window.min(FIRST_WINDOW.max(4 * block_len));
        let mut emitter = Emitter::new(out, self.signature, self.block_len, max_literal);
        let mut current = vec![0u8; window];
        let mut spare = Vec::new();
        let got = fill_from(new, &mut current, "new file")?;
        // The window is current[offset..offset + len], starting at `buf_start` in the new file.
        let (mut offset, mut len, mut buf_start) = (0, got, 0u64);
        let mut eof = got < window;
        // The next position the scan visits, and where the current run of literal bytes began.
        let mut next = 0u64;
        let mut literal_from = 0u64;
        let mut matches = Vec::new();
        let searchable = self.signature.block_count() > 0;
        loop {
            let data = &current[offset..offset + len];
            let end = buf_start + len as u64;
            let before = next;
            // Positions where a whole block fits.
            let until = (end + 1).saturating_sub(self.block_len).max(buf_start);
            matches.clear();
            let next_window = (window * 2).min(max_window);
            // The next buffer holds, before the next window's bytes, room for what this one carries
            // over: a literal run shorter than one LITERAL piece (and than the input so far), and the
            // unscanned tail, shorter than a block.
            let reserve = usize::try_from(end).unwrap_or(usize::MAX).min(max_literal) + block_len;
            if !eof {
                spare.resize(reserve + next_window, 0);
            }
            // Scan this window while the next one is read.
            let (scanned, read) = rayon::join(
                || {
                    let mut at = next;
                    if searchable && until > at {
                        at = self.scan_window(data, buf_start, at, until, &mut matches);
                    }
                    if eof && searchable {
                        at = at.max(until);
                        if let Some(m) = self.scan_tail(data, buf_start, at) {
                            matches.push(m);
                        }
                    }
                    at
                },
                || {
                    if eof {
                        Ok(0)
                    } else {
                        fill_from(new, &mut spare[reserve..reserve + next_window], "new file")
                    }
                },
            );
            next = if eof || !searchable { end } else { scanned };
            for m in &matches {
                if m.pos > literal_from {
                    emitter.literal(slice(data, buf_start, literal_from, m.pos))?;
                }
                emitter.copy(m.class, m.len)?;
                literal_from = m.pos + m.len;
            }
            // The literal run goes on into the next window; write its whole pieces now, so the pieces
            // fall at the same places whatever the window size.
            let pending = next.saturating_sub(literal_from);
            let write = if eof {
                pending
            } else {
                pending - pending % max_literal as u64
            };
            if write > 0 {
                emitter.literal(slice(data, buf_start, literal_from, literal_from + write))?;
                literal_from += write;
            }
            if let Some(progress) = progress {
                progress.fetch_add(next - before, Ordering::Relaxed);
            }
            if eof {
                break;
            }
            let got = read?;
            let carry = slice(data, buf_start, literal_from, end);
            spare[reserve - carry.len()..reserve].copy_from_slice(carry);
            offset = reserve - carry.len();
            len = carry.len() + got;
            buf_start = literal_from;
            eof = got < next_window;
            window = next_window;
            std::mem::swap(&mut current, &mut spare);
        }
        emitter.finish(literal_from)
    }

    /// Scans `[from, until)` of the window in parallel chunks and stitches the results; returns the first
    /// position at or after `until` that the scan visits.
    fn scan_window(&self, data: &[u8], base: u64, from: u64, until: u64, accepted: &mut Vec<Match>) -> u64 {
        let span = until - from;
        let chunks = (span / self.tuning.min_chunk.max(1)).clamp(1, self.tuning.max_chunks.max(1));
        let bounds: Vec<(u64, u64)> = (0..chunks)
            .map(|i| (from + span * i / chunks, from + span * (i + 1) / chunks))
            .collect();
        let scans: Vec<(Vec<Match>, u64)> = bounds
            .par_iter()
            .map(|&(start, stop)| {
                let mut found = Vec::new();
                let next = self.scan(data, base, start, stop, &mut found, |_| false);
                (found, next)
            })
            .collect();
        let mut at = from;
        for (&(start, stop), (found, chunk_next)) in bounds.iter().zip(scans) {
            if at >= stop {
                continue;
            }
            if at > start {
                // Continue the scan that came from the previous chunk until it reaches a position this
                // chunk's scan visited too (one not inside one of its matches).
                let mut cursor = 0;
                let mut synced = None;
                at = self.scan(data, base, at, stop, accepted, |x| {
                    while cursor < found.len() && found[cursor].pos < x {
                        cursor += 1;
                    }
                    let inside = cursor > 0 && found[cursor - 1].pos + found[cursor - 1].len > x;
                    if !inside {
                        synced = Some(cursor);
                    }
                    !inside
                });
                let Some(first) = synced else { continue };
                accepted.extend_from_slice(&found[first..]);
            } else {
                accepted.extend_from_slice(&found);
            }
            at = chunk_next;
        }
        at
    }

    /// The greedy scan over whole blocks from `from` while the position is below `until` and `stop`
    /// says go on; returns where it stopped.
    fn scan(
        &self,
        data: &[u8],
        base: u64,
        from: u64,
        until: u64,
        found: &mut Vec<Match>,
        mut stop: impl FnMut(u64) -> bool,
    ) -> u64 {
        let len = self.block_len as usize;
        let mut x = from;
        let mut rolling: Option<W> = None;
        let mut ahead = Ahead::default();
        while x < until {
            if stop(x) {
                return x;
            }
            let i = (x - base) as usize;
            let (weak, class) = match rolling {
                Some(weak) => {
                    let digest = weak.digest();
                    let class = if self.signature.may_contain(digest) {
                        self.signature.find(digest, &data[i..i + len])
                    } else {
                        None
                    };
                    (weak, class)
                }
                None => match ahead.at(x) {
                    Some(known) => known,
                    None => self.look_ahead(data, base, x, &mut ahead),
                },
            };
            if let Some(class) = class {
                found.push(Match {
                    pos: x,
                    len: self.block_len,
                    class,
                });
                x += self.block_len;
                rolling = None;
                continue;
            }
            rolling = data.get(i + len).map(|&new| {
                let mut w = weak;
                w.rotate(data[i], new);
                w
            });
            x += 1;
        }
        x
    }

    /// Checks the blocks at `x`, `x + block_len`, … (up to [`LOOK_AHEAD`], stopping at the first weak
    /// miss): in a region that matches, those are the positions the scan visits next, and their strong
    /// sums are computed in one batch, four at a time with SIMD for BLAKE2. Returns the result for `x`.
    fn look_ahead(&self, data: &[u8], base: u64, x: u64, ahead: &mut Ahead<W>) -> (W, Option<Class>) {
        let len = self.block_len as usize;
        ahead.entries.clear();
        let mut blocks: [&[u8]; LOOK_AHEAD] = [&[]; LOOK_AHEAD];
        let mut hits = 0;
        for k in 0..LOOK_AHEAD as u64 {
            let pos = x + k * self.block_len;
            let i = (pos - base) as usize;
            let Some(block) = data.get(i..i + len) else { break };
            let weak = W::over(block);
            let run = self.signature.weak_run(weak.digest());
            ahead.entries.push((pos, weak, run));
            if run.is_none() {
                break;
            }
            blocks[hits] = block;
            hits += 1;
        }
        if hits > 0 {
            strong_sums(
                self.signature.params().kind.strong,
                &blocks[..hits],
                &mut ahead.strongs,
            );
            for (entry, strong) in ahead.entries.iter_mut().zip(&ahead.strongs) {
                entry.2 = entry.2.and_then(|run| self.signature.strong_class(run, strong));
            }
        }
        let (_, weak, class) = ahead.entries[0];
        (weak, class)
    }

    /// At the end of the file, tries the shorter windows `[x, end)` for `x` from `from`: only the basis's
    /// own short last block can match one.
    fn scan_tail(&self, data: &[u8], base: u64, from: u64) -> Option<Match> {
        let end = base + data.len() as u64;
        let mut rolling: Option<W> = None;
        for x in from..end {
            let i = (x - base) as usize;
            let mut weak = rolling.unwrap_or_else(|| W::over(&data[i..]));
            if let Some(class) = self.signature.find(weak.digest(), &data[i..]) {
                return Some(Match {
                    pos: x,
                    len: end - x,
                    class,
                });
            }
            weak.rollout(data[i]);
            rolling = Some(weak);
        }
        None
    }
}

fn slice(data: &[u8], base: u64, from: u64, to: u64) -> &[u8] {
    &data[(from - base) as usize..(to - base) as usize]
}

/// Writes commands, merging contiguous COPYs.
struct Emitter<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    signature: &'a IndexedSignature,
    block_len: u64,
    /// A COPY not yet written, in case the next one continues it: (basis offset, length).
    pending: Option<(u64, u64)>,
    max_literal: usize,
    stats: DeltaStats,
}

impl<'a> Emitter<'a> {
    fn new(
        out: &'a mut dyn Write,
        signature: &'a IndexedSignature,
        block_len: u64,
        max_literal: usize,
    ) -> Self {
        let mut buf = Vec::with_capacity(OUT_BUFFER + 64);
        buf.extend_from_slice(&DELTA_MAGIC.to_be_bytes());
        Emitter {
            out,
            buf,
            signature,
            block_len,
            pending: None,
            max_literal,
            stats: DeltaStats::default(),
        }
    }

    /// Literal bytes, in pieces of `max_literal`.
    fn literal(&mut self, bytes: &[u8]) -> Result<()> {
        self.flush_copy();
        for piece in bytes.chunks(self.max_literal) {
            push_literal(&mut self.buf, piece.len() as u64);
            if piece.len() > OUT_BUFFER {
                self.write_buf()?;
                self.out.write_all(piece).map_err(Error::write("delta"))?;
                self.stats.delta_bytes += piece.len() as u64;
            } else {
                self.buf.extend_from_slice(piece);
            }
            self.stats.literal_cmds += 1;
            self.stats.literal_bytes += piece.len() as u64;
            self.maybe_write()?;
        }
        Ok(())
    }

    fn copy(&mut self, class: Class, len: u64) -> Result<()> {
        let preferred = self.pending.and_then(|(offset, pending_len)| {
            let end = offset + pending_len;
            (end % self.block_len == 0).then_some(end / self.block_len)
        });
        let offset = u64::from(self.signature.choose(class, preferred)) * self.block_len;
        match &mut self.pending {
            Some((start, pending_len)) if *start + *pending_len == offset => *pending_len += len,
            _ => {
                self.flush_copy();
                self.pending = Some((offset, len));
            }
        }
        self.stats.copy_bytes += len;
        self.maybe_write()
    }

    fn flush_copy(&mut self) {
        if let Some((offset, len)) = self.pending.take() {
            push_copy(&mut self.buf, offset, len);
            self.stats.copy_cmds += 1;
        }
    }

    fn maybe_write(&mut self) -> Result<()> {
        if self.buf.len() >= OUT_BUFFER {
            self.write_buf()
        } else {
            Ok(())
        }
    }

    fn write_buf(&mut self) -> Result<()> {
        self.out.write_all(&self.buf).map_err(Error::write("delta"))?;
        self.stats.delta_bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self, new_bytes: u64) -> Result<DeltaStats> {
        self.flush_copy();
        self.buf.push(OP_END);
        self.write_buf()?;
        self.out.flush().map_err(Error::write("delta"))?;
        self.stats.new_bytes = new_bytes;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{SignatureKind, SignatureParams};
    use crate::signature::{Signature, write_signature};
    use proptest::prelude::*;

    fn index(basis: &[u8], kind: SignatureKind, block_len: u32) -> IndexedSignature {
        let params = SignatureParams {
            kind,
            block_len,
            strong_len: kind.max_strong_len(),
        };
        let mut sig = Vec::new();
        write_signature(&mut &basis[..], &mut sig, params, None).unwrap();
        IndexedSignature::new(Signature::read(&mut sig.as_slice()).unwrap())
    }

    fn run(index: &IndexedSignature, new: &[u8], tuning: Tuning) -> Vec<u8> {
        let mut out = Vec::new();
        delta_with(index, &mut &new[..], &mut out, None, tuning).unwrap();
        out
    }

    /// One window holding everything, one chunk: the plain sequential scan.
    const SEQUENTIAL: Tuning = Tuning {
        window: 1 << 30,
        min_chunk: u64::MAX,
        max_chunks: 1,
        max_literal: 8 << 20,
    };

    /// Edits a copy of `basis`: (position in thousandths, kind, length) triples.
    fn edit(basis: &[u8], edits: &[(usize, u8, usize)]) -> Vec<u8> {
        let mut new = basis.to_vec();
        for &(at, kind, len) in edits {
            let at = (new.len() * at / 1000).min(new.len());
            let end = (at + len).min(new.len());
            let replacement: Vec<u8> = match kind % 3 {
                0 => (0..len).map(|i| (i * 131 + at) as u8).collect(),
                1 => Vec::new(),
                _ => (0..end - at).map(|i| !((i + at) as u8)).collect(),
            };
            let range = if kind % 3 == 0 { at..at } else { at..end };
            new.splice(range, replacement);
        }
        new
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Windows of a few blocks cut into chunks of a few bytes: every stitching case (a scan running
        /// into a neighbour's match, past a whole chunk, across windows) must give exactly the bytes of the
        /// sequential scan.
        #[test]
        fn parallel_chunks_and_windows_equal_the_sequential_scan(
            seed in any::<u64>(),
            len in 0usize..3000,
            block_len in 1u32..40,
            edits in prop::collection::vec((0usize..=1000, any::<u8>(), 0usize..60), 0..8),
            window in 1usize..200,
            min_chunk in 1u64..50,
            max_literal in prop::sample::select(vec![1usize, 7, 64, 65, 300, 8 << 20]),
            kind in 0usize..4,
        ) {
            let mut x = seed | 1;
            // Low-entropy data, so blocks repeat and classes have several members.
            let basis: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % 4) as u8 }).collect();
            let new = edit(&basis, &edits);
            let index = index(&basis, SignatureKind::ALL[kind], block_len);
            let reference = run(&index, &new, Tuning { max_literal, ..SEQUENTIAL });
            let tuning = Tuning { window, min_chunk, max_chunks: 7, max_literal };
            prop_assert_eq!(run(&index, &new, tuning), reference.clone());
            prop_assert_eq!(crate::patch(&basis, &reference, crate::PatchOptions::default()).unwrap(), new);
        }
    }

    #[test]
    fn repeated_blocks_merge_into_one_copy() {
        let basis = vec![0u8; 64 * 100];
        let index = index(&basis, SignatureKind::default(), 64);
        let delta = run(&index, &basis, Tuning::default());
        // magic, one COPY (offset 0 in 1 byte, length 6400 in 2), END.
        assert_eq!(delta, [0x72, 0x73, 0x02, 0x36, 0x46, 0, 0x19, 0, 0]);
    }
}
