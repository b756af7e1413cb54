//! Progress on standard error while long work runs, and the warnings it leaves.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapsync_core::Progress;

use crate::cli::OutputArgs;

/// Work shorter than this shows no progress at all, so quick commands do not flicker.
const SHOW_AFTER: Duration = Duration::from_millis(400);
const TICK: Duration = Duration::from_millis(100);

/// A spinner with counts and throughput of a walk, drawn on standard error only when it is a terminal.
pub(crate) struct WalkProgress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WalkProgress {
    pub(crate) fn start(counters: &Arc<Progress>, output: &OutputArgs) -> Self {
        let target = ProgressDrawTarget::stderr();
        if output.quiet || target.is_hidden() {
            return WalkProgress {
                stop: None,
                thread: None,
            };
        }
        let counters = Arc::clone(counters);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut bar: Option<ProgressBar> = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                if started.elapsed() < SHOW_AFTER {
                    continue;
                }
                let bar = bar.get_or_insert_with(|| {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} hashing: {msg} [{elapsed}]")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar
                });
                let bytes = counters.bytes();
                bar.set_message(format!(
                    "{} files, {} ({}/s)",
                    counters.files(),
                    HumanBytes(bytes),
                    HumanBytes(per_second(bytes, started.elapsed()))
                ));
                bar.tick();
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        WalkProgress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// Throughput in units per second, in integers (no float casts to get wrong).
pub(crate) fn per_second(amount: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(u128::from(amount) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

impl Drop for WalkProgress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
