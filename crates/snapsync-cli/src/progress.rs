//! Progress on standard error while long work runs.
//!
//! A background thread polls counters the libraries update and draws one line: a bar when the total is
//! known (files done/total, bytes done/total, rate, time left), a spinner otherwise. It draws only when
//! standard error is a terminal, not with `--quiet`, and only once the work has taken long enough to be
//! worth watching. The rate is measured over the last few seconds and shown only once there is a second
//! of it (an early rate of a few bytes in a few microseconds means nothing); the time left needs a rate
//! and a total. When the work ends the line is cleared: the command prints its summary itself.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::OutputArgs;
use crate::say::count;

/// Work shorter than this shows no progress at all, so quick commands do not flicker.
const SHOW_AFTER: Duration = Duration::from_millis(400);
const TICK: Duration = Duration::from_millis(100);
/// The rate is measured over this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// No rate (and no time left) is shown before it was measured over this long.
const RATE_AFTER: Duration = Duration::from_secs(1);

/// What the work has done so far, as a display shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// Items (files, objects…) done and to do; a total of 0 is not known (yet).
    pub(crate) items: Option<(u64, u64)>,
    /// Bytes done.
    pub(crate) bytes: u64,
    /// Bytes to do; 0 is not known (yet).
    pub(crate) bytes_total: u64,
}

impl Status {
    /// Bytes only, with a total if known.
    pub(crate) fn bytes(bytes: u64, total: Option<u64>) -> Status {
        Status {
            items: None,
            bytes,
            bytes_total: total.unwrap_or(0),
        }
    }
}

/// What is counted, for the words of the display.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Label {
    /// What the work is doing ("pushing").
    pub(crate) doing: &'static str,
    /// The item counted, singular and plural ("file", "files").
    pub(crate) item: (&'static str, &'static str),
}

impl Label {
    pub(crate) const fn new(doing: &'static str, item: (&'static str, &'static str)) -> Label {
        Label { doing, item }
    }
}

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
    /// Starts polling `status` (unless `--quiet` or standard error is not a terminal).
    pub(crate) fn start(
        output: &OutputArgs,
        label: Label,
        status: impl Fn() -> Status + Send + 'static,
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
            let mut display: Option<Display> = None;
            let mut rate = Rate::default();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                let now = Instant::now();
                let status = status();
                rate.sample(now, status.bytes);
                if now.duration_since(started) < SHOW_AFTER {
                    continue;
                }
                let display = display.get_or_insert_with(|| {
                    let display = Display::new(label);
                    show(Some(&display.bar));
                    display
                });
                display.show(&status, rate.per_second());
            }
            if let Some(display) = display {
                show(None);
                display.bar.finish_and_clear();
            }
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The bar on the terminal.
struct Display {
    bar: ProgressBar,
    label: Label,
    with_total: bool,
}

impl Display {
    fn new(label: Label) -> Display {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(style(false));
        bar.set_prefix(label.doing);
        Display {
            bar,
            label,
            with_total: false,
        }
    }

    fn show(&mut self, status: &Status, rate: Option<u64>) {
        // The bar follows bytes when their total is known, else items.
        let (position, total) = match status.items {
            _ if status.bytes_total > 0 => (status.bytes, status.bytes_total),
            Some((done, total)) => (done, total),
            None => (0, 0),
        };
        // The words first: a change of style or position draws at once.
        self.bar.set_message(message(self.label, status, rate));
        if total > 0 && !self.with_total {
            self.with_total = true;
            self.bar.set_style(style(true));
        }
        if total > 0 {
            self.bar.set_length(total.max(position));
            self.bar.set_position(position);
        } else {
            self.bar.tick();
        }
    }
}

