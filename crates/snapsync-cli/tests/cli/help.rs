//! What a user sees before running anything: `--version`, the help's usage lines, and what a packager
//! installs beside the binary (the man pages and completion scripts of `snapsync __generate`).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::{ok, run, run_env, stderr};

/// The usage line(s) of a help text or a usage error.
fn usage(text: &str) -> String {
    text.lines()
        .filter(|line| line.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = ok(&["--version"]);
    let line = out.trim();
    let prefix = format!("snapsync {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line}");
    let rest = &line[prefix.len()..];
    let (commit, features) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", features: "))
        .unwrap_or_else(|| panic!("{line}"));
    // The commit of this checkout, as git names it (the tests run in one; "unknown" only without git).
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(commit, head.as_deref().unwrap_or("unknown"), "{line}");
    // Every feature named is one of this package's, and the default ones are all there.
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let declared = declared_features(&manifest);
    if features == "none" {
        assert!(
            declared.defaults.is_empty(),
            "{line}: default features {:?}",
            declared.defaults
        );
    } else {
        for feature in features.split(',') {
            assert!(
                declared.all.iter().any(|f| f == feature),
                "{line}: {feature} is not a feature"
            );
        }
        for feature in &declared.defaults {
            assert!(
                features.split(',').any(|f| f == feature),
                "{line}: {feature} missing"
            );
        }
    }
    // Each subcommand says the same.
    assert!(ok(&["push", "--version"]).contains(rest), "push --version");
}

struct Features {
    all: Vec<String>,
    defaults: Vec<String>,
}

/// The `[features]` table of a Cargo.toml: its names, and what `default` lists (one line each).
fn declared_features(manifest: &str) -> Features {
    let mut all = Vec::new();
    let mut defaults = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[features]";
            continue;
        }
        let Some((name, value)) = line.split_once('=').filter(|_| inside) else {
            continue;
        };
        let name = name.trim().to_string();
        if name == "default" {
            defaults = value
                .trim()
                .trim_matches(['[', ']'])
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .filter(|f| !f.is_empty())
                .collect();
        } else {
            all.push(name);
        }
    }
    Features { all, defaults }
}

