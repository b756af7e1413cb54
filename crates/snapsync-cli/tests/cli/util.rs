//! Helpers: run the real `snapsync` binary, build trees on disk, and call the real snapdir (`PyPI`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The snapdir release whose manifests and ids snapsync must match.
pub(crate) const SNAPDIR_VERSION: &str = "1.12.0";

/// A `snapsync` command ready to run.
///
/// Its cache is one directory per test process under the target directory (the user's own cache is
/// never touched); tests that care about the cache pass `--cache-dir`.
pub(crate) fn snapsync() -> Command {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-{}", std::process::id()))
    });
    let mut command = Command::new(env!("CARGO_BIN_EXE_snapsync"));
    command.env("SNAPSYNC_CACHE_DIR", cache);
    command
}

/// `script(1)` running `command` in a new pseudo-terminal, so the program sees a terminal as a
/// person's would: its exit status is the command's (`-e`).
///
/// The command is `exec`ed by the shell script starts, so the program itself is the terminal's
/// foreground process: otherwise a shell that does not exec its last command (dash, /bin/sh on
/// Debian, which script uses when `SHELL` is unset, as on CI) would take a Ctrl-C typed on the
/// terminal too, die of it, and make script report 130 whatever the program did.
pub(crate) fn script(command: &str) -> Command {
    let mut script = Command::new("script");
    script
        .args(["-qec", &format!("exec {command}"), "/dev/null"])
        .env("SHELL", "/bin/sh");
    script
}

/// Runs `snapsync ARGS` and returns its output, whatever the exit status.
pub(crate) fn run(args: &[&str]) -> Output {
    snapsync()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("snapsync runs")
}

/// Runs `snapsync ARGS` with `env` added to its environment, whatever the exit status.
pub(crate) fn run_env(args: &[&str], env: &[(&str, String)]) -> Output {
    snapsync()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("snapsync runs")
}

