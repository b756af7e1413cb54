//! The parts of the `snapsync` binary that something besides the binary reads: the task files of
//! `snapsync run` ([`config`]), which the fuzz targets in `fuzz/` parse as the binary does, and what
//! that reader needs (ages from [`time`], [`ResolveArg`], the usage and hinted errors). Not an API
//! for other programs: the binary (`src/main.rs`) is the one user besides the fuzz targets.
#![forbid(unsafe_code)]

pub mod config;
pub mod time;

/// An error in how the command was called (exit status 2), as opposed to a failure while running it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error with a line of advice, printed as `hint:` after the message.
#[derive(Debug)]
pub struct Hinted {
    message: String,
    hint: &'static str,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

impl Hinted {
    /// The line of advice.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        self.hint
    }
}

/// An error whose message is followed by `hint:` and `hint`.
#[must_use]
pub fn hinted(message: String, hint: &'static str) -> anyhow::Error {
    Hinted { message, hint }.into()
}

/// How `--resolve` settles conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveArg {
    /// Leave both sides as they are and report the conflict.
    Skip,
    /// The local side wins (its file is sent, or its deletion applied).
    Local,
    /// The remote side wins.
    Remote,
    /// Ask for each conflict (on a terminal; otherwise skip).
    Ask,
    /// The newer file wins; a changed file wins over a deletion.
    New,
    /// The older file wins; a changed file wins over a deletion.
    Old,
}