#[test]
fn the_cache_variable_does_not_make_cache_dir_look_required() {
    let cache = tempfile::tempdir().unwrap();
    let env = [("SNAPSYNC_CACHE_DIR", cache.path().display().to_string())];
    // The help's usage line, and the usage line of an error, with the variable set (util sets it).
    let help = String::from_utf8(run_env(&["push", "--help"], &env).stdout).unwrap();
    assert_eq!(
        usage(&help),
        "Usage: snapsync push [OPTIONS] --store <URL> [DIR]",
        "{help}"
    );
    assert!(
        help.contains("--cache-dir <DIR>") && help.contains("[env: SNAPSYNC_CACHE_DIR]"),
        "{help}"
    );
    for args in [
        &["push", "--store", "/nowhere"][..],
        &["pull", "--store", "/nowhere"],
        &["stage"],
        &["checkout"],
    ] {
        let out = run_env(args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        let line = usage(&err);
        assert!(
            !line.is_empty() && !line.contains("--cache-dir"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_cache_variable_and_the_flag_choose_the_cache() {
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("a.txt"), "a").unwrap();
    let (by_env, by_flag) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = tree.path().to_str().unwrap();
    let env = [("SNAPSYNC_CACHE_DIR", by_env.path().display().to_string())];
    let out = run_env(&["stage", "-q", dir], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(by_env.path().join(".manifests").is_dir());
    let flag = by_flag.path().to_str().unwrap();
    let out = run_env(&["stage", "-q", "--cache-dir", flag, dir], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        by_flag.path().join(".manifests").is_dir(),
        "the flag wins over the variable"
    );
}

#[test]
fn connection_flags_are_in_the_help_of_commands_that_connect_only() {
    for command in [
        &["id"][..],
        &["manifest"],
        &["stage"],
        &["checkout"],
        &["signature"],
        &["delta"],
        &["patch"],
        &["completions"],
    ] {
        let help = ok(&[command, &["--help"]].concat());
        assert!(
            !help.contains("--ssh-key") && !help.contains("FTPS"),
            "{command:?}: {help}"
        );
    }
    for command in [
        &["push"][..],
        &["pull"],
        &["sync"],
        &["run"],
        &["snapshots"],
        &["cache", "open"],
        &["pkg", "mirror"],
    ] {
        let help = ok(&[command, &["--help"]].concat());
        for flag in ["--accept-new-host-key", "--known-hosts", "--ssh-key", "--ca-file"] {
            assert!(help.contains(flag), "{command:?} lacks {flag}");
        }
    }
    // A command that never connects refuses them.
    let out = run(&["id", "--ssh-key", "/k", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Every command path below `snapsync` as its help lists them (`["cache", "open"]`, …), found the way
/// a user would: each help's `Commands:` section, `help` left out.
fn command_paths() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = ok(&args);
        let commands = help
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help");
        for name in commands {
            let mut child = path.clone();
            child.push(name.to_string());
            pending.push(child.clone());
            found.push(child);
        }
    }
    found.sort();
    found
}

#[test]
fn man_pages_one_per_command_that_man_reads() {
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man/man1");
    let printed = ok(&["__generate", "man", man1.to_str().unwrap()]);
    let mut expected: Vec<String> = command_paths()
        .iter()
        .map(|path| format!("snapsync-{}.1", path.join("-")))
        .collect();
    expected.push("snapsync.1".to_string());
    expected.sort();
    assert!(
        expected.contains(&"snapsync-cache-open.1".to_string()),
        "{expected:?}"
    );
    assert!(expected.len() > 25, "{expected:?}");
    let mut written: Vec<String> = fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written, expected,
        "no page missing, none extra (hidden commands have none)"
    );
    assert_eq!(printed.lines().count(), expected.len(), "{printed}");
    for page in &written {
        let path = man1.join(page);
        let text = fs::read_to_string(&path).unwrap();
        let name = page.trim_end_matches(".1");
        // The title macro names the command (after clap_mangen's definition of the quote string).
        let title = text.lines().find(|l| l.starts_with(".TH ")).unwrap_or_default();
        assert!(title.starts_with(&format!(".TH {name} 1 ")), "{page}: {title}");
        assert!(
            title.contains(concat!("snapsync ", env!("CARGO_PKG_VERSION"))),
            "{page}: {title}"
        );
        // groff parses it without a warning, and the rendered page names the command and has the
        // help's example.
        let out = Command::new("groff")
            // -k: through preconv, as man(1) reads pages (they are UTF-8); -P-cbou: plain text.
            .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou", "-rLL=100n"])
            .arg(&path)
            .output()
            .expect("groff runs (apt-get install groff-base)");
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            rendered.contains("NAME") && rendered.contains(name),
            "{page}: {rendered}"
        );
        assert!(rendered.contains("Example"), "{page} has no example: {rendered}");
    }
    let push = fs::read_to_string(man1.join("snapsync-push.1")).unwrap();
    assert!(push.contains("ssh\\-key") && push.contains("store"), "{push}");
}

#[test]
fn generate_refuses_what_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    for args in [
        &["__generate"][..],
        &["__generate", "man"],
        &["__generate", "html", target.to_str().unwrap()],
        &["__generate", "man", target.to_str().unwrap(), "extra"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("usage: snapsync __generate man|completions DIR"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!target.exists(), "nothing written");
    assert!(!ok(&["--help"]).contains("__generate"));
}

/// Whether a shell is installed; CI installs them all (.ci/run), so there a missing one fails.
fn shell(name: &str) -> bool {
    let found = Command::new(name)
        .arg("-c")
        .arg("exit 0")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{name} is not installed (apt-get install {name})"
    );
    if !found {
        eprintln!("{name} is not installed: its completion script is not checked");
    }
    found
}

#[test]
fn completion_scripts_that_the_shells_accept() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["__generate", "completions", dir.path().to_str().unwrap()]);
    let file = |name: &str| dir.path().join(name);
    for name in ["snapsync.bash", "_snapsync", "snapsync.fish", "_snapsync.ps1"] {
        assert!(fs::metadata(file(name)).unwrap().len() > 1000, "{name}");
    }
    // bash: the script parses, and loaded it completes commands and their flags.
    let bash = file("snapsync.bash");
    let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let complete = |words: &str| {
        let script = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _snapsync snapsync; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let commands = complete("snapsync pu");
    assert!(
        commands.lines().any(|l| l == "push") && commands.lines().any(|l| l == "pull"),
        "{commands}"
    );
    let flags = complete("snapsync push --ssh");
    assert!(flags.lines().any(|l| l == "--ssh-key"), "{flags}");
    let flags = complete("snapsync id --ssh");
    assert!(!flags.lines().any(|l| l == "--ssh-key"), "{flags}");
    // zsh and fish: the scripts parse.
    if shell("zsh") {
        let out = Command::new("zsh")
            .arg("-n")
            .arg(file("_snapsync"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    if shell("fish") {
        let out = Command::new("fish")
            .arg("--no-execute")
            .arg(file("snapsync.fish"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The packaging command is in no script (nor in any help: the man page test counts the pages).
    for name in ["snapsync.bash", "_snapsync", "snapsync.fish", "_snapsync.ps1"] {
        assert!(
            !fs::read_to_string(file(name)).unwrap().contains("__generate"),
            "{name}"
        );
    }
    let ps = fs::read_to_string(file("_snapsync.ps1")).unwrap();
    assert!(
        ps.contains("Register-ArgumentCompleter") && ps.contains("'snapsync;push'"),
        "{ps}"
    );
}
