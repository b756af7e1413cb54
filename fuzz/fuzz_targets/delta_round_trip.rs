//! For any basis, new file, block length and signature kind: patch(basis, delta(signature(basis), new))
//! is the new file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_delta::{PatchOptions, SignatureKind, SignatureParams, delta, patch, signature};

fuzz_target!(|input: (u8, u8, Vec<u8>, Vec<u8>)| {
    let (block, kind, basis, new) = input;
    let kind = SignatureKind::ALL[usize::from(kind % 4)];
    let params = SignatureParams { kind, block_len: u32::from(block % 64) + 1, strong_len: kind.max_strong_len() };
    let sig = signature(&basis, params).expect("valid parameters");
    let d = delta(&sig, &new).expect("a signature just made reads back");
    assert_eq!(patch(&basis, &d, PatchOptions::default()).expect("own delta applies"), new);
});
