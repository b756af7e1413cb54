//! `snapsync`: parse the command line, call the libraries, print the result. Nothing else lives here.
#![forbid(unsafe_code)]

mod cache;
mod cli;
mod credentials;
mod delta;
mod generate;
mod interrupt;
mod manifest;
mod output;
mod pkg;
mod progress;
mod run;
mod say;
mod scan;
mod snapshot;
mod sync;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use snapsync_store::ConnectOptions;

use snapsync_cli::{Hinted, UsageError, config, hinted, time};

use crate::cli::{Cli, Command};

/// Exit status for a usage error, as clap uses for its own.
const EXIT_USAGE: u8 = 2;
/// Standard output was closed before the output was complete (`| head`): 128 + SIGPIPE.
const EXIT_BROKEN_PIPE: u8 = 141;

/// A command that finished but left conflicts it would not settle on its own: a sync's unresolved
/// conflicts, a cache push's remote edits, a mirror's files of the same name and other content (exit
/// status 4).
#[derive(Debug)]
pub(crate) struct ConflictsLeft {
    pub(crate) message: String,
    pub(crate) hint: &'static str,
}

impl std::fmt::Display for ConflictsLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConflictsLeft {}

/// A command whose answer is its exit status, with nothing more to say: `diff` that listed differences
/// exits 1, as diff(1) does.
#[derive(Debug)]
pub(crate) struct QuietExit(pub(crate) u8);

impl std::fmt::Display for QuietExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for QuietExit {}

/// Exit status of a command that left conflicts ([`ConflictsLeft`]).
pub(crate) const EXIT_CONFLICTS: u8 = 4;

/// The first hint any error in the chain offers.
fn hint_of(error: &anyhow::Error) -> Option<&'static str> {
    error.chain().find_map(|e| {
        if let Some(e) = e.downcast_ref::<Hinted>() {
            Some(e.hint())
        } else if let Some(e) = e.downcast_ref::<snapsync_core::Error>() {
            e.hint()
        } else if let Some(e) = e.downcast_ref::<snapsync_delta::Error>() {
            e.hint()
        } else if let Some(e) = e.downcast_ref::<snapsync_snapshot::Error>() {
            e.hint()
        } else if let Some(e) = e.downcast_ref::<snapsync_store::Error>() {
            e.hint()
        } else if let Some(e) = e.downcast_ref::<snapsync_sync::Error>() {
            e.hint()
        } else if let Some(e) = e.downcast_ref::<snapsync_pkg::Error>() {
            e.hint()
        } else {
            None
        }
    })
}

fn main() -> ExitCode {
    // The binary, unlike the libraries on their own, hashes big files through memory maps: that needs
    // the process-wide SIGBUS guard (a file truncated while mapped is then an error, not a crash).
    snapsync_core::install_sigbus_guard();
    // A panic's message may quote a URL: shown like every other message, its password redacted.
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("(no message)");
        let place = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!(
            "snapsync panicked{place}: {}\nthis is a bug; please report it",
            output::printable(message)
        );
    }));

    // Packaging's hidden command is read before clap, so that no help, man page or completion lists it.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == generate::COMMAND) {
        return match generate::generate(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => report(&error),
        };
    }
    let cli = Cli::parse();
    say::init(&cli.output);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // How stores are reached: the environment, with the command line's flags on top (only the commands
    // that open stores take them); built once.
    let connect = &cli
        .command
        .connect_args()
        .cloned()
        .unwrap_or_default()
        .options(ConnectOptions::from_env());
    match &cli.command {
        Command::Manifest(args) => manifest::manifest(args, &cli.output),
        Command::Id(args) => manifest::id(args, &cli.output),
        Command::Stage(args) => snapshot::stage(args, &cli.output),
        Command::Push(args) => snapshot::push(args, &cli.output, connect),
        Command::Fetch(args) => snapshot::fetch(args, &cli.output, connect),
        Command::Pull(args) => snapshot::pull(args, &cli.output, connect),
        Command::Checkout(args) => snapshot::checkout(args, &cli.output),
        Command::Copy(args) => snapshot::copy(args, &cli.output, connect),
        Command::Diff(args) => snapshot::diff(args, &cli.output, connect),
        Command::Verify(args) => snapshot::verify(args, &cli.output, connect),
        Command::Snapshots(args) => snapshot::snapshots(args, &cli.output, connect),
        Command::Size(args) => snapshot::size(args, &cli.output, connect),
        Command::Gc(args) => snapshot::gc(args, &cli.output, connect),
        Command::Signature(args) => delta::signature(args, &cli.output),
        Command::Delta(args) => delta::delta(args, &cli.output),
        Command::Patch(args) => delta::patch(args, &cli.output),
        Command::Upload(args) => sync::upload(args, &cli.output, connect),
        Command::Download(args) => sync::download(args, &cli.output, connect),
        Command::Sync(args) => sync::sync(args, &cli.output, connect),
        Command::Run(args) => run::run(args, &cli.output, &args.connect),
        Command::Scan(args) => scan::scan(args, &cli.output, connect),
        Command::Cache(command) => cache::run(command, &cli.output, connect),
        Command::Pkg(command) => pkg::run(command, &cli.output, connect),
        Command::Completions { shell } => {
            if cli.output.json {
                return Err(UsageError("completions prints a script: it has no --json output".into()).into());
            }
            let mut out = io::stdout().lock();
            clap_complete::generate(*shell, &mut Cli::command(), "snapsync", &mut out);
            out.flush()?;
            Ok(())
        }
    }
}

