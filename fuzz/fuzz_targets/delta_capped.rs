//! A signature and a delta against a basis, with an output cap, as `patch` meets untrusted input. The
//! input is `CAP (u32 LE) | BASIS LEN (u32 LE) | BASIS | SIGNATURE LEN (u32 LE) | SIGNATURE | DELTA`
//! (the seeds are rdiff's signatures and deltas of their basis). Applying the delta under the cap never
//! panics and never writes more than the cap; a capped run that succeeds gives the same bytes as one
//! without a cap, and one whose output is within the cap succeeds. A signature that reads is indexed
//! and makes a delta of the patched output; when it is the signature of the basis, that delta patches
//! the basis back into the output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_delta::{IndexedSignature, PatchOptions, Signature, apply_delta, patch, signature, write_delta};

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?.min(rest.len());
    let (taken, rest) = rest.split_at(len);
    *data = rest;
    Some(taken)
}

fuzz_target!(|data: &[u8]| {
    let Some((cap, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    // Caps up to 1 MiB: more would only let a hostile delta use memory.
    let cap = u64::from(u32::from_le_bytes(*cap) % (1 << 20));
    let (Some(basis), Some(sig)) = (take(&mut rest), take(&mut rest)) else {
        return;
    };
    let delta = rest;

    let mut capped = Vec::new();
    let result = apply_delta(
        &basis,
        &mut &delta[..],
        &mut capped,
        PatchOptions {
            max_output: Some(cap),
        },
    );
    assert!(
        capped.len() as u64 <= cap,
        "{} bytes written under a cap of {cap}",
        capped.len()
    );
    let whole = patch(
        basis,
        delta,
        PatchOptions {
            max_output: Some(1 << 21),
        },
    );
    match (&result, &whole) {
        (Ok(stats), Ok(whole)) => {
            assert_eq!(stats.output_bytes, capped.len() as u64);
            assert_eq!(&capped, whole, "a capped patch gave other bytes");
        }
        (Ok(_), Err(e)) => panic!("patched under a cap of {cap}, but not under a larger one: {e}"),
        (Err(e), Ok(whole)) => {
            assert!(
                whole.len() as u64 > cap,
                "{} bytes within the cap of {cap} refused: {e}",
                whole.len()
            );
        }
        (Err(_), Err(_)) => {}
    }

    let Ok(read) = Signature::read(&mut &sig[..]) else {
        return;
    };
    let params = read.params();
    let index = IndexedSignature::new(read);
    let new = whole.as_deref().unwrap_or(delta);
    let mut ours = Vec::new();
    write_delta(&index, &mut &new[..], &mut ours, None).expect("writing to memory cannot fail");
    let of_basis = signature(basis, params).is_ok_and(|s| s == sig);
    let back = patch(
        basis,
        &ours,
        PatchOptions {
            max_output: Some(new.len() as u64),
        },
    );
    if of_basis {
        assert_eq!(
            back.expect("a delta against the basis's own signature applies"),
            new
        );
    }
});
