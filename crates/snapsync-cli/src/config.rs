//! The task files `snapsync run` reads: `snapsync.yaml`, and pyftpsync's `pyftpsync.yaml` as pyftpsync 4.1
//! reads it. This module finds the file, walks its YAML (parsed by saphyr, which marks every node with its
//! line and column) and turns it into [`Task`]s: every key checked against the format's list, every value
//! against its type, each remembered with where it was written, so that an error names the file, the line
//! and the key. What the settings then mean is `run.rs`'s business (it fills the same argument structs
//! the `upload`, `download`, `sync`, `push` and `pull` commands take). See docs/config.md.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::ResolveArg;
use crate::UsageError;

/// snapsync's own task file.
pub const SNAPSYNC_FILE: &str = "snapsync.yaml";
/// pyftpsync's task file (its `CONFIG_FILE_NAME`).
pub const PYFTPSYNC_FILE: &str = "pyftpsync.yaml";

/// Which of the two formats a file is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `snapsync.yaml`: `default-task`, `common`, `tasks`; keys are the command line's long options.
    Snapsync,
    /// pyftpsync's `pyftpsync.yaml`: `default_task`, `common_config`, `tasks`; keys are pyftpsync's
    /// option names with underscores.
    Pyftpsync,
}

impl Format {
    /// The format of a file, by its name: `pyftpsync.yaml` (or `.pyftpsync.yaml`, the name pyftpsync's
    /// older sample used) is pyftpsync's, any other name snapsync's.
    #[must_use]
    pub fn of(path: &Path) -> Format {
        match path.file_name().and_then(|name| name.to_str()) {
            Some("pyftpsync.yaml" | ".pyftpsync.yaml") => Format::Pyftpsync,
            _ => Format::Snapsync,
        }
    }

    fn default_key(self) -> &'static str {
        match self {
            Format::Snapsync => "default-task",
            Format::Pyftpsync => "default_task",
        }
    }

    fn common_key(self) -> &'static str {
        match self {
            Format::Snapsync => "common",
            Format::Pyftpsync => "common_config",
        }
    }
}

/// Where something is written: a line (1-based) and column (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub line: usize,
    pub col: usize,
}

impl Place {
    fn of(node: &MarkedYaml<'_>) -> Place {
        Place {
            line: node.span.start.line(),
            col: node.span.start.col() + 1,
        }
    }
}

/// A value from the file, with the key it was written under (`tasks.deploy.exclude`) and where.
#[derive(Clone, Debug)]
pub struct At<T> {
    pub value: T,
    pub key: String,
    pub place: Place,
}

/// An error in a task file: the file, the line and column, the key, what is wrong. It is a usage error
/// (exit status 2). It never quotes a value: a value may be a URL with a password. A key is quoted as
/// the file spells it, and a mistyped line can make a URL part of a key: a password in the message is
/// redacted here, so the error carries none (the binary's output redacts again).
#[must_use]
pub fn error_at(file: &Path, place: Place, key: &str, message: impl fmt::Display) -> anyhow::Error {
    UsageError(snapsync_store::redact_text(&format!(
        "{}:{}:{}: {key}: {message}",
        file.display(),
        place.line,
        place.col
    )))
    .into()
}

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Upload,
    Download,
    Sync,
    Push,
    Pull,
    /// pyftpsync's `tree` (a listing of the remote): accepted in the file, refused when run.
    Tree,
}

impl Command {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Command::Upload => "upload",
            Command::Download => "download",
            Command::Sync => "sync",
            Command::Push => "push",
            Command::Pull => "pull",
            Command::Tree => "tree",
        }
    }

    #[must_use]
    pub fn is_folder_sync(self) -> bool {
        matches!(self, Command::Upload | Command::Download | Command::Sync)
    }
}

