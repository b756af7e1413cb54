//! snapsync against the real rdiff (librsync 2.3, Debian package `rdiff`), in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Tree, ok};

/// `rdiff` from PATH; the tests fail, loudly, where it is missing.
fn rdiff(args: &[&Path]) {
    let out = Command::new("rdiff")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rdiff ({e}); install it: apt-get install rdiff"));
    assert!(
        out.status.success(),
        "rdiff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic pseudo-random bytes with some structure (repeats, text-like runs).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 7 {
            0 => out.extend_from_slice(b"the same words again and again "),
            1 => out.extend(std::iter::repeat_n(0u8, (x >> 8) as usize % 700)),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out.truncate(len);
    out
}

/// `basis` with a few edits: insertions, deletions, replacements.
fn edit(basis: &[u8], seed: u64) -> Vec<u8> {
    let mut new = basis.to_vec();
    let mut x = seed | 1;
    for _ in 0..=(seed % 6) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % (new.len() as u64 + 1)) as usize;
        let len = ((x >> 20) % 3000) as usize;
        let end = (at + len).min(new.len());
        match (x >> 40) % 3 {
            0 => drop(new.splice(at..at, data(x, len))),
            1 => drop(new.splice(at..end, std::iter::empty())),
            _ => new[at..end].iter_mut().for_each(|b| *b ^= 0x5a),
        }
    }
    new
}

/// Literal bytes, literal commands and copy commands in a delta (decoded independently of the library).
fn literal_bytes(delta: &[u8]) -> u64 {
    let mut i = 4;
    let mut literal = 0u64;
    let be = |bytes: &[u8]| bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
    loop {
        let op = delta[i];
        i += 1;
        match op {
            0 => return literal,
            1..=0x40 => {
                literal += u64::from(op);
                i += usize::from(op);
            }
            0x41..=0x44 => {
                let w = 1usize << (op - 0x41);
                let n = be(&delta[i..i + w]);
                literal += n;
                i += w + n as usize;
            }
            0x45..=0x54 => {
                let c = op - 0x45;
                i += (1usize << (c / 4)) + (1usize << (c % 4));
            }
            _ => panic!("bad command byte {op:#x}"),
        }
    }
}

const KINDS: [(&str, &str); 4] = [
    ("rollsum", "md4"),
    ("rollsum", "blake2"),
    ("rabinkarp", "md4"),
    ("rabinkarp", "blake2"),
];

