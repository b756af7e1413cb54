//! One output contract for every command (docs/json.md): results on standard output, as text or, with
//! `--json`, as one JSON object per line ending with a `summary` (or, on failure, an `error`) object;
//! messages on standard error through one logger, whose level `-q`, `-v` and `-vv` set; colour only on a
//! terminal, never with `NO_COLOR` or `--color never`.
//!
//! The libraries log through the `log` facade (their own targets, `snapsync_*`); this module is the
//! only logger. `-q` shows errors only, the default adds warnings, `-v` the per-file and timing lines
//! (info), `-vv` the libraries' debug lines, `-vvv` every crate's trace lines.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anstyle::{AnsiColor, Style};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::{ColorArg, OutputArgs};

/// Whether results go out as JSON lines (set once from `--json`; `run` may set it per task).
static JSON: AtomicBool = AtomicBool::new(false);

pub(crate) const ERROR: Style = AnsiColor::Red.on_default().bold();
pub(crate) const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub(crate) const HINT: Style = AnsiColor::Cyan.on_default();
pub(crate) const CONFLICT: Style = AnsiColor::Magenta.on_default().bold();
const DIM: Style = Style::new().dimmed();

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Other crates' lines (an SSH library's handshake, say) only at trace level, -vvv.
        metadata.level() <= log::max_level()
            && (metadata.target().starts_with("snapsync") || log::max_level() >= LevelFilter::Trace)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = crate::output::printable(&record.args().to_string()).into_owned();
        let (style, prefix) = match record.level() {
            Level::Error => (ERROR, "error: "),
            Level::Warn => (WARNING, "warning: "),
            Level::Info => (Style::new(), ""),
            Level::Debug => (DIM, "debug: "),
            Level::Trace => (DIM, "trace: "),
        };
        crate::progress::suspended(|| {
            let mut err = anstream::stderr().lock();
            let _ = if prefix.is_empty() {
                writeln!(err, "{text}")
            } else if record.level() >= Level::Debug {
                writeln!(err, "{style}{prefix}{}: {text}{style:#}", record.target())
            } else {
                writeln!(err, "{style}{prefix}{style:#}{text}")
            };
        });
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

/// Installs the logger and the colour choice; called once, before any command runs.
pub(crate) fn init(output: &OutputArgs) {
    let choice = match output.color {
        ColorArg::Auto => anstream::ColorChoice::Auto,
        ColorArg::Always => anstream::ColorChoice::Always,
        ColorArg::Never => anstream::ColorChoice::Never,
    };
    // `Auto` honours NO_COLOR, CLICOLOR and CLICOLOR_FORCE, and colours only a terminal.
    choice.write_global();
    let _ = log::set_logger(&LOGGER);
    apply(output);
}

/// Sets the level and the JSON mode from `output` (again for each task of `run`).
pub(crate) fn apply(output: &OutputArgs) {
    log::set_max_level(level_of(output));
    JSON.store(output.json, Ordering::Relaxed);
}

fn level_of(output: &OutputArgs) -> LevelFilter {
    if output.quiet {
        return LevelFilter::Error;
    }
    match output.verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Whether results are JSON lines.
pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes one JSON line `{"type": kind, …fields}` on standard output. `fields` is an object.
pub(crate) fn event(kind: &str, fields: serde_json::Value) -> io::Result<()> {
    let mut object = serde_json::Map::new();
    object.insert("type".to_owned(), kind.into());
    if let serde_json::Value::Object(map) = fields {
        object.extend(map);
    }
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, &object)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes the final `summary` line of `command`.
pub(crate) fn summary(command: &str, fields: serde_json::Value) -> io::Result<()> {
    let mut object = serde_json::Map::new();
    object.insert("command".to_owned(), command.into());
    if let serde_json::Value::Object(map) = fields {
        object.extend(map);
    }
    event("summary", serde_json::Value::Object(object))
}

/// A line of text on standard error, `prefix` in `style` (a colour only where colour is on).
pub(crate) fn stderr_line(style: Style, prefix: &str, text: &str) {
    crate::progress::suspended(|| {
        let mut err = anstream::stderr().lock();
        let _ = writeln!(err, "{style}{prefix}{style:#}{}", crate::output::printable(text));
    });
}

/// A plain line on standard error: a command's one-line summary (callers leave it out with `--quiet`).
pub(crate) fn note(text: &str) {
    stderr_line(Style::new(), "", text);
}

/// "1 file", "2 files": a count with its noun (any integer; one past `u64` counts as `u64::MAX`).
pub(crate) fn count(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(0u64, "file", "files"), "0 files");
        assert_eq!(count(1u64, "conflict", "conflicts"), "1 conflict");
        assert_eq!(count(2u64, "snapshot", "snapshots"), "2 snapshots");
    }
}
