//! `cargo xtask bench scale`: time and peak memory at scale. Two trees of small files (N/10 and N files,
//! default 100,000) and two single sparse files (1 GiB and G GiB, default 10), all on disk under
//! `target/`, each taken through every snapshot and folder-sync command against a `file://` store or
//! local folder and against OpenSSH's sshd (SFTP, key login): `id`, `push` and `pull` of a snapshot,
//! `upload` of the folder and a `sync` re-run with nothing changed. The anchors run on the same data in
//! the same run: snapdir's `id` for the trees and b3sum for the big file, `rsync -a` for the local
//! folder, OpenSSH's `sftp` (`put -r`) for the SFTP folder.
//!
//! Every command is a whole process measured by GNU time: wall time, CPU time and peak resident set
//! (the child's `ru_maxrss`). From the two sizes of each kind the bench derives what memory grows by:
//! bytes per file between the two trees, MiB between the two file sizes; it fails if a command needs
//! more than [`BIG_RSS_LIMIT_KIB`] for the big file, whose size must not matter.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use snapsync_testkit::{SSH_USER, Sshd};

use super::id::ensure_snapdir;
use super::snapshot::remove;
use super::{MIB, Rng, Sample, Scratch, build_snapsync, cpu_model, measure, median};
use crate::util::{capture, project_root, which};

const USAGE: &str = "usage: cargo xtask bench scale [--files N] [--big-gib G] [--runs N] [--data DIR]";

/// Peak resident memory allowed for any command on the big file, whatever its size.
const BIG_RSS_LIMIT_KIB: u64 = 200 * 1024;
/// Files per folder in the generated trees.
const PER_FOLDER: usize = 1_000;

struct ScaleOptions {
    files: usize,
    big_gib: u64,
    runs: usize,
    data: PathBuf,
}

impl ScaleOptions {
    fn parse(args: &[String]) -> Result<ScaleOptions> {
        let mut options = ScaleOptions {
            files: 100_000,
            big_gib: 10,
            runs: 1,
            data: project_root().join("target/bench-data"),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().context(USAGE);
            match arg.as_str() {
                "--files" => options.files = value()?.parse().context("--files takes a number")?,
                "--big-gib" => {
                    options.big_gib = value()?.parse().context("--big-gib takes a number")?;
                }
                "--runs" => options.runs = value()?.parse().context("--runs takes a number")?,
                "--data" => options.data = PathBuf::from(value()?),
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        ensure!(options.runs > 0, "--runs must be at least 1");
        ensure!(
            options.files == 0 || options.files >= 10,
            "--files must be 0 (no trees) or at least 10"
        );
        Ok(options)
    }
}

/// What is measured on one data set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Id,
    PushFile,
    PullFile,
    PushSftp,
    PullSftp,
    UploadLocal,
    SyncLocal,
    UploadSftp,
    SyncSftp,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Id => "`id`",
            Op::PushFile => "`push` to file://",
            Op::PullFile => "`pull` from file://",
            Op::PushSftp => "`push` to sftp://",
            Op::PullSftp => "`pull` from sftp://",
            Op::UploadLocal => "`upload` to a local folder",
            Op::SyncLocal => "`sync` again, local folder, nothing changed",
            Op::UploadSftp => "`upload` to sftp://",
            Op::SyncSftp => "`sync` again, sftp://, nothing changed",
        }
    }
}