/// [`ok`] with `env` added to the environment.
pub(crate) fn ok_env(args: &[&str], env: &[(&str, String)]) -> String {
    let out = run_env(args, env);
    assert!(
        out.status.success(),
        "snapsync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The manifest of a directory as snapsync writes it (paths, modes, sizes and checksums): two trees
/// with equal manifests hold the same bytes under the same names and modes.
pub(crate) fn manifest_of(dir: &Path) -> String {
    ok(&["manifest", "-q", dir.to_str().unwrap()])
}

/// Runs `snapsync ARGS` with `input` on standard input.
pub(crate) fn run_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = snapsync()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapsync starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `snapsync ARGS`, asserts success, returns standard output as text.
pub(crate) fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "snapsync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temporary directory tree built step by step.
pub(crate) struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub(crate) fn new() -> Tree {
        let tree = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        tree.mode(".", 0o755);
        tree
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn arg(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub(crate) fn file(&self, rel: &str, content: &[u8], mode: u32) -> &Tree {
        let path = self.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        self.mode(rel, mode)
    }

    pub(crate) fn dir(&self, rel: &str, mode: u32) -> &Tree {
        fs::create_dir_all(self.path().join(rel)).unwrap();
        self.mode(rel, mode)
    }

    pub(crate) fn symlink(&self, rel: &str, target: &str) -> &Tree {
        symlink(target, self.path().join(rel)).unwrap();
        self
    }

    pub(crate) fn hardlink(&self, rel: &str, existing: &str) -> &Tree {
        fs::hard_link(self.path().join(existing), self.path().join(rel)).unwrap();
        self
    }

    pub(crate) fn mode(&self, rel: &str, mode: u32) -> &Tree {
        fs::set_permissions(self.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }
}

/// The real snapdir, installed from `PyPI` once (all test processes share it).
pub(crate) struct Snapdir {
    pythonpath: PathBuf,
    script: PathBuf,
}

/// What snapdir computed for a tree.
pub(crate) struct SnapdirResult {
    pub(crate) manifest: String,
    pub(crate) id: String,
}

/// One script for every snapdir call: `walk ROOT OUT_MANIFEST OUT_ID FLAGS...`, `push DIR STORE`,
/// `pull ID STORE DIR`, `verify ID STORE`.
const SCRIPT: &str = r#"
import asyncio, os, sys, traceback
try:
    import snapdir
    expected = os.environ["SNAPDIR_EXPECTED_VERSION"]
    if snapdir.version() != expected:
        raise SystemExit(f"snapdir {snapdir.version()} is installed, the tests expect {expected}")
    op, args = sys.argv[1], sys.argv[2:]
    if op == "walk":
        root, out_manifest, out_id = args[:3]
        flags = args[3:]
        exclude = [flags[i + 1] for i, f in enumerate(flags) if f == "--exclude"]
        kw = dict(no_follow="--no-follow" in flags, absolute="--absolute" in flags, exclude=exclude or None)
        m = asyncio.run(snapdir.manifest(root, **kw))
        i = asyncio.run(snapdir.id(root, **kw))
        with open(out_manifest, "w", encoding="utf-8", newline="") as f:
            f.write(m.raw)
        with open(out_id, "w") as f:
            f.write(i)
    elif op == "push":
        print(asyncio.run(snapdir.push(args[0], snapdir.StoreUri(args[1]))))
    elif op == "pull":
        asyncio.run(snapdir.pull(snapdir.SnapshotId(args[0]), snapdir.StoreUri(args[1]), args[2]))
    elif op == "verify":
        print(asyncio.run(snapdir.verify(args[0], snapdir.StoreUri(args[1]))))
    else:
        raise SystemExit(f"unknown operation {op}")
    code = 0
except BaseException:
    traceback.print_exc()
    code = 1
# snapdir 1.12's binding aborts at interpreter exit in about 1 run in 5 ("Fatal Python error:
# PyGILState_Release", exit 134), after the work is done: leave before that.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"#;

impl Snapdir {
    /// Installs snapdir on first use. There is no skipping: without Python, pip or the network the
    /// interop tests fail, loudly.
    pub(crate) fn get() -> &'static Snapdir {
        static SNAPDIR: OnceLock<Snapdir> = OnceLock::new();
        SNAPDIR.get_or_init(|| {
            let pythonpath = snapsync_testkit::pip_install(
                &format!("snapdir-{SNAPDIR_VERSION}"),
                &[&format!("snapdir=={SNAPDIR_VERSION}")],
            );
            let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let script = base.join("snapdir-interop.py");
            let staging = base.join(format!("snapdir-interop.py.{}", std::process::id()));
            fs::write(&staging, SCRIPT).unwrap();
            fs::rename(&staging, &script).unwrap();
            Snapdir { pythonpath, script }
        })
    }

    /// Runs one operation of the script with `env` added; panics with snapdir's output if it fails.
    /// Each call gets an empty cache of its own, so what it reads comes from the store.
    fn call(&self, args: &[&OsStr], env: &[(&str, String)]) -> String {
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new(snapsync_testkit::python())
            .env("SNAPDIR_CACHE_DIR", cache.path())
            .env("PYTHONPATH", &self.pythonpath)
            .env("SNAPDIR_EXPECTED_VERSION", SNAPDIR_VERSION)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(&self.script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "snapdir {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `snapdir.manifest` and `snapdir.id` on `root` with snapdir-style flags
    /// (`--no-follow`, `--absolute`, `--exclude RE`).
    pub(crate) fn walk(&self, root: &Path, flags: &[&str]) -> SnapdirResult {
        let out_dir = tempfile::tempdir().unwrap();
        let manifest_path = out_dir.path().join("manifest");
        let id_path = out_dir.path().join("id");
        let mut args: Vec<&OsStr> = vec![
            "walk".as_ref(),
            root.as_os_str(),
            manifest_path.as_os_str(),
            id_path.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        self.call(&args, &[]);
        SnapdirResult {
            manifest: fs::read_to_string(manifest_path).unwrap(),
            id: fs::read_to_string(id_path).unwrap(),
        }
    }

    /// `snapdir.push(dir, store)`: returns the id.
    pub(crate) fn push(&self, dir: &Path, store: &str, env: &[(&str, String)]) -> String {
        let out = self.call(&["push".as_ref(), dir.as_os_str(), store.as_ref()], env);
        out.trim().to_owned()
    }

    /// `snapdir.pull(id, store, dir)`.
    pub(crate) fn pull(&self, id: &str, store: &str, dir: &Path, env: &[(&str, String)]) {
        self.call(
            &["pull".as_ref(), id.as_ref(), store.as_ref(), dir.as_os_str()],
            env,
        );
    }

    /// `snapdir.verify(id, store)`: what it returns, printed by Python.
    pub(crate) fn verify(&self, id: &str, store: &str, env: &[(&str, String)]) -> String {
        self.call(&["verify".as_ref(), id.as_ref(), store.as_ref()], env)
    }
}
