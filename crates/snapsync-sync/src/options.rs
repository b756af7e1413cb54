//! What shapes a run, in one validated value.
//!
//! Every option of `upload`, `download` and `sync` lives in [`Options`], built by [`OptionsBuilder`]
//! and checked once by [`OptionsBuilder::build`]: contradictions (`--delete` on a two-way sync, a lock
//! timeout of zero) are refused there, and the rules a front end would otherwise have to repeat are
//! applied there (pyftpsync's default excludes when none are given, `--delete-unmatched` implying
//! `--delete`). The planner reads the direction and conflict rules ([`Options::mode`],
//! [`Options::delete`], [`Options::force`], [`Options::resolve`]); the executor reads the rest. A
//! command line, a config file or a binding all build the same value, so they cannot disagree.

use std::num::NonZeroUsize;
use std::time::Duration;

use snapsync_core::Cancel;

use crate::decide::Resolve;
use crate::error::{Error, Result};
use crate::plan::Mode;
use crate::scan::{DEFAULT_EXCLUDES, Filter};

/// How long a lock may go unrenewed before another run takes it over, unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_mins(10);

/// Everything that shapes a run besides the two sides. Built (and validated) by [`Options::builder`].
#[derive(Clone, Debug)]
// Independent switches: flags are what they are.
#[allow(clippy::struct_excessive_bools)]
pub struct Options {
    mode: Mode,
    delete: bool,
    delete_unmatched: bool,
    force: bool,
    resolve: Resolve,
    filter: Filter,
    checksum: bool,
    jobs: Option<NonZeroUsize>,
    dry_run: bool,
    break_lock: bool,
    lock_timeout: Duration,
    allow_mass_delete: bool,
    create_folder: bool,
    cancel: Cancel,
}

impl Options {
    /// A builder for a run in direction `mode`, every other option at its default.
    pub fn builder(mode: Mode) -> OptionsBuilder {
        OptionsBuilder {
            mode,
            delete: false,
            delete_unmatched: false,
            force: false,
            resolve: Resolve::Skip,
            matches: Vec::new(),
            excludes: None,
            checksum: false,
            jobs: None,
            dry_run: false,
            break_lock: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            allow_mass_delete: false,
            create_folder: false,
            cancel: Cancel::new(),
        }
    }

    /// The token that stops the run early (see [`OptionsBuilder::cancel`]).
    #[must_use]
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// The options of a plain run in direction `mode` (the defaults; they are always valid).
    #[must_use]
    pub fn new(mode: Mode) -> Options {
        Options::builder(mode)
            .build()
            .unwrap_or_else(|_| unreachable!("the default options are valid"))
    }

    /// Which way.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// One way: delete files on the target that the source does not have (also set by
    /// `--delete-unmatched`).
    #[must_use]
    pub fn delete(&self) -> bool {
        self.delete
    }

    /// One way: also delete target files that `--match` leaves out.
    #[must_use]
    pub fn delete_unmatched(&self) -> bool {
        self.delete_unmatched
    }

    /// One way: overwrite (or delete) target files changed since the base.
    #[must_use]
    pub fn force(&self) -> bool {
        self.force
    }

    /// How conflicts are settled.
    #[must_use]
    pub fn resolve(&self) -> Resolve {
        self.resolve
    }

    /// `--match` and `--exclude`, compiled.
    #[must_use]
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// `--checksum`: hash every local file and let content decide where the base has a hash.
    #[must_use]
    pub fn checksum(&self) -> bool {
        self.checksum
    }

    /// Parallel transfers (`--jobs`); `None`: the store's default.
    #[must_use]
    pub fn jobs(&self) -> Option<NonZeroUsize> {
        self.jobs
    }

    /// `--dry-run`: plan and compare, change nothing.
    #[must_use]
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// `--break-lock`: remove another run's lock.
    #[must_use]
    pub fn break_lock(&self) -> bool {
        self.break_lock
    }

    /// A lock not renewed for this long is stale and taken over.
    #[must_use]
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// `--allow-mass-delete`: carry out a plan that deletes a whole side or most of it without asking
    /// (see [`crate::Prepared::mass_delete`]).
    #[must_use]
    pub fn allow_mass_delete(&self) -> bool {
        self.allow_mass_delete
    }

    /// `--create-folder`: create the remote folder when it does not exist (otherwise that is an
    /// error: a missing remote is never taken as an empty one).
    #[must_use]
    pub fn create_folder(&self) -> bool {
        self.create_folder
    }
}

/// Builds [`Options`]; [`OptionsBuilder::build`] checks them.
#[derive(Clone, Debug)]
#[must_use]
#[allow(clippy::struct_excessive_bools)]
pub struct OptionsBuilder {
    mode: Mode,
    delete: bool,
    delete_unmatched: bool,
    force: bool,
    resolve: Resolve,
    matches: Vec<String>,
    excludes: Option<Vec<String>>,
    checksum: bool,
    jobs: Option<NonZeroUsize>,
    dry_run: bool,
    break_lock: bool,
    lock_timeout: Duration,
    allow_mass_delete: bool,
    create_folder: bool,
    cancel: Cancel,
}

impl OptionsBuilder {
    /// The token that stops the run early (Ctrl-C): cancelled, the run starts nothing new, abandons
    /// the transfers in flight (their temporary files removed on both sides), records what finished,
    /// lets go of the lock and ends in [`Error::Cancelled`]. By default, a token nobody cancels.
    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// `--delete` (one way only).
    pub fn delete(mut self, yes: bool) -> Self {
        self.delete = yes;
        self
    }

