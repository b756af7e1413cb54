//! `cargo xtask bench sync`: `snapsync upload` against pyftpsync (PyPI), lftp `mirror -R` and rclone
//! `copy` (apt), to the same local pyftpdlib FTP server and OpenSSH sshd, on the same data in the same run:
//! an initial upload of 2,000 x 4 KiB files (in 20 folders), a re-run with nothing changed, a re-run
//! after 1% of the files changed, and an initial upload of 20 x 50 MiB files.
//!
//! Each tool uploads into its own empty remote folder from its own fresh copy of the small tree (so no
//! tool sees another's metadata); times are wall-clock medians of `--runs` (at most 3: the anchors are
//! slow) measured around the whole process, start-up included. lftp and rclone use 4 parallel transfers,
//! as snapsync does by default on FTP; pyftpsync has one connection.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use snapsync_testkit::{FTP_PASSWORD, FTP_USER, FtpServer, SSH_PASSWORD, SSH_USER, Sshd, pip_install};

use super::snapshot::remove;
use super::{MIB, Options, Rng, Scratch, build_snapsync, cpu_model, median};
use crate::util::{capture, which};

const SMALL_FILES: usize = 2_000;
const SMALL_SIZE: usize = 4096;
const BIG_SIZE: usize = 50 * MIB as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Snapsync,
    Pyftpsync,
    Lftp,
    Rclone,
}

const TOOLS: [Tool; 4] = [Tool::Snapsync, Tool::Pyftpsync, Tool::Lftp, Tool::Rclone];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Snapsync => "snapsync",
            Tool::Pyftpsync => "pyftpsync",
            Tool::Lftp => "lftp",
            Tool::Rclone => "rclone",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Ftp,
    Sftp,
}

struct Setup {
    snapsync: PathBuf,
    pyftpsync: PathBuf,
    ftp: FtpServer,
    sshd: Sshd,
    rclone_ftp_pass: String,
    rclone_ssh_pass: String,
    /// The SFTP root without `..` parts (pyftpsync compares paths as strings).
    sftp_root: PathBuf,
    /// Where snapsync keeps its sync state (`SNAPSYNC_STATE_DIR`), emptied for each initial upload as
    /// the other tools' metadata is.
    state: PathBuf,
}

impl Setup {
    /// The remote folder `name` on this machine.
    fn remote_dir(&self, backend: Backend, name: &str) -> PathBuf {
        match backend {
            Backend::Ftp => self.ftp.root().join(name),
            Backend::Sftp => self.sftp_root.join(name),
        }
    }

    fn sftp_url(&self, name: &str) -> String {
        format!(
            "sftp://{SSH_USER}:{SSH_PASSWORD}@127.0.0.1:{}{}/{name}",
            self.sshd.port(),
            self.sftp_root.display()
        )
    }