/// Whether a library stopped because its [`snapsync_core::Cancel`] was cancelled (exit status 3).
fn is_cancelled(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        matches!(e.downcast_ref(), Some(snapsync_core::Error::Cancelled))
            || matches!(e.downcast_ref(), Some(snapsync_sync::Error::Cancelled))
            || matches!(e.downcast_ref(), Some(snapsync_snapshot::Error::Cancelled))
            || matches!(e.downcast_ref(), Some(snapsync_cache::Error::Cancelled))
            || matches!(e.downcast_ref(), Some(snapsync_pkg::Error::Cancelled))
    })
}

/// Prints an error with its causes and a hint, and picks the exit status.
fn report(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(report_status(error))
}

/// Prints an error with its causes and a hint; returns the exit status it calls for. With `--json`, the
/// same goes to standard output as the last line, an `error` object (docs/json.md).
pub(crate) fn report_status(error: &anyhow::Error) -> u8 {
    // `snapsync manifest . | head` closes the pipe early: no message (the reader chose to stop), but
    // not success either, since the output is cut short: 141, as a shell reports a process SIGPIPE
    // ended (128 + 13), the way other tools end there.
    if error.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }) {
        log::debug!("standard output was closed before the output was complete");
        return EXIT_BROKEN_PIPE;
    }
    if let Some(QuietExit(status)) = error.downcast_ref::<QuietExit>() {
        return *status;
    }
    let (status, message, causes, hint) = explain(error);
    let kind = if status == EXIT_CONFLICTS {
        say::stderr_line(say::CONFLICT, "snapsync: ", &message);
        "conflicts"
    } else if status == interrupt::EXIT_INTERRUPTED {
        say::stderr_line(anstyle::Style::new(), "snapsync: ", &message);
        "interrupted"
    } else {
        say::stderr_line(say::ERROR, "error: ", &message);
        for cause in &causes {
            say::stderr_line(anstyle::Style::new(), "  caused by: ", cause);
        }
        if status == EXIT_USAGE { "usage" } else { "error" }
    };
    if let Some(hint) = hint {
        say::stderr_line(say::HINT, "hint: ", hint);
    }
    if status == EXIT_USAGE {
        let _ = writeln!(io::stderr().lock(), "\nFor more information, try '--help'.");
    }
    if say::json() {
        let _ = say::event(
            "error",
            serde_json::json!({
                "kind": kind,
                "message": message,
                "causes": causes,
                "hint": hint,
                "exit": status,
            }),
        );
    }
    status
}

/// An error's exit status, message, causes (each said once) and hint.
fn explain(error: &anyhow::Error) -> (u8, String, Vec<String>, Option<&'static str>) {
    if interrupt::interrupted() || is_cancelled(error) {
        return (
            interrupt::EXIT_INTERRUPTED,
            interrupt::MESSAGE.to_owned(),
            Vec::new(),
            None,
        );
    }
    if let Some(conflicts) = error.downcast_ref::<ConflictsLeft>() {
        return (
            EXIT_CONFLICTS,
            conflicts.message.clone(),
            Vec::new(),
            Some(conflicts.hint),
        );
    }
    if let Some(failed) = error.downcast_ref::<run::TasksFailed>() {
        return (failed.status, failed.to_string(), Vec::new(), None);
    }
    // Libraries often repeat their cause inside their own message; say each thing once.
    let mut said = error.to_string();
    let mut causes = Vec::new();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            causes.push(text.clone());
            said = text;
        }
    }
    let status = if error.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else {
        1
    };
    (status, error.to_string(), causes, hint_of(error))
}