/// One measured command of one data set, with its anchor where there is one.
struct Row {
    op: Op,
    ours: Sample,
    anchor: Option<(&'static str, Sample)>,
}

/// One data set: a tree of small files or one big file.
struct DataSet {
    label: String,
    dir: PathBuf,
    /// The big file's name, for one-file data.
    big: Option<&'static str>,
    files: usize,
    bytes: u64,
}

struct Setup {
    snapsync: PathBuf,
    snapdir: PathBuf,
    gnu_time: PathBuf,
    sshd: Sshd,
    /// The SFTP root, without `..` parts.
    sftp_root: PathBuf,
    scratch: PathBuf,
    runs: usize,
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = ScaleOptions::parse(args)?;
    let gnu_time = PathBuf::from("/usr/bin/time");
    ensure!(
        gnu_time.is_file(),
        "GNU time is not installed (apt-get install time); it measures peak memory"
    );
    for program in ["rsync", "b3sum", "sftp"] {
        ensure!(
            which(program).is_some(),
            "{program} is not installed (apt-get install rsync b3sum openssh-client); it is an anchor of this bench"
        );
    }
    let mut sets = Vec::new();
    if options.files > 0 {
        for count in [options.files / 10, options.files] {
            sets.push(ensure_small_tree(&options.data, count)?);
        }
    }
    let big_sizes: Vec<u64> = match options.big_gib {
        0 => vec![],
        1 => vec![1],
        g => vec![1, g],
    };
    for gib in &big_sizes {
        sets.push(ensure_sparse(&options.data, *gib)?);
    }
    let snapsync = build_snapsync()?;
    let snapdir = ensure_snapdir()?;
    eprintln!("xtask: starting sshd");
    let sshd = Sshd::start();
    let sftp_root = fs::canonicalize(sshd.root())?;
    // On disk: the stores and copies of the big file do not fit in memory.
    let scratch = Scratch::on_disk("scale")?;
    let setup = Setup {
        snapsync,
        snapdir,
        gnu_time,
        sshd,
        sftp_root,
        scratch: scratch.0.clone(),
        runs: options.runs,
    };
    println!(
        "\nbench scale: median of {} run(s) per command; whole processes under GNU time; peak RSS = the child's ru_maxrss",
        options.runs
    );
    println!(
        "machine: {} cores, {}, load average {}; data and scratch on disk under {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model(),
        load_average(),
        project_root().join("target").display()
    );
    let mut results = Vec::new();
    for set in &sets {
        if set.big.is_some() {
            ensure_free_space(&setup.scratch, set.bytes)?;
        }
        eprintln!("xtask: measuring {}", set.label);
        print_header(set);
        let rows = measure_set(&setup, set)?;
        results.push(rows);
    }
    println!("\nbench scale: what memory grows by");
    let trees: Vec<usize> = (0..sets.len()).filter(|i| sets[*i].big.is_none()).collect();
    if let [a, b] = trees[..] {
        print_growth_per_file(&sets[a], &results[a], &sets[b], &results[b]);
    }
    let bigs: Vec<usize> = (0..sets.len()).filter(|i| sets[*i].big.is_some()).collect();
    if let [a, b] = bigs[..] {
        print_growth_per_size(&sets[a], &results[a], &sets[b], &results[b]);
    }
    println!("(load average at the end: {})", load_average());
    let mut worst = None::<(u64, Op, &str)>;
    for i in bigs {
        for row in &results[i] {
            if worst.is_none_or(|(rss, _, _)| row.ours.rss_kib > rss) {
                worst = Some((row.ours.rss_kib, row.op, &sets[i].label));
            }
        }
    }
    if let Some((rss, op, label)) = worst {
        ensure!(
            rss < BIG_RSS_LIMIT_KIB,
            "{} on {label} used {rss} KiB, over the {BIG_RSS_LIMIT_KIB} KiB limit",
            op.label()
        );
    }
    Ok(())
}

/// Every command on one data set, each from a fresh destination; what each wrote is checked and removed.
fn measure_set(setup: &Setup, set: &DataSet) -> Result<Vec<Row>> {
    let scratch = &setup.scratch;
    let cache = scratch.join("cache");
    let state = scratch.join("state");
    let mut rows = Vec::new();

    // The snapshot id, with the anchor that hashes the same data.
    let mut id = String::new();
    let ours = setup.time(&mut id, || {
        let mut c = setup.snapsync(&cache, &state);
        c.args(["id", "-q"]).arg(&set.dir);
        Ok(c)
    })?;
    let id = id.trim().to_owned();
    ensure!(id.len() == 64, "snapsync id printed {id:?}");
    let anchor = if let Some(big) = set.big {
        let mut out = String::new();
        let sample = setup.time(&mut out, || {
            let mut c = Command::new("b3sum");
            c.arg("--no-names").arg(set.dir.join(big));
            Ok(c)
        })?;
        ("b3sum", sample)
    } else {
        let mut theirs = String::new();
        let sample = setup.time(&mut theirs, || Ok(setup.snapdir_id(&set.dir)))?;
        ensure!(
            theirs.trim() == id,
            "snapdir's id {} differs from snapsync's {id}",
            theirs.trim()
        );
        ("snapdir (Python, start-up included)", sample)
    };
    record(
        &mut rows,
        Row {
            op: Op::Id,
            ours,
            anchor: Some(anchor),
        },
    );

    // Snapshots: push into an empty store, pull into an empty folder, for each kind of store.
    let dest = scratch.join("dest");
    for (push, pull, store_dir, url) in [
        (
            Op::PushFile,
            Op::PullFile,
            scratch.join("store"),
            format!("file://{}", scratch.join("store").display()),
        ),
        (
            Op::PushSftp,
            Op::PullSftp,
            setup.sftp_root.join("store"),
            setup.sftp_url("store"),
        ),
    ] {
        let mut pushed = String::new();
        let ours = setup.time(&mut pushed, || {
            remove(&store_dir)?;
            remove(&cache)?;
            let mut c = setup.snapsync(&cache, &state);
            c.args(["push", "-q", "--store", &url]).arg(&set.dir);
            setup.login(&mut c, &url);
            Ok(c)
        })?;
        ensure!(
            pushed.trim() == id,
            "{} printed {} instead of {id}",
            push.label(),
            pushed.trim()
        );
        record(
            &mut rows,
            Row {
                op: push,
                ours,
                anchor: None,
            },
        );
        let ours = setup.time(&mut String::new(), || {
            remove(&dest)?;
            remove(&cache)?;
            let mut c = setup.snapsync(&cache, &state);
            c.args(["pull", "-q", "--store", &url, "--id", &id]).arg(&dest);
            setup.login(&mut c, &url);
            Ok(c)
        })?;
        same_files(&set.dir, &dest, set.files)?;
        record(
            &mut rows,
            Row {
                op: pull,
                ours,
                anchor: None,
            },
        );
        remove(&dest)?;
        remove(&store_dir)?;
        remove(&cache)?;
    }

    // Folder sync: an upload into an empty folder, then a two-way sync with nothing to do.
    let rsync_dest = scratch.join("rsync");
    let folder = scratch.join("folder");
    let source = format!("{}/", set.dir.display());
    let rsync = |to: &Path| {
        let mut c = Command::new("rsync");
        c.arg("-a").arg(&source).arg(to);
        c
    };
    let anchor = setup.time(&mut String::new(), || {
        remove(&rsync_dest)?;
        Ok(rsync(&rsync_dest))
    })?;
    same_files(&set.dir, &rsync_dest, set.files)?;
    let ours = setup.time(&mut String::new(), || {
        remove(&folder)?;
        remove(&state)?;
        let mut c = setup.snapsync(&cache, &state);
        c.args(["upload", "-q", "--create-folder"])
            .arg(&set.dir)
            .arg(&folder);
        Ok(c)
    })?;
    same_files(&set.dir, &folder, set.files)?;
    record(
        &mut rows,
        Row {
            op: Op::UploadLocal,
            ours,
            anchor: Some(("rsync -a", anchor)),
        },
    );
    let anchor = setup.time(&mut String::new(), || Ok(rsync(&rsync_dest)))?;
    let ours = setup.time(&mut String::new(), || {
        let mut c = setup.snapsync(&cache, &state);
        c.args(["sync", "-q"]).arg(&set.dir).arg(&folder);
        Ok(c)
    })?;
    same_files(&set.dir, &folder, set.files)?;
    record(
        &mut rows,
        Row {
            op: Op::SyncLocal,
            ours,
            anchor: Some(("rsync -a (nothing to send)", anchor)),
        },
    );
    remove(&rsync_dest)?;
    remove(&folder)?;

    let remote = setup.sftp_root.join("folder");
    let sftp_anchor = setup.sftp_root.join("sftp-put");
    let url = setup.sftp_url("folder");
    let batch = scratch.join("put.batch");
    fs::write(
        &batch,
        format!("put -r {} {}\n", set.dir.display(), sftp_anchor.display()),
    )?;
    let anchor = setup.time(&mut String::new(), || {
        remove(&sftp_anchor)?;
        Ok(setup.sftp_batch(&batch))
    })?;
    same_files(&set.dir, &sftp_anchor, set.files)?;
    remove(&sftp_anchor)?;
    let ours = setup.time(&mut String::new(), || {
        remove(&remote)?;
        remove(&state)?;
        let mut c = setup.snapsync(&cache, &state);
        c.args(["upload", "-q", "--create-folder"])
            .arg(&set.dir)
            .arg(&url);
        setup.login(&mut c, &url);
        Ok(c)
    })?;
    same_files(&set.dir, &remote, set.files)?;
    record(
        &mut rows,
        Row {
            op: Op::UploadSftp,
            ours,
            anchor: Some(("OpenSSH sftp put -r", anchor)),
        },
    );
    let ours = setup.time(&mut String::new(), || {
        let mut c = setup.snapsync(&cache, &state);
        c.args(["sync", "-q"]).arg(&set.dir).arg(&url);
        setup.login(&mut c, &url);
        Ok(c)
    })?;
    same_files(&set.dir, &remote, set.files)?;
    record(
        &mut rows,
        Row {
            op: Op::SyncSftp,
            ours,
            anchor: None,
        },
    );
    remove(&remote)?;
    remove(&state)?;
    Ok(rows)
}

impl Setup {
    /// `snapsync` with its cache and sync state in the scratch folder.
    fn snapsync(&self, cache: &Path, state: &Path) -> Command {
        let mut c = Command::new(&self.snapsync);
        c.env("SNAPSYNC_CACHE_DIR", cache)
            .env("SNAPSYNC_STATE_DIR", state);
        c
    }