/// Every setting a task may carry, each `None` unless the file sets it (so that the command line can
/// tell "not set" from "set to false" when it overrides the file).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub delete: Option<At<bool>>,
    pub delete_unmatched: Option<At<bool>>,
    pub matches: Option<At<Vec<String>>>,
    pub exclude: Option<At<Vec<String>>>,
    pub force: Option<At<bool>>,
    pub resolve: Option<At<ResolveArg>>,
    pub dry_run: Option<At<bool>>,
    pub checksum: Option<At<bool>>,
    pub create_folder: Option<At<bool>>,
    pub allow_mass_delete: Option<At<bool>>,
    pub break_lock: Option<At<bool>>,
    pub lock_timeout: Option<At<Duration>>,
    pub json: Option<At<bool>>,
    pub jobs: Option<At<NonZeroUsize>>,
    pub id: Option<At<String>>,
    pub exclude_regex: Option<At<Vec<String>>>,
    pub no_follow: Option<At<bool>>,
    pub cache_dir: Option<At<PathBuf>>,
    pub verbose: Option<At<u8>>,
    pub quiet: Option<At<bool>>,
    pub accept_new_host_key: Option<At<bool>>,
    pub known_hosts: Option<At<PathBuf>>,
    pub ssh_key: Option<At<PathBuf>>,
    pub ca_file: Option<At<PathBuf>>,
    /// pyftpsync's `no_keyring`, `no_netrc` and `no_prompt`: `--no-keyring`, `--no-netrc`, `--no-prompt`.
    pub no_keyring: Option<At<bool>>,
    pub no_prompt: Option<At<bool>>,
    pub no_netrc: Option<At<bool>>,
    /// pyftpsync's `here` and `root`: which folder a run from below the file's folder syncs.
    pub here: Option<At<bool>>,
    pub root: Option<At<bool>>,
}

/// One task: the common settings with the task's own on top.
#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    /// Where the task's name is written.
    pub place: Place,
    pub command: Option<At<Command>>,
    /// The local folder as written (relative to the file's folder).
    pub local: Option<At<PathBuf>>,
    /// The remote as written (it may hold a password: never print it).
    pub remote: Option<At<String>>,
    pub settings: Settings,
    /// pyftpsync settings snapsync cannot honour, with why: an error if this task runs.
    pub unsupported: Vec<(At<()>, &'static str)>,
}

/// A task file, read and checked.
#[derive(Debug)]
pub struct Config {
    /// The file, as found or given.
    pub file: PathBuf,
    /// The folder relative paths in it are relative to.
    pub dir: PathBuf,
    pub format: Format,
    /// The tasks `snapsync run` without a name runs, in order.
    pub default: Vec<At<String>>,
    /// Where `tasks:` is written.
    pub tasks_place: Place,
    pub tasks: Vec<Task>,
}

impl Config {
    #[must_use]
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|task| task.name == name)
    }

    /// The task names, for messages.
    #[must_use]
    pub fn names(&self) -> String {
        self.tasks
            .iter()
            .map(|task| task.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The task file nearest to `start`: `snapsync.yaml`, else `pyftpsync.yaml`, in `start` or the nearest
/// parent folder that has one.
///
/// # Errors
/// When there is none: the error says where it looked.
pub fn find(start: &Path) -> anyhow::Result<PathBuf> {
    for dir in start.ancestors() {
        for name in [SNAPSYNC_FILE, PYFTPSYNC_FILE] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(crate::hinted(
        format!(
            "no {SNAPSYNC_FILE} or {PYFTPSYNC_FILE} in {} or any folder above it",
            start.display()
        ),
        "write one (see docs/config.md), or name it with --config PATH",
    ))
}

/// Reads and checks a task file.
///
/// # Errors
/// When it cannot be read, or as [`parse`].
pub fn load(file: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the task file {}", file.display()))?;
    parse(file, &text, Format::of(file))
}

/// Parses the text of a task file named `file`.
///
/// # Errors
/// A [`crate::UsageError`] naming the file, the line, the column and the key, never quoting a value.
pub fn parse(file: &Path, text: &str, format: Format) -> anyhow::Result<Config> {
    // pyftpsync opens the file as `utf-8-sig`: a byte-order mark is allowed.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = MarkedYaml::load_from_str(text).map_err(|e| {
        let mark = e.marker();
        UsageError(format!(
            "{}:{}:{}: not valid YAML: {}",
            file.display(),
            mark.line(),
            mark.col() + 1,
            e.info()
        ))
    })?;
    let reader = Reader { file, format };
    let root = match documents.as_slice() {
        [] => return Err(reader.error(Place { line: 1, col: 1 }, "(file)", "is empty; it needs `tasks`")),
        [root] => root,
        [_, second, ..] => {
            return Err(reader.error(Place::of(second), "(file)", "holds more than one YAML document"));
        }
    };
    let top = reader.mapping(root, "(file)")?;
    let (mut default, mut common, mut tasks) = (Vec::new(), Vec::new(), None);
    for (key, value) in top {
        let name = reader.key(key, "")?;
        let place = Place::of(key);
        if name == format.default_key() {
            default = reader.names(value, &name)?;
        } else if name == format.common_key() {
            common = reader.entries(value, &name)?;
        } else if name == "tasks" {
            tasks = Some((place, value));
        } else {
            let expected = format!(
                "unknown key; expected {}, {} or tasks{}",
                format.default_key(),
                format.common_key(),
                match (format, name.as_str()) {
                    (Format::Snapsync, "common_config" | "default_task") =>
                        " (pyftpsync's keys: a pyftpsync file must be named pyftpsync.yaml)",
                    _ => "",
                }
            );
            return Err(reader.error(place, &name, expected));
        }
    }
    let Some((tasks_place, tasks_node)) = tasks else {
        return Err(reader.error(Place::of(root), "tasks", "missing: the file defines no tasks"));
    };
    let mut parsed = Vec::new();
    for (key, value) in reader.mapping(tasks_node, "tasks")? {
        let name = reader.key(key, "tasks.")?;
        let path = format!("tasks.{name}");
        let own = reader.entries(value, &path)?;
        parsed.push(reader.task(name, Place::of(key), &common, &own)?);
    }
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(Config {
        file: file.to_path_buf(),
        dir,
        format,
        default,
        tasks_place,
        tasks: parsed,
    })
}

/// One `key: value` of a mapping: the key's text and full dotted name, where it is, its value.
struct Entry<'a, 'input> {
    name: String,
    path: String,
    place: Place,
    value: &'a MarkedYaml<'input>,
    /// Written in the common settings, not in the task.
    common: bool,
}

/// The kinds of value a key takes.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Text,
    /// A list of strings, or one string (comma-separated where the command line takes that).
    Texts,
}