fn style(with_total: bool) -> ProgressStyle {
    let template = if with_total {
        "{prefix} [{bar:30}] {msg}"
    } else {
        "{spinner} {prefix}: {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The words after the bar: `3/10 files, 12.0 MiB/578.0 MiB, 8.2 MiB/s, 1m05s left`.
fn message(label: Label, status: &Status, rate: Option<u64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some((done, total)) = status.items {
        if total > 0 {
            parts.push(format!("{done}/{}", count(total, label.item.0, label.item.1)));
            if done >= total && status.bytes >= status.bytes_total {
                // Everything counted has moved; what follows (a manifest, a flush) is short but not
                // nothing: say so rather than spin on silently.
                parts.push("finishing".into());
                return parts.join(", ");
            }
        } else {
            parts.push(count(done, label.item.0, label.item.1));
        }
    }
    if status.bytes_total > 0 {
        parts.push(format!(
            "{}/{}",
            HumanBytes(status.bytes),
            HumanBytes(status.bytes_total.max(status.bytes))
        ));
    } else if status.bytes > 0 || status.items.is_none() {
        parts.push(HumanBytes(status.bytes).to_string());
    }
    if let Some(rate) = rate {
        parts.push(format!("{}/s", HumanBytes(rate)));
        if status.bytes_total > status.bytes && rate > 0 {
            let left = (status.bytes_total - status.bytes).div_ceil(rate);
            parts.push(format!("{} left", short_duration(Duration::from_secs(left))));
        }
    }
    parts.join(", ")
}

/// `5s`, `1m05s`, `2h03m`.
pub(crate) fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let mut out = String::new();
    if secs >= 3600 {
        let _ = write!(out, "{}h{:02}m", secs / 3600, secs % 3600 / 60);
    } else if secs >= 60 {
        let _ = write!(out, "{}m{:02}s", secs / 60, secs % 60);
    } else {
        let _ = write!(out, "{secs}s");
    }
    out
}

/// Bytes per second over the recent past.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn sample(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        while let Some(&(when, _)) = self.samples.front() {
            if now.duration_since(when) > RATE_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The rate, once it was measured over [`RATE_AFTER`] at least.
    fn per_second(&self) -> Option<u64> {
        let (&(first, from), &(last, to)) = (self.samples.front()?, self.samples.back()?);
        let span = last.duration_since(first);
        (span >= RATE_AFTER).then(|| per_second(to.saturating_sub(from), span))
    }
}

/// Runs `work` with a byte counter it advances, showing progress from that counter meanwhile.
pub(crate) fn counting<T>(
    output: &OutputArgs,
    doing: &'static str,
    total: Option<u64>,
    work: impl FnOnce(&Arc<AtomicU64>) -> T,
) -> T {
    let done = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&done);
    let _ticker = Ticker::start(output, Label::new(doing, ("file", "files")), move || {
        Status::bytes(seen.load(Ordering::Relaxed), total)
    });
    work(&done)
}

/// Throughput in units per second, in integers (no float casts to get wrong).
pub(crate) fn per_second(amount: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(u128::from(amount) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: Label = Label::new("pushing", ("file", "files"));

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(5)), "5s");
        assert_eq!(short_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(short_duration(Duration::from_mins(123)), "2h03m");
    }

    #[test]
    fn no_rate_before_a_second_of_measurement() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.sample(start, 0);
        // A burst right at the start would read as an absurd rate.
        rate.sample(start + Duration::from_millis(1), 10 << 20);
        assert_eq!(rate.per_second(), None);
        rate.sample(start + Duration::from_secs(2), 20 << 20);
        assert_eq!(rate.per_second(), Some(10 << 20));
    }

    #[test]
    fn the_rate_forgets_the_distant_past() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.sample(start, 0);
        rate.sample(start + Duration::from_secs(1), 100 << 20);
        for second in 2..=20 {
            rate.sample(
                start + Duration::from_secs(second),
                (100 << 20) + (second - 1) * 1024,
            );
        }
        // 1 KiB/s lately, not the average of the burst and the trickle.
        assert_eq!(rate.per_second(), Some(1024));
    }

    #[test]
    fn the_message_shows_totals_rate_and_time_left() {
        let status = Status {
            items: Some((3, 10)),
            bytes: 10 << 20,
            bytes_total: 100 << 20,
        };
        assert_eq!(
            message(FILES, &status, Some(10 << 20)),
            "3/10 files, 10.00 MiB/100.00 MiB, 10.00 MiB/s, 9s left"
        );
        assert_eq!(message(FILES, &status, None), "3/10 files, 10.00 MiB/100.00 MiB");
    }

    #[test]
    fn the_message_says_when_all_has_moved() {
        let status = Status {
            items: Some((1, 1)),
            bytes: 5,
            bytes_total: 5,
        };
        assert_eq!(message(FILES, &status, Some(1)), "1/1 file, finishing");
    }
}
