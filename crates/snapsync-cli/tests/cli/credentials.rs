//! Credentials as a user meets them: a password typed at a hidden prompt on a terminal (asked again
//! when wrong), netrc entries, the keyring, and a password that no output of any failing command shows.
//! Against the real pyftpdlib, sshd and pypiserver of the testkit.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(all(feature = "keyring", target_os = "linux"))]
use snapsync_store::Keyring as _;
use snapsync_testkit::{FTP_PASSWORD, FTP_USER, FtpServer, SSH_PASSWORD, SSH_USER, Sshd};

/// The environment a user without netrc, ssh keys or agent has: a home folder of the test's own.
fn bare_env(command: &mut Command, home: &Path) {
    command
        .env("HOME", home)
        .env_remove("NETRC")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SNAPSYNC_SSH_KEY");
}

/// `snapsync ARGS` on a terminal of its own (`script`), each of `answers` typed once the `n`th
/// password question is up. Returns the exit status and everything the terminal showed.
fn on_a_terminal(args: &[&str], home: &Path, answers: &[&str]) -> (i32, String) {
    let command = std::iter::once(env!("CARGO_BIN_EXE_snapsync").to_owned())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = crate::util::script(&command);
    bare_env(&mut script, home);
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().unwrap();
    let shown = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let shown = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    for (n, answer) in answers.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let text = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
            if text.matches("password for ").count() > n {
                break;
            }
            assert!(Instant::now() < deadline, "question {} never came: {text}", n + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Typed a moment after the question: the prompt is printed just before echo is turned off,
        // and what a terminal gets before that it echoes itself (as for anyone typing ahead).
        std::thread::sleep(Duration::from_millis(700));
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let text = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    (status.code().unwrap_or(-1), text)
}

/// `snapsync ARGS` with standard input closed (no terminal), in `home`, with `env` on top.
fn without_terminal(args: &[&str], home: &Path, env: &[(&str, &Path)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_snapsync"));
    bare_env(&mut command, home);
    let out = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A folder with one file to upload.
fn folder(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("hello.txt"), "hello").unwrap();
    dir.to_str().unwrap().to_owned()
}

#[test]
fn a_typed_password_is_hidden_asked_again_when_wrong_and_logs_in_over_ftp_and_sftp() {
    let ftp = FtpServer::pyftpdlib();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let known_hosts = sshd.known_hosts();
    let remotes = [
        (
            format!("ftp://{FTP_USER}@127.0.0.1:{}/typed", ftp.port()),
            FTP_PASSWORD.as_str(),
            ftp.root().join("typed/hello.txt"),
            format!("password for {FTP_USER} at ftp://127.0.0.1:{}", ftp.port()),
        ),
        (
            sshd.url_without_password("typed"),
            SSH_PASSWORD.as_str(),
            sshd.root().join("typed/hello.txt"),
            format!("password for {SSH_USER} at sftp://127.0.0.1:{}", sshd.port()),
        ),
    ];
    for (url, password, landed, question) in &remotes {
        let wrong = "Wrong-Typed-1";
        let (code, shown) = on_a_terminal(
            &[
                "upload",
                "--create-folder",
                "--known-hosts",
                known_hosts.to_str().unwrap(),
                &local,
                url,
            ],
            work.path(),
            &[wrong, password],
        );
        assert_eq!(code, 0, "{url}: {shown}");
        assert_eq!(shown.matches(question.as_str()).count(), 2, "{shown}");
        assert!(shown.contains("login refused; try again (2 of 3)"), "{shown}");
        // Typed, never shown: the terminal did not echo either answer.
        assert!(!shown.contains(wrong), "echoed: {shown}");
        assert!(!shown.contains(password), "echoed: {shown}");
        assert_eq!(fs::read_to_string(landed).unwrap(), "hello", "{url}");
    }
}

#[test]
fn three_wrong_passwords_end_with_a_clear_refusal() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let url = sshd.url_without_password("never");
    let (code, shown) = on_a_terminal(
        &[
            "upload",
            "--create-folder",
            "--known-hosts",
            sshd.known_hosts().to_str().unwrap(),
            &local,
            &url,
        ],
        work.path(),
        &["Wrong-A-1", "Wrong-B-2", "Wrong-C-3"],
    );
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains(&format!(
            "login refused for {SSH_USER}@127.0.0.1:{} (the password typed, 3 tries)",
            sshd.port()
        )),
        "{shown}"
    );
    assert_eq!(shown.matches("password for ").count(), 3, "{shown}");
    for wrong in ["Wrong-A-1", "Wrong-B-2", "Wrong-C-3"] {
        assert!(!shown.contains(wrong), "{shown}");
    }
    assert!(!sshd.root().join("never/hello.txt").exists());
}

