//! Criterion benches for snapsync-delta: signature, delta and patch throughput on 64 MiB with ~1% of it
//! edited, in memory (no disk). rdiff is compared in the same run by `cargo xtask bench delta`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snapsync_delta::{PatchOptions, SignatureKind, SignatureParams, delta, patch, signature};

const SIZE: usize = 64 * 1024 * 1024;

fn data() -> (Vec<u8>, Vec<u8>) {
    let mut x = 0x5eed_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let basis: Vec<u8> = (0..SIZE / 8).flat_map(|_| next().to_le_bytes()).collect();
    let mut new = basis.clone();
    // ~1%: one 5 KiB replacement every 512 KiB.
    for at in (0..SIZE - 8192).step_by(512 * 1024) {
        let at = at + (next() % 4096) as usize;
        for b in &mut new[at..at + 5120] {
            *b = next() as u8;
        }
    }
    (basis, new)
}

fn delta_ops(c: &mut Criterion) {
    let (basis, new) = data();
    let mut group = c.benchmark_group("delta");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    for kind in [SignatureKind::default(), SignatureKind::ALL[0]] {
        let params = SignatureParams::recommended(kind, Some(SIZE as u64), None, None).unwrap();
        let label = format!("{:?}+{:?}", kind.weak, kind.strong);
        group.bench_function(BenchmarkId::new("signature", &label), |b| {
            b.iter(|| signature(black_box(&basis), params).unwrap());
        });
        let sig = signature(&basis, params).unwrap();
        group.bench_function(BenchmarkId::new("delta", &label), |b| {
            b.iter(|| delta(black_box(&sig), black_box(&new)).unwrap());
        });
        let d = delta(&sig, &new).unwrap();
        group.bench_function(BenchmarkId::new("patch", &label), |b| {
            b.iter(|| patch(black_box(&basis), black_box(&d), PatchOptions::default()).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, delta_ops);
criterion_main!(benches);
