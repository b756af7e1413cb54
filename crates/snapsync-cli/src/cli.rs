//! Command-line definitions: every command, option and help text of `snapsync`.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str =
    "Keep directory trees in sync with any store: content-addressed snapshots, binary deltas, folder sync";

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  error (the message says what failed; a `hint:` line says what to try)
  2  usage error (unknown option, bad argument)";

#[derive(Debug, Parser)]
#[command(name = "snapsync", version, about = ABOUT, after_help = EXIT_CODES, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Say more on standard error (timings, every skipped entry).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Print only results and errors: no progress, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the manifest of a directory (snapdir's format)
    #[command(
        long_about = "Print the manifest of a directory: one line per file and directory, \
`TYPE PERMISSIONS CHECKSUM SIZE PATH`, sorted by path, in snapdir's format byte for byte.\n\n\
CHECKSUM is BLAKE3 of a file's content, or of a directory's children's checksums. Symlinks are \
followed and recorded as what they point to; dangling ones are skipped with a warning. Names that \
snapdir's format cannot carry (newlines, bytes that are not UTF-8) are written in double quotes with \
C-style escapes.\n\n\
The output ends with a newline, so `snapsync manifest DIR | b3sum` prints the snapshot id.",
        after_help = "Examples:\n  snapsync manifest .\n  snapsync manifest --exclude target --exclude '*.log' ~/project\n  snapsync manifest --no-follow --absolute /srv/www"
    )]
    Manifest(WalkArgs),

    /// Print the snapshot id of a directory, or of a manifest read from standard input
    #[command(
        long_about = "Print the snapshot id of a directory: 64 hex digits, BLAKE3 of its manifest text plus a \
newline, identical to snapdir's id for the same tree.\n\n\
With `-` instead of a directory, read a manifest from standard input and print its id; the manifest is \
checked line by line and re-rendered in canonical order first.",
        after_help = "Examples:\n  snapsync id .\n  snapsync manifest . > tree.manifest && snapsync id - < tree.manifest"
    )]
    Id(WalkArgs),

    /// Print a shell completion script
    #[command(after_help = "Example:\n  snapsync completions bash > /etc/bash_completion.d/snapsync")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct WalkArgs {
    /// The directory to describe (for `id`, `-` reads a manifest from standard input).
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,

    /// Leave out entries matching GLOB (repeatable). Without `/` it matches a name at any depth
    /// (`*.log`, `.git`); with `/` it is anchored at DIR (`build/out`, `docs/**/*.tmp`); a trailing `/`
    /// matches directories only.
    #[arg(short = 'x', long = "exclude", value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,

    /// Leave out entries whose absolute path matches the regular expression RE (repeatable), exactly
    /// as snapdir's `--exclude`; `%common%` and `%system%` expand to snapdir's built-in sets.
    #[arg(long = "exclude-regex", value_name = "RE")]
    pub(crate) exclude_regex: Vec<String>,

    /// Do not follow symlinks: leave them out of the manifest (snapdir's `--no-follow`).
    #[arg(long)]
    pub(crate) no_follow: bool,

    /// Write absolute paths instead of `./`-relative ones (the id changes accordingly).
    #[arg(long)]
    pub(crate) absolute: bool,

    /// Threads for listing and hashing [default: one per core].
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
}
