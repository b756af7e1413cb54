//! The hidden `snapsync __generate man|completions DIR`: man pages (one per command and subcommand,
//! through `clap_mangen`) and shell completion scripts (bash, zsh, fish, PowerShell), made from the same
//! clap definitions the binary parses with, so they cannot drift from it. `cargo xtask dist` runs it on
//! the release binary; packagers can too. It is read before clap parses anything and is no clap
//! subcommand, so no help, man page or completion script lists it.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use snapsync_core::atomic::{WriteOptions, write_atomic};

use crate::UsageError;
use crate::cli::Cli;

/// The command's name: the first argument.
pub(crate) const COMMAND: &str = "__generate";

const USAGE: &str = "usage: snapsync __generate man|completions DIR";

/// The shells completion scripts are written for.
const SHELLS: [Shell; 4] = [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell];

/// `snapsync __generate WHAT DIR` (the arguments after `__generate`): writes the man pages or the
/// completion scripts into DIR (made if missing; files of the same names are replaced) and prints each
/// file's path.
pub(crate) fn generate(args: &[OsString]) -> anyhow::Result<()> {
    let [what, dir] = args else {
        return Err(UsageError(USAGE.to_string()).into());
    };
    let dir = Path::new(dir);
    let write = match what.to_str() {
        Some("man") => man_pages,
        Some("completions") => completions,
        _ => {
            let what = crate::output::printable(&what.to_string_lossy()).into_owned();
            return Err(UsageError(format!("{what} is neither man nor completions; {USAGE}")).into());
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = write(dir)?;
    let mut out = std::io::stdout().lock();
    for file in files {
        writeln!(out, "{}", crate::output::printable(&file.display().to_string()))?;
    }
    out.flush()?;
    Ok(())
}

/// `snapsync.1`, and `snapsync-COMMAND.1` (`snapsync-cache-open.1`, …) for every command and subcommand
/// that is not hidden, each written under a temporary name and renamed into place.
fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // Built, the commands carry their display names (`snapsync-cache-open`); no `help` pseudo-command.
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    let mut pending = vec![root];
    while let Some(command) = pending.pop() {
        pending.extend(command.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(command)
            // The version alone: the footer has no room for the commit and features (the VERSION section has them).
            .source(concat!("snapsync ", env!("CARGO_PKG_VERSION")))
            .manual("snapsync manual");
        let mut text = Vec::new();
        page.render(&mut text)?;
        let path = dir.join(page.get_filename());
        write_atomic(&path, &text, WriteOptions::DURABLE)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// `snapsync.bash`, `_snapsync` (zsh), `snapsync.fish` and `_snapsync.ps1`, the names each shell's
/// completion folders expect.
fn completions(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for shell in SHELLS {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "snapsync", &mut text);
        let path = dir.join(clap_complete::Generator::file_name(&shell, "snapsync"));
        write_atomic(&path, &text, WriteOptions::DURABLE)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
