//! Runs one comparison function `n` times, for instruction counts under callgrind that do not
//! drift with the machine's load: `count <commands|common|line<k>|stream|common_stream|data> <ours|stalwart> <n>`.
//! (`cargo xtask bench` reports time; this is for telling a few percent apart while working.)

use smtp_proto_compare::*;
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, who, n) = match &args[..] {
        [w, o, n] => (w.as_str(), o.as_str(), n.parse::<usize>().expect("a count")),
        _ => {
            eprintln!(
                "usage: count <commands|common|line<k>|stream|common_stream|data> <ours|ours_copied|stalwart> <n>"
            );
            std::process::exit(2);
        }
    };
    let ours: Vec<&[u8]> = COMMANDS.to_vec();
    let theirs = lines_crlf();
    let common = both_accept();
    let common_crlf = crlf(&common);
    let common_segs = stream_of(&common, 100, 1460);
    let segs = stream(100, 1460);
    let wire = body(1024 * 1024);
    let mut total = 0usize;
    for _ in 0..n {
        total += match (what, who) {
            ("commands", "ours") => ours_commands(black_box(&ours)),
            ("commands", "stalwart") => stalwart_commands(black_box(&theirs)),
            ("common", "ours") => ours_commands(black_box(&common)),
            ("common", "stalwart") => stalwart_commands(black_box(&common_crlf)),
            ("common_stream", "ours") => ours_stream(black_box(&common_segs)),
            ("common_stream", "stalwart") => stalwart_stream(black_box(&common_segs)),
            ("stream", "ours") => ours_stream(black_box(&segs)),
            ("stream", "stalwart") => stalwart_stream(black_box(&segs)),
            ("data", "ours") => ours_data(black_box(&wire), 16 * 1024),
            ("data", "ours_copied") => ours_data_copied(black_box(&wire), 16 * 1024).len(),
            ("data", "stalwart") => stalwart_data(black_box(&wire), 16 * 1024).len(),
            // `line<k>`: the k-th command line alone, to tell where a difference lies.
            (w, "ours") if w.starts_with("line") => {
                let k: usize = w[4..].parse().expect("a line number");
                ours_commands(black_box(&ours[k..k + 1]))
            }
            (w, "stalwart") if w.starts_with("line") => {
                let k: usize = w[4..].parse().expect("a line number");
                stalwart_commands(black_box(&theirs[k..k + 1]))
            }
            _ => panic!("unknown {what} {who}"),
        };
    }
    println!("{total}");
}
