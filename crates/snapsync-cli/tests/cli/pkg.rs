//! `snapsync pkg` through the binary, against pypiserver (an open source, a destination with htpasswd
//! auth) and a PEP 503 tree in a folder: list, dry run, mirror, re-run, download, upload, a conflict
//! (exit 4), a missing project, a wrong password that is never printed, requirement files.

use std::fs;
use std::path::Path;

use snapsync_testkit::{PKG_PASSWORD, PKG_USER, PypiServer, make_dists};

use crate::util::{run, stderr};

fn with_password(url: &str, password: &str) -> String {
    let encoded = password.replace(':', "%3A").replace('@', "%40");
    url.replacen("http://", &format!("http://{PKG_USER}:{encoded}@"), 1)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "index.html")
        .collect();
    names.sort();
    names
}

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn mirror_list_download_and_upload_between_real_indexes() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    fs::create_dir(&built).unwrap();
    let files = make_dists(
        &built,
        &[
            "wheel:alpha:1.0",
            "wheel:alpha:2.0rc1",
            "sdist:beta:0.5",
            "sdist-bare:gamma:1.0",
        ],
    );
    let source = PypiServer::start_open(&files);
    let dest = PypiServer::start_with_auth();
    let src = source.simple_url();
    let to = with_password(&dest.url(), PKG_PASSWORD);

    // list: pre-releases only with --pre; JSON lines and a summary.
    let out = run(&["pkg", "list", &src, "alpha", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = lines(&out);
    assert_eq!(listed[0]["filename"], "alpha-1.0-py3-none-any.whl", "{listed:?}");
    assert_eq!(listed[0]["version"], "1.0");
    assert_eq!(listed.last().unwrap()["files"], 1);
    let out = run(&["pkg", "list", &src, "alpha", "--pre"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // A dry run sends nothing.
    let reqs = work.path().join("requirements.txt");
    fs::write(&reqs, "# what we need\nalpha>=1\nbeta  # the sdist\n").unwrap();
    let out = run(&[
        "pkg",
        "mirror",
        "--from",
        &src,
        "--to",
        &to,
        "-r",
        reqs.to_str().unwrap(),
        "gamma",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("upload")).count(),
        3,
        "{plan}"
    );
    assert!(files_in(&dest.packages()).is_empty());

    // The mirror: every file arrives byte for byte; a re-run sends nothing.
    let mirror = [
        "pkg",
        "mirror",
        "--from",
        &src,
        "--to",
        &to,
        "-r",
        reqs.to_str().unwrap(),
        "gamma",
        "--json",
    ];
    let out = run(&mirror);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        files_in(&dest.packages()),
        [
            "alpha-1.0-py3-none-any.whl",
            "beta-0.5.tar.gz",
            "gamma-1.0.tar.gz"
        ]
    );
    for name in files_in(&dest.packages()) {
        assert_eq!(
            fs::read(dest.packages().join(&name)).unwrap(),
            fs::read(built.join(&name)).unwrap()
        );
    }
    let summary = lines(&out).pop().unwrap();
    assert_eq!(summary["mirrored"], 3, "{summary}");
    let out = run(&mirror);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = lines(&out).pop().unwrap();
    assert_eq!(
        (summary["mirrored"].as_u64(), summary["present"].as_u64()),
        (Some(0), Some(3))
    );

    // A wrong password: an error that never shows it.
    let wrong = "n0t-the:p@ss";
    let out = run(&[
        "pkg",
        "mirror",
        "--from",
        &src,
        "--to",
        &with_password(&dest.url(), wrong),
        "alpha",
        "--pre",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("403"), "{all}");
    for secret in [wrong, "n0t-the%3Ap%40ss", PKG_PASSWORD] {
        assert!(!all.contains(secret), "the password was printed: {all}");
    }

    // A destination file of that name with other bytes: a conflict, exit 4, nothing replaced.
    fs::write(
        dest.packages().join("alpha-2.0rc1-py3-none-any.whl"),
        b"not the same",
    )
    .unwrap();
    let out = run(&["pkg", "mirror", "--from", &src, "--to", &to, "alpha", "--pre"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("alpha-2.0rc1-py3-none-any.whl"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(dest.packages().join("alpha-2.0rc1-py3-none-any.whl")).unwrap(),
        b"not the same"
    );

    // A project the source does not have: exit 1, named. No requirement at all: a usage error.
    let out = run(&["pkg", "mirror", "--from", &src, "--to", &to, "no-such-project"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-project"), "{}", stderr(&out));
    let out = run(&["pkg", "mirror", "--from", &src, "--to", &to]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // download: the file, checked; again, kept.
    let wheels = work.path().join("wheels");
    let out = run(&["pkg", "download", &src, "beta", "-d", wheels.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(wheels.join("beta-0.5.tar.gz")).unwrap(),
        fs::read(built.join("beta-0.5.tar.gz")).unwrap()
    );
    let out = run(&["pkg", "download", &src, "beta", "-d", wheels.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("downloaded 1 file (0 bytes)"),
        "{}",
        stderr(&out)
    );

    // upload: a local file to the index; again, present.
    let more = make_dists(&built, &["wheel:epsilon:0.1"]);
    let out = run(&["pkg", "upload", &to, more[0].to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dest.packages().join("epsilon-0.1-py3-none-any.whl").exists());
    let out = run(&["pkg", "upload", &to, more[0].to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).pop().unwrap()["present"], 1);
}

#[test]
fn a_folder_tree_is_a_destination_and_a_source() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    fs::create_dir(&built).unwrap();
    let files = make_dists(
        &built,
        &["wheel:alpha:1.0", "sdist-zip:beta:0.5", "wheel:delta:3.0:>=3.99"],
    );
    let source = PypiServer::start_open(&files);
    let tree = work.path().join("tree");
    let tree_url = format!("file://{}", tree.display());
    let out = run(&[
        "pkg",
        "mirror",
        "--from",
        &source.simple_url(),
        "--to",
        &tree_url,
        "--all",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(tree.join("index.html").is_file());
    assert_eq!(files_in(&tree.join("alpha")), ["alpha-1.0-py3-none-any.whl"]);
    // The tree reads back as an index, with the sha256 of what was written.
    let out = run(&["pkg", "list", &tree_url, "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = lines(&out);
    assert_eq!(listed.len(), 4, "{listed:?}");
    let sha = listed.iter().find(|l| l["filename"] == "beta-0.5.zip").unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sha,
        snapsync_pkg::hash_file(&built.join("beta-0.5.zip"))
            .unwrap()
            .sha256
    );
    // pypiserver gives no Requires-Python; the tree has it from the wheel's metadata, and filters on it.
    let out = run(&["pkg", "list", &tree_url, "delta", "--python-version", "3.11"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = run(&["pkg", "list", &tree_url, "delta", "--python-version", "4.0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\t>=3.99\t"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_killed_mirror_leaves_whole_files_and_the_rerun_sends_only_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    fs::create_dir(&built).unwrap();
    let specs: Vec<String> = (0..30).map(|i| format!("wheel:pkg{i:02}:1.0")).collect();
    let files = make_dists(&built, &specs.iter().map(String::as_str).collect::<Vec<_>>());
    let source = PypiServer::start_open(&files);
    let dest = PypiServer::start_with_auth();
    let tree = work.path().join("tree");
    for (to, landed) in [
        (with_password(&dest.url(), PKG_PASSWORD), dest.packages()),
        (format!("file://{}", tree.display()), tree.clone()),
    ] {
        let mirror = [
            "pkg",
            "mirror",
            "--from",
            &source.simple_url(),
            "--to",
            &to,
            "--all",
            "--jobs",
            "1",
            "--json",
        ];
        // Files a tree holds are one folder down, by project.
        let landed_files = || -> Vec<std::path::PathBuf> {
            let mut found = Vec::new();
            let Ok(entries) = fs::read_dir(&landed) else {
                return found;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    found.extend(fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
                } else {
                    found.push(path);
                }
            }
            found.retain(|p| p.extension().is_some_and(|e| e == "whl"));
            found
        };
        crate::sync::kill_midway(&mirror, || landed_files().len() >= 2);
        let before = landed_files();
        assert!(before.len() < 30, "{to}: the run finished before it was killed");
        // Whatever arrived is whole; nothing is left under a temporary name as a distribution.
        for path in &before {
            let name = path.file_name().unwrap();
            assert_eq!(
                fs::read(path).unwrap(),
                fs::read(built.join(name)).unwrap(),
                "{}",
                path.display()
            );
        }
        let out = run(&mirror);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let summary = lines(&out).pop().unwrap();
        assert_eq!(
            summary["mirrored"].as_u64().unwrap() + summary["present"].as_u64().unwrap(),
            30,
            "{summary}"
        );
        // Only what had not arrived is sent again, and at most the one file (--jobs 1) whose project
        // page the killed run had not written yet.
        let present = usize::try_from(summary["present"].as_u64().unwrap()).unwrap();
        assert!(
            present >= 1 && present + 1 >= before.len(),
            "{to}: {} were there, {summary}",
            before.len()
        );
        let after = landed_files();
        assert_eq!(after.len(), 30);
        for path in &after {
            assert_eq!(
                fs::read(path).unwrap(),
                fs::read(built.join(path.file_name().unwrap())).unwrap()
            );
        }
    }
}

#[test]
fn a_user_without_a_password_is_asked_for_it_on_a_terminal_and_it_is_never_shown() {
    use std::io::{Read as _, Write as _};
    let work = tempfile::tempdir().unwrap();
    let files = make_dists(work.path(), &["wheel:prompted:1.0"]);
    let dest = PypiServer::start_with_auth();
    let url = dest.url().replacen("http://", &format!("http://{PKG_USER}@"), 1);
    // `script` runs the command on a terminal of its own; what is written to its input is typed there.
    let command = format!(
        "{} pkg upload --no-netrc {url} {}",
        env!("CARGO_BIN_EXE_snapsync"),
        files[0].display()
    );
    let mut child = crate::util::script(&command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains("password for uploader at http://127.0.0.1") {
                let _ = seen_tx.send(());
            }
        }
        all
    });
    // Typed once the prompt is up, and a moment later: the prompt is printed just before echo is
    // turned off, and what a terminal gets before that it echoes itself (as it would for anyone
    // typing ahead of a prompt), which is not what this test is about.
    seen_rx
        .recv_timeout(std::time::Duration::from_mins(1))
        .expect("no password prompt");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{PKG_PASSWORD}\n").as_bytes()).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let shown = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{shown}");
    assert!(
        dest.packages().join("prompted-1.0-py3-none-any.whl").exists(),
        "{shown}"
    );
    assert!(!shown.contains(PKG_PASSWORD), "the password was shown: {shown}");
}
