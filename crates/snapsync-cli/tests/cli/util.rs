//! Helpers: run the real `snapsync` binary, build trees on disk, and call the real snapdir (`PyPI`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The snapdir release whose manifests and ids snapsync must match.
pub(crate) const SNAPDIR_VERSION: &str = "1.12.0";

/// A `snapsync` command ready to run.
pub(crate) fn snapsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_snapsync"))
}

/// Runs `snapsync ARGS` and returns its output, whatever the exit status.
pub(crate) fn run(args: &[&str]) -> Output {
    snapsync()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("snapsync runs")
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

/// The real snapdir, installed from `PyPI` once per target directory.
pub(crate) struct Snapdir {
    pythonpath: PathBuf,
    script: PathBuf,
}

/// What snapdir computed for a tree.
pub(crate) struct SnapdirResult {
    pub(crate) manifest: String,
    pub(crate) id: String,
}

const SCRIPT: &str = r#"
import asyncio, os, sys, traceback
try:
    import snapdir
    root, out_manifest, out_id = sys.argv[1:4]
    flags = sys.argv[4:]
    exclude = [flags[i + 1] for i, f in enumerate(flags) if f == "--exclude"]
    kw = dict(no_follow="--no-follow" in flags, absolute="--absolute" in flags, exclude=exclude or None)
    m = asyncio.run(snapdir.manifest(root, **kw))
    i = asyncio.run(snapdir.id(root, **kw))
    expected = os.environ["SNAPDIR_EXPECTED_VERSION"]
    if snapdir.version() != expected:
        raise SystemExit(f"snapdir {snapdir.version()} is installed, the tests expect {expected}")
    with open(out_manifest, "w", encoding="utf-8", newline="") as f:
        f.write(m.raw)
    with open(out_id, "w") as f:
        f.write(i)
    code = 0
except BaseException:
    traceback.print_exc()
    code = 1
# snapdir's binding may abort while the interpreter finalises (SERVERS.md): leave before that.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"#;

impl Snapdir {
    /// Installs snapdir into the target directory on first use (all test processes share it).
    ///
    /// There is no skipping: without Python, pip or the network the interop tests fail, loudly.
    pub(crate) fn get() -> &'static Snapdir {
        static SNAPDIR: OnceLock<Snapdir> = OnceLock::new();
        SNAPDIR.get_or_init(|| {
            let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let target = base.join(format!("snapdir-{SNAPDIR_VERSION}"));
            if !target.join("snapdir").is_dir() {
                // Install beside the final place, then rename: concurrent test processes may race here,
                // and the loser of the rename simply uses the winner's copy.
                let staging = base.join(format!("snapdir-{SNAPDIR_VERSION}.{}", std::process::id()));
                let _ = fs::remove_dir_all(&staging);
                let out = Command::new(python())
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--no-input",
                    ])
                    .args(["--target", staging.to_str().unwrap()])
                    .arg(format!("snapdir=={SNAPDIR_VERSION}"))
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {} -m pip: {e}", python()));
                assert!(
                    out.status.success(),
                    "installing snapdir {SNAPDIR_VERSION} from PyPI failed (the interop tests need it):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if fs::rename(&staging, &target).is_err() {
                    let _ = fs::remove_dir_all(&staging);
                }
            }
            let script = base.join("snapdir-interop.py");
            let staging = base.join(format!("snapdir-interop.py.{}", std::process::id()));
            fs::write(&staging, SCRIPT).unwrap();
            fs::rename(&staging, &script).unwrap();
            Snapdir {
                pythonpath: target,
                script,
            }
        })
    }

    /// Runs `snapdir.manifest` and `snapdir.id` on `root` with snapdir-style flags
    /// (`--no-follow`, `--absolute`, `--exclude RE`).
    pub(crate) fn walk(&self, root: &Path, flags: &[&str]) -> SnapdirResult {
        let out_dir = tempfile::tempdir().unwrap();
        let manifest_path = out_dir.path().join("manifest");
        let id_path = out_dir.path().join("id");
        let out = Command::new(python())
            .env("PYTHONPATH", &self.pythonpath)
            .env("SNAPDIR_EXPECTED_VERSION", SNAPDIR_VERSION)
            .arg(&self.script)
            .arg(root)
            .arg(&manifest_path)
            .arg(&id_path)
            .args(flags)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "snapdir failed on {}:\n{}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SnapdirResult {
            manifest: fs::read_to_string(manifest_path).unwrap(),
            id: fs::read_to_string(id_path).unwrap(),
        }
    }
}

/// The Python interpreter: `$SNAPSYNC_TEST_PYTHON`, else `python3` from PATH.
fn python() -> String {
    std::env::var("SNAPSYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}
