//! snapsync-delta through its public API: round trips, golden files made by rdiff, hostile input.

use std::path::PathBuf;

use proptest::prelude::*;
use snapsync_delta::{
    Error, PatchOptions, Signature, SignatureKind, SignatureParams, StrongKind, WeakKind, delta, patch,
    signature,
};

fn params(kind: SignatureKind, block_len: u32, strong_len: u32) -> SignatureParams {
    SignatureParams {
        kind,
        block_len,
        strong_len,
    }
}

/// Applies edits to a copy of `basis`: (position in thousandths, kind, length).
fn edited(basis: &[u8], edits: &[(usize, u8, usize)], fill: u8) -> Vec<u8> {
    let mut new = basis.to_vec();
    for &(at, kind, len) in edits {
        let at = (new.len() * at / 1000).min(new.len());
        let end = (at + len).min(new.len());
        match kind % 3 {
            0 => drop(new.splice(at..at, std::iter::repeat_n(fill, len))),
            1 => drop(new.splice(at..end, std::iter::empty())),
            _ => new[at..end]
                .iter_mut()
                .for_each(|b| *b = b.wrapping_add(fill | 1)),
        }
    }
    new
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn patch_of_delta_of_signature_is_the_new_file(
        basis in prop::collection::vec(any::<u8>(), 0..5000),
        edits in prop::collection::vec((0usize..=1000, any::<u8>(), 0usize..300), 0..6),
        fill in any::<u8>(),
        block_len in 1u32..700,
        kind in 0usize..4,
        strong_cut in 0u32..12,
    ) {
        let kind = SignatureKind::ALL[kind];
        let new = edited(&basis, &edits, fill);
        let p = params(kind, block_len, kind.max_strong_len() - strong_cut);
        let sig = signature(&basis, p).unwrap();
        let d = delta(&sig, &new).unwrap();
        prop_assert_eq!(patch(&basis, &d, PatchOptions::default()).unwrap(), new);
    }

    #[test]
    fn unrelated_files_patch_correctly_too(
        basis in prop::collection::vec(any::<u8>(), 0..2000),
        new in prop::collection::vec(any::<u8>(), 0..2000),
        block_len in 1u32..64,
    ) {
        let sig = signature(&basis, params(SignatureKind::default(), block_len, 32)).unwrap();
        let d = delta(&sig, &new).unwrap();
        prop_assert_eq!(patch(&basis, &d, PatchOptions::default()).unwrap(), new);
    }
}

#[test]
fn identical_files_give_one_copy() {
    let basis: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for kind in SignatureKind::ALL {
        let sig = signature(&basis, params(kind, 1000, kind.max_strong_len())).unwrap();
        let d = delta(&sig, &basis).unwrap();
        // magic, COPY(0, 100000) with 1-byte offset and 4-byte length, END
        assert_eq!(d, [0x72, 0x73, 0x02, 0x36, 0x47, 0, 0, 1, 0x86, 0xa0, 0]);
    }
}

#[test]
fn empty_inputs_work() {
    let p = params(SignatureKind::default(), 2048, 32);
    let empty_sig = signature(b"", p).unwrap();
    assert_eq!(
        Signature::read(&mut empty_sig.as_slice()).unwrap().block_count(),
        0
    );
    let d = delta(&empty_sig, b"hello").unwrap();
    assert_eq!(d, [0x72, 0x73, 0x02, 0x36, 5, b'h', b'e', b'l', b'l', b'o', 0]);
    assert_eq!(patch(b"", &d, PatchOptions::default()).unwrap(), b"hello");
    let sig = signature(b"something", p).unwrap();
    let d = delta(&sig, b"").unwrap();
    assert_eq!(d, [0x72, 0x73, 0x02, 0x36, 0]);
    assert_eq!(patch(b"something", &d, PatchOptions::default()).unwrap(), b"");
}

/// Golden files made by rdiff 2.3.2 (see tests/golden/README.md): snapsync writes the same signatures
/// byte for byte, and applies rdiff's deltas.
#[test]
fn golden_files_from_rdiff() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let basis = read("basis.bin");
    let new = read("new.bin");
    for (name, kind) in [
        (
            "rollsum-md4",
            SignatureKind {
                weak: WeakKind::Rollsum,
                strong: StrongKind::Md4,
            },
        ),
        (
            "rollsum-blake2",
            SignatureKind {
                weak: WeakKind::Rollsum,
                strong: StrongKind::Blake2,
            },
        ),
        (
            "rabinkarp-md4",
            SignatureKind {
                weak: WeakKind::RabinKarp,
                strong: StrongKind::Md4,
            },
        ),
        (
            "rabinkarp-blake2",
            SignatureKind {
                weak: WeakKind::RabinKarp,
                strong: StrongKind::Blake2,
            },
        ),
    ] {
        let golden_sig = read(&format!("{name}.sig"));
        let parsed = Signature::read(&mut golden_sig.as_slice()).unwrap();
        assert_eq!(parsed.params().kind, kind);
        assert_eq!(
            signature(&basis, parsed.params()).unwrap(),
            golden_sig,
            "{name}: signature differs from rdiff's"
        );
        let golden_delta = read(&format!("{name}.delta"));
        assert_eq!(
            patch(&basis, &golden_delta, PatchOptions::default()).unwrap(),
            new,
            "{name}: rdiff's delta"
        );
        let ours = delta(&golden_sig, &new).unwrap();
        assert!(
            ours.len() <= golden_delta.len(),
            "{name}: {} > rdiff's {}",
            ours.len(),
            golden_delta.len()
        );
        assert_eq!(patch(&basis, &ours, PatchOptions::default()).unwrap(), new);
    }
}