struct Reader<'f> {
    file: &'f Path,
    format: Format,
}

impl Reader<'_> {
    fn error(&self, place: Place, key: &str, message: impl fmt::Display) -> anyhow::Error {
        error_at(self.file, place, key, message)
    }

    fn mapping<'a, 'input>(
        &self,
        node: &'a MarkedYaml<'input>,
        key: &str,
    ) -> anyhow::Result<Vec<(&'a MarkedYaml<'input>, &'a MarkedYaml<'input>)>> {
        match &node.data {
            YamlData::Mapping(map) => Ok(map.iter().collect()),
            // `common_config:` with nothing under it, as pyftpsync allows.
            YamlData::Value(Scalar::Null) if self.format == Format::Pyftpsync && key != "(file)" => {
                Ok(Vec::new())
            }
            _ => Err(self.error(Place::of(node), key, "expected a mapping (`key: value` lines)")),
        }
    }

    fn key(&self, node: &MarkedYaml<'_>, prefix: &str) -> anyhow::Result<String> {
        match &node.data {
            YamlData::Value(Scalar::String(text)) => Ok(text.to_string()),
            YamlData::Value(Scalar::Integer(n)) => Ok(n.to_string()),
            _ => Err(self.error(Place::of(node), &format!("{prefix}?"), "a key must be a name")),
        }
    }

    fn entries<'a, 'input>(
        &self,
        node: &'a MarkedYaml<'input>,
        path: &str,
    ) -> anyhow::Result<Vec<Entry<'a, 'input>>> {
        self.mapping(node, path)?
            .into_iter()
            .map(|(key, value)| {
                let name = self.key(key, &format!("{path}."))?;
                Ok(Entry {
                    path: format!("{path}.{name}"),
                    name,
                    place: Place::of(key),
                    value,
                    common: false,
                })
            })
            .collect()
    }

    /// `default-task`: one name, or (snapsync.yaml) a list of names.
    fn names(&self, node: &MarkedYaml<'_>, key: &str) -> anyhow::Result<Vec<At<String>>> {
        let one = |node: &MarkedYaml<'_>| match &node.data {
            YamlData::Value(Scalar::String(text)) => Ok(At {
                value: text.to_string(),
                key: key.to_string(),
                place: Place::of(node),
            }),
            _ => Err(self.error(Place::of(node), key, "expected a task name")),
        };
        match (&node.data, self.format) {
            (YamlData::Sequence(items), Format::Snapsync) => items.iter().map(one).collect(),
            (YamlData::Value(Scalar::Null), Format::Pyftpsync) => Ok(Vec::new()),
            _ => Ok(vec![one(node)?]),
        }
    }

    fn boolean(&self, entry: &Entry<'_, '_>) -> anyhow::Result<bool> {
        match &entry.value.data {
            YamlData::Value(Scalar::Boolean(yes)) => Ok(*yes),
            // pyftpsync reads its file with PyYAML, whose YAML 1.1 also spells booleans so.
            YamlData::Value(Scalar::String(text)) if self.format == Format::Pyftpsync => {
                match text.as_ref() {
                    "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
                    "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
                    _ => Err(self.wrong(entry, "true or false")),
                }
            }
            _ => Err(self.wrong(entry, "true or false")),
        }
    }

    fn text(&self, entry: &Entry<'_, '_>) -> anyhow::Result<String> {
        match &entry.value.data {
            YamlData::Value(Scalar::String(text)) => Ok(text.to_string()),
            _ => Err(self.wrong(entry, "a string")),
        }
    }

    fn texts(&self, entry: &Entry<'_, '_>) -> anyhow::Result<Vec<String>> {
        match &entry.value.data {
            YamlData::Value(Scalar::String(text)) => Ok(vec![text.to_string()]),
            YamlData::Sequence(items) => items
                .iter()
                .map(|item| match &item.data {
                    YamlData::Value(Scalar::String(text)) => Ok(text.to_string()),
                    _ => Err(self.error(Place::of(item), &entry.path, "expected a string in the list")),
                })
                .collect(),
            _ => Err(self.wrong(entry, "a string or a list of strings")),
        }
    }

    fn integer(&self, entry: &Entry<'_, '_>) -> anyhow::Result<i64> {
        match &entry.value.data {
            YamlData::Value(Scalar::Integer(n)) => Ok(*n),
            _ => Err(self.wrong(entry, "a whole number")),
        }
    }

    fn wrong(&self, entry: &Entry<'_, '_>, expected: &str) -> anyhow::Error {
        let found = match &entry.value.data {
            YamlData::Value(Scalar::Null) => "nothing",
            YamlData::Value(Scalar::Boolean(_)) => "a boolean",
            YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_)) => "a number",
            YamlData::Value(Scalar::String(_)) => "a string",
            YamlData::Sequence(_) => "a list",
            YamlData::Mapping(_) => "a mapping",
            _ => "something else",
        };
        self.error(
            Place::of(entry.value),
            &entry.path,
            format!("wrong type: expected {expected}, found {found}"),
        )
    }

    fn at<T>(entry: &Entry<'_, '_>, value: T) -> At<T> {
        At {
            value,
            key: entry.path.clone(),
            place: entry.place,
        }
    }

    fn mark(entry: &Entry<'_, '_>) -> At<()> {
        At {
            value: (),
            key: entry.path.clone(),
            place: entry.place,
        }
    }

    fn path(&self, entry: &Entry<'_, '_>) -> anyhow::Result<PathBuf> {
        let text = self.text(entry)?;
        if text.is_empty() {
            return Err(self.wrong(entry, "a path"));
        }
        Ok(PathBuf::from(text))
    }

    /// One task: the common entries the task does not set, then the task's own.
    fn task(
        &self,
        name: String,
        place: Place,
        common: &[Entry<'_, '_>],
        own: &[Entry<'_, '_>],
    ) -> anyhow::Result<Task> {
        let merged: Vec<Entry<'_, '_>> = common
            .iter()
            .filter(|c| !own.iter().any(|o| o.name == c.name))
            .map(|c| Entry {
                name: c.name.clone(),
                path: c.path.clone(),
                place: c.place,
                value: c.value,
                common: true,
            })
            .chain(own.iter().map(|o| Entry {
                name: o.name.clone(),
                path: o.path.clone(),
                place: o.place,
                value: o.value,
                common: false,
            }))
            .collect();
        let mut task = Task {
            name,
            place,
            command: None,
            local: None,
            remote: None,
            settings: Settings::default(),
            unsupported: Vec::new(),
        };
        // The command first: which keys apply depends on it.
        for entry in merged.iter().filter(|e| e.name == "command") {
            let word = self.text(entry)?;
            let command = match (word.as_str(), self.format) {
                ("upload", _) => Command::Upload,
                ("download", _) => Command::Download,
                ("sync", _) => Command::Sync,
                ("push", Format::Snapsync) => Command::Push,
                ("pull", Format::Snapsync) => Command::Pull,
                ("tree", Format::Pyftpsync) => Command::Tree,
                _ => {
                    return Err(self.error(
                        Place::of(entry.value),
                        &entry.path,
                        match self.format {
                            Format::Snapsync => "expected upload, download, sync, push or pull",
                            Format::Pyftpsync => "expected upload, download, sync or tree",
                        },
                    ));
                }
            };
            task.command = Some(Reader::at(entry, command));
        }
        for entry in merged.iter().filter(|e| e.name != "command") {
            self.setting(&mut task, entry)?;
        }
        Ok(task)
    }

    /// Checks one key and its value, and records it in the task if it applies to the task's command.
    fn setting(&self, task: &mut Task, entry: &Entry<'_, '_>) -> anyhow::Result<()> {
        let Some(key) = Setting::named(self.format, &entry.name) else {
            let hint = match self.format {
                Format::Snapsync if entry.name.contains('_') => {
                    format!(
                        " (snapsync.yaml spells keys as the options: `{}`)",
                        entry.name.replace('_', "-")
                    )
                }
                Format::Pyftpsync if entry.name.contains('-') => {
                    format!(
                        " (pyftpsync.yaml spells keys with underscores: `{}`)",
                        entry.name.replace('-', "_")
                    )
                }
                _ => String::new(),
            };
            return Err(self.error(
                entry.place,
                &entry.path,
                format!(
                    "unknown key{hint}; see docs/config.md for the keys of {}",
                    self.file_kind()
                ),
            ));
        };
        // pyftpsync writes an empty value for "not set" (`local:`); it reads it as nothing.
        if self.format == Format::Pyftpsync && matches!(entry.value.data, YamlData::Value(Scalar::Null)) {
            return Ok(());
        }
        let command = task.command.as_ref().map(|c| c.value);
        let applies = command.is_none_or(|command| key.applies(self.format, command));
        if !applies && !entry.common && self.format == Format::Snapsync {
            return Err(self.error(
                entry.place,
                &entry.path,
                format!(
                    "not an option of {}",
                    command.map_or("this command", Command::name)
                ),
            ));
        }
        let s = &mut task.settings;
        match key.kind() {
            Some(Kind::Bool) => {
                let yes = self.boolean(entry)?;
                let slot = match key {
                    Setting::Delete => &mut s.delete,
                    Setting::DeleteUnmatched => &mut s.delete_unmatched,
                    Setting::Force => &mut s.force,
                    Setting::DryRun => &mut s.dry_run,
                    Setting::Checksum => &mut s.checksum,
                    Setting::CreateFolder => &mut s.create_folder,
                    Setting::AllowMassDelete => &mut s.allow_mass_delete,
                    Setting::BreakLock => &mut s.break_lock,
                    Setting::Json => &mut s.json,
                    Setting::NoFollow => &mut s.no_follow,
                    Setting::Quiet => &mut s.quiet,
                    Setting::AcceptNewHostKey => &mut s.accept_new_host_key,
                    Setting::NoKeyring => &mut s.no_keyring,
                    Setting::NoNetrc => &mut s.no_netrc,
                    Setting::NoPrompt => &mut s.no_prompt,
                    Setting::Here => &mut s.here,
                    Setting::Root => &mut s.root,
                    Setting::FtpActive | Setting::NoVerifyHostKeys | Setting::NoDryRun => {
                        if yes || key == Setting::NoDryRun {
                            task.unsupported.push((Reader::mark(entry), key.unsupported()));
                        }
                        return Ok(());
                    }
                    // Accepted and ignored: see the table in docs/config.md.
                    _ => return Ok(()),
                };
                if applies {
                    *slot = Some(Reader::at(entry, yes));
                }
            }
            Some(Kind::Texts) => {
                let values = self.texts(entry)?;
                let slot = match key {
                    Setting::Match => &mut s.matches,
                    Setting::Exclude => &mut s.exclude,
                    Setting::ExcludeRegex => &mut s.exclude_regex,
                    // pyftpsync's `debug` (extra logging): ignored.
                    _ => return Ok(()),
                };
                if applies {
                    *slot = Some(Reader::at(entry, values));
                }
            }
            Some(Kind::Text) => {
                let text = self.text(entry)?;
                match key {
                    Setting::Resolve => {
                        let resolve = match text.as_str() {
                            "skip" => ResolveArg::Skip,
                            "local" => ResolveArg::Local,
                            "remote" => ResolveArg::Remote,
                            "ask" => ResolveArg::Ask,
                            "new" => ResolveArg::New,
                            "old" => ResolveArg::Old,
                            _ => {
                                return Err(self.error(
                                    Place::of(entry.value),
                                    &entry.path,
                                    "expected skip, local, remote, ask, new or old",
                                ));
                            }
                        };
                        if applies {
                            s.resolve = Some(Reader::at(entry, resolve));
                        }
                    }
                    Setting::Remote => {
                        if text.is_empty() {
                            return Err(self.wrong(entry, "a store URL or path"));
                        }
                        task.remote = Some(Reader::at(entry, text));
                    }
                    Setting::Id => s.id = Some(Reader::at(entry, text)).filter(|_| applies),
                    Setting::LockTimeout => {
                        let age = crate::time::parse_age(&text).map_err(|_| {
                            self.error(
                                Place::of(entry.value),
                                &entry.path,
                                "expected an age: 30m, 24h, 7d, 1h 30m",
                            )
                        })?;
                        if applies {
                            s.lock_timeout = Some(Reader::at(entry, age));
                        }
                    }
                    Setting::Case => {
                        if !matches!(text.as_str(), "strict" | "local" | "remote") {
                            return Err(self.error(
                                Place::of(entry.value),
                                &entry.path,
                                "expected strict, local or remote",
                            ));
                        }
                        if text != "strict" {
                            task.unsupported.push((Reader::mark(entry), key.unsupported()));
                        }
                    }
                    _ => {}
                }
            }
            None => match key {
                Setting::Local
                | Setting::CacheDir
                | Setting::KnownHosts
                | Setting::SshKey
                | Setting::CaFile => {
                    let path = self.path(entry)?;
                    let slot = match key {
                        Setting::Local => &mut task.local,
                        Setting::CacheDir => &mut s.cache_dir,
                        Setting::KnownHosts => &mut s.known_hosts,
                        Setting::SshKey => &mut s.ssh_key,
                        _ => &mut s.ca_file,
                    };
                    if applies {
                        *slot = Some(Reader::at(entry, path));
                    }
                }
                Setting::Jobs => {
                    let n = self.integer(entry)?;
                    let jobs = usize::try_from(n)
                        .ok()
                        .and_then(NonZeroUsize::new)
                        .ok_or_else(|| self.wrong(entry, "a number of jobs, 1 or more"))?;
                    if applies {
                        s.jobs = Some(Reader::at(entry, jobs));
                    }
                }
                Setting::Verbose => {
                    // snapsync.yaml: `verbose: true` (or a count, as -v repeated); pyftpsync.yaml: its
                    // verbosity 0..5 (3 by default), read by run.rs.
                    let level = match (&entry.value.data, self.format) {
                        (YamlData::Value(Scalar::Boolean(yes)), Format::Snapsync) => i64::from(*yes),
                        _ => self.integer(entry)?,
                    };
                    let level = u8::try_from(level).map_err(|_| self.wrong(entry, "a verbosity from 0"))?;
                    s.verbose = Some(Reader::at(entry, level));
                }
                _ => {}
            },
        }
        Ok(())
    }

    fn file_kind(&self) -> &'static str {
        match self.format {
            Format::Snapsync => SNAPSYNC_FILE,
            Format::Pyftpsync => PYFTPSYNC_FILE,
        }
    }
}