    /// The command that uploads `local` into the remote folder named after the tool.
    fn upload(&self, tool: Tool, backend: Backend, local: &Path) -> Command {
        let name = tool.name();
        let local_arg = local.display().to_string();
        match (tool, backend) {
            (Tool::Snapsync, _) => {
                let mut c = Command::new(&self.snapsync);
                // As pyftpsync's: the remote folder is made on the first run.
                c.env("SNAPSYNC_STATE_DIR", &self.state)
                    .args(["upload", "-q", "--create-folder"])
                    .arg(local);
                match backend {
                    Backend::Ftp => c.arg(self.ftp.url(name)),
                    Backend::Sftp => c
                        .arg(self.sftp_url(name))
                        .arg("--known-hosts")
                        .arg(self.sshd.known_hosts()),
                };
                c
            }
            (Tool::Pyftpsync, _) => {
                let mut c = Command::new("python3");
                c.env("PYTHONPATH", &self.pyftpsync)
                    .args([
                        "-c",
                        "import sys; from ftpsync.pyftpsync import run; sys.exit(run())",
                    ])
                    .args([
                        "upload",
                        "-q",
                        "--no-color",
                        "--no-prompt",
                        "--no-keyring",
                        "--no-netrc",
                    ])
                    .args(["--create-folder", "--resolve", "skip"]);
                match backend {
                    Backend::Ftp => c.arg(&local_arg).arg(self.ftp.url(name)),
                    Backend::Sftp => c
                        .arg("--no-verify-host-keys")
                        .arg(&local_arg)
                        .arg(self.sftp_url(name)),
                };
                c
            }
            (Tool::Lftp, Backend::Ftp) => {
                let script = format!(
                    "set net:max-retries 2; open -u {FTP_USER},{FTP_PASSWORD} -p {} ftp://127.0.0.1; \
                     mirror -R --parallel=4 --no-perms {local_arg} /{name}",
                    self.ftp.port()
                );
                let mut c = Command::new("lftp");
                c.args(["-c", &script]);
                c
            }
            (Tool::Lftp, Backend::Sftp) => {
                let script = format!(
                    "set net:max-retries 2; set sftp:auto-confirm yes; \
                     set sftp:connect-program 'ssh -a -x -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'; \
                     open -u {SSH_USER},{SSH_PASSWORD} -p {} sftp://127.0.0.1; \
                     mirror -R --parallel=4 --no-perms {local_arg} {}",
                    self.sshd.port(),
                    self.sftp_root.join(name).display()
                );
                let mut c = Command::new("lftp");
                c.args(["-c", &script]);
                c
            }
            (Tool::Rclone, Backend::Ftp) => {
                let mut c = Command::new("rclone");
                c.args(["copy", "--transfers", "4", "-q"])
                    .arg(local)
                    .arg(format!(":ftp:/{name}"))
                    .args(["--ftp-host", "127.0.0.1", "--ftp-user", FTP_USER])
                    .args(["--ftp-port", &self.ftp.port().to_string()])
                    .args(["--ftp-pass", &self.rclone_ftp_pass]);
                c
            }
            (Tool::Rclone, Backend::Sftp) => {
                let mut c = Command::new("rclone");
                c.args(["copy", "--transfers", "4", "-q"])
                    .arg(local)
                    .arg(format!(":sftp:{}", self.sftp_root.join(name).display()))
                    .args(["--sftp-host", "127.0.0.1", "--sftp-user", SSH_USER])
                    .args(["--sftp-port", &self.sshd.port().to_string()])
                    .args(["--sftp-pass", &self.rclone_ssh_pass])
                    .arg("--sftp-known-hosts-file")
                    .arg(self.sshd.known_hosts());
                c
            }
        }
    }
}

pub(crate) fn run(options: &Options) -> Result<()> {
    let big_count = if options.quick { 4 } else { 20 };
    let runs = if options.quick { 1 } else { options.runs.min(3) };
    for program in ["lftp", "rclone", "ssh"] {
        ensure!(
            which(program).is_some(),
            "{program} is not installed (apt-get install lftp rclone openssh-client); it is an anchor of this bench"
        );
    }
    let snapsync = build_snapsync()?;
    eprintln!("xtask: installing pyftpsync from PyPI");
    let pyftpsync = pip_install("pyftpsync", &["pyftpsync==4.1.0", "paramiko<4"]);
    let small = ensure_files(&options.data, "sync-small", SMALL_FILES, SMALL_SIZE, 20)?;
    let big = ensure_files(
        &options.data,
        &format!("sync-big-{big_count}"),
        big_count,
        BIG_SIZE,
        1,
    )?;
    let obscure = |password: &str| -> Result<String> {
        let out = capture(Command::new("rclone").args(["obscure", password]))?;
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    eprintln!("xtask: starting pyftpdlib and sshd");
    let sshd = Sshd::start();
    let sftp_root = fs::canonicalize(sshd.root())?;
    let scratch = Scratch::on_disk("sync")?;
    let setup = Setup {
        sftp_root,
        sshd,
        snapsync,
        pyftpsync,
        ftp: FtpServer::pyftpdlib(),
        rclone_ftp_pass: obscure(&FTP_PASSWORD)?,
        rclone_ssh_pass: obscure(&SSH_PASSWORD)?,
        state: scratch.0.join("snapsync-state"),
    };
    println!(
        "\nbench sync: {SMALL_FILES} x {} KiB files, then {big_count} x {} MiB; median of {runs} run(s); \
         ratio = best anchor / snapsync (>1: snapsync faster)",
        SMALL_SIZE / 1024,
        BIG_SIZE / MIB as usize
    );
    println!(
        "machine: {} cores, {}; servers: pyftpdlib (FTP), OpenSSH sshd (SFTP) on 127.0.0.1",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model()
    );
    println!("\n| backend | case | snapsync | pyftpsync | lftp | rclone | ratio to the best anchor |");
    println!("|---|---|---|---|---|---|---|");
    for backend in [Backend::Ftp, Backend::Sftp] {
        // [case][tool] -> times
        let mut times: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); TOOLS.len()]; 4];
        for _ in 0..runs {
            for (t, tool) in TOOLS.iter().enumerate() {
                let remote = setup.remote_dir(backend, tool.name());
                let local = scratch.0.join(format!("local-{}", tool.name()));
                remove(&local)?;
                remove(&setup.state)?;
                copy_tree(&small, &local)?;
                fresh_remote(&remote, backend)?;
                times[0][t].push(timed(&mut setup.upload(*tool, backend, &local))?);
                check_uploaded(&local, &remote, SMALL_FILES)?;
                times[1][t].push(timed(&mut setup.upload(*tool, backend, &local))?);
                touch_one_percent(&local)?;
                times[2][t].push(timed(&mut setup.upload(*tool, backend, &local))?);
                check_uploaded(&local, &remote, SMALL_FILES)?;
                // Big files, straight from the data directory (metadata a tool leaves there is removed).
                fresh_remote(&remote, backend)?;
                times[3][t].push(timed(&mut setup.upload(*tool, backend, &big))?);
                remove(&setup.state)?;
                let _ = fs::remove_file(big.join(".pyftpsync-meta.json"));
                check_uploaded(&big, &remote, big_count)?;
                remove(&remote)?;
            }
        }
        let cases = [
            "initial upload, 2,000 x 4 KiB",
            "re-run, nothing changed",
            "re-run, 1% changed",
            "initial upload, big files",
        ];
        for (case, per_tool) in cases.iter().zip(times) {
            let medians: Vec<Duration> = per_tool.into_iter().map(median).collect();
            let best = medians[1..].iter().min().copied().unwrap_or_default();
            println!(
                "| {backend:?} | {case} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2}x |",
                medians[0].as_secs_f64(),
                medians[1].as_secs_f64(),
                medians[2].as_secs_f64(),
                medians[3].as_secs_f64(),
                best.as_secs_f64() / medians[0].as_secs_f64().max(1e-9),
            );
        }
    }
    Ok(())
}

