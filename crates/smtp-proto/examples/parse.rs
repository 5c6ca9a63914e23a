//! Parses SMTP command lines from standard input (or a built-in transcript when stdin is a
//! terminal or empty) and prints each command, or the reply a server would send for it.
//!
//! `printf 'MAIL FROM:<a@b.c> SIZE=10\r\nRCPT TO:<bad\r\n' | cargo run -p smtp-proto --example parse`

use std::io::{IsTerminal, Read};

use smtp_proto::Command;

const SAMPLE: &str = "EHLO client.example.org\r\nMAIL FROM:<alice@example.org> SIZE=120 BODY=8BITMIME\r\nRCPT TO:<bob@example.net> NOTIFY=SUCCESS\r\nRCPT TO:<bad address>\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nFROB\r\nQUIT\r\n";

fn main() {
    let mut input = String::new();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let _ = stdin.lock().take(1 << 20).read_to_string(&mut input);
    }
    if input.trim().is_empty() {
        input = SAMPLE.to_owned();
    }
    for line in input.lines() {
        let line = line.trim_end_matches('\r');
        match Command::parse(line.as_bytes()) {
            Ok(cmd) => println!("{:<60} => {}", cmd.public_line(), cmd.verb()),
            Err(e) => println!("{:<60} => {}", line.get(..60).unwrap_or(line), e.reply()),
        }
    }
}