/// Every key either format knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    Local,
    Remote,
    Delete,
    DeleteUnmatched,
    Match,
    Exclude,
    Force,
    Resolve,
    DryRun,
    Checksum,
    CreateFolder,
    AllowMassDelete,
    BreakLock,
    LockTimeout,
    Json,
    Jobs,
    Id,
    ExcludeRegex,
    NoFollow,
    CacheDir,
    Verbose,
    Quiet,
    AcceptNewHostKey,
    KnownHosts,
    SshKey,
    CaFile,
    // pyftpsync's own.
    Here,
    Root,
    Case,
    Debug,
    Files,
    Sort,
    FtpActive,
    Migrate,
    NoColor,
    Progress,
    NoDryRun,
    NoKeyring,
    NoNetrc,
    NoPrompt,
    Prompt,
    NoVerifyHostKeys,
    ReportProblems,
}

/// snapsync.yaml's keys: the long options of the commands (`command` is read first, apart).
const SNAPSYNC_KEYS: &[(&str, Setting)] = &[
    ("local", Setting::Local),
    ("remote", Setting::Remote),
    ("delete", Setting::Delete),
    ("delete-unmatched", Setting::DeleteUnmatched),
    ("match", Setting::Match),
    ("exclude", Setting::Exclude),
    ("force", Setting::Force),
    ("resolve", Setting::Resolve),
    ("dry-run", Setting::DryRun),
    ("checksum", Setting::Checksum),
    ("create-folder", Setting::CreateFolder),
    ("allow-mass-delete", Setting::AllowMassDelete),
    ("break-lock", Setting::BreakLock),
    ("lock-timeout", Setting::LockTimeout),
    ("json", Setting::Json),
    ("jobs", Setting::Jobs),
    ("id", Setting::Id),
    ("exclude-regex", Setting::ExcludeRegex),
    ("no-follow", Setting::NoFollow),
    ("cache-dir", Setting::CacheDir),
    ("verbose", Setting::Verbose),
    ("quiet", Setting::Quiet),
    ("accept-new-host-key", Setting::AcceptNewHostKey),
    ("known-hosts", Setting::KnownHosts),
    ("ssh-key", Setting::SshKey),
    ("ca-file", Setting::CaFile),
    ("no-netrc", Setting::NoNetrc),
    ("no-keyring", Setting::NoKeyring),
    ("no-prompt", Setting::NoPrompt),
];

