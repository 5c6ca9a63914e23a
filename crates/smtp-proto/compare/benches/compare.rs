//! smtp-proto against Stalwart's smtp-proto 0.2.5 in one run (`cargo xtask bench` prints the
//! ratios): command lines one by one (all eight, and the seven both crates accept), a stream of 100 transcripts in 1,460-octet segments, and a
//! 10 MiB DATA body in 16 KiB chunks.

#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtp_proto_compare::*;
use std::hint::black_box;

fn commands(c: &mut Criterion) {
    let ours: Vec<&[u8]> = COMMANDS.to_vec();
    let theirs = lines_crlf();
    let mut g = c.benchmark_group("compare_commands");
    g.throughput(Throughput::Elements(COMMANDS.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_commands(black_box(&ours))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_commands(black_box(&theirs))))
    });
    g.finish();
    // The seven lines both crates accept (not the RCPT with an address literal).
    let ours = both_accept();
    let theirs = crlf(&ours);
    let mut g = c.benchmark_group("compare_commands_both_accept");
    g.throughput(Throughput::Elements(ours.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_commands(black_box(&ours))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_commands(black_box(&theirs))))
    });
    g.finish();
}

fn stream_(c: &mut Criterion) {
    let segs = stream(100, 1460);
    let mut g = c.benchmark_group("compare_stream");
    g.throughput(Throughput::Elements(800));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_stream(black_box(&segs))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_stream(black_box(&segs))))
    });
    g.finish();
}

fn stream_both_accept(c: &mut Criterion) {
    let segs = stream_of(&both_accept(), 100, 1460);
    let mut g = c.benchmark_group("compare_stream_both_accept");
    g.throughput(Throughput::Elements(700));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_stream(black_box(&segs))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_stream(black_box(&segs))))
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let wire = body(10 * 1024 * 1024);
    let mut g = c.benchmark_group("compare_data_10MiB");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.sample_size(20);
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_data(black_box(&wire), 16 * 1024)))
    });
    g.bench_function("ours_copied", |b| {
        b.iter(|| black_box(ours_data_copied(black_box(&wire), 16 * 1024)))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_data(black_box(&wire), 16 * 1024)))
    });
    g.finish();
}

criterion_group!(benches, commands, stream_, stream_both_accept, data);
criterion_main!(benches);
