//! Kill points for the crash harness (`cargo xtask chaos`, docs/RELIABILITY.md).
//!
//! [`point`] marks a moment where a crash is worth testing: `mid-file` (some bytes of a file written
//! under its temporary name, not yet published), `after-rename` (a file renamed into place, whatever
//! records it — a sync state, a manifest — not yet written) and `lock` (a remote lock just taken,
//! nothing else done). Built without the `chaos` feature (every normal build), a point is an empty
//! function the compiler removes. Built with it, a point reads `SNAPSYNC_CHAOS_POINT` (a point's name)
//! and `SNAPSYNC_CHAOS_SKIP` (how many passes to let by, 0 when unset): at the chosen pass the process
//! writes `snapsync-chaos: stopped at NAME` on standard error and stops itself (`SIGSTOP`, every
//! thread at once) so that the harness kills it with `SIGKILL` exactly there.

/// The line a stopped process writes on standard error, before the point's name.
pub const ANNOUNCE: &str = "snapsync-chaos: stopped at ";

/// The variable naming the point to stop at.
pub const POINT_VAR: &str = "SNAPSYNC_CHAOS_POINT";

/// The variable saying how many passes through the point to let by first.
pub const SKIP_VAR: &str = "SNAPSYNC_CHAOS_SKIP";

/// A kill point named `name` (see the module's documentation); nothing without the `chaos` feature.
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "chaos")]
    enabled::point(name);
    #[cfg(not(feature = "chaos"))]
    let _ = name;
}

#[cfg(feature = "chaos")]
mod enabled {
    use std::io::Write;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The chosen point and the passes to let by, read once.
    fn chosen() -> Option<&'static (String, u64)> {
        static CHOSEN: OnceLock<Option<(String, u64)>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| {
                let name = std::env::var(super::POINT_VAR).ok()?;
                let skip = std::env::var(super::SKIP_VAR)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Some((name, skip))
            })
            .as_ref()
    }

    pub(super) fn point(name: &str) {
        static PASSES: AtomicU64 = AtomicU64::new(0);
        let Some((chosen, skip)) = chosen() else {
            return;
        };
        if chosen != name || PASSES.fetch_add(1, Ordering::SeqCst) != *skip {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}{name}", super::ANNOUNCE);
        let _ = err.flush();
        // Every thread stops here; the harness sends SIGKILL. Should SIGSTOP fail (it cannot be caught
        // or ignored), the thread waits for the kill all the same.
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGSTOP);
        loop {
            std::thread::sleep(std::time::Duration::from_hours(1));
        }
    }
}