    /// `--delete-unmatched` (one way only); implies `--delete`.
    pub fn delete_unmatched(mut self, yes: bool) -> Self {
        self.delete_unmatched = yes;
        self
    }

    /// `--force` (one way only).
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }

    /// `--resolve`.
    pub fn resolve(mut self, resolve: Resolve) -> Self {
        self.resolve = resolve;
        self
    }

    /// `--match` patterns (each may be a comma-separated list); none: every file.
    pub fn matches<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.matches = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// `--exclude` patterns (each may be a comma-separated list). Not called, or called with none:
    /// pyftpsync's defaults ([`DEFAULT_EXCLUDES`]).
    pub fn excludes<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        self.excludes = (!patterns.is_empty()).then_some(patterns);
        self
    }

    /// `--checksum`.
    pub fn checksum(mut self, yes: bool) -> Self {
        self.checksum = yes;
        self
    }

    /// `--jobs`; `None`: the store's default.
    pub fn jobs(mut self, jobs: Option<NonZeroUsize>) -> Self {
        self.jobs = jobs;
        self
    }

    /// `--dry-run`.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }

    /// `--break-lock`.
    pub fn break_lock(mut self, yes: bool) -> Self {
        self.break_lock = yes;
        self
    }

    /// `--lock-timeout` (more than zero).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// `--allow-mass-delete`.
    pub fn allow_mass_delete(mut self, yes: bool) -> Self {
        self.allow_mass_delete = yes;
        self
    }

    /// `--create-folder`.
    pub fn create_folder(mut self, yes: bool) -> Self {
        self.create_folder = yes;
        self
    }

    /// Checks the options and applies the rules between them.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a contradiction (`delete`, `delete_unmatched` or `force` on a
    /// two-way sync, which applies the deletions it can tell apart and settles conflicts with
    /// `resolve`; a zero lock timeout); [`Error::Pattern`] or [`Error::InvalidMatch`] for a pattern
    /// that does not compile.
    pub fn build(self) -> Result<Options> {
        if self.mode == Mode::Sync {
            let given: Vec<&str> = [
                (self.delete, "--delete"),
                (self.delete_unmatched, "--delete-unmatched"),
                (self.force, "--force"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            if !given.is_empty() {
                return Err(Error::InvalidOptions {
                    reason: format!(
                        "{} {} for upload and download; sync always applies deletions it can tell apart \
from new files, and settles conflicts with --resolve",
                        given.join(", "),
                        if given.len() == 1 { "is" } else { "are" }
                    ),
                });
            }
        }
        if self.lock_timeout.is_zero() {
            return Err(Error::InvalidOptions {
                reason: "the lock timeout must be more than zero".to_owned(),
            });
        }
        let excludes = self.excludes.unwrap_or_else(|| vec![DEFAULT_EXCLUDES.to_owned()]);
        let filter = Filter::new(&self.matches, &excludes)?;
        Ok(Options {
            mode: self.mode,
            delete: self.delete || self.delete_unmatched,
            delete_unmatched: self.delete_unmatched,
            force: self.force,
            resolve: self.resolve,
            filter,
            checksum: self.checksum,
            jobs: self.jobs,
            dry_run: self.dry_run,
            break_lock: self.break_lock,
            lock_timeout: self.lock_timeout,
            allow_mass_delete: self.allow_mass_delete,
            create_folder: self.create_folder,
            cancel: self.cancel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_unmatched_implies_delete() {
        let options = Options::builder(Mode::Upload)
            .delete_unmatched(true)
            .build()
            .unwrap();
        assert!(options.delete() && options.delete_unmatched());
        assert!(!Options::new(Mode::Upload).delete());
    }

    #[test]
    fn two_way_sync_refuses_one_way_switches() {
        for builder in [
            Options::builder(Mode::Sync).delete(true),
            Options::builder(Mode::Sync).delete_unmatched(true),
            Options::builder(Mode::Sync).force(true),
        ] {
            let error = builder.build().unwrap_err();
            assert!(matches!(error, Error::InvalidOptions { .. }), "{error}");
        }
        let error = Options::builder(Mode::Sync)
            .delete(true)
            .force(true)
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("--delete, --force are for upload"), "{error}");
        assert!(
            Options::builder(Mode::Download)
                .delete(true)
                .force(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn zero_lock_timeout_is_refused() {
        let error = Options::builder(Mode::Upload)
            .lock_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(error, Error::InvalidOptions { .. }));
    }

    #[test]
    fn default_excludes_apply_unless_excludes_are_given() {
        let default = Options::new(Mode::Sync);
        assert_eq!(
            default.filter().verdict_of_listed(".git/config"),
            crate::Verdict::Excluded
        );
        assert_eq!(
            default.filter().verdict_of_listed("a.tmp"),
            crate::Verdict::Wanted
        );
        let own = Options::builder(Mode::Sync).excludes(["*.tmp"]).build().unwrap();
        assert_eq!(
            own.filter().verdict_of_listed(".git/config"),
            crate::Verdict::Wanted
        );
        assert_eq!(own.filter().verdict_of_listed("a.tmp"), crate::Verdict::Excluded);
        let none_given = Options::builder(Mode::Sync)
            .excludes(Vec::<String>::new())
            .build()
            .unwrap();
        assert_eq!(
            none_given.filter().verdict_of_listed(".git/config"),
            crate::Verdict::Excluded
        );
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        assert!(Options::builder(Mode::Sync).matches(["a/[b"]).build().is_err());
    }
}
