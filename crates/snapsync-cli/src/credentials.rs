//! Where the binary's passwords come from: the flags over snapsync-store's resolver
//! (`snapsync_store::credentials`), the OS keyring when built with the `keyring` feature, and the one
//! thing a library may not do, asking the person at the terminal (hidden input).

use std::io::{self, IsTerminal};
use std::sync::Arc;

use snapsync_store::{CredentialOptions, Keyring, PasswordPrompt, PromptRequest, redact_text};

/// The credential flags.
#[allow(clippy::struct_excessive_bools)] // Each is a command-line switch of its own.
pub(crate) struct Flags {
    /// Read netrc (not `--no-netrc`).
    pub(crate) netrc: bool,
    /// Use the OS keyring (not `--no-keyring`).
    pub(crate) keyring: bool,
    /// `--store-password`.
    pub(crate) store_password: bool,
    /// Ask on a terminal (not `--no-prompt`).
    pub(crate) prompt: bool,
}

/// `environment`'s credential options (its netrc file) with the flags on top, the keyring and the
/// terminal prompt; the resolver's remarks go to the log (shown with `-v`).
pub(crate) fn options(environment: CredentialOptions, flags: &Flags) -> CredentialOptions {
    let mut options = environment;
    if !flags.netrc {
        options = options.with_netrc(None);
    }
    options
        .with_keyring(if flags.keyring { os_keyring() } else { None })
        .with_store_password(flags.store_password)
        .with_prompt(
            flags
                .prompt
                .then(|| Arc::new(TerminalPrompt) as Arc<dyn PasswordPrompt>),
        )
        .with_notice(|text| log::info!("{}", redact_text(text)))
}

/// The operating system's keyring, when the binary was built with it.
#[cfg(feature = "keyring")]
#[allow(clippy::unnecessary_wraps)] // `None` without the feature.
fn os_keyring() -> Option<Arc<dyn Keyring>> {
    Some(Arc::new(snapsync_store::OsKeyring))
}

/// Built without the `keyring` feature: none.
#[cfg(not(feature = "keyring"))]
fn os_keyring() -> Option<Arc<dyn Keyring>> {
    None
}

/// Asks on the terminal, input hidden (rpassword turns echo off), when standard input is one;
/// otherwise (a pipe, a cron job, CI) says it cannot ask, and the login goes on without a password.
struct TerminalPrompt;

impl PasswordPrompt for TerminalPrompt {
    fn ask(&self, request: &PromptRequest) -> io::Result<Option<String>> {
        if !io::stdin().is_terminal() {
            return Ok(None);
        }
        if request.attempt > 1 {
            eprintln!(
                "login refused; try again ({} of {})",
                request.attempt,
                snapsync_store::credentials::MAX_PROMPTS
            );
        }
        match rpassword::prompt_password(crate::output::printable(&request.question()).as_ref()) {
            Ok(password) => Ok(Some(password)),
            // End of input (Ctrl-D): no password.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}
