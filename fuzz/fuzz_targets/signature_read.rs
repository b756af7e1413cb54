//! Arbitrary bytes as a signature: reading never panics or over-allocates, and whatever reads can be
//! indexed and used to make a delta of some data, which then patches against nothing without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_delta::{IndexedSignature, PatchOptions, Signature, apply_delta, write_delta};

fuzz_target!(|data: &[u8]| {
    let Ok(signature) = Signature::read(&mut &data[..]) else { return };
    let index = IndexedSignature::new(signature);
    let mut delta = Vec::new();
    let new = &data[data.len() / 2..];
    write_delta(&index, &mut &new[..], &mut delta, None).expect("writing to memory cannot fail");
    // The basis is unknown here: patching against an empty one may fail, but only with an error.
    let _ = apply_delta(&&b""[..], &mut &delta[..], &mut Vec::new(), PatchOptions { max_output: Some(1 << 20) });
});