/// pyftpsync 4.1's `KNOWN_TASK_ARGS` and `remote` (its `run_command.py`), less `command`.
const PYFTPSYNC_KEYS: &[(&str, Setting)] = &[
    ("local", Setting::Local),
    ("remote", Setting::Remote),
    ("case", Setting::Case),
    ("create_folder", Setting::CreateFolder),
    ("debug", Setting::Debug),
    ("delete_unmatched", Setting::DeleteUnmatched),
    ("delete", Setting::Delete),
    ("dry_run", Setting::DryRun),
    ("exclude", Setting::Exclude),
    ("files", Setting::Files),
    ("force", Setting::Force),
    ("ftp_active", Setting::FtpActive),
    ("here", Setting::Here),
    ("match", Setting::Match),
    ("migrate", Setting::Migrate),
    ("no_color", Setting::NoColor),
    ("no_dry_run", Setting::NoDryRun),
    ("no_keyring", Setting::NoKeyring),
    ("no_netrc", Setting::NoNetrc),
    ("no_prompt", Setting::NoPrompt),
    ("no_verify_host_keys", Setting::NoVerifyHostKeys),
    ("progress", Setting::Progress),
    ("prompt", Setting::Prompt),
    ("report_problems", Setting::ReportProblems),
    ("resolve", Setting::Resolve),
    ("root", Setting::Root),
    ("sort", Setting::Sort),
    ("verbose", Setting::Verbose),
];