/// `--no-prompt` (and pyftpsync's `no_prompt` in a task file): on a terminal, nothing is asked and the
/// login without a password is refused; without it, the same run asks.
#[test]
fn no_prompt_never_asks_even_on_a_terminal() {
    let ftp = FtpServer::pyftpdlib();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let url = format!("ftp://{FTP_USER}@127.0.0.1:{}/quiet", ftp.port());
    let (code, shown) = on_a_terminal(
        &["upload", "--no-prompt", "--create-folder", &local, &url],
        work.path(),
        &[],
    );
    assert_eq!(code, 1, "{shown}");
    assert!(!shown.contains("password for "), "asked: {shown}");
    assert!(shown.contains("login refused for"), "{shown}");
    // The same from a task file, pyftpsync's key; then without it, asked and typed.
    let file = work.path().join("pyftpsync.yaml");
    for (no_prompt, answers, expected) in [("true", &[][..], 1), ("false", &[FTP_PASSWORD.as_str()][..], 0)] {
        fs::write(
            &file,
            format!(
                "default_task: deploy\ncommon_config:\n    remote: {url}\n    local: site\n    create_folder: true\n    root: true\n    no_prompt: {no_prompt}\n\
                 tasks:\n    deploy:\n        command: upload\n"
            ),
        )
        .unwrap();
        let (code, shown) = on_a_terminal(&["run", "--config", file.to_str().unwrap()], work.path(), answers);
        assert_eq!(code, expected, "no_prompt: {no_prompt}: {shown}");
        assert_eq!(shown.contains("password for "), no_prompt == "false", "{shown}");
    }
    assert!(ftp.root().join("quiet/hello.txt").exists());
}

