//! Progress on standard error while long work runs.
//!
//! A background thread polls counters the libraries update and draws a bar (when the total is known)
//! or a spinner, only when standard error is a terminal, not with `--quiet`, and only once the work has
//! taken long enough to be worth watching.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::OutputArgs;

/// Work shorter than this shows no progress at all, so quick commands do not flicker.
const SHOW_AFTER: Duration = Duration::from_millis(400);
const TICK: Duration = Duration::from_millis(100);

/// The bar on screen, if any: lines written to standard error meanwhile go through [`suspended`].
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `write` (a line to standard error) with the bar on screen, if any, cleared meanwhile and drawn
/// again after, so a message never lands in the middle of a bar.
pub(crate) fn suspended<T>(write: impl FnOnce() -> T) -> T {
    let bar = SHOWN.lock().ok().and_then(|shown| shown.clone());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

fn show(bar: Option<&ProgressBar>) {
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = bar.cloned();
    }
}

/// A progress display that lives until dropped.
pub(crate) struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Ticker {
    /// Starts polling `status`, which returns the bytes done so far and a short message.
    pub(crate) fn start(
        output: &OutputArgs,
        label: &'static str,
        total: Option<u64>,
        status: impl Fn() -> (u64, String) + Send + 'static,
    ) -> Self {
        if output.quiet || ProgressDrawTarget::stderr().is_hidden() {
            return Ticker {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut bar: Option<ProgressBar> = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                if started.elapsed() < SHOW_AFTER {
                    continue;
                }
                let bar = bar.get_or_insert_with(|| {
                    let bar = new_bar(label, total);
                    show(Some(&bar));
                    bar
                });
                let (position, message) = status();
                bar.set_position(position);
                bar.set_message(message);
            }
            if let Some(bar) = bar {
                show(None);
                bar.finish_and_clear();
            }
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

fn new_bar(label: &'static str, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        format!(
            "{label} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{binary_bytes_per_sec}}, {{eta}} left) {{msg}}"
        )
    } else {
        format!("{{spinner}} {label}: {{bytes}} ({{binary_bytes_per_sec}}) {{msg}} [{{elapsed}}]")
    };
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `work` with a byte counter it advances, showing progress from that counter meanwhile.
pub(crate) fn counting<T>(
    output: &OutputArgs,
    label: &'static str,
    total: Option<u64>,
    work: impl FnOnce(&Arc<AtomicU64>) -> T,
) -> T {
    let done = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&done);
    let _ticker = Ticker::start(output, label, total, move || {
        (seen.load(Ordering::Relaxed), String::new())
    });
    work(&done)
}

/// Throughput in units per second, in integers (no float casts to get wrong).
pub(crate) fn per_second(amount: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(u128::from(amount) * 1_000_000 / micros).unwrap_or(u64::MAX)
}
