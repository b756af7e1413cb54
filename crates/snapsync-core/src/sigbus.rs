//! Memory-mapped hashing that survives a file shrinking underneath it.
//!
//! Reading a mapped page past the end of a file that was truncated after it was mapped raises `SIGBUS`,
//! which kills the process. Log rotation with `copytruncate` does exactly that to files a snapshot may be
//! hashing, so a plain `mmap` would turn a routine race into a crash with no message.
//!
//! While a mapping is hashed, its address range sits in a small lock-free table. A process-wide `SIGBUS`
//! handler (installed once, when the program opts in with [`install_sigbus_guard`], chained to whatever
//! handler was there before, normally Rust's own stack-overflow reporter) checks whether the faulting address lies in a registered range. If it does,
//! the handler maps anonymous zero pages over the rest of that range with `MAP_FIXED`, marks the range as
//! faulted and returns; the hashing thread resumes reading zeros, and once it is done the caller sees
//! the mark and reports an error instead of the meaningless checksum. Any other `SIGBUS` goes to the
//! previous handler unchanged.
//!
//! The handler does only async-signal-safe work: atomic loads and stores, and the `mmap` and
//! `sigaction` system calls.
//!
//! A library does not change a process's signal handlers behind its caller's back: until the program
//! calls [`install_sigbus_guard`] (the `snapsync` binary does, first thing), files are hashed by reading
//! them, never mapped.
//!
//! Why not just `read`: mapping lets BLAKE3 hash one large file on all cores without a copy; on the
//! bench machine it is about 10% faster than the best pipelined `read` we measured (docs/BENCHMARKS.md).

// The only `unsafe` in snapsync: mapping files and handling the signal their truncation raises.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::hash::Checksum;

/// How many mappings can be guarded at once; more than the threads that hash, with room to spare.
const SLOTS: usize = 64;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    }
}; SLOTS];

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// The disposition that was in place before ours; `None` until installation finished.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Whether the handler is in place (installation is attempted once).
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// The error payload for a mapping that faulted; recognised by [`is_truncation`].
#[derive(Debug)]
struct TruncatedWhileMapped;

impl std::fmt::Display for TruncatedWhileMapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file was truncated while it was being hashed")
    }
}

impl std::error::Error for TruncatedWhileMapped {}

pub(crate) fn is_truncation(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<TruncatedWhileMapped>)
}

/// How much of a file is mapped at once. Each window is unmapped once hashed, so a file of any size
/// keeps at most this much of itself resident in this process (64 MiB is plenty for all cores to work).
pub(crate) const WINDOW: u64 = 64 << 20;

/// Hashes `len` bytes of `file` through guarded mappings of up to [`WINDOW`] bytes, each on all rayon
/// threads.
///
/// Returns `Ok(None)` when no guard is available for the first window (handler not installable, or
/// every slot busy): the caller then falls back to reading; a later window without a guard is read.
/// `after_map` runs between mapping the first window and hashing it; tests use it to truncate the file
/// at the worst moment.
pub(crate) fn hash_mapped(
    file: &File,
    len: u64,
    after_map: impl FnOnce(),
) -> io::Result<Option<(Checksum, u64)>> {
    let mut hasher = blake3::Hasher::new();
    Ok(update_mapped(&mut hasher, file, len, after_map)?.then(|| (hasher.finalize().into(), len)))
}

