//! docs/guide.md runs as written: every `console` block's commands run in order in one scratch folder,
//! through bash, with the `snapsync` under test first on PATH; what each prints (standard output and
//! error together, as a terminal shows them) must match the lines the guide shows under it.
//!
//! In the guide, `$ ` starts a command (a trailing `\` continues it), the lines after it up to the next
//! command are its output, `…` in an output line stands for any text (a time, a rate), and a command
//! ending in `# exit N` must exit with N (otherwise 0). A block fenced as `yaml file=NAME` is written to
//! NAME in the scratch folder before the blocks after it run.

use std::fs;
use std::path::Path;
use std::process::Command;

fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

struct Step {
    command: String,
    status: i32,
    output: Vec<String>,
    line: usize,
}

enum Block {
    Console(Vec<Step>),
    File(String, String),
}

fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if let Some(name) = line.strip_prefix("```yaml file=") {
            let mut body = String::new();
            for (_, line) in lines.by_ref() {
                if line == "```" {
                    break;
                }
                body.push_str(line);
                body.push('\n');
            }
            blocks.push(Block::File(name.trim().to_owned(), body));
        } else if line == "```console" {
            let mut steps: Vec<Step> = Vec::new();
            let mut continued = false;
            for (number, line) in lines.by_ref() {
                if line == "```" {
                    break;
                }
                if let Some(command) = line.strip_prefix("$ ") {
                    steps.push(Step {
                        command: String::new(),
                        status: 0,
                        output: Vec::new(),
                        line: number + 1,
                    });
                    continued = true;
                    add_command(steps.last_mut().unwrap(), command, &mut continued);
                } else if continued {
                    add_command(steps.last_mut().unwrap(), line, &mut continued);
                } else {
                    steps
                        .last_mut()
                        .expect("a console block starts with a command")
                        .output
                        .push(line.to_owned());
                }
            }
            blocks.push(Block::Console(steps));
        }
    }
    blocks
}

fn add_command(step: &mut Step, line: &str, continued: &mut bool) {
    let (text, more) = match line.strip_suffix('\\') {
        Some(text) => (text, true),
        None => (line, false),
    };
    step.command.push_str(text);
    step.command.push('\n');
    *continued = more;
    if !more && let Some((_, status)) = step.command.rsplit_once("# exit ") {
        step.status = status.trim().parse().expect("# exit N");
    }
}

#[test]
fn the_guide_runs_as_written() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    let text = fs::read_to_string(&guide).unwrap();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let scratch = work.path().join("work");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&scratch).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_snapsync")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut steps = 0;
    for block in parse(&text) {
        match block {
            Block::File(name, body) => fs::write(scratch.join(name), body).unwrap(),
            Block::Console(list) => {
                for step in list {
                    steps += 1;
                    let out = Command::new("bash")
                        .arg("-c")
                        .arg(format!("set -e\numask 022\n{{\n{}}} 2>&1", step.command))
                        .current_dir(&scratch)
                        .env("PATH", &path)
                        .env("HOME", &home)
                        .env("NO_COLOR", "1")
                        .env_remove("SNAPSYNC_CACHE_DIR")
                        .env_remove("XDG_CACHE_HOME")
                        .env_remove("XDG_STATE_HOME")
                        .output()
                        .unwrap();
                    let actual = String::from_utf8_lossy(&out.stdout);
                    let actual: Vec<&str> = actual.lines().collect();
                    let shown = || {
                        format!(
                            "docs/guide.md line {}: `{}`\nexpected:\n{}\nprinted:\n{}",
                            step.line,
                            step.command.trim(),
                            step.output.join("\n"),
                            actual.join("\n")
                        )
                    };
                    assert_eq!(out.status.code(), Some(step.status), "{}", shown());
                    assert_eq!(actual.len(), step.output.len(), "{}", shown());
                    for (expected, actual) in step.output.iter().zip(&actual) {
                        assert!(matches(expected, actual), "{}", shown());
                    }
                }
            }
        }
    }
    assert!(steps >= 10, "the guide has {steps} commands");
}

#[test]
fn wildcards_stand_for_any_text() {
    assert!(matches("in …s", "in 0.1s"));
    assert!(matches("a … b … c", "a x b y c"));
    assert!(!matches("a … c", "a x b"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
}
