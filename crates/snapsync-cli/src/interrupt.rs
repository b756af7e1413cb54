//! Ctrl-C. A command that can stop cleanly asks for [`token`] and passes it to its library in the
//! options; that installs the handlers. The first SIGINT (Ctrl-C) or SIGTERM cancels the token: the
//! library starts nothing new, abandons what is in flight and cleans up, and the command exits with
//! status 3 ([`EXIT_INTERRUPTED`]) and one line. A second signal ends the process at once, with
//! 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process a
//! signal killed; temporary files of transfers then in flight may be left, and the next run removes
//! them. Commands that never ask for the token keep the default: the first Ctrl-C ends them.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use snapsync_core::Cancel;

/// Exit status of a command stopped by Ctrl-C (or SIGTERM) that stopped cleanly.
pub(crate) const EXIT_INTERRUPTED: u8 = 3;

/// What the command says when it stopped cleanly.
pub(crate) const MESSAGE: &str =
    "interrupted: what finished is kept, nothing is half-written; run the same command again to carry on";

static TOKEN: OnceLock<Cancel> = OnceLock::new();

/// The process's cancellation token, cancelled by the first SIGINT or SIGTERM (the handlers are
/// installed by the first call).
pub(crate) fn token() -> Cancel {
    TOKEN
        .get_or_init(|| {
            let cancel = Cancel::new();
            // Without handlers (which cannot fail on Linux short of a broken process), Ctrl-C keeps
            // its default: the process ends at once.
            let _ = install(cancel.clone());
            cancel
        })
        .clone()
}

/// Whether the first Ctrl-C (or SIGTERM) came.
pub(crate) fn interrupted() -> bool {
    TOKEN.get().is_some_and(Cancel::is_cancelled)
}

fn install(cancel: Cancel) -> std::io::Result<()> {
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it runs first: from the second signal on (`seen` set by the first),
        // the process ends right there, in the handler.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&seen))?;
        signal_hook::flag::register(signal, Arc::clone(&seen))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            if signals.forever().next().is_some() {
                cancel.cancel();
            }
        })?;
    Ok(())
}