/// [`hash_mapped`], feeding the first `len` bytes of `file` into a caller's `hasher` (which may have
/// seen nothing yet, or a prefix the file follows). Returns `Ok(false)`, with `hasher` untouched, when
/// [`hash_mapped`] would return `Ok(None)`.
pub(crate) fn update_mapped(
    hasher: &mut blake3::Hasher,
    file: &File,
    len: u64,
    after_map: impl FnOnce(),
) -> io::Result<bool> {
    if !installed() || usize::try_from(len).is_err() {
        return Ok(false);
    }
    let mut after_map = Some(after_map);
    let mut offset = 0u64;
    while offset < len {
        let window = (len - offset).min(WINDOW);
        let map_len = usize::try_from(window).map_err(io::Error::other)?;
        // SAFETY: the mapping is read-only and private to this function. Another process may change or
        // truncate the file while it is mapped; changed bytes only change the checksum (the walk
        // compares sizes afterwards), and truncation is caught by the SIGBUS guard registered below
        // before any page is touched.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(map_len)
                .map(file)?
        };
        // Sequential read-ahead measured faster than the default for one pass over the file.
        let _ = map.advise(memmap2::Advice::Sequential);
        let start = map.as_ptr() as usize;
        let Some(slot) = claim(start, start + map_len) else {
            drop(map);
            if offset == 0 {
                return Ok(false);
            }
            read_into(hasher, file, offset, map_len)?;
            offset += window;
            continue;
        };
        if let Some(after_map) = after_map.take() {
            after_map();
        }
        hasher.update_rayon(&map);
        let faulted = release(slot);
        drop(map);
        if faulted {
            return Err(io::Error::other(TruncatedWhileMapped));
        }
        offset += window;
    }
    Ok(true)
}

/// Hashes `len` bytes of `file` from `offset` by reading them (when no guard slot is free).
fn read_into(hasher: &mut blake3::Hasher, file: &File, offset: u64, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; len.min(1 << 20)];
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(buffer.len());
        let n = file.read_at(&mut buffer[..want], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::other(TruncatedWhileMapped));
        }
        hasher.update(&buffer[..n]);
        done += n;
    }
    Ok(())
}

fn claim(start: usize, end: usize) -> Option<&'static Slot> {
    for slot in &TABLE {
        if slot.start.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // `end` is written before `start` is published, so the handler never sees a half-set range.
        // Claiming is a compare-exchange on `start`, with a placeholder that cannot match any fault
        // address, so two threads never share a slot.
        if slot
            .start
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.faulted.store(false, Ordering::Relaxed);
            slot.end.store(end, Ordering::Release);
            slot.start.store(start, Ordering::Release);
            return Some(slot);
        }
    }
    None
}

fn release(slot: &Slot) -> bool {
    slot.start.store(usize::MAX, Ordering::Release);
    let faulted = slot.faulted.swap(false, Ordering::AcqRel);
    slot.end.store(0, Ordering::Release);
    slot.start.store(0, Ordering::Release);
    faulted
}

/// Whether [`install_sigbus_guard`] put the handler in place.
fn installed() -> bool {
    INSTALLED.get().copied().unwrap_or(false)
}

/// Installs the process-wide `SIGBUS` handler that lets large files be hashed through memory maps (on all
/// cores, without a copy) and still survive a file truncated while mapped. Call it once, early, from a
/// program that is willing to have a `SIGBUS` handler (it chains to the one it replaces); without it,
/// snapsync-core reads files instead, a little slower. Returns whether the handler is in place; later
/// calls return the first call's answer.
pub fn install_sigbus_guard() -> bool {
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE_SIZE.store(page, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid starting point; every field we rely on is set below, and
        // `on_sigbus` has the signature SA_SIGINFO requires.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&raw mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &raw const action, &raw mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
        }
        true
    })
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX {
            continue;
        }
        let end = slot.end.load(Ordering::Acquire);
        if address < start || address >= end {
            continue;
        }
        let from = address & !(page - 1);
        // SAFETY: [from, end) lies inside a live mapping that this module created and registered; it is
        // replaced by zero pages of the same protection, which stay valid until the mapping is dropped.
        let mapped = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
    }
    forward(signal, info, context);
}

/// Hands a `SIGBUS` that is not ours to the previous handler, or restores the default action so that
/// the faulting instruction, re-executed on return, terminates the process as it would have without us.
fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if let Some(previous) = PREVIOUS.get() {
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature; it was installed for this signal.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                f(signal, info, context);
            } else {
                // SAFETY: a plain handler takes the signal number only.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                f(signal);
            }
            return;
        }
    }
    // SAFETY: resetting a signal to its default disposition is always valid.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &raw const default, ptr::null_mut());
    }
}
