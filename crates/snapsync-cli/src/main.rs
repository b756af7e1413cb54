//! `snapsync`: parse the command line, call the libraries, print the result. Nothing else lives here.
#![forbid(unsafe_code)]

mod cache;
mod cli;
mod config;
mod delta;
mod manifest;
mod output;
mod pkg;
mod progress;
mod run;
mod scan;
mod snapshot;
mod sync;
mod time;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use snapsync_store::ConnectOptions;

use crate::cli::{Cli, Command};

/// Exit status for a usage error, as clap uses for its own.
const EXIT_USAGE: u8 = 2;

/// An error in how the command was called (exit status 2), as opposed to a failure while running it.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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

/// Exit status of a command that left conflicts ([`ConflictsLeft`]).
pub(crate) const EXIT_CONFLICTS: u8 = 4;

/// An error with a line of advice, printed as `hint:` after the message.
#[derive(Debug)]
pub(crate) struct Hinted {
    message: String,
    hint: &'static str,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

pub(crate) fn hinted(message: String, hint: &'static str) -> anyhow::Error {
    Hinted { message, hint }.into()
}

/// The first hint any error in the chain offers.
fn hint_of(error: &anyhow::Error) -> Option<&'static str> {
    error.chain().find_map(|e| {
        if let Some(e) = e.downcast_ref::<Hinted>() {
            Some(e.hint)
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
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // How stores are reached: the environment, with the command line's flags on top; built once.
    let connect = &cli.connect.options(ConnectOptions::from_env());
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
        Command::Snapshots(args) => snapshot::snapshots(args, connect),
        Command::Size(args) => snapshot::size(args, connect),
        Command::Gc(args) => snapshot::gc(args, &cli.output, connect),
        Command::Signature(args) => delta::signature(args, &cli.output),
        Command::Delta(args) => delta::delta(args, &cli.output),
        Command::Patch(args) => delta::patch(args, &cli.output),
        Command::Upload(args) => sync::upload(args, &cli.output, connect),
        Command::Download(args) => sync::download(args, &cli.output, connect),
        Command::Sync(args) => sync::sync(args, &cli.output, connect),
        Command::Run(args) => run::run(args, &cli.output, &cli.connect),
        Command::Scan(args) => scan::scan(args, &cli.output, connect),
        Command::Cache(command) => cache::run(command, &cli.output, connect),
        Command::Pkg(command) => pkg::run(command, &cli.output, connect),
        Command::Completions { shell } => {
            let mut out = io::stdout().lock();
            clap_complete::generate(*shell, &mut Cli::command(), "snapsync", &mut out);
            out.flush()?;
            Ok(())
        }
    }
}

/// Prints an error with its causes and a hint, and picks the exit status.
fn report(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(report_status(error))
}

/// Prints an error with its causes and a hint; returns the exit status it calls for.
pub(crate) fn report_status(error: &anyhow::Error) -> u8 {
    // `snapsync manifest . | head` closes the pipe early; that is not a failure worth a message.
    if error.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }) {
        return 0;
    }
    let mut err = io::stderr().lock();
    if let Some(conflicts) = error.downcast_ref::<ConflictsLeft>() {
        let _ = writeln!(err, "snapsync: {}", output::printable(&conflicts.message));
        let _ = writeln!(err, "hint: {}", conflicts.hint);
        return EXIT_CONFLICTS;
    }
    if let Some(failed) = error.downcast_ref::<run::TasksFailed>() {
        let _ = writeln!(err, "error: {}", output::printable(&failed.to_string()));
        return failed.status;
    }
    let _ = writeln!(err, "error: {}", output::printable(&error.to_string()));
    // Libraries often repeat their cause inside their own message; say each thing once.
    let mut said = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            let _ = writeln!(err, "  caused by: {}", output::printable(&text));
            said = text;
        }
    }
    if let Some(hint) = hint_of(error) {
        let _ = writeln!(err, "hint: {hint}");
    }
    if error.downcast_ref::<UsageError>().is_some() {
        let _ = writeln!(err, "\nFor more information, try '--help'.");
        return EXIT_USAGE;
    }
    1
}
