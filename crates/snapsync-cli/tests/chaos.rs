//! The crash harness (`cargo xtask chaos`, docs/RELIABILITY.md): the real `snapsync` binary, built with
//! the `chaos` feature, runs an operation against a real server and is killed with `SIGKILL`, at a
//! random moment or at a named kill point (`snapsync_core::chaos`); then every file the destination
//! shows under a final name must be its old or its new version (by BLAKE3), and the same command run
//! again, unchanged, must reach the right result and leave no temporary file, lock or journal.
//!
//! Driven by the environment `cargo xtask chaos` sets: `SNAPSYNC_CHAOS_ITERATIONS` (per operation and
//! backend, 100 by default), `SNAPSYNC_CHAOS_OPS` and `SNAPSYNC_CHAOS_BACKENDS` (comma lists, all by
//! default but the `pypi` backend), `SNAPSYNC_CHAOS_SEED` (to replay a run) and
//! `SNAPSYNC_CHAOS_REPORT` (the report's path without extension; `.md` and `.json` are written).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use snapsync_testkit::{FtpFlavor, FtpServer, PKG_PASSWORD, PKG_USER, PypiServer, S3Server, Sshd};

/// The announcement a stopped process makes (`snapsync_core::chaos::ANNOUNCE`).
const ANNOUNCE: &str = snapsync_core::chaos::ANNOUNCE;
/// The bucket every S3 iteration works in (a folder per iteration).
const BUCKET: &str = "chaos";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Push,
    Pull,
    Upload,
    Download,
    Sync,
    CachePush,
    PkgMirror,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Push,
        Op::Pull,
        Op::Upload,
        Op::Download,
        Op::Sync,
        Op::CachePush,
        Op::PkgMirror,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Pull => "pull",
            Op::Upload => "upload",
            Op::Download => "download",
            Op::Sync => "sync",
            Op::CachePush => "cache-push",
            Op::PkgMirror => "pkg-mirror",
        }
    }

    /// Whether the operation runs against this kind of destination: a package index (pypiserver)
    /// only takes `pkg mirror`; every store takes every operation.
    fn runs_on(self, kind: Kind) -> bool {
        kind != Kind::Pypi || self == Op::PkgMirror
    }

    /// The kill points this operation passes (a run that never reaches its point is counted apart).
    fn points(self) -> &'static [&'static str] {
        match self {
            Op::Push | Op::Pull | Op::CachePush | Op::PkgMirror => &["mid-file", "after-rename"],
            Op::Upload | Op::Download | Op::Sync => &["mid-file", "after-rename", "lock"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Local,
    S3,
    Ftp,
    Ftps,
    Sftp,
    /// A package index taking uploads (pypiserver): a destination of `pkg mirror` only.
    Pypi,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Local,
        Kind::S3,
        Kind::Ftp,
        Kind::Ftps,
        Kind::Sftp,
        Kind::Pypi,
    ];
    /// The backends run when none are named: pypiserver only when asked for, since it keeps what it
    /// got of a cut upload under the file's final name (docs/RELIABILITY.md, Findings) and would fail
    /// every run on its own account.
    const DEFAULT: [Kind; 5] = [Kind::Local, Kind::S3, Kind::Ftp, Kind::Ftps, Kind::Sftp];

    fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::S3 => "s3",
            Kind::Ftp => "ftp",
            Kind::Ftps => "ftps",
            Kind::Sftp => "sftp",
            Kind::Pypi => "pypi",
        }
    }
}

/// A running backend: where a folder of it is, what to pass to reach it, and how to look at it from
/// the server's side.
enum Backend {
    Local(tempfile::TempDir),
    S3(S3Server),
    Ftp(FtpServer),
    Sftp(Sshd),
    Pypi(PypiServer),
}

impl Backend {
    fn start(kind: Kind) -> Backend {
        match kind {
            Kind::Local => Backend::Local(tempfile::tempdir().unwrap()),
            Kind::S3 => {
                let server = S3Server::start();
                server.create_bucket(BUCKET);
                Backend::S3(server)
            }
            Kind::Ftp => Backend::Ftp(FtpServer::start(FtpFlavor::Pyftpdlib, false)),
            Kind::Ftps => Backend::Ftp(FtpServer::start(FtpFlavor::Vsftpd, true)),
            Kind::Sftp => Backend::Sftp(Sshd::start()),
            Kind::Pypi => Backend::Pypi(PypiServer::start_with_auth()),
        }
    }

    fn url(&self, folder: &str) -> String {
        match self {
            Backend::Local(dir) => dir.path().join(folder).to_str().unwrap().to_owned(),
            Backend::S3(_) => format!("s3://{BUCKET}/{folder}"),
            Backend::Ftp(server) => server.url(folder),
            Backend::Sftp(server) => server.url(folder),
            // One index for every iteration: each iteration's projects have names of their own.
            Backend::Pypi(server) => {
                let password = PKG_PASSWORD.replace(':', "%3A").replace('@', "%40");
                server
                    .url()
                    .replacen("http://", &format!("http://{PKG_USER}:{password}@"), 1)
            }
        }
    }

    /// The connection flags.
    fn flags(&self) -> Vec<String> {
        match self {
            Backend::Ftp(server) => server
                .ca_file()
                .map(|ca| vec!["--ca-file".into(), ca.to_str().unwrap().into()])
                .unwrap_or_default(),
            Backend::Sftp(server) => vec![
                "--known-hosts".into(),
                server.known_hosts().to_str().unwrap().into(),
            ],
            Backend::Local(_) | Backend::S3(_) | Backend::Pypi(_) => vec![],
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backend::S3(server) => server.env(),
            _ => vec![],
        }
    }

