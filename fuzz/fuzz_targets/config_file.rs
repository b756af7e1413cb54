//! Arbitrary text as a task file of `snapsync run`, read both as `snapsync.yaml` and as pyftpsync's
//! `pyftpsync.yaml` by the binary's own reader: it never panics; an error names the file, a line and a
//! column (1 or more) and never shows a URL's password (values are never quoted); a file that reads
//! has tasks with distinct names, each found by its name, at places of line and column 1 or more.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use snapsync_cli::config::{self, Format};
use snapsync_store::redact_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (file, format) in [
        ("/p/snapsync.yaml", Format::Snapsync),
        ("/p/pyftpsync.yaml", Format::Pyftpsync),
    ] {
        match config::parse(Path::new(file), text, format) {
            Ok(config) => {
                assert!(config.tasks_place.line >= 1 && config.tasks_place.col >= 1);
                for task in &config.tasks {
                    assert!(task.place.line >= 1 && task.place.col >= 1, "{task:?}");
                    let found = config.task(&task.name).expect("a task is found by its name");
                    assert!(std::ptr::eq(found, task), "two tasks named {:?}", task.name);
                }
                let _ = config.names();
            }
            Err(error) => {
                let message = format!("{error:#}");
                let place = message.strip_prefix(file).and_then(|m| m.strip_prefix(':'));
                let place = place.expect("the message starts with the file");
                let mut numbers = place.splitn(3, ':');
                for _ in 0..2 {
                    let n: usize = numbers
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("no line and column in {message:?}"));
                    assert!(n >= 1, "{message:?}");
                }
                assert_eq!(redact_text(&message), message, "a password in {message:?}");
            }
        }
    }
});