/// An empty remote folder (rclone cannot list a missing one on pyftpdlib, which answers 501), owned by
/// the server's user.
fn fresh_remote(remote: &Path, backend: Backend) -> Result<()> {
    remove(remote)?;
    fs::create_dir_all(remote)?;
    if backend == Backend::Sftp {
        capture(Command::new("chown").arg(SSH_USER).arg(remote))?;
    }
    Ok(())
}

fn timed(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    capture(command)?;
    Ok(started.elapsed())
}

/// `count` files of `size` bytes in `dirs` folders under `data/name`, made once.
fn ensure_files(data: &Path, name: &str, count: usize, size: usize, dirs: usize) -> Result<PathBuf> {
    let dir = data.join(name);
    let marker = data.join(format!("{name}.complete"));
    if marker.exists() && dir.is_dir() {
        return Ok(dir);
    }
    eprintln!("xtask: generating {count} x {size} bytes in {}", dir.display());
    remove(&dir)?;
    let mut rng = Rng(0x51c0_0000 + count as u64);
    let mut buffer = vec![0u8; size];
    for i in 0..count {
        let path = dir.join(format!("d{:02}/f{i:05}.bin", i % dirs));
        fs::create_dir_all(path.parent().context("a parent")?)?;
        rng.fill(&mut buffer);
        fs::write(&path, &buffer)?;
    }
    fs::write(&marker, b"")?;
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            let mtime = entry.metadata()?.modified()?;
            fs::File::options()
                .write(true)
                .open(&target)?
                .set_modified(mtime)?;
        }
    }
    Ok(())
}

/// Rewrites every 100th file with new content and a new time.
fn touch_one_percent(root: &Path) -> Result<()> {
    let later = SystemTime::now() + Duration::from_secs(10);
    let mut n = 0usize;
    for dir in sorted_dirs(root)? {
        for entry in sorted_dirs(&dir)? {
            if n.is_multiple_of(100) {
                let mut content = fs::read(&entry)?;
                content[0] ^= 0xff;
                fs::write(&entry, &content)?;
                fs::File::options()
                    .write(true)
                    .open(&entry)?
                    .set_modified(later)?;
            }
            n += 1;
        }
    }
    Ok(())
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        !name.starts_with('.')
    });
    entries.sort();
    Ok(entries)
}

/// The remote holds `count` data files with the local sizes (tools' metadata files aside).
fn check_uploaded(local: &Path, remote: &Path, count: usize) -> Result<()> {
    let mut seen = 0;
    for dir in sorted_dirs(remote)? {
        for file in sorted_dirs(&dir)? {
            let rel = file.strip_prefix(remote)?;
            let (a, b) = (fs::metadata(local.join(rel))?.len(), fs::metadata(&file)?.len());
            ensure!(a == b, "{} has {b} bytes remotely, {a} locally", rel.display());
            seen += 1;
        }
    }
    ensure!(
        seen == count,
        "{} holds {seen} files, not {count}",
        remote.display()
    );
    Ok(())
}
