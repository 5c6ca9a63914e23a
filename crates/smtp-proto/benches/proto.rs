//! Benchmarks: commands parsed per second, and DATA decoding of 1 KiB, 100 KiB and 10 MiB bodies
//! against a plain `memchr` line scan of the same buffer (the ceiling). `cargo xtask bench`
//! prints the ratios.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use smtp_proto::{BarePolicy, Command, DataDecoder, DataEvent};
use std::hint::black_box;

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.org",
    b"MAIL FROM:<alice.smith@example.org> SIZE=123456 BODY=8BITMIME",
    b"RCPT TO:<bob@example.net>",
    b"RCPT TO:<carol+list@[192.0.2.7]> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+2Blist@example.net",
    b"DATA",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"NOOP",
    b"QUIT",
];

fn commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("commands");
    g.throughput(Throughput::Elements(COMMANDS.len() as u64));
    g.bench_function("parse_mix", |b| {
        b.iter(|| {
            for line in COMMANDS {
                black_box(Command::parse(black_box(line)).unwrap());
            }
        })
    });
    g.finish();
}

/// A wire-form body: 76-character text lines, some dot-stuffed, CRLF line endings, terminator.
fn body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut n = 0u32;
    while out.len() < size {
        n += 1;
        if n.is_multiple_of(50) {
            out.extend_from_slice(b"..a line that starts with a dot, stuffed on the wire\r\n");
        } else {
            out.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\r\n",
            );
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn data(c: &mut Criterion) {
    for (name, size) in [
        ("1KiB", 1024),
        ("100KiB", 100 * 1024),
        ("10MiB", 10 * 1024 * 1024),
    ] {
        let wire = body(size);
        let mut g = c.benchmark_group(format!("data_{name}"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        if size >= 1 << 20 {
            g.sample_size(20);
        }
        // The reference: a memchr scan that visits every line end, the least work any
        // line-aware body reader does.
        g.bench_function("memchr_scan", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(memchr::memchr_iter(b'\n', &buf[..]).fold(0usize, |a, p| a ^ p)),
                BatchSize::LargeInput,
            )
        });
        // For comparison only: memchr's vectorised count, which never stops at a match.
        g.bench_function("memchr_count", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(memchr::memchr_iter(b'\n', &buf[..]).count()),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("decode", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let mut d = DataDecoder::new(u64::MAX, BarePolicy::Reject);
                    let mut n = 0;
                    while let Some(ev) = d.decode(buf) {
                        match ev {
                            DataEvent::Chunk(c) => n += c.len(),
                            DataEvent::End(_) => break,
                        }
                    }
                    black_box(n)
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, commands, data);
criterion_main!(benches);
