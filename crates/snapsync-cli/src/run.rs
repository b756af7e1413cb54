//! `snapsync run [TASK...]`: the tasks of a task file (config.rs reads it), each turned into the very
//! argument structs `upload`, `download`, `sync`, `push` and `pull` take, with the command line's options
//! on top, then handed to those commands. Every task is checked before the first one runs.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use snapsync_store::{ConnectOptions, StoreUrl};
use snapsync_sync::Mode;

use crate::UsageError;
use crate::cli::{
    CacheArgs, ConnectArgs, JobsArgs, OutputArgs, PullArgs, PushArgs, ResolveArg, RunArgs, SyncArgs,
    WalkFlags,
};
use crate::config::{self, At, Command, Config, Format, Task, error_at};

/// Several tasks ran and some failed (each was reported as it ended): the worst exit status of theirs.
#[derive(Debug)]
pub(crate) struct TasksFailed {
    pub(crate) status: u8,
    failed: Vec<(String, u8)>,
    ran: usize,
}

impl fmt::Display for TasksFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self
            .failed
            .iter()
            .map(|(name, status)| format!("{name} (exit status {status})"))
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "{} of {} did not succeed: {list}",
            self.failed.len(),
            crate::say::count(self.ran, "task", "tasks")
        )
    }
}

impl std::error::Error for TasksFailed {}

/// How bad an exit status is: a usage error, then an error, then conflicts left, then success.
fn severity(status: u8) -> u8 {
    match status {
        0 => 0,
        crate::EXIT_CONFLICTS => 1,
        1 => 2,
        _ => 3,
    }
}

/// One task, ready to run.
struct Job {
    name: String,
    /// What to say before it runs (no password: the remote as `StoreUrl` shows it).
    banner: String,
    output: OutputArgs,
    connect: ConnectOptions,
    work: Work,
}

enum Work {
    Sync(Mode, SyncArgs),
    Push(PushArgs),
    Pull(PullArgs),
}

impl Job {
    fn run(&self) -> anyhow::Result<()> {
        crate::say::apply(&self.output);
        if !self.output.quiet {
            crate::say::stderr_line(anstyle::Style::new().bold(), "", &self.banner);
        }
        if self.output.json {
            crate::say::event("task", serde_json::json!({ "name": self.name }))?;
        }
        match &self.work {
            Work::Sync(Mode::Upload, args) => crate::sync::upload(args, &self.output, &self.connect),
            Work::Sync(Mode::Download, args) => crate::sync::download(args, &self.output, &self.connect),
            Work::Sync(_, args) => crate::sync::sync(args, &self.output, &self.connect),
            Work::Push(args) => crate::snapshot::push(args, &self.output, &self.connect),
            Work::Pull(args) => crate::snapshot::pull(args, &self.output, &self.connect),
        }
    }
}

pub(crate) fn run(args: &RunArgs, output: &OutputArgs, connect: &ConnectArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let file = match &args.config {
        Some(path) => cwd.join(path),
        None => config::find(&cwd)?,
    };
    let config = config::load(&file)?;
    let names: Vec<(String, Option<&At<String>>)> = if args.tasks.is_empty() {
        if config.default.is_empty() {
            return Err(error_at(
                &config.file,
                config.tasks_place,
                "tasks",
                format!(
                    "no TASK given and the file names no {}; its tasks: {}",
                    match config.format {
                        Format::Snapsync => "default-task",
                        Format::Pyftpsync => "default_task",
                    },
                    config.names()
                ),
            ));
        }
        config
            .default
            .iter()
            .map(|d| (d.value.clone(), Some(d)))
            .collect()
    } else {
        args.tasks.iter().map(|name| (name.clone(), None)).collect()
    };
    // Every task is checked (and its options built) before the first one runs.
    let mut jobs = Vec::new();
    for (name, default) in &names {
        let Some(task) = config.task(name) else {
            return Err(match default {
                Some(at) => error_at(
                    &config.file,
                    at.place,
                    &at.key,
                    format!("no task named {name:?}; its tasks: {}", config.names()),
                ),
                None => error_at(
                    &config.file,
                    config.tasks_place,
                    "tasks",
                    format!("no task named {name:?}; its tasks: {}", config.names()),
                ),
            });
        };
        jobs.push(job(&config, task, args, output, connect, &cwd)?);
    }
    if let [job] = jobs.as_slice() {
        job.run()?;
        crate::say::apply(output);
        return finish(output, &[(job.name.clone(), 0)]);
    }
    let mut results = Vec::new();
    let mut worst = 0;
    for job in &jobs {
        let status = match job.run() {
            Ok(()) => 0,
            // Ctrl-C: no further task starts, and the interrupt is reported once, as such.
            Err(error) if crate::interrupt::interrupted() => return Err(error),
            Err(error) => crate::report_status(&error),
        };
        if severity(status) > severity(worst) {
            worst = status;
        }
        results.push((job.name.clone(), status));
    }
    crate::say::apply(output);
    finish(output, &results)?;
    let failed: Vec<_> = results.into_iter().filter(|(_, status)| *status != 0).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(TasksFailed {
        status: worst,
        failed,
        ran: jobs.len(),
    }
    .into())
}