fn delta_bytes(commands: &[u8]) -> Vec<u8> {
    [&[0x72, 0x73, 0x02, 0x36][..], commands].concat()
}

fn patch_err(basis: &[u8], commands: &[u8], options: PatchOptions) -> String {
    patch(basis, &delta_bytes(commands), options)
        .unwrap_err()
        .to_string()
}

#[test]
fn hostile_deltas_are_clear_errors() {
    let basis = b"0123456789";
    let none = PatchOptions::default();
    let cases: &[(&[u8], &str)] = &[
        (
            &[],
            "the delta is truncated: it ends at byte 4 without an END command",
        ),
        (
            &[0x02, b'a', b'b'],
            "the delta is truncated: it ends at byte 7 without an END command",
        ),
        (
            &[0x03, b'a', b'b'],
            "the LITERAL at byte 4 needs 3 bytes but the delta ends after 2",
        ),
        (
            &[0x41],
            "the delta is truncated: it ends inside the command at byte 4",
        ),
        (&[0x41, 0], "corrupt delta at byte 4: LITERAL of 0 bytes"),
        (&[0x45, 0, 0, 0], "corrupt delta at byte 4: COPY of 0 bytes"),
        (
            &[0x45, 5, 6, 0],
            "corrupt delta at byte 4: COPY of bytes 5..11 but the basis has 10 bytes",
        ),
        (
            &[0x45, 0, 1, 0x45, 10, 1, 0],
            "corrupt delta at byte 7: COPY of bytes 10..11 but the basis has 10 bytes",
        ),
        (
            &[
                0x54, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0,
            ],
            "COPY of bytes 9223372036854775807..18446744073709551614 but the basis has 10 bytes",
        ),
        (
            &[0x51, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0],
            "parameter 18446744073709551615 is out of range",
        ),
        (&[0x55], "corrupt delta at byte 4: command byte 0x55 is reserved"),
        (&[0xff], "command byte 0xff is reserved"),
        (
            &[0x01, b'x', 0x00, 0x00],
            "corrupt delta at byte 7: data after the END command",
        ),
    ];
    for (commands, expected) in cases {
        let err = patch_err(basis, commands, none);
        assert!(
            err.contains(expected),
            "{commands:02x?}: {err:?} lacks {expected:?}"
        );
    }
    let err = patch(basis, b"\x72\x73\x01\x36\x00", none).unwrap_err();
    assert!(matches!(err, Error::BadMagic { what: "delta", .. }), "{err}");
    assert!(err.to_string().contains("starts with 0x72730136"), "{err}");
    assert!(
        patch(basis, b"rs", none)
            .unwrap_err()
            .to_string()
            .contains("2 bytes, too short")
    );
}

#[test]
fn the_output_cap_stops_small_deltas_with_huge_outputs() {
    let basis = vec![7u8; 1 << 20];
    // 64 COPYs of the whole basis: 64 MiB from a 260-byte delta.
    let mut commands = Vec::new();
    for _ in 0..64 {
        commands.extend_from_slice(&[0x47, 0, 0, 0x10, 0, 0]);
    }
    commands.push(0);
    let capped = PatchOptions {
        max_output: Some(10 << 20),
    };
    let err = patch(&basis, &delta_bytes(&commands), capped).unwrap_err();
    assert!(
        matches!(err, Error::OutputTooLarge { limit } if limit == 10 << 20),
        "{err}"
    );
    let exact = PatchOptions {
        max_output: Some(64 << 20),
    };
    assert_eq!(
        patch(&basis, &delta_bytes(&commands), exact).unwrap().len(),
        64 << 20
    );
    let literal = [&[0x41, 3][..], b"abc", &[0]].concat();
    let err = patch(b"", &delta_bytes(&literal), PatchOptions { max_output: Some(2) }).unwrap_err();
    assert!(matches!(err, Error::OutputTooLarge { limit: 2 }));
}

#[test]
fn every_valid_encoding_is_read_including_non_minimal_widths() {
    let basis: Vec<u8> = (0..=255u8).collect();
    // LITERAL inline, N1, N2, N4, N8; COPY with every width pair for offset 2, length 3.
    let mut commands = vec![
        0x01, b'a', 0x41, 1, b'b', 0x42, 0, 1, b'c', 0x43, 0, 0, 0, 1, b'd',
    ];
    commands.extend_from_slice(&[0x44, 0, 0, 0, 0, 0, 0, 0, 1, b'e']);
    let mut expected = b"abcde".to_vec();
    for offset_width in [1usize, 2, 4, 8] {
        for len_width in [1usize, 2, 4, 8] {
            let code = |w: usize| w.trailing_zeros() as u8;
            commands.push(0x45 + 4 * code(offset_width) + code(len_width));
            commands.extend_from_slice(&2u64.to_be_bytes()[8 - offset_width..]);
            commands.extend_from_slice(&3u64.to_be_bytes()[8 - len_width..]);
            expected.extend_from_slice(&[2, 3, 4]);
        }
    }
    commands.push(0);
    assert_eq!(
        patch(&basis, &delta_bytes(&commands), PatchOptions::default()).unwrap(),
        expected
    );
}

/// Regression: with every block identical, finding a block's class scanned the whole class on every
/// match (quadratic: this case did not finish). Binary searches make it quick.
#[test]
fn many_identical_blocks_do_not_make_delta_quadratic() {
    let basis = vec![0u8; 4 << 20];
    let sig = signature(&basis, params(SignatureKind::default(), 16, 32)).unwrap();
    let d = delta(&sig, &basis).unwrap();
    // One COPY of everything: offset 0 (1 byte), length 4 MiB (4 bytes).
    assert_eq!(d, [0x72, 0x73, 0x02, 0x36, 0x47, 0, 0, 0x40, 0, 0, 0]);
}