#[test]
fn netrc_gives_the_password_for_ftp_and_sftp_unless_no_netrc() {
    let ftp = FtpServer::pyftpdlib();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let netrc = work.path().join("netrc");
    fs::write(
        &netrc,
        format!(
            "machine 127.0.0.1 login {FTP_USER} password {FTP_PASSWORD}\n\
             machine localhost login {SSH_USER} password {SSH_PASSWORD}\n"
        ),
    )
    .unwrap();
    let known_hosts = sshd.known_hosts();
    let kh = known_hosts.to_str().unwrap();
    // FTP: a user without a password, and no user at all (the entry's login is the user).
    for url in [
        format!("ftp://{FTP_USER}@127.0.0.1:{}/netrc", ftp.port()),
        format!("ftp://127.0.0.1:{}/netrc2", ftp.port()),
    ] {
        let (code, out) = without_terminal(
            &["upload", "--create-folder", &local, &url],
            work.path(),
            &[("NETRC", &netrc)],
        );
        assert_eq!(code, 0, "{url}: {out}");
        let (code, out) = without_terminal(
            &["upload", "--no-netrc", "--create-folder", &local, &url],
            work.path(),
            &[("NETRC", &netrc)],
        );
        assert_eq!(code, 1, "{url}: {out}");
    }
    assert!(ftp.root().join("netrc/hello.txt").exists());
    assert!(ftp.root().join("netrc2/hello.txt").exists());
    let (_, out) = without_terminal(
        &[
            "upload",
            "--no-netrc",
            &local,
            &format!("ftp://{FTP_USER}@127.0.0.1:{}/netrc", ftp.port()),
        ],
        work.path(),
        &[],
    );
    assert!(
        out.contains(&format!(
            "login refused for {FTP_USER}@127.0.0.1:{} (no password",
            ftp.port()
        )),
        "{out}"
    );
    // SFTP, through ~/.netrc this time (HOME), by host name.
    fs::copy(&netrc, work.path().join(".netrc")).unwrap();
    let url = sshd
        .url_without_password("netrc")
        .replacen("@127.0.0.1:", "@localhost:", 1);
    let sftp_upload = |extra: &[&str]| {
        let mut args = vec![
            "upload",
            "--create-folder",
            "--accept-new-host-key",
            "--known-hosts",
            kh,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&local, &url]);
        without_terminal(&args, work.path(), &[])
    };
    let (code, out) = sftp_upload(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(sshd.root().join("netrc/hello.txt").exists());
    let (code, out) = sftp_upload(&["--no-netrc"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no password, no ssh-agent key"), "{out}");
    // A netrc file that does not parse is named, line and all, and its words are not shown.
    fs::write(
        work.path().join(".netrc"),
        "machine localhost login x Secret-Word-9\n",
    )
    .unwrap();
    let (code, out) = sftp_upload(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(".netrc: line 1: unexpected word"), "{out}");
    assert!(!out.contains("Secret-Word-9"), "{out}");
}

/// `--store-password` saves a password that logged in, and only then; a later run finds it in the
/// kernel keyring (keyutils), with no password in the URL, netrc or on a terminal. No skip: a Linux
/// machine without keyutils fails this test.
#[cfg(all(feature = "keyring", target_os = "linux"))]
#[test]
fn store_password_saves_a_working_password_to_the_keyring_and_a_later_run_uses_it() {
    let ftp = FtpServer::pyftpdlib();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let account = format!("ftp://{FTP_USER}@127.0.0.1:{}", ftp.port());
    let url = format!("{account}/kept");
    let keyring = snapsync_store::OsKeyring;
    let forget = || {
        keyring
            .delete("snapsync", &account)
            .expect("the kernel keyring answers");
    };
    forget();
    let netrc = work.path().join("netrc");
    // A wrong password is not saved.
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {FTP_USER} password Wrong-Kept-5\n"),
    )
    .unwrap();
    let (code, out) = without_terminal(
        &["upload", "--store-password", "--create-folder", &local, &url],
        work.path(),
        &[("NETRC", &netrc)],
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        keyring
            .get("snapsync", &account)
            .expect("the kernel keyring answers"),
        None,
        "a refused password was saved"
    );
    // The right one is, once it logged in.
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {FTP_USER} password {FTP_PASSWORD}\n"),
    )
    .unwrap();
    let (code, out) = without_terminal(
        &[
            "upload",
            "-v",
            "--store-password",
            "--create-folder",
            &local,
            &url,
        ],
        work.path(),
        &[("NETRC", &netrc)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the password was saved to the keyring"), "{out}");
    assert_eq!(
        keyring
            .get("snapsync", &account)
            .expect("the kernel keyring answers")
            .as_deref(),
        Some(FTP_PASSWORD.as_str())
    );
    // No netrc, no terminal: the keyring's password logs in.
    fs::write(work.path().join("site/second.txt"), "2").unwrap();
    let (code, out) = without_terminal(&["upload", "-v", &local, &url], work.path(), &[]);
    forget();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the password from the keyring"), "{out}");
    assert!(!out.contains(FTP_PASSWORD.as_str()), "{out}");
    assert!(ftp.root().join("kept/second.txt").exists());
    // --no-keyring leaves it alone.
    keyring.set("snapsync", &account, &FTP_PASSWORD).unwrap();
    let (code, out) = without_terminal(&["upload", "--no-keyring", &local, &url], work.path(), &[]);
    forget();
    assert_eq!(code, 1, "{out}");
}

/// Every command that reaches a remote, failing against a closed port and against a real server
/// with a wrong password, with and without `--json -vv`: the password in the URL appears in no
/// output.
#[test]
fn a_password_in_a_url_appears_in_no_output_of_any_failing_command() {
    const SECRET: &str = "Leak-Pw-7781";
    let ftp = FtpServer::pyftpdlib();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let local = folder(&work.path().join("site"));
    let closed = snapsync_testkit::free_port();
    let urls = [
        format!("ftp://{FTP_USER}:{SECRET}@127.0.0.1:{closed}/x"),
        format!("ftp://{FTP_USER}:{SECRET}@127.0.0.1:{}/x", ftp.port()),
        format!("sftp://{SSH_USER}:{SECRET}@127.0.0.1:{}/x", sshd.port()),
    ];
    let kh = sshd.known_hosts();
    let kh = kh.to_str().unwrap().to_owned();
    let id = "0".repeat(64);
    let mut runs: Vec<Vec<String>> = Vec::new();
    for url in &urls {
        let http = format!("http://u:{SECRET}@127.0.0.1:{closed}/simple/");
        let yaml_dir = work.path().join(format!("project-{}", runs.len()));
        fs::create_dir_all(&yaml_dir).unwrap();
        fs::write(
            yaml_dir.join("snapsync.yaml"),
            format!("default-task: up\ntasks:\n  up:\n    command: upload\n    local: {local}\n    remote: {url}\n"),
        )
        .unwrap();
        let commands: Vec<Vec<String>> = vec![
            vec!["upload".into(), local.clone(), url.clone()],
            vec!["download".into(), local.clone(), url.clone()],
            vec!["sync".into(), local.clone(), url.clone()],
            vec!["push".into(), "--store".into(), url.clone(), local.clone()],
            vec![
                "pull".into(),
                "--store".into(),
                url.clone(),
                "--id".into(),
                id.clone(),
                local.clone(),
            ],
            vec!["snapshots".into(), "--store".into(), url.clone()],
            vec![
                "cache".into(),
                "open".into(),
                "--online".into(),
                "--remote".into(),
                url.clone(),
                "--cache".into(),
                work.path().join("cache").to_str().unwrap().into(),
                "a.txt".into(),
            ],
            vec!["pkg".into(), "list".into(), url.clone(), "attrs".into()],
            vec!["pkg".into(), "list".into(), http.clone(), "attrs".into()],
            vec![
                "pkg".into(),
                "mirror".into(),
                "--from".into(),
                url.clone(),
                "--to".into(),
                http.clone(),
                "attrs".into(),
            ],
            vec![
                "run".into(),
                "--config".into(),
                yaml_dir.join("snapsync.yaml").to_str().unwrap().into(),
            ],
        ];
        for command in commands {
            for extra in [&[][..], &["--json", "-vv"][..]] {
                let mut args = command.clone();
                args.extend(extra.iter().map(|flag| (*flag).to_owned()));
                args.extend(["--known-hosts".to_owned(), kh.clone()]);
                runs.push(args);
            }
        }
    }
    let outputs: Vec<(Vec<String>, i32, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .chunks(runs.len().div_ceil(8))
            .map(|chunk| {
                let home = work.path();
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|args| {
                            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
                            let (code, out) = without_terminal(&args_ref, home, &[]);
                            (args.clone(), code, out)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outputs.len(), 3 * 11 * 2);
    for (args, code, out) in &outputs {
        let shown = args.join(" ").replace(SECRET, "<secret>");
        assert_ne!(code, &0, "{shown} succeeded: {out}");
        assert!(!out.contains(SECRET), "{shown} showed the password: {out}");
        assert!(!out.contains("panicked"), "{shown}: {out}");
    }
    // The wrong password is refused as such, named by user and server.
    let refused = outputs
        .iter()
        .filter(|(_, _, out)| out.contains("login refused for"))
        .count();
    assert!(refused >= 20, "only {refused} runs said the login was refused");
}

/// pyftpsync's `no_netrc` in `pyftpsync.yaml` is `--no-netrc` for the task; without it the netrc
/// entry logs the task in.
#[test]
fn pyftpsync_no_netrc_in_the_task_file_turns_netrc_off() {
    let ftp = FtpServer::pyftpdlib();
    let work = tempfile::tempdir().unwrap();
    folder(&work.path().join("project"));
    let netrc = work.path().join("netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {FTP_USER} password {FTP_PASSWORD}\n"),
    )
    .unwrap();
    let file = work.path().join("project/pyftpsync.yaml");
    let url = format!("ftp://{FTP_USER}@127.0.0.1:{}/task", ftp.port());
    for (no_netrc, expected) in [("true", 1), ("false", 0)] {
        fs::write(
            &file,
            format!(
                "default_task: deploy\ncommon_config:\n    remote: {url}\n    create_folder: true\n    root: true\n    no_netrc: {no_netrc}\n\
                 tasks:\n    deploy:\n        command: upload\n"
            ),
        )
        .unwrap();
        let state = work.path().join("state");
        let (code, out) = without_terminal(
            &["run", "--config", file.to_str().unwrap()],
            work.path(),
            &[("NETRC", &netrc), ("SNAPSYNC_STATE_DIR", &state)],
        );
        assert_eq!(code, expected, "no_netrc: {no_netrc}: {out}");
        assert_eq!(code == 1, out.contains("login refused for"), "{out}");
    }
    assert!(ftp.root().join("task/hello.txt").exists());
}
