//! Progress as a person sees it: the binary on a terminal (script(1) gives it one) pushing to a slow
//! server (vsftpd held to a few MiB a second) draws a bar with totals whose bytes move inside a file;
//! with standard error a pipe, no bar at all.

use std::process::Stdio;

use snapsync_testkit::{FtpFlavor, FtpOptions, FtpServer};

use crate::snapshots::pattern;
use crate::util::{Tree, manifest_of, ok, stderr};

const BIG: usize = 12 << 20;
const RATE: u32 = 3 << 20;

/// What a terminal showed, with the escape sequences taken out, as the lines it drew one over
/// another (a bar is redrawn after a carriage return or a cursor movement).
fn frames(screen: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            plain.push('\n');
        } else {
            plain.push(c);
        }
    }
    plain
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(ToOwned::to_owned)
        .collect()
}

/// `12.00 MiB` → bytes.
fn bytes_of(text: &str) -> Option<f64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

/// A bar line's `done/total objects` and `done/total` bytes.
fn counts(frame: &str) -> Option<((u64, u64), (f64, f64))> {
    let rest = frame.strip_prefix("pushing [")?;
    let (_, words) = rest.split_once("] ")?;
    let mut parts = words.split(", ");
    let (done, total) = parts.next()?.split_once('/')?;
    let total = total.split(' ').next()?;
    let (bytes_done, bytes_total) = parts.next()?.split_once('/')?;
    Some((
        (done.parse().ok()?, total.parse().ok()?),
        (bytes_of(bytes_done)?, bytes_of(bytes_total)?),
    ))
}

#[test]
fn a_push_on_a_terminal_shows_a_bar_with_totals_that_moves_inside_a_file() {
    let server = FtpServer::start_with(
        FtpFlavor::Vsftpd,
        FtpOptions {
            max_rate: Some(RATE),
            ..FtpOptions::default()
        },
    );
    let tree = Tree::new();
    tree.file("big.bin", &pattern(BIG, 3), 0o644)
        .file("small.txt", b"small\n", 0o644);
    let url = server.url("snaps");
    let command = format!(
        "sh -c 'stty cols 150 rows 40; exec {} push --store {url} {}'",
        env!("CARGO_BIN_EXE_snapsync"),
        tree.arg()
    );
    let out = crate::util::script(&command)
        .stdin(Stdio::null())
        .output()
        .expect("script(1) runs (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    let frames = frames(&screen);
    let bars: Vec<_> = frames.iter().filter_map(|f| counts(f)).collect();
    assert!(!bars.is_empty(), "no bar was drawn:\n{screen}");
    // Totals from the start: both objects, all their bytes.
    let total = f64::from(u32::try_from(BIG + 6).unwrap());
    for ((_, objects), (_, bytes)) in &bars {
        assert_eq!(*objects, 2, "{screen}");
        assert!(
            (bytes - total).abs() < total * 0.01,
            "total {bytes} of {total}: {screen}"
        );
    }
    // Bytes counted while the big file goes, not when it is done: a frame with it not finished and
    // part of it counted.
    assert!(
        bars.iter()
            .any(|((done, _), (bytes, _))| *done < 2 && *bytes > 1024.0 * 1024.0 && *bytes < total * 0.9),
        "no frame counted the big file part way:\n{screen}"
    );
    // A rate and the time left, once measured (the transfer takes about four seconds).
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("pushing [") && f.contains("MiB/s") && f.contains(" left")),
        "{screen}"
    );
    // No absurd early rate: none above ten times the server's limit.
    for frame in frames.iter().filter(|f| f.starts_with("pushing [")) {
        if let Some(rate) = frame.split(", ").find_map(|p| p.strip_suffix("/s")) {
            let rate = bytes_of(rate).expect("a rate in bytes");
            assert!(rate < f64::from(RATE) * 10.0, "{frame}");
        }
    }
    // The end: the bar is cleared, the summary and the id are printed.
    let id = ok(&["id", "-q", tree.arg()]).trim().to_owned();
    assert!(
        screen.contains("sent 2 objects (12.00 MiB), 0 already there, in "),
        "{screen}"
    );
    assert!(frames.last().is_some_and(|last| last == &id), "{frames:?}");

    // The same push with standard error a pipe: no bar, no terminal control, the summary only.
    let again = server.url("again");
    let out = crate::util::snapsync()
        .args(["push", "--store", &again, tree.arg()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}') && !err.contains("pushing"),
        "{err:?}"
    );
    assert!(
        err.starts_with("sent 2 objects (12.00 MiB)") && err.lines().count() == 1,
        "{err:?}"
    );

    // And what went up comes back whole.
    let dest = tempfile::tempdir().unwrap();
    ok(&[
        "pull",
        "-q",
        "--store",
        &url,
        "--id",
        &id,
        dest.path().to_str().unwrap(),
    ]);
    assert_eq!(manifest_of(dest.path()), manifest_of(tree.path()));
}
