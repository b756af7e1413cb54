//! `cargo xtask bench cache`: the cache agent over OpenSSH's sshd (key login), in the same run as its
//! anchors: `snapsync cache open` of a cached file (the whole process; no network), the first open of a
//! 1 MiB file against OpenSSH's `sftp` getting the same file, and pushing 1,000 queued 4 KiB files
//! against `snapsync upload` of the same files. Times are wall-clock medians around whole processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use snapsync_testkit::{SSH_USER, Sshd};

use super::{MIB, Options, Rng, Scratch, build_snapsync, cpu_model, median};
use crate::util::capture;

const SMALL_FILES: usize = 1_000;
const SMALL_SIZE: usize = 4096;

struct Setup {
    snapsync: PathBuf,
    sshd: Sshd,
    scratch: PathBuf,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!(
            "sftp://{SSH_USER}@127.0.0.1:{}{}/{path}",
            self.sshd.port(),
            self.sshd.root().display()
        )
    }

    fn snapsync(&self) -> Command {
        let mut command = Command::new(&self.snapsync);
        command.env("SNAPSYNC_STATE_DIR", self.scratch.join("state"));
        command
    }

    fn cache(&self, args: &[&str], remote: &str, cache: &Path) -> Command {
        let mut command = self.snapsync();
        command
            .args(["cache", args[0], "--remote", remote, "--cache"])
            .arg(cache)
            .args(&args[1..]);
        self.login(&mut command);
        command
    }

    /// The `--ssh-key` and `--known-hosts` flags (they belong to the commands that connect: after the command).
    fn login(&self, command: &mut Command) {
        command
            .args(["--ssh-key", self.sshd.key_file().to_str().unwrap_or_default()])
            .args([
                "--known-hosts",
                self.sshd.known_hosts().to_str().unwrap_or_default(),
            ]);
    }
}

fn timed(mut command: Command) -> Result<Duration> {
    let started = Instant::now();
    capture(&mut command)?;
    Ok(started.elapsed())
}

pub(crate) fn run(options: &Options) -> Result<()> {
    let runs = options.runs.max(if options.quick { 3 } else { 9 });
    // On disk, where a cache lives.
    let scratch = Scratch::on_disk("cache")?;
    let setup = Setup {
        snapsync: build_snapsync()?,
        sshd: Sshd::start(),
        scratch: scratch.0.clone(),
    };
    let mut rng = Rng(12);
    // The remote's files, written where sshd serves them.
    let served = setup.sshd.root().join("bench");
    fs::create_dir_all(&served)?;
    let one_mib = bytes(&mut rng, MIB as usize);
    fs::write(served.join("one.bin"), &one_mib)?;
    let mut rows = Vec::new();

    // 1. A cached file: no network, the whole process.
    let cache = setup.scratch.join("warm");
    capture(&mut setup.cache(&["open", "one.bin"], &setup.url("bench"), &cache))?;
    let mut times = Vec::new();
    for _ in 0..runs * 3 {
        times.push(timed(setup.cache(
            &["open", "one.bin"],
            &setup.url("bench"),
            &cache,
        ))?);
    }
    let cached = median(times);
    rows.push(format!(
        "| `cache open`, cached file (whole process) | {:.1} ms | — | target < 10 ms: {} |",
        cached.as_secs_f64() * 1000.0,
        if cached < Duration::from_millis(10) {
            "met"
        } else {
            "not met"
        }
    ));

    // 2. First open of 1 MiB against sftp's get.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let batch = setup.scratch.join("get.batch");
    let got = setup.scratch.join("got.bin");
    fs::write(
        &batch,
        format!("get {} {}\n", served.join("one.bin").display(), got.display()),
    )?;
    for run in 0..=runs {
        let fresh = setup.scratch.join(format!("cold-{run}"));
        let ours_time = timed(setup.cache(&["open", "one.bin"], &setup.url("bench"), &fresh))?;
        ensure!(
            fs::read(fresh.join("one.bin"))? == one_mib,
            "the cache fetched other bytes"
        );
        let _ = fs::remove_file(&got);
        let mut sftp = Command::new("sftp");
        sftp.args(["-q", "-b"])
            .arg(&batch)
            .args(["-i", setup.sshd.key_file().to_str().unwrap_or_default()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                setup.sshd.known_hosts().display()
            ))
            .args(["-o", "BatchMode=yes", "-P", &setup.sshd.port().to_string()])
            .arg(format!("{SSH_USER}@127.0.0.1"));
        let theirs_time = timed(sftp)?;
        ensure!(fs::read(&got)? == one_mib, "sftp fetched other bytes");
        // The first run of each warms up.
        if run > 0 {
            ours.push(ours_time);
            theirs.push(theirs_time);
        }
    }
    let (ours, theirs) = (median(ours), median(theirs));
    rows.push(format!(
        "| first `cache open` of 1 MiB over SFTP | {:.3} s | {:.3} s (`sftp` get) | {:.2}x (target >= 0.83x: within 1.2x of sftp's time) |",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64()
    ));

    // 3. Pushing 1,000 queued small files against `snapsync upload` of the same files.
    let (mut push_times, mut upload_times) = (Vec::new(), Vec::new());
    for run in 0..=runs.min(5) {
        let local = setup.scratch.join(format!("push-{run}"));
        fs::create_dir_all(local.join("files"))?;
        let mut names = Vec::new();
        for i in 0..SMALL_FILES {
            let name = format!("files/f{i:04}.bin");
            fs::write(local.join(&name), bytes(&mut rng, SMALL_SIZE))?;
            names.push(name);
        }
        let remote = format!("push-{run}");
        let mut add = setup.cache(&["add"], &setup.url(&remote), &local);
        add.args(&names);
        capture(&mut add)?;
        let push = timed(setup.cache(&["push"], &setup.url(&remote), &local))?;
        let uploaded = setup.scratch.join(format!("upload-{run}"));
        fs::create_dir_all(&uploaded)?;
        fs::rename(local.join("files"), uploaded.join("files"))?;
        let mut upload = setup.snapsync();
        upload
            .args(["upload", "--create-folder"])
            .arg(&uploaded)
            .arg(setup.url(&format!("upload-{run}")));
        setup.login(&mut upload);
        let upload = timed(upload)?;
        if run > 0 {
            push_times.push(push);
            upload_times.push(upload);
        }
    }
    let (push, upload) = (median(push_times), median(upload_times));
    rows.push(format!(
        "| `cache push` of 1,000 x 4 KiB queued files | {:.2} s | {:.2} s (`snapsync upload`) | {:.2}x (target >= 1.00x) |",
        push.as_secs_f64(),
        upload.as_secs_f64(),
        upload.as_secs_f64() / push.as_secs_f64()
    ));

    println!("\nbench cache: OpenSSH sshd on 127.0.0.1 (key login); median of {runs} run(s)");
    println!(
        "machine: {} cores, {}\n",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model()
    );
    println!("| case | snapsync | anchor | ratio = anchor / snapsync (>1: snapsync faster) |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}
