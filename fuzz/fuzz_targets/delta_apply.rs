//! Arbitrary bytes as a delta (after a valid magic half the time) against a small basis: applying never
//! panics, never writes past the cap, and reports errors instead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapsync_delta::{PatchOptions, apply_delta};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let basis: Vec<u8> = (0..usize::from(first) * 3).map(|i| i as u8).collect();
    let delta: Vec<u8> = if first % 2 == 0 { [&[0x72, 0x73, 0x02, 0x36][..], rest].concat() } else { rest.to_vec() };
    let limit = 1 << 16;
    let mut out = Vec::new();
    let result = apply_delta(&&basis[..], &mut &delta[..], &mut out, PatchOptions { max_output: Some(limit) });
    assert!(out.len() as u64 <= limit);
    if let Ok(stats) = result {
        assert_eq!(stats.output_bytes, out.len() as u64);
    }
});