    fn sftp_url(&self, name: &str) -> String {
        format!(
            "sftp://{SSH_USER}@127.0.0.1:{}{}/{name}",
            self.sshd.port(),
            self.sftp_root.display()
        )
    }

    /// The key login flags, for a command that connects to sshd.
    fn login(&self, command: &mut Command, url: &str) {
        if url.starts_with("sftp://") {
            command
                .arg("--ssh-key")
                .arg(self.sshd.key_file())
                .arg("--known-hosts")
                .arg(self.sshd.known_hosts());
        }
    }

    fn sftp_batch(&self, batch: &Path) -> Command {
        let mut c = Command::new("sftp");
        c.args(["-q", "-b"])
            .arg(batch)
            .arg("-i")
            .arg(self.sshd.key_file())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.sshd.known_hosts().display()
            ))
            .args(["-o", "BatchMode=yes", "-P", &self.sshd.port().to_string()])
            .arg(format!("{SSH_USER}@127.0.0.1"));
        c
    }

    fn snapdir_id(&self, dir: &Path) -> Command {
        const SCRIPT: &str = "import asyncio, os, sys, snapdir\n\
             print(asyncio.run(snapdir.id(sys.argv[1])))\n\
             sys.stdout.flush()\n\
             os._exit(0)\n";
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", &self.snapdir).args(["-c", SCRIPT]).arg(dir);
        c
    }

    /// Runs `prepare`'s command `runs` times (each after `prepare`, which resets what the command
    /// writes); the sample of median wall time, the peak RSS the largest seen. Keeps the last output.
    fn time(&self, stdout: &mut String, mut prepare: impl FnMut() -> Result<Command>) -> Result<Sample> {
        let mut samples = Vec::with_capacity(self.runs);
        for _ in 0..self.runs {
            let command = prepare()?;
            let (sample, out) = measure(&self.gnu_time, &command)?;
            samples.push(sample);
            *stdout = out;
        }
        let wall = median(samples.iter().map(|s| s.wall).collect());
        let chosen = samples
            .iter()
            .find(|s| s.wall == wall)
            .copied()
            .context("a sample")?;
        Ok(Sample {
            rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
            ..chosen
        })
    }
}

