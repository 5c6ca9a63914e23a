//! smtp-proto against Stalwart's smtp-proto 0.2.5 in one run (`cargo xtask bench` prints the
//! ratios): command lines one by one and a stream of 100 transcripts in 1,460-octet segments
//! (each on all eight lines, and on the seven both crates accept), and a 10 MiB DATA body in
//! 16 KiB chunks.

#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtp_proto_compare::*;
use std::hint::black_box;

/// One group: `ours` and `stalwart` over the same command lines, one by one.
fn command_group(c: &mut Criterion, name: &str, ours: &[&[u8]]) {
    let theirs = crlf(ours);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(ours.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_commands(black_box(ours))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_commands(black_box(&theirs))))
    });
    g.finish();
}

/// One group: `ours` and `stalwart` over 100 transcripts of the lines, in 1,460-octet segments.
fn stream_group(c: &mut Criterion, name: &str, lines: &[&[u8]]) {
    let segs = stream_of(lines, 100, 1460);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(100 * lines.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours_stream(black_box(&segs))))
    });
    g.bench_function("stalwart", |b| {
        b.iter(|| black_box(stalwart_stream(black_box(&segs))))
    });
    g.finish();
}

fn commands(c: &mut Criterion) {
    command_group(c, "compare_commands", COMMANDS);
    // The seven lines both crates accept (not the RCPT with an address literal).
    command_group(c, "compare_commands_both_accept", &both_accept());
}

fn stream_(c: &mut Criterion) {
    stream_group(c, "compare_stream", COMMANDS);
    stream_group(c, "compare_stream_both_accept", &both_accept());
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

criterion_group!(benches, commands, stream_, data);
criterion_main!(benches);
