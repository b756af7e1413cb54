//! The snapshot commands when things go wrong: a server dies mid-push, credentials are wrong, the
//! destination is read-only, a pull is killed. Real servers (moto for S3, Azurite for Azure) on 127.0.0.1.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snapsync_testkit::{AZURITE_KEY, Azurite, S3_SECRET_KEY, S3Server};

use crate::snapshots::{files_under, pattern};
use crate::util::{Tree, manifest_of, ok, ok_env, run, run_env, snapsync, stderr};

/// `count` small files with distinct contents, so each is an object of its own.
fn many_files(count: usize) -> Tree {
    let tree = Tree::new();
    for i in 0..count {
        tree.file(
            &format!("d{}/file-{i:05}.txt", i % 10),
            format!("file number {i}\n").repeat(20).as_bytes(),
            0o644,
        );
    }
    tree
}

/// Starts `snapsync ARGS` in the background with `env`, capturing its output.
fn spawn(args: &[&str], env: &[(&str, String)]) -> Child {
    snapsync()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapsync starts")
}

/// How many objects `snapsync size` counts in a store.
fn objects_in(url: &str, env: &[(&str, String)]) -> usize {
    let out = run_env(&["size", "--store", url], env);
    let text = String::from_utf8_lossy(&out.stdout);
    // "N snapshots, M objects, ..."
    text.split(", ")
        .nth(1)
        .and_then(|part| {
            part.strip_suffix(" objects")
                .or_else(|| part.strip_suffix(" object"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until `child` has sent at least `count` objects to `url`; panics if it finished first.
fn wait_for_objects(child: &mut Child, url: &str, env: &[(&str, String)], count: usize) {
    let started = Instant::now();
    while objects_in(url, env) < count {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the push ended ({status}) before {count} objects were in the store");
        }
        assert!(
            started.elapsed() < Duration::from_mins(2),
            "the push made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn s3_server_stopped_mid_push_is_a_clear_error_and_a_rerun_completes() {
    let mut server = S3Server::start();
    server.create_bucket("snaps");
    let env = server.env();
    let url = "s3://snaps/project";
    let tree = many_files(1500);

    let mut child = spawn(&["push", "--jobs", "2", "--store", url, tree.arg()], &env);
    wait_for_objects(&mut child, url, &env, 30);
    server.stop();
    let started = Instant::now();
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_mins(1),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(err.contains("error: s3://snaps/project/"), "{err}");
    assert!(err.contains("temporary failure"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains(S3_SECRET_KEY), "{err}");

    // moto forgets everything when it stops: the rerun starts over and completes.
    server.restart();
    server.create_bucket("snaps");
    let id = ok_env(&["push", "--store", url, tree.arg()], &env);
    assert_eq!(id, ok(&["id", "-q", tree.arg()]));
    let dest = tempfile::tempdir().unwrap();
    ok_env(
        &[
            "pull",
            "--store",
            url,
            "--id",
            id.trim(),
            dest.path().to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(manifest_of(dest.path()), manifest_of(tree.path()));
}

#[test]
fn azure_wrong_credentials_and_a_server_stopped_mid_push() {
    let mut server = Azurite::start();
    server.create_container("snaps");
    let env = server.env();
    let url = "az://snaps/project";
    let tree = many_files(1500);

    // A well-formed key that is not the account's.
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let wrong: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| match *k {
            "AZURE_STORAGE_ACCOUNT_KEY" => (*k, wrong_key.to_owned()),
            _ => (*k, v.clone()),
        })
        .collect();
    let out = run_env(&["push", "--store", url, tree.arg()], &wrong);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(err.contains("hint: ") && err.contains("credentials"), "{err}");
    assert!(!err.contains(wrong_key) && !err.contains(AZURITE_KEY), "{err}");

    // Stopped mid-push: a clear error. Azurite keeps its data, so the rerun sends only what is missing.
    let mut child = spawn(&["push", "--jobs", "2", "--store", url, tree.arg()], &env);
    wait_for_objects(&mut child, url, &env, 30);
    server.stop();
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("temporary failure"), "{err}");

    server.restart();
    let before = objects_in(url, &env);
    assert!(
        before >= 30,
        "the objects sent before the stop are still there ({before})"
    );
    assert_eq!(
        run_env(&["snapshots", "--store", url], &env).stdout,
        b"",
        "no manifest before all objects are present"
    );
    let out = run_env(&["-v", "push", "--store", url, tree.arg()], &env);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{before} already there")),
        "the rerun skipped what was sent: {err}"
    );
    let out = run_env(
        &[
            "verify",
            "--store",
            url,
            "--id",
            String::from_utf8_lossy(&out.stdout).trim(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A directory nobody can write: a read-only tmpfs when running as root (root ignores permission
/// bits), else a directory with mode 555.
struct ReadOnlyDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new() -> ReadOnlyDir {
        let dir = tempfile::tempdir().unwrap();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        if is_root {
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "snapsync-test-ro"])
                .arg(dir.path())
                .status()
                .expect("mount runs");
            assert!(
                status.success(),
                "as root, this test needs to mount a read-only tmpfs (CAP_SYS_ADMIN); mount failed"
            );
        } else {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
        }
        ReadOnlyDir {
            dir,
            mounted: is_root,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn read_only_destinations_are_clear_errors() {
    let tree = many_files(5);
    let store = tempfile::tempdir().unwrap();
    let id = ok(&["push", "--store", store.path().to_str().unwrap(), tree.arg()]);
    let ro = ReadOnlyDir::new();
    let ro_path = ro.path().to_str().unwrap();

    let out = run(&[
        "pull",
        "--store",
        store.path().to_str().unwrap(),
        "--id",
        id.trim(),
        ro_path,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(ro_path), "the error names the place: {err}");
    assert!(
        err.contains("Read-only file system") || err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");

    for store in [ro_path.to_owned(), format!("file://{ro_path}/store")] {
        let out = run(&["push", "--store", &store, tree.arg()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(ro_path), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(fs::read_dir(ro.path()).unwrap().count(), 0);
}

fn is_temp(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.starts_with('.') && name.contains(".snapsync-") && name.ends_with(".tmp")
}

#[test]
fn a_killed_pull_leaves_each_file_old_or_new_and_the_next_pull_completes() {
    const FILES: usize = 200;
    const OLD_LEN: usize = 1 << 20;
    const NEW_LEN: usize = OLD_LEN + 1;
    let name = |i: usize| format!("f{i:03}.bin");
    let old = |i: usize| pattern(OLD_LEN, u8::try_from(i).unwrap());
    let new = |i: usize| pattern(NEW_LEN, u8::try_from(i).unwrap().wrapping_add(101));
    let next = Tree::new();
    let dest = Tree::new();
    for i in 0..FILES {
        next.file(&name(i), &new(i), 0o644);
        dest.file(&name(i), &old(i), 0o644);
    }
    let store = tempfile::tempdir().unwrap();
    let store = store.path().to_str().unwrap();
    let id = ok(&["push", "--store", store, next.arg()]);

    let mut child = spawn(
        &[
            "pull",
            "--jobs",
            "1",
            "--store",
            store,
            "--id",
            id.trim(),
            dest.arg(),
        ],
        &[],
    );
    // Kill it once a few files are new and most are still old.
    let started = Instant::now();
    loop {
        let written = (0..FILES)
            .filter(|i| fs::metadata(dest.path().join(name(*i))).is_ok_and(|m| m.len() == NEW_LEN as u64))
            .count();
        if written >= 3 {
            child.kill().unwrap();
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the pull ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "the pull made no progress"
        );
    }
    child.wait().unwrap();

    let (mut olds, mut news) = (0, 0);
    for rel in files_under(dest.path()) {
        if is_temp(&rel) {
            continue; // a killed writer's temporary file: the next pull removes it
        }
        let i: usize = rel.to_str().unwrap()[1..4].parse().unwrap();
        let content = fs::read(dest.path().join(&rel)).unwrap();
        if content == old(i) {
            olds += 1;
        } else if content == new(i) {
            news += 1;
        } else {
            panic!("{} is torn", rel.display());
        }
    }
    assert_eq!(olds + news, FILES, "every file is there, old or new");
    assert!(news >= 3 && olds > 0, "killed mid-way: {news} new, {olds} old");

    ok(&["pull", "--store", store, "--id", id.trim(), dest.arg()]);
    assert!(
        !files_under(dest.path()).iter().any(|p| is_temp(p)),
        "temporary files left"
    );
    assert_eq!(manifest_of(dest.path()), manifest_of(next.path()));
}