fn print_header(set: &DataSet) {
    println!(
        "\n{}: {} file(s), {:.2} GiB in {}",
        set.label,
        set.files,
        super::gib(set.bytes),
        set.dir.display()
    );
    println!(
        "| operation | snapsync | CPU | peak RSS | anchor | anchor time | anchor peak RSS | ratio = anchor / snapsync |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

/// Prints a row as soon as it is measured (a run stopped half-way keeps what it measured), and keeps it.
fn record(rows: &mut Vec<Row>, row: Row) {
    let (name, time, rss, ratio) = match &row.anchor {
        Some((name, a)) => (
            *name,
            format!("{:.2} s", a.wall.as_secs_f64()),
            mib(a.rss_kib),
            format!(
                "{:.2}x",
                a.wall.as_secs_f64() / row.ours.wall.as_secs_f64().max(1e-3)
            ),
        ),
        None => ("—", String::new(), String::new(), String::new()),
    };
    println!(
        "| {} | {:.2} s | {:.2} s | {} | {name} | {time} | {rss} | {ratio} |",
        row.op.label(),
        row.ours.wall.as_secs_f64(),
        row.ours.cpu.as_secs_f64(),
        mib(row.ours.rss_kib),
    );
    rows.push(row);
}

fn print_growth_per_file(small: &DataSet, a: &[Row], large: &DataSet, b: &[Row]) {
    println!(
        "\nagainst the file count ({} → {} files):",
        small.files, large.files
    );
    println!(
        "| operation | peak RSS, {} files | peak RSS, {} files | growth per file |",
        small.files, large.files
    );
    println!("|---|---|---|---|");
    for (x, y) in a.iter().zip(b) {
        #[allow(clippy::cast_precision_loss)] // a figure to print
        let per_file =
            (y.ours.rss_kib as f64 - x.ours.rss_kib as f64) * 1024.0 / (large.files - small.files) as f64;
        println!(
            "| {} | {} | {} | {per_file:.0} bytes |",
            x.op.label(),
            mib(x.ours.rss_kib),
            mib(y.ours.rss_kib)
        );
    }
}

fn print_growth_per_size(small: &DataSet, a: &[Row], large: &DataSet, b: &[Row]) {
    println!(
        "\nagainst the file size ({} → {}; limit {}):",
        small.label,
        large.label,
        mib(BIG_RSS_LIMIT_KIB)
    );
    println!(
        "| operation | peak RSS, {} | peak RSS, {} | difference |",
        small.label, large.label
    );
    println!("|---|---|---|---|");
    for (x, y) in a.iter().zip(b) {
        #[allow(clippy::cast_possible_wrap)] // KiB of a process, far below i64::MAX
        let diff = y.ours.rss_kib as i64 - x.ours.rss_kib as i64;
        #[allow(clippy::cast_precision_loss)] // a figure to print
        let diff = diff as f64 / 1024.0;
        println!(
            "| {} | {} | {} | {diff:+.1} MiB |",
            x.op.label(),
            mib(x.ours.rss_kib),
            mib(y.ours.rss_kib)
        );
    }
}

#[allow(clippy::cast_precision_loss)] // a figure to print
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `count` files of 1–4 KiB of pseudo-random bytes, 1,000 to a folder, made once under `data`.
fn ensure_small_tree(data: &Path, count: usize) -> Result<DataSet> {
    let dir = data.join(format!("scale-tree-{count}"));
    let marker = data.join(format!("scale-tree-{count}.complete"));
    let mut rng = Rng(0x5ca1_e000 + count as u64);
    let sizes: Vec<u64> = (0..count).map(|_| 1024 + rng.next() % 3073).collect();
    let bytes = sizes.iter().sum();
    if !(marker.exists() && dir.is_dir()) {
        eprintln!(
            "xtask: generating {count} files ({bytes} bytes) in {}",
            dir.display()
        );
        let staging = data.join(format!("scale-tree-{count}.partial"));
        remove(&staging)?;
        let mut buffer = vec![0u8; 4096];
        for (i, size) in sizes.iter().enumerate() {
            let folder = staging.join(format!("d{:03}", i / PER_FOLDER));
            if i % PER_FOLDER == 0 {
                fs::create_dir_all(&folder)?;
            }
            #[allow(clippy::cast_possible_truncation)] // at most 4096
            let buffer = &mut buffer[..*size as usize];
            rng.fill(buffer);
            let path = folder.join(format!("f{i:06}.bin"));
            fs::write(&path, buffer).with_context(|| format!("writing {}", path.display()))?;
        }
        remove(&dir)?;
        fs::rename(&staging, &dir)?;
        fs::write(&marker, format!("{count} files, {bytes} bytes\n"))?;
    }
    Ok(DataSet {
        label: format!("{count} small files"),
        dir,
        big: None,
        files: count,
        bytes,
    })
}

/// One sparse file of `gib` GiB (it reads as zeros and takes no disk until a copy is written).
fn ensure_sparse(data: &Path, gib: u64) -> Result<DataSet> {
    let dir = data.join(format!("scale-sparse-{gib}g"));
    fs::create_dir_all(&dir)?;
    let bytes = gib * 1024 * MIB;
    let path = dir.join("big.bin");
    if fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes) {
        File::create(&path)?.set_len(bytes)?;
    }
    Ok(DataSet {
        label: format!("one sparse {gib} GiB file"),
        dir,
        big: Some("big.bin"),
        files: 1,
        bytes,
    })
}

/// `copy` holds the same regular files as `original`, with the same sizes (`count` of them).
fn same_files(original: &Path, copy: &Path, count: usize) -> Result<()> {
    let (a, b) = (list_files(original)?, list_files(copy)?);
    ensure!(
        a.len() == count,
        "{} holds {} files, not {count}",
        original.display(),
        a.len()
    );
    if a != b {
        let missing = a.iter().find(|f| !b.contains(f));
        let extra = b.iter().find(|f| !a.contains(f));
        bail!(
            "{} differs from {} (first missing or different: {missing:?}; first extra: {extra:?})",
            copy.display(),
            original.display()
        );
    }
    Ok(())
}

/// Every regular file under `root`: its path relative to `root` and its size, sorted.
fn list_files(root: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
            } else if kind.is_file() {
                let rel = entry.path().strip_prefix(root)?.to_path_buf();
                out.push((rel, entry.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Fails unless the disk under `dir` has room for two copies of `bytes` and 2 GiB more (a store or a
/// folder, plus a pulled copy, exist at once).
fn ensure_free_space(dir: &Path, bytes: u64) -> Result<()> {
    let out = capture(Command::new("df").args(["--output=avail", "-B1"]).arg(dir))?;
    let text = String::from_utf8(out.stdout)?;
    let free: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("cannot read df's {text:?}"))?;
    let needed = 2 * bytes + 2048 * MIB;
    ensure!(
        free >= needed,
        "{} has {free} bytes free; the big-file runs need {needed} (lower --big-gib)",
        dir.display()
    );
    Ok(())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}