impl Setting {
    fn named(format: Format, name: &str) -> Option<Setting> {
        let table = match format {
            Format::Snapsync => SNAPSYNC_KEYS,
            Format::Pyftpsync => PYFTPSYNC_KEYS,
        };
        table.iter().find(|(n, _)| *n == name).map(|(_, key)| *key)
    }

    fn kind(self) -> Option<Kind> {
        match self {
            Setting::Delete
            | Setting::DeleteUnmatched
            | Setting::Force
            | Setting::DryRun
            | Setting::Checksum
            | Setting::CreateFolder
            | Setting::AllowMassDelete
            | Setting::BreakLock
            | Setting::Json
            | Setting::NoFollow
            | Setting::Quiet
            | Setting::AcceptNewHostKey
            | Setting::Here
            | Setting::Root
            | Setting::Files
            | Setting::Sort
            | Setting::FtpActive
            | Setting::Migrate
            | Setting::NoColor
            | Setting::Progress
            | Setting::NoDryRun
            | Setting::NoKeyring
            | Setting::NoNetrc
            | Setting::NoPrompt
            | Setting::Prompt
            | Setting::NoVerifyHostKeys
            | Setting::ReportProblems => Some(Kind::Bool),
            Setting::Match | Setting::Exclude | Setting::ExcludeRegex | Setting::Debug => Some(Kind::Texts),
            Setting::Remote | Setting::Resolve | Setting::Id | Setting::LockTimeout | Setting::Case => {
                Some(Kind::Text)
            }
            Setting::Local
            | Setting::CacheDir
            | Setting::KnownHosts
            | Setting::SshKey
            | Setting::CaFile
            | Setting::Jobs
            | Setting::Verbose => None,
        }
    }