    /// The folder as the server holds it, every file included (temporary names, locks).
    fn view(&self, folder: &str) -> View {
        match self {
            Backend::Local(dir) => View::at(dir.path().join(folder)),
            Backend::Ftp(server) => View::at(server.root().join(folder)),
            Backend::Sftp(server) => View::at(server.root().join(folder)),
            // The index's one folder of files (the caller keeps the iteration's own).
            Backend::Pypi(server) => View::at(server.packages()),
            Backend::S3(server) => {
                let copy = tempfile::tempdir().unwrap();
                server.download_prefix(BUCKET, &format!("{folder}/"), copy.path());
                View {
                    path: copy.path().to_owned(),
                    _copy: Some(copy),
                }
            }
        }
    }
}

struct View {
    path: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

impl View {
    fn at(path: PathBuf) -> View {
        View { path, _copy: None }
    }
}

/// splitmix64: a small seeded generator, so that a failing run can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A tree: relative path → content.
type Files = BTreeMap<String, Vec<u8>>;

/// What the destination holds, read from the server's side, folder by folder.
type Look<'a> = Box<dyn Fn() -> Vec<(String, Files)> + 'a>;

/// Writes `files` into `dir` (made if missing), each with modification time `mtime`.
fn write_tree(dir: &Path, files: &Files, mtime: SystemTime) {
    for (rel, content) in files {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
}

/// Every file under `dir`, relative, with its content (an absent folder is empty).
fn read_tree(dir: &Path) -> Files {
    let mut out = Files::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Old and new trees: some files changed, some added, some (when `deletes`) removed; a few large
/// enough that a kill lands inside them.
fn trees(rng: &mut Rng, deletes: bool) -> (Files, Files) {
    let mut old = Files::new();
    let mut new = Files::new();
    let count = 6 + rng.below(5);
    for i in 0..count {
        let dir = ["", "a/", "a/b/"][usize::try_from(rng.below(3)).unwrap()];
        let rel = format!("{dir}f{i}.bin");
        let size = |rng: &mut Rng| {
            if rng.below(4) == 0 {
                usize::try_from((1 << 20) + rng.below(3 << 20)).unwrap()
            } else {
                usize::try_from(rng.below(40_000)).unwrap()
            }
        };
        match rng.below(6) {
            // Only in the new tree.
            0 => {
                let s = size(rng);
                new.insert(rel, rng.bytes(s));
            }
            // Removed (kept when the operation does not delete).
            1 => {
                let s = size(rng);
                let content = rng.bytes(s);
                if !deletes {
                    new.insert(rel.clone(), content.clone());
                }
                old.insert(rel, content);
            }
            // Unchanged.
            2 => {
                let s = size(rng);
                let content = rng.bytes(s);
                old.insert(rel.clone(), content.clone());
                new.insert(rel, content);
            }
            // Changed.
            _ => {
                let (a, b) = (size(rng), size(rng));
                old.insert(rel.clone(), rng.bytes(a));
                new.insert(rel, rng.bytes(b));
            }
        }
    }
    (old, new)
}

fn is_temp(rel: &str) -> bool {
    Path::new(rel)
        .file_name()
        .is_some_and(snapsync_store::is_temp_name)
}

fn is_lock(rel: &str) -> bool {
    rel.split('/')
        .any(|part| part.starts_with(snapsync_store::LOCK_PREFIX))
}

/// How a run ended.
enum Ended {
    /// Killed (at the point, or after the delay).
    Killed,
    /// It finished before the kill came: its exit code and standard error.
    Finished(Option<i32>, String),
}

/// One iteration's context: a folder of the backend, a scratch folder, the environment.
struct Ctx<'a> {
    backend: &'a Backend,
    folder: String,
    scratch: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Ctx<'_> {
    fn url(&self) -> String {
        self.backend.url(&self.folder)
    }

    fn local(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_snapsync"));
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove(snapsync_core::chaos::POINT_VAR)
            .stdin(Stdio::null());
        command
    }

    /// Runs to the end: success, standard output and standard error.
    fn run(&self, args: &[String]) -> (bool, String, String) {
        let (code, out, err) = self.run_code(args);
        (code == Some(0), out, err)
    }

    /// Runs to the end: the exit code, standard output and standard error.
    fn run_code(&self, args: &[String]) -> (Option<i32>, String, String) {
        let out = self.command(args).output().expect("snapsync runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs to the end, which must be a success: standard output.
    fn run_ok(&self, args: &[String]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "snapsync {args:?} failed:\n{err}");
        out
    }

    /// Runs and kills: at `point` (its `skip`-th pass) or, without a point, after `delay`.
    fn run_killed(&self, args: &[String], point: Option<(&str, u64)>, delay: Duration) -> Ended {
        let mut command = self.command(args);
        if let Some((name, skip)) = point {
            command
                .env(snapsync_core::chaos::POINT_VAR, name)
                .env(snapsync_core::chaos::SKIP_VAR, skip.to_string());
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("snapsync starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(ANNOUNCE) {
                    let _ = tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let started = Instant::now();
        let limit = if point.is_some() {
            Duration::from_mins(2)
        } else {
            delay
        };
        let mut killed = false;
        loop {
            if rx.try_recv().is_ok() {
                killed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() >= limit {
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SIGKILL (a stopped process dies of it too).
        let _ = child.kill();
        let status = child.wait().unwrap();
        let text = reader.join().unwrap();
        if killed && status.code().is_none() {
            Ended::Killed
        } else {
            Ended::Finished(status.code(), text)
        }
    }
}

/// The outcome of one iteration.
#[derive(Default)]
struct Outcome {
    killed: bool,
    unreached: bool,
    torn: Vec<String>,
    failed_recovery: Vec<String>,
}

/// Checks `seen` (a destination just after the kill) against the old and new trees: each file under a
/// final name is one of the two versions; temporary files and locks are allowed.
fn check_old_or_new(where_: &str, seen: &Files, old: &Files, new: &Files, torn: &mut Vec<String>) {
    for (rel, content) in seen {
        if is_temp(rel) || is_lock(rel) {
            continue;
        }
        let hash = blake3::hash(content);
        let matches = |tree: &Files| tree.get(rel).is_some_and(|c| blake3::hash(c) == hash);
        if !matches(old) && !matches(new) {
            torn.push(format!(
                "{where_}: {rel} ({} bytes) is neither its old nor its new version",
                content.len()
            ));
        }
    }
}

/// Checks a converged destination: exactly `new`, no temporary file, no lock.
fn check_converged(where_: &str, seen: &Files, new: &Files, failed: &mut Vec<String>) {
    for rel in seen.keys() {
        if is_temp(rel) {
            failed.push(format!("{where_}: temporary file {rel} left"));
        } else if is_lock(rel) {
            failed.push(format!("{where_}: lock {rel} left"));
        }
    }
    let finals: Files = seen
        .iter()
        .filter(|(rel, _)| !is_temp(rel) && !is_lock(rel))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (rel, content) in new {
        match finals.get(rel) {
            None => failed.push(format!("{where_}: {rel} missing")),
            Some(c) if c != content => failed.push(format!("{where_}: {rel} has other bytes")),
            Some(_) => {}
        }
    }
    for rel in finals.keys() {
        if !new.contains_key(rel) {
            failed.push(format!("{where_}: {rel} should not be there"));
        }
    }
}

/// A snapshot store as the server holds it: every object's bytes hash to its key, every manifest to
/// its id; `torn` gets the others. Temporary names and locks are skipped.
fn check_store(where_: &str, seen: &Files, torn: &mut Vec<String>) {
    for (rel, content) in seen {
        if is_temp(rel) || is_lock(rel) {
            continue;
        }
        let (prefix, bytes) = if let Some(rest) = rel.strip_prefix(".objects/") {
            (rest, blake3::hash(content))
        } else if let Some(rest) = rel.strip_prefix(".manifests/") {
            (rest, blake3::hash(content))
        } else {
            torn.push(format!("{where_}: {rel} is not a store key"));
            continue;
        };
        if prefix.replace('/', "") != bytes.to_hex().as_str() {
            torn.push(format!(
                "{where_}: {rel} ({} bytes) does not hash to its key",
                content.len()
            ));
        }
    }
}

/// Whether the sync state folder still holds a journal (a run that ended well compacts it away).
fn journals(state: &Path) -> Vec<String> {
    read_tree(state)
        .into_iter()
        .filter(|(rel, content)| rel.ends_with("journal.jsonl") && !content.is_empty())
        .map(|(rel, _)| format!("state: journal {rel} left"))
        .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// An iteration's context over `folder` of `backend`: a scratch folder, and the environment (the
/// backend's, with the sync state, snapshot cache and temporary folders in the scratch folder).
fn context(backend: &Backend, folder: String) -> Ctx<'_> {
    let scratch = tempfile::tempdir().unwrap();
    let mut env = backend.env();
    env.push((
        "SNAPSYNC_STATE_DIR",
        scratch.path().join("state").to_str().unwrap().to_owned(),
    ));
    env.push((
        "SNAPSYNC_CACHE_DIR",
        scratch.path().join("cache").to_str().unwrap().to_owned(),
    ));
    // The system's temporary folder (`pkg mirror` keeps its downloads there): checked for leftovers.
    let tmp = scratch.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    env.push(("TMPDIR", tmp.to_str().unwrap().to_owned()));
    Ctx {
        backend,
        folder,
        scratch,
        env,
    }
}

/// Runs the command under test, killed as `kill` says (without a kill, the calibration run, to its
/// end); records in `outcome` whether it was killed, or that it ended before its kill point and
/// whether with the exit code `expected`. Its wall time.
fn run_under_test(
    ctx: &Ctx<'_>,
    command: &[String],
    kill: Option<Kill<'_>>,
    expected: Option<i32>,
    outcome: &mut Outcome,
) -> Duration {
    let started = Instant::now();
    let ended = match kill {
        None => {
            let (code, _, err) = ctx.run_code(command);
            Ended::Finished(code, err)
        }
        Some(Kill::Random(delay)) => ctx.run_killed(command, None, delay),
        Some(Kill::Point(name, skip)) => ctx.run_killed(command, Some((name, skip)), Duration::ZERO),
    };
    let took = started.elapsed();
    match ended {
        Ended::Killed => outcome.killed = true,
        Ended::Finished(code, text) => {
            outcome.unreached = kill.is_some();
            if code != expected {
                outcome.failed_recovery.push(format!(
                    "the run was not killed and ended with {code:?}, not {expected:?}:\n{text}"
                ));
            }
        }
    }
    took
}

/// How the kill is chosen in one iteration.
#[derive(Clone, Copy)]
enum Kill<'a> {
    Random(Duration),
    Point(&'a str, u64),
}

/// One iteration of `op` over `backend`: builds the trees, makes the destination (empty, or holding
/// the old versions through a complete run of the same command), runs the command and kills it,
/// checks, runs it again and checks.
#[allow(clippy::too_many_lines)]
fn iteration(
    op: Op,
    backend: &Backend,
    folder: String,
    rng: &mut Rng,
    kill: Option<Kill<'_>>,
    source: Option<&PypiServer>,
) -> (Outcome, Duration) {
    let ctx = context(backend, folder);
    match op {
        Op::CachePush => return cache_push(&ctx, rng, kill),
        Op::PkgMirror => return pkg_mirror(&ctx, rng, kill, source.expect("a source index")),
        _ => {}
    }
    let with_old = rng.below(2) == 0;
    let (old, new) = trees(rng, op == Op::Sync);
    let old = if with_old { old } else { Files::new() };
    let t_old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let t_new = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let url = ctx.url();
    let flags = backend.flags();
    let cmd = |parts: &[&str]| -> Vec<String> {
        let mut v = strings(&parts[..1]);
        v.extend(flags.iter().cloned());
        v.extend(strings(&parts[1..]));
        v
    };
    let mut outcome = Outcome::default();
    let src = ctx.local("src");
    let dest = ctx.local("dest");
    let (srcs, dests) = (src.to_str().unwrap(), dest.to_str().unwrap());
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();

    // The command under test, and the destination made ready (old versions, or nothing).
    let (command, look): (Vec<String>, Look<'_>) = match op {
        Op::Push => {
            if with_old {
                write_tree(&src, &old, t_old);
                ctx.run_ok(&cmd(&["push", "-q", "--store", &url, srcs]));
                fs::remove_dir_all(&src).unwrap();
            }
            write_tree(&src, &new, t_new);
            (
                cmd(&["push", "-q", "--store", &url, srcs]),
                Box::new(|| vec![("store".into(), read_tree(&backend.view(&ctx.folder).path))]),
            )
        }
        Op::Pull => {
            let old_id = with_old.then(|| {
                write_tree(&src, &old, t_old);
                let id = ctx.run_ok(&cmd(&["push", "-q", "--store", &url, srcs]));
                fs::remove_dir_all(&src).unwrap();
                id.trim().to_owned()
            });
            write_tree(&src, &new, t_new);
            let id = ctx.run_ok(&cmd(&["push", "-q", "--store", &url, srcs]));
            if let Some(old_id) = old_id {
                ctx.run_ok(&cmd(&["pull", "-q", "--store", &url, "--id", &old_id, dests]));
            }
            (
                cmd(&["pull", "-q", "--store", &url, "--id", id.trim(), dests]),
                Box::new(|| vec![("dest".into(), read_tree(&dest))]),
            )
        }
        Op::Upload => {
            if with_old {
                write_tree(&src, &old, t_old);
                ctx.run_ok(&cmd(&["upload", "-q", "--create-folder", srcs, &url]));
                fs::remove_dir_all(&src).unwrap();
            }
            write_tree(&src, &new, t_new);
            (
                cmd(&["upload", "-q", "--create-folder", srcs, &url]),
                Box::new(|| vec![("remote".into(), read_tree(&backend.view(&ctx.folder).path))]),
            )
        }
        Op::Download => {
            // `src` stands for whoever writes the remote.
            write_tree(&src, &old, t_old);
            if with_old {
                ctx.run_ok(&cmd(&["upload", "-q", "--create-folder", srcs, &url]));
                ctx.run_ok(&cmd(&["download", "-q", dests, &url]));
            }
            fs::remove_dir_all(&src).unwrap();
            write_tree(&src, &new, t_new);
            ctx.run_ok(&cmd(&["upload", "-q", "--create-folder", srcs, &url]));
            (
                cmd(&["download", "-q", dests, &url]),
                Box::new(|| vec![("dest".into(), read_tree(&dest))]),
            )
        }
        Op::Sync => {
            // `src` is this machine's folder: it starts in step with the remote (old), then changes.
            write_tree(&src, &old, t_old);
            if with_old || old.is_empty() {
                ctx.run_ok(&cmd(&["sync", "-q", "--create-folder", srcs, &url]));
            }
            fs::remove_dir_all(&src).unwrap();
            write_tree(&src, &new, t_new);
            (
                cmd(&["sync", "-q", "--create-folder", srcs, &url]),
                Box::new(|| {
                    vec![
                        ("local".into(), read_tree(&src)),
                        ("remote".into(), read_tree(&backend.view(&ctx.folder).path)),
                    ]
                }),
            )
        }
        Op::CachePush | Op::PkgMirror => unreachable!("run by their own functions, above"),
    };

    // The run under test, killed (or, without a kill, the calibration run).
    let took = run_under_test(&ctx, &command, kill, Some(0), &mut outcome);
    for (side, seen) in look() {
        if op == Op::Push {
            check_store(&side, &seen, &mut outcome.torn);
        } else {
            check_old_or_new(&side, &seen, &old, &new, &mut outcome.torn);
        }
    }

    // The same command again, unchanged: it must end well and leave the right result behind.
    let (ok, text, err) = ctx.run(&command);
    if !ok {
        outcome.failed_recovery.push(format!("the rerun failed:\n{err}"));
    }
    for (side, seen) in look() {
        if op == Op::Push {
            check_store(&side, &seen, &mut outcome.torn);
            for rel in seen.keys() {
                if is_temp(rel) || is_lock(rel) {
                    outcome.failed_recovery.push(format!("{side}: {rel} left"));
                }
            }
        } else {
            check_converged(&side, &seen, &new, &mut outcome.failed_recovery);
        }
    }
    if op == Op::Push && ok {
        // The snapshot is complete in the store: verify reads every object back, and a pull of it
        // gives the tree.
        let id = text.trim();
        let (verified, _, out) = ctx.run(&cmd(&["verify", "-q", "--store", &url, "--id", id]));
        if !verified {
            outcome
                .failed_recovery
                .push(format!("verify after the rerun failed:\n{out}"));
        }
        let (pulled, _, out) = ctx.run(&cmd(&["pull", "-q", "--store", &url, "--id", id, dests]));
        if pulled {
            check_converged("pulled", &read_tree(&dest), &new, &mut outcome.failed_recovery);
        } else {
            outcome
                .failed_recovery
                .push(format!("pull after the rerun failed:\n{out}"));
        }
    }
    outcome
        .failed_recovery
        .extend(journals(&ctx.scratch.path().join("state")));
    (outcome, took)
}

#[derive(Default)]
struct Tally {
    iterations: u64,
    killed: u64,
    by_point: BTreeMap<String, u64>,
    unreached: u64,
    torn: u64,
    failed_recoveries: u64,
    findings: Vec<String>,
    seconds: f64,
}

fn env_list<T: Copy>(var: &str, all: &[T], default: &[T], name: fn(T) -> &'static str) -> Vec<T> {
    match std::env::var(var) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|item| {
                *all.iter()
                    .find(|x| name(**x) == item.trim())
                    .unwrap_or_else(|| panic!("{var}: unknown {item:?}"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

#[test]
fn chaos() {
    let iterations: u64 = std::env::var("SNAPSYNC_CHAOS_ITERATIONS")
        .ok()
        .map_or(100, |s| s.parse().expect("SNAPSYNC_CHAOS_ITERATIONS is a number"));
    let ops = env_list("SNAPSYNC_CHAOS_OPS", &Op::ALL, &Op::ALL, Op::name);
    let kinds = env_list("SNAPSYNC_CHAOS_BACKENDS", &Kind::ALL, &Kind::DEFAULT, Kind::name);
    let seed: u64 = std::env::var("SNAPSYNC_CHAOS_SEED").ok().map_or_else(
        || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("SNAPSYNC_CHAOS_SEED is a number"),
    );
    let report = std::env::var("SNAPSYNC_CHAOS_REPORT").map_or_else(
        |_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-report"),
        PathBuf::from,
    );
    eprintln!("chaos: seed {seed}, {iterations} iterations per operation and backend");
    let mut rng = Rng(seed);
    let mut tallies: BTreeMap<(Kind, Op), Tally> = BTreeMap::new();
    let mut n = 0u64;
    // The index `pkg mirror` copies from, shared by every iteration (each adds projects of its own).
    let source = ops.contains(&Op::PkgMirror).then(|| PypiServer::start_open(&[]));
    for &kind in &kinds {
        let ops: Vec<Op> = ops.iter().copied().filter(|op| op.runs_on(kind)).collect();
        if ops.is_empty() {
            continue;
        }
        let backend = Backend::start(kind);
        for &op in &ops {
            let started = Instant::now();
            let tally = tallies.entry((kind, op)).or_default();
            // A complete run first: it measures how long the command takes (the range of the random
            // kills) and checks the harness itself.
            n += 1;
            let (calibration, took) =
                iteration(op, &backend, format!("c{n}"), &mut rng, None, source.as_ref());
            assert!(
                calibration.torn.is_empty() && calibration.failed_recovery.is_empty(),
                "{} over {}: a run that was not killed went wrong: {:?} {:?}",
                op.name(),
                kind.name(),
                calibration.torn,
                calibration.failed_recovery
            );
            let expected = took.max(Duration::from_millis(50));
            for i in 0..iterations {
                n += 1;
                let points = op.points();
                let choice = usize::try_from(i).unwrap() % (points.len() + 1);
                let kill = if choice == 0 {
                    let ms = u64::try_from(expected.as_millis()).unwrap();
                    Kill::Random(Duration::from_millis(rng.below(ms + 1)))
                } else {
                    let point = points[choice - 1];
                    let skip = match point {
                        "lock" => 0,
                        // The cache's state is written (renamed into place) once before the first
                        // upload: let that pass by.
                        "after-rename" if op == Op::CachePush => 1 + rng.below(4),
                        "after-rename" => rng.below(4),
                        _ => rng.below(8),
                    };
                    Kill::Point(point, skip)
                };
                let label = match kill {
                    Kill::Random(d) => format!("random {} ms", d.as_millis()),
                    Kill::Point(p, s) => format!("{p} (pass {})", s + 1),
                };
                let (outcome, _) = iteration(
                    op,
                    &backend,
                    format!("i{n}"),
                    &mut rng,
                    Some(kill),
                    source.as_ref(),
                );
                tally.iterations += 1;
                if outcome.killed {
                    tally.killed += 1;
                    let key = match kill {
                        Kill::Random(_) => "random".to_owned(),
                        Kill::Point(p, _) => p.to_owned(),
                    };
                    *tally.by_point.entry(key).or_default() += 1;
                }
                if outcome.unreached {
                    tally.unreached += 1;
                }
                tally.torn += outcome.torn.len() as u64;
                if !outcome.failed_recovery.is_empty() {
                    tally.failed_recoveries += 1;
                }
                for finding in outcome.torn.iter().chain(&outcome.failed_recovery) {
                    let line = format!("{} over {}, kill {label}: {finding}", op.name(), kind.name());
                    eprintln!("chaos: {line}");
                    tally.findings.push(line);
                }
            }
            tally.seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "chaos: {} over {}: {} iterations, {} killed, {} torn, {} failed recoveries ({:.0} s)",
                op.name(),
                kind.name(),
                tally.iterations,
                tally.killed,
                tally.torn,
                tally.failed_recoveries,
                tally.seconds
            );
        }
    }
    let (md, json) = render(&tallies, seed, iterations);
    if let Some(parent) = report.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(report.with_extension("md"), &md).unwrap();
    fs::write(report.with_extension("json"), json).unwrap();
    println!("{md}");
    let bad: u64 = tallies.values().map(|t| t.torn + t.failed_recoveries).sum();
    assert_eq!(bad, 0, "torn files or failed recoveries: see the report above");
}

/// The report: a markdown table (docs/RELIABILITY.md shows one) and the same as JSON.
fn render(tallies: &BTreeMap<(Kind, Op), Tally>, seed: u64, iterations: u64) -> (String, String) {
    let mut md = format!(
        "Seed {seed}, {iterations} iterations per operation and backend (kills cycle through a random \
         moment and each kill point the operation passes).\n\n\
         | operation | backend | iterations | killed | random | mid-file | after-rename | lock | \
         not reached | torn files | failed recoveries | seconds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut json = Vec::new();
    for ((kind, op), t) in tallies {
        let at = |p: &str| t.by_point.get(p).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            op.name(),
            kind.name(),
            t.iterations,
            t.killed,
            at("random"),
            at("mid-file"),
            at("after-rename"),
            at("lock"),
            t.unreached,
            t.torn,
            t.failed_recoveries,
            t.seconds
        );
        json.push(serde_json::json!({
            "operation": op.name(),
            "backend": kind.name(),
            "iterations": t.iterations,
            "killed": t.killed,
            "killed_at": t.by_point,
            "not_reached": t.unreached,
            "torn_files": t.torn,
            "failed_recoveries": t.failed_recoveries,
            "seconds": t.seconds,
            "findings": t.findings,
        }));
    }
    let findings: Vec<&String> = tallies.values().flat_map(|t| &t.findings).collect();
    if !findings.is_empty() {
        md.push_str("\nFindings:\n\n");
        for f in findings {
            let first = f.lines().take(6).collect::<Vec<_>>().join(" / ");
            let _ = writeln!(md, "- {first}");
        }
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "seed": seed,
        "iterations": iterations,
        "results": json,
    }))
    .unwrap();
    (md, json)
}

/// The connection flags go after the subcommand (`cache push`, `pkg mirror`).
fn two_word(ctx: &Ctx<'_>, group: &str, command: &str, rest: &[&str]) -> Vec<String> {
    let mut v = strings(&[group, command]);
    v.extend(ctx.backend.flags());
    v.extend(strings(rest));
    v
}

/// Every temporary file under `dir` (the cache folder, a temporary folder).
fn temporaries(where_: &str, dir: &Path) -> Vec<String> {
    read_tree(dir)
        .into_keys()
        .filter(|rel| is_temp(rel))
        .map(|rel| format!("{where_}: temporary file {rel} left"))
        .collect()
}

/// One `cache push` iteration: a remote holding the old tree (or nothing), a cache that fetched the
/// files the new tree keeps, changed and added files queued; at random another cache edits one of the
/// changed files on the remote first, which the push must never clobber (it ends 4, a conflict, and
/// leaves that file queued). Killed during the push; the remote holds old or new for every file (the
/// other cache's edit for that one); the same push again ends as a push that was not killed would,
/// with the remote at the new tree, nothing queued but the conflict and no temporary file on either
/// side.
#[allow(clippy::too_many_lines)]
fn cache_push(ctx: &Ctx<'_>, rng: &mut Rng, kill: Option<Kill<'_>>) -> (Outcome, Duration) {
    let with_old = rng.below(2) == 0;
    let (old, new) = trees(rng, false);
    let old = if with_old { old } else { Files::new() };
    let t_old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let url = ctx.url();
    let mut outcome = Outcome::default();
    let src = ctx.local("src");
    let cache = ctx.local("cache-a");
    let (srcs, caches) = (src.to_str().unwrap(), cache.to_str().unwrap());
    // The remote: the old tree, or an empty folder.
    fs::create_dir_all(&src).unwrap();
    write_tree(&src, &old, t_old);
    let upload = |args: &[&str]| {
        let mut v = strings(&args[..1]);
        v.extend(ctx.backend.flags());
        v.extend(strings(&args[1..]));
        v
    };
    ctx.run_ok(&upload(&["upload", "-q", "--create-folder", srcs, &url]));
    let cache_cmd = |dir: &str, command: &str, rest: &[&str]| {
        let mut args = vec!["-q", "--remote", url.as_str(), "--cache", dir];
        args.extend_from_slice(rest);
        two_word(ctx, "cache", command, &args)
    };
    // The cache fetches what the new tree keeps, then the new tree is written into it: changed and
    // added files are queued, unchanged ones stay as fetched.
    let kept: Vec<&str> = new
        .keys()
        .filter(|rel| old.contains_key(*rel))
        .map(String::as_str)
        .collect();
    if !kept.is_empty() {
        ctx.run_ok(&cache_cmd(caches, "open", &kept));
    }
    let changed: Vec<&str> = new
        .iter()
        .filter(|(rel, content)| old.get(*rel) != Some(content))
        .map(|(rel, _)| rel.as_str())
        .collect();
    let mut queued = Files::new();
    for rel in &changed {
        queued.insert((*rel).to_owned(), new[*rel].clone());
    }
    write_tree(&cache, &queued, SystemTime::now());
    if !changed.is_empty() {
        ctx.run_ok(&cache_cmd(caches, "add", &changed));
    }
    // Another cache edits a file this one changed too, and pushes it first.
    let edited: Option<(String, Vec<u8>)> = changed
        .iter()
        .find(|rel| old.contains_key(**rel))
        .filter(|_| rng.below(2) == 0)
        .map(|rel| {
            let other = ctx.local("cache-b");
            let others = other.to_str().unwrap();
            ctx.run_ok(&cache_cmd(others, "open", &[*rel]));
            let size = usize::try_from(rng.below(30_000)).unwrap();
            let edit = rng.bytes(size);
            fs::write(other.join(rel), &edit).unwrap();
            ctx.run_ok(&cache_cmd(others, "add", &[*rel]));
            ctx.run_ok(&cache_cmd(others, "push", &[]));
            ((*rel).to_owned(), edit)
        });
    // What the remote may hold after a kill, and must hold in the end: the other cache's edit stays.
    let (mut before, mut after) = (old.clone(), new.clone());
    if let Some((rel, edit)) = &edited {
        before.insert(rel.clone(), edit.clone());
        after.insert(rel.clone(), edit.clone());
    }
    let expected = if edited.is_some() { 4 } else { 0 };
    let command = cache_cmd(caches, "push", &[]);
    let took = run_under_test(ctx, &command, kill, Some(expected), &mut outcome);
    let look = || read_tree(&ctx.backend.view(&ctx.folder).path);
    let seen = look();
    check_old_or_new("remote", &seen, &before, &after, &mut outcome.torn);
    if let Some((rel, edit)) = &edited
        && seen.get(rel) != Some(edit)
    {
        outcome
            .torn
            .push(format!("remote: the other cache's edit of {rel} was clobbered"));
    }

    // The same push again.
    let (code, _, err) = ctx.run_code(&command);
    if code != Some(expected) {
        outcome
            .failed_recovery
            .push(format!("the rerun ended with {code:?}, not {expected}:\n{err}"));
    }
    check_converged("remote", &look(), &after, &mut outcome.failed_recovery);
    outcome.failed_recovery.extend(temporaries("cache", &cache));
    // Nothing stays queued but the conflict.
    let (ok, out, err) = ctx.run(&cache_cmd(caches, "status", &["--json"]));
    if ok {
        let still: Vec<String> = out
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["type"] == "file" && v["queued"] == true)
            .map(|v| v["path"].as_str().unwrap_or_default().to_owned())
            .collect();
        let want: Vec<String> = edited.iter().map(|(rel, _)| rel.clone()).collect();
        if still != want {
            outcome
                .failed_recovery
                .push(format!("cache: still queued {still:?}, expected {want:?}"));
        }
    } else {
        outcome
            .failed_recovery
            .push(format!("cache status after the rerun failed:\n{err}"));
    }
    (outcome, took)
}

/// The links of a PEP 503 page: each `href` up to its fragment, and the fragment's sha256.
fn links(page: &[u8]) -> Vec<(String, Option<String>)> {
    let text = String::from_utf8_lossy(page);
    text.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| match href.split_once("#sha256=") {
            Some((name, sha)) => (name.to_owned(), Some(sha.to_owned())),
            None => (href.to_owned(), None),
        })
        .collect()
}

/// Checks a package tree as the server holds it: every distribution whole (byte-equal to the
/// source's), every page naming only files present with their sha256 and projects with a page.
/// With `all`, the tree must hold exactly `files` (name → bytes, by project folder), every page listing
/// all of them, and no temporary file.
fn check_tree(
    where_: &str,
    seen: &Files,
    files: &Files,
    sha256: &BTreeMap<String, String>,
    all: bool,
    bad: &mut Vec<String>,
) {
    for (rel, content) in seen {
        if is_temp(rel) {
            if all {
                bad.push(format!("{where_}: temporary file {rel} left"));
            }
            continue;
        }
        if rel == "index.html" {
            let listed: Vec<String> = links(content)
                .into_iter()
                .map(|(href, _)| href.trim_end_matches('/').to_owned())
                .collect();
            for project in &listed {
                if !seen.contains_key(&format!("{project}/index.html")) {
                    bad.push(format!(
                        "{where_}: the root page lists {project}, which has no page"
                    ));
                }
            }
            if all {
                let mut projects: Vec<String> = files
                    .keys()
                    .filter_map(|rel| rel.split_once('/').map(|(p, _)| p.to_owned()))
                    .collect();
                projects.dedup();
                if listed != projects {
                    bad.push(format!(
                        "{where_}: the root page lists {listed:?}, not {projects:?}"
                    ));
                }
            }
        } else if let Some(project) = rel.strip_suffix("/index.html") {
            let listed = links(content);
            for (name, sha) in &listed {
                let file = format!("{project}/{name}");
                if !seen.contains_key(&file) {
                    bad.push(format!(
                        "{where_}: {project}'s page lists {name}, which is not there"
                    ));
                } else if sha.as_ref() != sha256.get(name) {
                    bad.push(format!(
                        "{where_}: {project}'s page gives {name} the sha256 {sha:?}"
                    ));
                }
            }
            if all {
                let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                let want: Vec<&str> = files
                    .keys()
                    .filter_map(|rel| rel.strip_prefix(&format!("{project}/")))
                    .collect();
                if names != want {
                    bad.push(format!(
                        "{where_}: {project}'s page lists {names:?}, not {want:?}"
                    ));
                }
            }
        } else if files.get(rel).is_none_or(|want| want != content) {
            bad.push(format!(
                "{where_}: {rel} ({} bytes) is not a whole distribution of the source",
                content.len()
            ));
        }
    }
    if all {
        for rel in files.keys() {
            if !seen.contains_key(rel) {
                bad.push(format!("{where_}: {rel} missing"));
            }
        }
    }
}

/// Checks the files of a package index (pypiserver's one folder) that belong to this iteration: each
/// whole; with `all`, exactly `files`.
fn check_index(where_: &str, seen: &Files, files: &Files, all: bool, bad: &mut Vec<String>) {
    let want: BTreeMap<&str, &Vec<u8>> = files
        .iter()
        .filter_map(|(rel, content)| Some((rel.split_once('/')?.1, content)))
        .collect();
    for (name, content) in seen {
        if want.get(name.as_str()).is_none_or(|w| *w != content) {
            bad.push(format!(
                "{where_}: {name} ({} bytes) is not a whole distribution of the source",
                content.len()
            ));
        }
    }
    if all {
        for name in want.keys() {
            if !seen.contains_key(*name) {
                bad.push(format!("{where_}: {name} missing"));
            }
        }
    }
}

/// One `pkg mirror` iteration: 2 to 4 projects of this iteration in the source index, each with a
/// 1.0 and, for most, a 2.0 (about one wheel in three 1 to 3 MiB); the destination — a package tree
/// in the backend's store, or the pypiserver that takes uploads — empty or holding the 1.0s (a complete
/// mirror pinned to them). Killed during the mirror of every version; every destination file is then
/// whole or absent and every page names only files present; the same mirror again ends well with
/// every file in place, on its page, and no temporary file on either side.
#[allow(clippy::too_many_lines)]
fn pkg_mirror(
    ctx: &Ctx<'_>,
    rng: &mut Rng,
    kill: Option<Kill<'_>>,
    source: &PypiServer,
) -> (Outcome, Duration) {
    let with_old = rng.below(2) == 0;
    let mut outcome = Outcome::default();
    // Names of this iteration's own (the pypiserver destination is shared).
    let prefix = format!("p{}x", ctx.folder);
    let projects: Vec<String> = (0..2 + rng.below(3)).map(|k| format!("{prefix}{k}")).collect();
    let mut specs = Vec::new();
    let mut pinned = Vec::new();
    for project in &projects {
        let versions: &[&str] = if rng.below(4) == 0 {
            &["1.0"]
        } else {
            &["1.0", "2.0"]
        };
        for version in versions {
            let pad = if rng.below(3) == 0 {
                (1 << 20) + rng.below(2 << 20)
            } else {
                rng.below(40_000)
            };
            specs.push(format!("wheel:{project}:{version}::{pad}"));
        }
        pinned.push(format!("{project}==1.0"));
    }
    let built = ctx.local("built");
    fs::create_dir_all(&built).unwrap();
    let made = snapsync_testkit::make_dists(&built, &specs.iter().map(String::as_str).collect::<Vec<_>>());
    let mut files = Files::new();
    let mut sha256 = BTreeMap::new();
    let mut old = Files::new();
    for path in &made {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let project = name.split('-').next().unwrap().to_owned();
        let bytes = fs::read(path).unwrap();
        sha256.insert(name.clone(), snapsync_pkg::hash_file(path).unwrap().sha256);
        if name.contains("-1.0-") {
            old.insert(format!("{project}/{name}"), bytes.clone());
        }
        files.insert(format!("{project}/{name}"), bytes);
        fs::copy(path, source.packages().join(&name)).unwrap();
    }
    let to = match ctx.backend {
        Backend::Local(_) => format!("file://{}", ctx.url()),
        _ => ctx.url(),
    };
    let tmp = ctx.local("tmp");
    let from = source.simple_url();
    let mirror = |requirements: &[String]| {
        let mut rest = vec!["-q", "--from", from.as_str(), "--to", to.as_str()];
        rest.extend(requirements.iter().map(String::as_str));
        two_word(ctx, "pkg", "mirror", &rest)
    };
    let run = |args: &[String]| -> (Option<i32>, String) {
        let (code, _, err) = ctx.run_code(args);
        (code, err)
    };
    if with_old {
        let (code, err) = run(&mirror(&pinned));
        assert_eq!(code, Some(0), "the mirror of the 1.0s failed:\n{err}");
    }
    let old = if with_old { old } else { Files::new() };
    let command = mirror(&projects);
    let look = || -> Files {
        let view = ctx.backend.view(&ctx.folder);
        let mut seen = read_tree(&view.path);
        if matches!(ctx.backend, Backend::Pypi(_)) {
            seen.retain(|name, _| name.starts_with(&prefix));
        }
        seen
    };
    let check = |seen: &Files, all: bool, bad: &mut Vec<String>| {
        let where_ = if all {
            "destination after the rerun"
        } else {
            "destination"
        };
        if matches!(ctx.backend, Backend::Pypi(_)) {
            check_index(where_, seen, &files, all, bad);
        } else {
            check_tree(where_, seen, &files, &sha256, all, bad);
        }
    };
    // The old versions are there as they should be (a harness check, like the calibration run).
    if with_old {
        let mut bad = Vec::new();
        let seen = look();
        check(&seen, false, &mut bad);
        assert!(bad.is_empty() && seen.len() >= old.len(), "the 1.0s: {bad:?}");
    }
    let took = run_under_test(ctx, &command, kill, Some(0), &mut outcome);
    if outcome.killed && matches!(ctx.backend, Backend::Pypi(_)) {
        // The index finishes with the cut request after the client is gone: what it keeps of it is
        // on disk a moment later.
        std::thread::sleep(Duration::from_secs(1));
    }
    check(&look(), false, &mut outcome.torn);

    // The same mirror again.
    let (code, err) = run(&command);
    if code != Some(0) {
        outcome
            .failed_recovery
            .push(format!("the rerun ended with {code:?}:\n{err}"));
    }
    check(&look(), true, &mut outcome.failed_recovery);
    let left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !left.is_empty() {
        outcome
            .failed_recovery
            .push(format!("temporary folder: {left:?} left"));
    }
    (outcome, took)
}
