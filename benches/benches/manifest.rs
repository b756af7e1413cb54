//! Criterion benches: manifest rendering, parsing and ids; file hashing by mapping versus by reading.
//!
//! Run with `cargo bench -p snapsync-benches`. The anchor comparisons (snapdir, b3sum) are in
//! `cargo xtask bench id`, which times whole commands.

use std::hint::black_box;
use std::io::Write;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snapsync_core::{Checksum, Entry, EntryKind, Manifest};

/// A manifest shaped like a source tree: 100 directories of 1,000 files each.
fn synthetic_manifest() -> Manifest {
    let mut entries = Vec::with_capacity(101_000);
    entries.push(Entry::new(EntryKind::Dir, 0o755, Checksum::EMPTY, 0, b"./".to_vec()).unwrap());
    for d in 0..100u32 {
        let dir = format!("./src/module_{d:03}/");
        entries.push(
            Entry::new(
                EntryKind::Dir,
                0o755,
                Checksum::of(dir.as_bytes()),
                0,
                dir.clone().into_bytes(),
            )
            .unwrap(),
        );
        for f in 0..1000u32 {
            let path = format!("{dir}file with spaces {f:04}.rs");
            let sum = Checksum::of(path.as_bytes());
            entries
                .push(Entry::new(EntryKind::File, 0o644, sum, u64::from(f) * 37, path.into_bytes()).unwrap());
        }
    }
    Manifest::new(entries).unwrap()
}

fn manifest(c: &mut Criterion) {
    let manifest = synthetic_manifest();
    let text = manifest.render();
    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(20);
    group.bench_function("render", |b| {
        let mut out = Vec::with_capacity(text.len());
        b.iter(|| {
            out.clear();
            manifest.write_to(&mut out).unwrap();
            black_box(out.len())
        });
    });
    group.bench_function("parse", |b| {
        b.iter(|| Manifest::parse(black_box(text.as_bytes())).unwrap());
    });
    group.bench_function("id", |b| b.iter(|| black_box(&manifest).id()));
    group.finish();
}

/// The large-file strategy: BLAKE3 over a guarded memory map on all cores (what `hash_file` does above
/// `MMAP_THRESHOLD`) against reading through a buffer on one core (what it does below), against a
/// pipelined read hashed on all cores (the alternative to mapping), and against hashing bytes already in
/// memory on all cores (the ceiling).
fn hash_file(c: &mut Criterion) {
    const SIZE: usize = 256 * 1024 * 1024;
    // As the snapsync binary does: big files are then hashed through memory maps.
    snapsync_core::install_sigbus_guard();
    let dir = tempfile_dir();
    let path = dir.join("big.bin");
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
    let mut group = c.benchmark_group("hash_file");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("snapsync", "mapped+rayon"), |b| {
        b.iter(|| snapsync_core::hash_file(&path).unwrap());
    });
    group.bench_function(BenchmarkId::new("snapsync", "read"), |b| {
        b.iter(|| snapsync_core::hash_read(std::fs::File::open(&path).unwrap()).unwrap());
    });
    group.bench_function(BenchmarkId::new("alternative", "pipelined-read+rayon"), |b| {
        b.iter(|| pipelined_read(&path));
    });
    group.bench_function(BenchmarkId::new("blake3", "in-memory+rayon"), |b| {
        b.iter(|| blake3::Hasher::new().update_rayon(black_box(&data)).finalize());
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

/// The best non-mapping alternative we found: one thread reads 8 MiB blocks while the hasher consumes the
/// previous block with `update_rayon`. Kept here so the choice of mapping stays measurable.
fn pipelined_read(path: &std::path::Path) -> blake3::Hash {
    use std::io::Read;
    use std::sync::mpsc::sync_channel;
    const BLOCK: usize = 8 * 1024 * 1024;
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        empty_tx.send(vec![0u8; BLOCK]).unwrap();
    }
    let mut file = std::fs::File::open(path).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Ok(mut block) = empty_rx.recv() {
                block.resize(BLOCK, 0);
                let mut filled = 0;
                while filled < BLOCK {
                    let n = file.read(&mut block[filled..]).unwrap();
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                block.truncate(filled);
                if full_tx.send(block).is_err() || filled == 0 {
                    break;
                }
            }
        });
        let mut hasher = blake3::Hasher::new();
        while let Ok(block) = full_rx.recv() {
            if block.is_empty() {
                break;
            }
            hasher.update_rayon(&block);
            let _ = empty_tx.send(block);
        }
        hasher.finalize()
    })
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("snapsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

criterion_group!(benches, manifest, hash_file);
criterion_main!(benches);