#[test]
fn signatures_are_byte_identical_to_rdiffs() {
    let tree = Tree::new();
    for (i, len) in [0usize, 1, 255, 256, 1000, 65_536, 65_537, 300_000, 1_000_003]
        .into_iter()
        .enumerate()
    {
        let basis = tree.path().join(format!("basis-{len}"));
        std::fs::write(&basis, data(i as u64, len)).unwrap();
        let variants: &[&[&str]] = &[
            &[],
            &["--block-size=64"],
            &["--block-size=1000", "--sum-size=8"],
            &["--sum-size=-1"],
        ];
        for (weak, strong) in KINDS {
            for (v, extra) in variants.iter().enumerate() {
                let theirs = tree.path().join(format!("r-{len}-{weak}-{strong}-{v}.sig"));
                let ours = tree.path().join(format!("o-{len}-{weak}-{strong}-{v}.sig"));
                let kind = [format!("--rollsum={weak}"), format!("--hash={strong}")];
                let mut r = Command::new("rdiff");
                r.arg("signature")
                    .args(&kind)
                    .args(*extra)
                    .arg(&basis)
                    .arg(&theirs);
                let out = r.output().expect("rdiff runs (apt-get install rdiff)");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let mut args: Vec<String> = vec!["signature".into(), "-q".into()];
                args.extend(kind.iter().cloned());
                args.extend(extra.iter().map(ToString::to_string));
                args.extend([p(&basis).to_owned(), p(&ours).to_owned()]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(&args);
                assert!(
                    std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                    "signature of {len} bytes with {weak}/{strong} {extra:?} differs from rdiff's"
                );
            }
        }
    }
}

#[test]
fn signatures_of_standard_input_size_blocks_as_rdiff_does() {
    let tree = Tree::new();
    let basis = tree.path().join("basis");
    std::fs::write(&basis, data(7, 200_000)).unwrap();
    // Redirected from a file: the size is known (384-byte blocks); through a pipe it is not (2048).
    for (how, block) in [("<", 384u32), ("cat |", 2048)] {
        let theirs = tree.path().join("r.sig");
        let ours = tree.path().join("o.sig");
        let _ = std::fs::remove_file(&theirs);
        let feed = |cmd: String| {
            let line = if how == "<" {
                format!("{cmd} < {}", p(&basis))
            } else {
                format!("cat {} | {cmd}", p(&basis))
            };
            assert!(
                Command::new("sh")
                    .arg("-c")
                    .arg(&line)
                    .status()
                    .unwrap()
                    .success(),
                "{line}"
            );
        };
        feed(format!("rdiff signature - {}", p(&theirs)));
        feed(format!(
            "{} signature - - > {}",
            env!("CARGO_BIN_EXE_snapsync"),
            p(&ours)
        ));
        let ours = std::fs::read(&ours).unwrap();
        assert!(
            ours == std::fs::read(&theirs).unwrap(),
            "{how}: signature differs from rdiff's"
        );
        assert_eq!(&ours[4..8], &block.to_be_bytes(), "{how}");
    }
}

/// Both directions on many pairs: our delta patched by rdiff, rdiff's by us, ours from rdiff's signature;
/// the same literal bytes as rdiff (the same matches) and never a larger delta.
#[test]
fn deltas_interoperate_both_ways() {
    let tree = Tree::new();
    let dir = tree.path();
    for seed in 0..24u64 {
        let len = [0usize, 10, 5000, 70_000, 400_000][seed as usize % 5];
        let basis_bytes = data(seed, len);
        let new_bytes = if seed % 7 == 3 {
            data(seed + 100, len)
        } else {
            edit(&basis_bytes, seed)
        };
        let f = |name: &str| -> PathBuf { dir.join(format!("{seed}-{name}")) };
        std::fs::write(f("basis"), &basis_bytes).unwrap();
        std::fs::write(f("new"), &new_bytes).unwrap();
        let (weak, strong) = KINDS[seed as usize % 4];
        let block = [
            "--block-size=0",
            "--block-size=16",
            "--block-size=333",
            "--block-size=2048",
        ][seed as usize / 4 % 4];
        let kind = [
            format!("--rollsum={weak}"),
            format!("--hash={strong}"),
            block.to_owned(),
        ];
        let status = Command::new("rdiff")
            .arg("signature")
            .args(&kind)
            .arg(f("basis"))
            .arg(f("r.sig"))
            .status()
            .unwrap();
        assert!(status.success());
        rdiff(&[Path::new("delta"), &f("r.sig"), &f("new"), &f("r.delta")]);
        // Our delta from rdiff's signature, patched by rdiff and by us.
        ok(&["delta", p(&f("r.sig")), p(&f("new")), p(&f("o.delta"))]);
        rdiff(&[
            Path::new("patch"),
            &f("basis"),
            &f("o.delta"),
            &f("rdiff-patched"),
        ]);
        assert!(
            std::fs::read(f("rdiff-patched")).unwrap() == new_bytes,
            "seed {seed}: rdiff patch of our delta"
        );
        ok(&["patch", p(&f("basis")), p(&f("o.delta")), p(&f("our-patched"))]);
        assert!(
            std::fs::read(f("our-patched")).unwrap() == new_bytes,
            "seed {seed}: our patch of our delta"
        );
        // rdiff's delta patched by us.
        ok(&["patch", p(&f("basis")), p(&f("r.delta")), p(&f("patched-theirs"))]);
        assert!(
            std::fs::read(f("patched-theirs")).unwrap() == new_bytes,
            "seed {seed}: our patch of rdiff's delta"
        );
        // Same matches, never bigger.
        let ours = std::fs::read(f("o.delta")).unwrap();
        let theirs = std::fs::read(f("r.delta")).unwrap();
        assert_eq!(
            literal_bytes(&ours),
            literal_bytes(&theirs),
            "seed {seed}: different matches than rdiff"
        );
        assert!(
            ours.len() <= theirs.len(),
            "seed {seed}: delta {} > rdiff's {}",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn repeated_blocks_make_smaller_deltas_than_rdiff() {
    let tree = Tree::new();
    let dir = tree.path();
    let basis = vec![0u8; 1 << 20];
    let mut new = basis.clone();
    new[500_000..500_010].copy_from_slice(b"0123456789");
    std::fs::write(dir.join("basis"), &basis).unwrap();
    std::fs::write(dir.join("new"), &new).unwrap();
    rdiff(&[Path::new("signature"), &dir.join("basis"), &dir.join("sig")]);
    rdiff(&[
        Path::new("delta"),
        &dir.join("sig"),
        &dir.join("new"),
        &dir.join("r.delta"),
    ]);
    ok(&[
        "delta",
        p(&dir.join("sig")),
        p(&dir.join("new")),
        p(&dir.join("o.delta")),
    ]);
    let ours = std::fs::read(dir.join("o.delta")).unwrap();
    let theirs = std::fs::read(dir.join("r.delta")).unwrap();
    // rdiff copies the first zero block again and again (a command per block); snapsync continues one
    // COPY. What remains in both is the same literal bytes: the edit and the unmatched tail.
    assert_eq!(literal_bytes(&ours), literal_bytes(&theirs));
    assert!(
        ours.len() * 4 < theirs.len(),
        "ours {} vs rdiff {}",
        ours.len(),
        theirs.len()
    );
    rdiff(&[
        Path::new("patch"),
        &dir.join("basis"),
        &dir.join("o.delta"),
        &dir.join("out"),
    ]);
    assert!(std::fs::read(dir.join("out")).unwrap() == new);
}
