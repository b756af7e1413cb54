//! `snapsync run`: task files through the binary. A `snapsync.yaml` with common settings, two tasks and
//! a default task, found from a subfolder (local folders as remotes); pyftpsync's own sample
//! `pyftpsync.yaml` run unedited against pyftpdlib; options overriding the file; errors that name the
//! file, the line and the key; a password in the file never printed.

use std::fs;
use std::path::Path;

use snapsync_testkit::FtpServer;

use crate::sync::{T12, tree, write};
use crate::util::stderr;

/// pyftpsync 4.1.0's sample task file, byte for byte: `docs/sample_pyftpsync.yaml` at the `v4.1.0` tag
/// of github.com/mar10/pyftpsync (commit 1650284547d1b655cb50e7f3522c1cda4b28740a), the file its
/// documentation (`docs/sphinx/ug_run.rst`) tells users to copy to `pyftpsync.yaml`. pyftpsync 4.1 has no
/// command that writes one. Only its `remote:` line is changed, to the test server's URL.
const PYFTPSYNC_SAMPLE: &str = include_str!("fixtures/pyftpsync-4.1.0-sample.yaml");

/// Runs `snapsync ARGS` in `dir` with its sync state in `state`; (status, stdout, stderr).
fn run_in(dir: &Path, state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::util::snapsync()
        .current_dir(dir)
        .env("SNAPSYNC_STATE_DIR", state)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("snapsync runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// The line (1-based) of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .expect("the line is there")
        + 1
}

/// A project with a `snapsync.yaml`: a site uploaded to one folder, and pushed as a snapshot to another.
struct Project {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    remote: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Project {
    fn new(extra: &str) -> Project {
        let project = Project {
            dir: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            remote: tempfile::tempdir().unwrap(),
            store: tempfile::tempdir().unwrap(),
        };
        let p = project.dir.path();
        write(p, "site/index.html", "<h1>home</h1>", T12);
        write(p, "site/notes.tmp", "scratch", T12);
        write(p, "site/sub/page.html", "page", T12);
        // The remote has the home page already, and a page the site no longer has.
        write(project.remote.path(), "index.html", "<h1>home</h1>", T12);
        write(project.remote.path(), "stale.html", "old", T12);
        fs::write(p.join("snapsync.yaml"), project.yaml(extra)).unwrap();
        project
    }

    fn yaml(&self, extra: &str) -> String {
        format!(
            "# The site goes up with `snapsync run`; a snapshot with `snapsync run backup`.\n\
             default-task: publish\n\
             common:\n  exclude: [\"*.tmp\"]\n  jobs: 2\n\
             tasks:\n  publish:\n    command: upload\n    local: site\n    remote: {}\n    delete: true\n{extra}\
             \x20 backup:\n    command: push\n    local: site\n    remote: {}\n",
            self.remote.path().display(),
            self.store.path().display(),
        )
    }

    fn file(&self) -> String {
        self.dir.path().join("snapsync.yaml").display().to_string()
    }

    fn run(&self, below: &str, args: &[&str]) -> (i32, String, String) {
        run_in(&self.dir.path().join(below), self.state.path(), args)
    }
}

#[test]
fn a_snapsync_yaml_with_common_settings_two_tasks_and_a_default_task_runs_from_a_subfolder() {
    let project = Project::new("");
    let r = project.remote.path();
    // The default task, from two folders down: the site goes up, without `*.tmp` (common), and the
    // remote's own file is deleted (the task's `delete: true`).
    let (code, _, err) = project.run("site/sub", &["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("task publish: upload"), "{err}");
    let files: Vec<String> = tree(r).into_keys().collect();
    assert_eq!(files, ["index.html", "sub/page.html"], "{err}");

    // The second task by name: a push of the same folder with the same common exclude; its id is the
    // id of the folder without `*.tmp`.
    let (code, out, err) = project.run("site", &["run", "backup"]);
    assert_eq!(code, 0, "{err}");
    let site = project.dir.path().join("site");
    let expected = crate::util::ok(&["id", "-x", "*.tmp", site.to_str().unwrap()]);
    assert_eq!(out.trim(), expected.trim());
    assert!(
        project.store.path().join(".manifests").is_dir(),
        "the snapshot is in the store"
    );

    // A pull task writes that snapshot back, by the id the file gives.
    let restore = format!(
        "  restore:\n    command: pull\n    local: restored\n    remote: {}\n    id: {}\n",
        project.store.path().display(),
        expected.trim()
    );
    fs::write(project.file(), project.yaml(&restore)).unwrap();
    let (code, _, err) = project.run("", &["run", "restore"]);
    assert_eq!(code, 0, "{err}");
    let restored = project.dir.path().join("restored");
    assert_eq!(
        crate::util::ok(&["id", restored.to_str().unwrap()]).trim(),
        expected.trim()
    );

    // Both, in order, with the same file: nothing left to do, both succeed.
    let (code, out, err) = project.run("", &["run", "publish", "backup"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), expected.trim());
    let publish = err.find("task publish").unwrap();
    let backup = err.find("task backup").unwrap();
    assert!(publish < backup, "{err}");
}

#[test]
fn options_on_the_command_line_override_the_file() {
    let project = Project::new("    dry-run: true\n");
    let r = project.remote.path();
    // The file says dry-run: the plan is printed, nothing changes.
    let (code, out, err) = project.run("", &["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("upload        sub/page.html"), "{out}");
    assert!(out.contains("delete remote stale.html"), "{out}");
    assert!(!r.join("sub").exists() && r.join("stale.html").exists());
    // --execute (pyftpsync's name for --no-dry-run) runs it; --exclude replaces the file's exclude.
    let (code, _, err) = project.run("", &["run", "--execute", "--exclude", "sub"]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<String> = tree(r).into_keys().collect();
    assert_eq!(files, ["index.html", "notes.tmp"], "{err}");
    // --dry-run on a task whose file does not say it.
    write(project.dir.path(), "site/new.html", "new", T12);
    let file = project.file();
    fs::write(&file, project.yaml("")).unwrap();
    let (code, out, err) = project.run("", &["run", "publish", "-n"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("upload        new.html"), "{out}");
    assert!(!r.join("new.html").exists());
    // An option the task's command does not take is a usage error, before any task runs.
    let (code, _, err) = project.run("", &["run", "publish", "backup", "--match", "*.html"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--match is not an option of push (task backup)"),
        "{err}"
    );
    assert!(!r.join("new.html").exists(), "no task ran");
    // A contradiction the sync options refuse is one too.
    let text = project.yaml("").replace("command: upload", "command: sync");
    fs::write(&file, text).unwrap();
    let (code, _, err) = project.run("", &["run", "publish"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("task publish: "), "{err}");
    assert!(err.contains("--delete"), "{err}");
}

#[test]
fn an_unknown_key_a_wrong_type_and_a_missing_task_name_the_file_the_line_and_the_key() {
    let project = Project::new("");
    let file = project.file();
    let good = project.yaml("");

    let text = good.replace(
        "    delete: true\n",
        "    delete: true\n    delet-unmatched: true\n",
    );
    fs::write(&file, &text).unwrap();
    let (code, _, err) = project.run("site", &["run"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "delet-unmatched");
    assert!(
        err.contains(&format!(
            "{file}:{line}:5: tasks.publish.delet-unmatched: unknown key"
        )),
        "{err}"
    );

    let text = good.replace("  jobs: 2\n", "  jobs: two\n");
    fs::write(&file, &text).unwrap();
    let (code, _, err) = project.run("site", &["run", "backup"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "jobs: two");
    assert!(
        err.contains(&format!(
            "{file}:{line}:9: common.jobs: wrong type: expected a whole number, found a string"
        )),
        "{err}"
    );

    let text = good.replace("    delete: true\n", "    delete: [yes]\n");
    fs::write(&file, &text).unwrap();
    let (code, _, err) = project.run("", &["run"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "delete: [yes]");
    assert!(
        err.contains(&format!(
            "{file}:{line}:13: tasks.publish.delete: wrong type: expected true or false, found a list"
        )),
        "{err}"
    );

    fs::write(&file, &good).unwrap();
    let (code, _, err) = project.run("", &["run", "deploy"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&good, "tasks:");
    assert!(
        err.contains(&format!(
            "{file}:{line}:1: tasks: no task named \"deploy\"; its tasks: publish, backup"
        )),
        "{err}"
    );

    let text = good.replace("default-task: publish", "default-task: deploy");
    fs::write(&file, &text).unwrap();
    let (code, _, err) = project.run("", &["run"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&text, "default-task");
    assert!(
        err.contains(&format!(
            "{file}:{line}:15: default-task: no task named \"deploy\""
        )),
        "{err}"
    );

    // No file anywhere up to the root.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(empty.path(), project.state.path(), &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no snapsync.yaml or pyftpsync.yaml"), "{err}");
    assert!(
        tree(project.remote.path()).contains_key("stale.html"),
        "nothing ran"
    );
}

#[test]
fn pyftpsyncs_own_sample_file_runs_unedited_against_an_ftp_server() {
    let server = FtpServer::pyftpdlib();
    let remote = server.root().join("my_project");
    fs::create_dir_all(&remote).unwrap();
    let project = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let p = project.path();
    let sample = PYFTPSYNC_SAMPLE.replace(
        "remote: sftp://example.com/my_project",
        &format!("remote: {}", server.url("my_project")),
    );
    assert_ne!(
        sample, PYFTPSYNC_SAMPLE,
        "the sample's remote line is where it was"
    );
    fs::write(p.join("pyftpsync.yaml"), &sample).unwrap();
    write(p, "index.html", "home", T12);
    write(p, "sub/page.txt", "page", T12);
    // What the sample's deploy tasks exclude: `build,node_modules,.*,_*`.
    write(p, "build/out.js", "built", T12);
    write(p, "node_modules/dep.js", "dep", T12);
    write(p, ".hidden", "hidden", T12);
    write(p, "_draft.txt", "draft", T12);
    let password = server.url("x");
    let password = password.split(':').nth(2).unwrap().split('@').next().unwrap();
    let no_password = |out: &str, err: &str| {
        assert!(!out.contains(password) && !err.contains(password), "{out}\n{err}");
    };

    // The default task (deploy) from a subfolder (the sample's `root: true`), in the sample's dry-run
    // mode: the plan, and nothing sent.
    let (code, out, err) = run_in(&p.join("sub"), state.path(), &["run"]);
    assert_eq!(code, 0, "{err}");
    no_password(&out, &err);
    assert!(out.contains("upload        index.html"), "{out}");
    assert!(!out.contains("_draft.txt") && !out.contains("build/"), "{out}");
    assert!(tree(&remote).is_empty());

    // pyftpsync's --execute runs it.
    let (code, out, err) = run_in(&p.join("sub"), state.path(), &["run", "--execute"]);
    assert_eq!(code, 0, "{err}");
    no_password(&out, &err);
    let files: Vec<String> = tree(&remote).into_keys().collect();
    assert_eq!(files, ["index.html", "pyftpsync.yaml", "sub/page.txt"]);

    // deploy_force: delete, delete_unmatched, force, resolve local.
    fs::remove_file(p.join("index.html")).unwrap();
    write(&remote, "sub/page.txt", "edited on the server", T12 + 60);
    let (code, out, err) = run_in(p, state.path(), &["run", "deploy_force", "--execute"]);
    assert_eq!(code, 0, "{err}");
    no_password(&out, &err);
    let now = tree(&remote);
    assert!(!now.contains_key("index.html"), "{now:?}");
    assert_eq!(now["sub/page.txt"].0, "page", "force sends the local version");

    // sync_all: two-way, with pyftpsync's default excludes.
    write(&remote, "from-server.txt", "hello", T12);
    let (code, out, err) = run_in(p, state.path(), &["run", "sync_all", "--execute"]);
    assert_eq!(code, 0, "{err}");
    no_password(&out, &err);
    assert_eq!(fs::read_to_string(p.join("from-server.txt")).unwrap(), "hello");
    assert_eq!(tree(&remote)["_draft.txt"].0, "draft");

    // `show` is pyftpsync's `tree` command: refused with the line of its command.
    let (code, _, err) = run_in(p, state.path(), &["run", "show"]);
    assert_eq!(code, 2, "{err}");
    let line = line_of(&sample, "command: tree");
    let file = p.join("pyftpsync.yaml").display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:{line}:9: tasks.show.command: pyftpsync's `tree`"
        )),
        "{err}"
    );

    // From a subfolder with neither `root` nor `here`, pyftpsync asks which is meant; so does snapsync.
    fs::write(p.join("pyftpsync.yaml"), sample.replace("    root: true\n", "")).unwrap();
    let (code, _, err) = run_in(&p.join("sub"), state.path(), &["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--root") && err.contains("--here"), "{err}");
    // --here: only this folder, with the same path below the remote.
    write(p, "sub/more.txt", "more", T12);
    let (code, out, err) = run_in(&p.join("sub"), state.path(), &["run", "--here", "--execute"]);
    assert_eq!(code, 0, "{err}");
    no_password(&out, &err);
    assert_eq!(tree(&remote)["sub/more.txt"].0, "more");
}

#[test]
fn a_password_in_the_task_file_is_never_printed() {
    let server = FtpServer::pyftpdlib();
    fs::create_dir_all(server.root().join("site")).unwrap();
    let project = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "a.txt", "a", T12);
    let secret = "not-the-password-7351";
    let url = server.url_with_password("site", secret);
    let file = p.join("snapsync.yaml");
    let assert_hidden = |code: i32, out: &str, err: &str, want: i32| {
        assert_eq!(code, want, "{err}");
        assert!(!out.contains(secret), "stdout: {out}");
        assert!(!err.contains(secret), "stderr: {err}");
    };

    // A login refused by the server: status 1, neither stream shows the password.
    fs::write(
        &file,
        format!("tasks:\n  up:\n    command: upload\n    remote: {url}\n"),
    )
    .unwrap();
    let (code, out, err) = run_in(p, state.path(), &["run", "up"]);
    assert_hidden(code, &out, &err, 1);
    assert!(
        err.contains("***") || err.to_lowercase().contains("denied") || err.contains("530"),
        "{err}"
    );
    // With -v and a dry run too.
    let (code, out, err) = run_in(p, state.path(), &["run", "up", "-v", "-n"]);
    assert_hidden(code, &out, &err, 1);
    // Two tasks, both failing: each reported, then the summary; the status is the worst.
    fs::write(
        &file,
        format!("tasks:\n  up:\n    command: upload\n    remote: {url}\n  down:\n    command: download\n    local: copy\n    remote: {url}\n"),
    )
    .unwrap();
    let (code, out, err) = run_in(p, state.path(), &["run", "up", "down"]);
    assert_hidden(code, &out, &err, 1);
    assert!(
        err.contains("2 of 2 tasks did not succeed: up (exit status 1), down (exit status 1)"),
        "{err}"
    );
    // A value in the wrong place: the error names the key, never the value.
    fs::write(
        &file,
        format!("tasks:\n  up:\n    command: upload\n    remote: {url}\n    jobs: {url}\n"),
    )
    .unwrap();
    let (code, out, err) = run_in(p, state.path(), &["run", "up"]);
    assert_hidden(code, &out, &err, 2);
    assert!(err.contains("tasks.up.jobs: wrong type"), "{err}");
}