    /// Whether the key means something for `command`.
    fn applies(self, format: Format, command: Command) -> bool {
        use Command::{Download, Pull, Push, Sync, Tree, Upload};
        match self {
            Setting::Local
            | Setting::Remote
            | Setting::Verbose
            | Setting::Quiet
            | Setting::AcceptNewHostKey
            | Setting::KnownHosts
            | Setting::SshKey
            | Setting::CaFile
            | Setting::NoKeyring
            | Setting::NoNetrc
            | Setting::NoPrompt
            | Setting::Here
            | Setting::Root => true,
            // pyftpsync's two-way sync never reads them (its BiDirSynchronizer): a task file that sets
            // them for every task must run the same here.
            Setting::Delete | Setting::DeleteUnmatched | Setting::Force if format == Format::Pyftpsync => {
                matches!(command, Upload | Download)
            }
            Setting::Delete => matches!(command, Upload | Download | Sync | Pull),
            Setting::DeleteUnmatched
            | Setting::Match
            | Setting::Force
            | Setting::Resolve
            | Setting::DryRun
            | Setting::Checksum
            | Setting::CreateFolder
            | Setting::AllowMassDelete
            | Setting::BreakLock
            | Setting::LockTimeout
            | Setting::Json => command.is_folder_sync(),
            Setting::Exclude => command.is_folder_sync() || command == Push,
            Setting::Jobs => command != Tree,
            Setting::Id => command == Pull,
            Setting::ExcludeRegex | Setting::NoFollow => command == Push,
            Setting::CacheDir => matches!(command, Push | Pull),
            // Read only to be checked, or ignored (docs/config.md).
            _ => false,
        }
    }