/// The `run` summary: each task's exit status.
fn finish(output: &OutputArgs, results: &[(String, u8)]) -> anyhow::Result<()> {
    if output.json {
        let tasks: Vec<_> = results
            .iter()
            .map(|(name, status)| serde_json::json!({ "name": name, "exit": status }))
            .collect();
        crate::say::summary("run", serde_json::json!({ "tasks": tasks }))?;
    }
    Ok(())
}

/// A task's argument structs: the file's settings, the command line's options over them.
fn job(
    config: &Config,
    task: &Task,
    args: &RunArgs,
    cli_output: &OutputArgs,
    cli_connect: &ConnectArgs,
    cwd: &Path,
) -> anyhow::Result<Job> {
    let file = &config.file;
    let key = |name: &str| format!("tasks.{}.{name}", task.name);
    if let Some((at, why)) = task.unsupported.first() {
        return Err(error_at(file, at.place, &at.key, why));
    }
    let Some(command) = &task.command else {
        return Err(error_at(
            file,
            task.place,
            &key("command"),
            "missing: every task needs a command",
        ));
    };
    let cmd = command.value;
    if cmd == Command::Tree {
        return Err(error_at(
            file,
            command.place,
            &command.key,
            "pyftpsync's `tree` (a listing of the remote) is not a command of snapsync run",
        ));
    }
    let Some(remote) = &task.remote else {
        return Err(error_at(
            file,
            task.place,
            &key("remote"),
            "missing: every task needs a remote",
        ));
    };
    check_overrides(args, cmd, &task.name)?;
    let s = &task.settings;
    let relative = |path: &PathBuf| in_folder(&config.dir, path);
    let root_folder = task
        .local
        .as_ref()
        .map_or_else(|| config.dir.clone(), |l| relative(&l.value));
    let (local, remote_text) = place_of_run(config, task, args, cmd, cwd, &root_folder, &remote.value)?;

    let on = |cli: bool, file: &Option<At<bool>>| cli || file.as_ref().is_some_and(|f| f.value);
    let list = |cli: &Vec<String>, file: &Option<At<Vec<String>>>| {
        if cli.is_empty() {
            file.as_ref().map(|f| f.value.clone()).unwrap_or_default()
        } else {
            cli.clone()
        }
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .or_else(|| s.cache_dir.as_ref().map(|c| relative(&c.value)))
        .or_else(|| {
            std::env::var_os("SNAPSYNC_CACHE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    let jobs = args.jobs.or(s.jobs.as_ref().map(|j| j.value));

    let work = match cmd {
        Command::Upload | Command::Download | Command::Sync => {
            let mode = match cmd {
                Command::Upload => Mode::Upload,
                Command::Download => Mode::Download,
                _ => Mode::Sync,
            };
            let sync = SyncArgs {
                local: local.clone(),
                remote: remote_text.clone(),
                delete: on(args.delete, &s.delete),
                delete_unmatched: on(args.delete_unmatched, &s.delete_unmatched),
                matches: list(&args.matches, &s.matches),
                exclude: list(&args.exclude, &s.exclude),
                force: on(args.force, &s.force),
                resolve: args
                    .resolve
                    .or(s.resolve.as_ref().map(|r| r.value))
                    .unwrap_or(ResolveArg::Skip),
                dry_run: !args.no_dry_run && on(args.dry_run, &s.dry_run),
                checksum: on(args.checksum, &s.checksum),
                create_folder: on(args.create_folder, &s.create_folder),
                allow_mass_delete: on(args.allow_mass_delete, &s.allow_mass_delete),
                break_lock: on(args.break_lock, &s.break_lock),
                lock_timeout: match args.lock_timeout.or(s.lock_timeout.as_ref().map(|t| t.value)) {
                    Some(timeout) => timeout,
                    None => crate::time::parse_age(crate::cli::LOCK_TIMEOUT).map_err(anyhow::Error::msg)?,
                },
                jobs,
            };
            // Contradictions (a two-way sync with --delete, say) stop the run before any task starts.
            crate::sync::options(mode, &sync).map_err(|error| match error.downcast::<UsageError>() {
                Ok(usage) => UsageError(format!("task {}: {}", task.name, usage.0)).into(),
                Err(other) => other,
            })?;
            Work::Sync(mode, sync)
        }
        Command::Push => Work::Push(PushArgs {
            store: remote_text.clone(),
            dir: Some(local.clone()),
            id: None,
            filter: WalkFlags {
                exclude: list(&args.exclude, &s.exclude),
                exclude_regex: list(&args.exclude_regex, &s.exclude_regex),
                no_follow: on(args.no_follow, &s.no_follow),
            },
            cache: CacheArgs { cache_dir },
            jobs: JobsArgs { jobs },
        }),
        Command::Pull => {
            let Some(id) = args.id.clone().or_else(|| s.id.as_ref().map(|i| i.value.clone())) else {
                return Err(error_at(
                    file,
                    task.place,
                    &key("id"),
                    "missing: a pull task needs the snapshot's id (in the file, or --id)",
                ));
            };
            Work::Pull(PullArgs {
                store: remote_text.clone(),
                id,
                dir: local.clone(),
                delete: on(args.delete, &s.delete),
                cache: CacheArgs { cache_dir },
                jobs: JobsArgs { jobs },
            })
        }
        Command::Tree => {
            return Err(error_at(
                file,
                command.place,
                &command.key,
                "not a command of snapsync run",
            ));
        }
    };
    let output = output_of(config, task, cli_output)?;
    let connect = ConnectArgs {
        accept_new_host_key: on(cli_connect.accept_new_host_key, &s.accept_new_host_key),
        known_hosts: cli_connect
            .known_hosts
            .clone()
            .or_else(|| s.known_hosts.as_ref().map(|k| relative(&k.value))),
        ssh_key: cli_connect
            .ssh_key
            .clone()
            .or_else(|| s.ssh_key.as_ref().map(|k| relative(&k.value))),
        ca_file: cli_connect
            .ca_file
            .clone()
            .or_else(|| s.ca_file.as_ref().map(|k| relative(&k.value))),
        no_netrc: on(cli_connect.no_netrc, &s.no_netrc),
        no_keyring: on(cli_connect.no_keyring, &s.no_keyring),
        store_password: cli_connect.store_password,
        no_prompt: on(cli_connect.no_prompt, &s.no_prompt),
        timeout: cli_connect.timeout,
        retries: cli_connect.retries,
    }
    .options(ConnectOptions::from_env());
    let shown =
        StoreUrl::parse(&remote_text).map_or_else(|_| "the remote".to_string(), |url| url.to_string());
    Ok(Job {
        name: task.name.clone(),
        banner: format!("task {}: {} {} {shown}", task.name, cmd.name(), local.display()),
        output,
        connect,
        work,
    })
}

/// A path from the file: `~/…` in the home folder, a relative path in the file's folder.
fn in_folder(dir: &Path, path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty())
    {
        return PathBuf::from(home).join(rest);
    }
    dir.join(path)
}

/// The local folder and the remote a task runs on: the task's folder (relative to the file's), or with
/// `--here` (or pyftpsync's `here: true`) run from below it, the current folder and the same path below
/// the remote — pyftpsync's rule, which asks for one of the two when a pyftpsync.yaml is in a parent
/// folder and says neither.
fn place_of_run(
    config: &Config,
    task: &Task,
    args: &RunArgs,
    command: Command,
    cwd: &Path,
    root_folder: &Path,
    remote: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let s = &task.settings;
    let set = |at: &Option<At<bool>>| at.as_ref().is_some_and(|a| a.value);
    let (here, root) = if args.here || args.root {
        (args.here, args.root)
    } else {
        (set(&s.here), set(&s.root))
    };
    let in_file_folder = cwd == config.dir;
    if in_file_folder || root || !here {
        if !in_file_folder && !root && config.format == Format::Pyftpsync {
            return Err(UsageError(format!(
                "{} was found in a parent folder and task {} sets neither root nor here: pass --root to sync \
                 the whole project ({}) or --here to sync only {}",
                config.file.display(),
                task.name,
                root_folder.display(),
                cwd.display()
            ))
            .into());
        }
        return Ok((root_folder.to_path_buf(), remote.to_string()));
    }
    if !command.is_folder_sync() {
        return Err(UsageError(format!(
            "--here applies to upload, download and sync tasks; task {} is a {}",
            task.name,
            command.name()
        ))
        .into());
    }
    let below = cwd
        .strip_prefix(root_folder)
        .ok()
        .and_then(Path::to_str)
        .ok_or_else(|| {
            UsageError(format!(
                "--here: {} is not below task {}'s folder {}",
                cwd.display(),
                task.name,
                root_folder.display()
            ))
        })?;
    Ok((
        cwd.to_path_buf(),
        format!("{}/{below}", remote.trim_end_matches('/')),
    ))
}

/// Options of `run` that a command does not take are an error, not silently dropped.
fn check_overrides(args: &RunArgs, command: Command, task: &str) -> anyhow::Result<()> {
    let sync = command.is_folder_sync();
    let given = [
        ("--delete", args.delete, sync || command == Command::Pull),
        ("--delete-unmatched", args.delete_unmatched, sync),
        ("--match", !args.matches.is_empty(), sync),
        (
            "--exclude",
            !args.exclude.is_empty(),
            sync || command == Command::Push,
        ),
        ("--force", args.force, sync),
        ("--resolve", args.resolve.is_some(), sync),
        ("--dry-run", args.dry_run, sync),
        ("--checksum", args.checksum, sync),
        ("--create-folder", args.create_folder, sync),
        ("--allow-mass-delete", args.allow_mass_delete, sync),
        ("--break-lock", args.break_lock, sync),
        ("--lock-timeout", args.lock_timeout.is_some(), sync),
        ("--id", args.id.is_some(), command == Command::Pull),
        (
            "--exclude-regex",
            !args.exclude_regex.is_empty(),
            command == Command::Push,
        ),
        ("--no-follow", args.no_follow, command == Command::Push),
        ("--cache-dir", args.cache_dir.is_some(), !sync),
    ];
    match given.iter().find(|(_, given, applies)| *given && !applies) {
        Some((flag, ..)) => Err(UsageError(format!(
            "{flag} is not an option of {} (task {task})",
            command.name()
        ))
        .into()),
        None => Ok(()),
    }
}

/// How much the task says: `-v`/`-q` on the command line, else the file's `verbose`/`quiet` (pyftpsync's
/// verbosity 0..5, 3 by default: 4 and up is -v, 1 and below -q).
fn output_of(config: &Config, task: &Task, cli: &OutputArgs) -> anyhow::Result<OutputArgs> {
    let s = &task.settings;
    let json = cli.json || s.json.as_ref().is_some_and(|j| j.value);
    let given = |verbose, quiet| OutputArgs {
        verbose,
        quiet,
        json,
        color: cli.color,
    };
    if cli.verbose > 0 || cli.quiet {
        return Ok(given(cli.verbose, cli.quiet));
    }
    let level = s.verbose.as_ref().map(|v| v.value);
    let quiet = s.quiet.as_ref().is_some_and(|q| q.value);
    Ok(match config.format {
        Format::Pyftpsync => match level {
            Some(level @ 4..) => given(level - 3, false),
            Some(0 | 1) => given(0, true),
            _ => given(0, false),
        },
        Format::Snapsync => {
            let verbose = level.unwrap_or(0);
            if verbose > 0 && quiet {
                let at = s.quiet.as_ref().map_or(task.place, |q| q.place);
                return Err(error_at(
                    &config.file,
                    at,
                    &format!("tasks.{}.quiet", task.name),
                    "quiet and verbose together",
                ));
            }
            given(verbose, quiet)
        }
    })
}