    /// Why snapsync refuses to run a task with this pyftpsync setting.
    fn unsupported(self) -> &'static str {
        match self {
            Setting::FtpActive => {
                "snapsync uses passive FTP only; remove `ftp_active` to run this task with snapsync"
            }
            Setting::NoVerifyHostKeys => {
                "snapsync always checks SFTP host keys; use --accept-new-host-key to record a new host's key"
            }
            Setting::NoDryRun => {
                "not an option of the file (pyftpsync refuses it too): write `dry_run: false`"
            }
            Setting::Case => {
                "snapsync has no `case` setting (files whose names differ only in case are synced as they are); \
                 remove it or set it to strict"
            }
            _ => "not supported by snapsync",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_snapsync(text: &str) -> anyhow::Result<Config> {
        parse(Path::new("/p/snapsync.yaml"), text, Format::Snapsync)
    }

    fn message(result: anyhow::Result<Config>) -> String {
        result.expect_err("an error").to_string()
    }

    #[test]
    fn common_settings_are_under_each_task_and_a_task_wins() {
        let config = parse_snapsync(
            "default-task: [a, b]\ncommon:\n  remote: ftp://h/x\n  exclude: [\"*.tmp\"]\n  jobs: 3\ntasks:\n  a:\n    command: upload\n    jobs: 2\n  b:\n    command: pull\n    id: abc\n",
        )
        .unwrap();
        let names: Vec<_> = config.default.iter().map(|d| d.value.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = config.task("a").unwrap();
        assert_eq!(a.settings.jobs.as_ref().unwrap().value.get(), 2);
        assert_eq!(a.settings.exclude.as_ref().unwrap().value, ["*.tmp"]);
        assert_eq!(a.remote.as_ref().unwrap().place, Place { line: 3, col: 3 });
        // A common key that does not apply to a command is left out of that task, not an error.
        let b = config.task("b").unwrap();
        assert!(b.settings.exclude.is_none());
        assert_eq!(b.settings.jobs.as_ref().unwrap().value.get(), 3);
    }

    /// Found by the `config_file` fuzz target: a line whose key holds a URL (a missing `: ` after
    /// `remote`) was quoted with the URL's password.
    #[test]
    fn an_unknown_key_holding_a_url_is_quoted_without_its_password() {
        let text = "default-task: publish\n\ntasks:\n  remote ftp://me:s6cret@example.com/site: x\n";
        let text_message = message(parse_snapsync(text));
        assert!(
            text_message.contains("ftp://me:***@example.com"),
            "{text_message}"
        );
        assert!(!text_message.contains("s6cret"), "{text_message}");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let text = "tasks:\n  a:\n    command: upload\n    delet: true\n";
        assert!(
            message(parse_snapsync(text)).starts_with("/p/snapsync.yaml:4:5: tasks.a.delet: unknown key")
        );
        let text = "tasks:\n  a:\n    command: upload\n    jobs: many\n";
        assert_eq!(
            message(parse_snapsync(text)),
            "/p/snapsync.yaml:4:11: tasks.a.jobs: wrong type: expected a whole number, found a string"
        );
        let text = "tasks:\n  a:\n    command: pull\n    match: x\n";
        assert_eq!(
            message(parse_snapsync(text)),
            "/p/snapsync.yaml:4:5: tasks.a.match: not an option of pull"
        );
        let text = "tasks:\n  a:\n    command: upload\n    dry_run: true\n";
        assert!(message(parse_snapsync(text)).contains("`dry-run`"));
        let text = "tasks: [\n";
        assert!(message(parse_snapsync(text)).starts_with("/p/snapsync.yaml:2:1: not valid YAML"));
        let text = "tasks:\n  a: {command: upload}\n  a: {command: sync}\n";
        assert!(message(parse_snapsync(text)).contains(":3:3: "));
    }

    #[test]
    fn pyftpsync_spellings_of_booleans_and_its_ignored_options() {
        let config = parse(
            Path::new("/p/pyftpsync.yaml"),
            "common_config:\n  progress: true\n  dry_run: yes\n  force: true\ntasks:\n  s:\n    command: sync\n  t:\n    command: tree\n    sort: true\n  f:\n    command: upload\n    ftp_active: true\n",
            Format::Pyftpsync,
        )
        .unwrap();
        let s = config.task("s").unwrap();
        assert!(s.settings.dry_run.as_ref().unwrap().value);
        assert!(s.settings.force.is_none(), "pyftpsync's sync does not read force");
        assert_eq!(
            config.task("t").unwrap().command.as_ref().unwrap().value,
            Command::Tree
        );
        assert_eq!(config.task("f").unwrap().unsupported.len(), 1);
    }
}
