//! The transcript corpus in `tests/transcripts/`, served in-process: `smtpd::app::build` makes
//! the same `Server` the binary serves (users file, argon2 on the verification pool, sender
//! binding, Maildir delivery), and each transcript talks to it through
//! `Server::serve_connection` over a `tokio::io::duplex` pipe. No socket, no process; the
//! conformance run keeps the real-socket pass over the binary.

use std::path::Path;

use e2e::{
    TranscriptStep, file_config, maildir_messages, temp_dir, transcript_check, transcript_steps,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The transcript steps of `e2e::transcript_steps`, over any stream.
async fn replay(io: tokio::io::DuplexStream, text: &str) -> Result<(), String> {
    let (r, mut w) = tokio::io::split(io);
    let mut reader = BufReader::new(r);
    for step in transcript_steps(text)? {
        match step {
            TranscriptStep::Send(bytes) => w
                .write_all(&bytes)
                .await
                .map_err(|e| format!("write: {e}"))?,
            TranscriptStep::Expect { line, exact, want } => {
                let mut got = String::new();
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    reader.read_line(&mut got),
                )
                .await;
                match read {
                    Ok(Ok(k)) if k > 0 => {}
                    other => return Err(format!("line {line}: expected {want:?}, read {other:?}")),
                }
                transcript_check(line, exact, &want, &got)?;
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_corpus_in_process() {
    let dir = temp_dir("in-process");
    // The port is never bound: build() makes the servers without listening.
    let text = file_config(&dir, 9, "max_auth_failures = 10", false);
    let config = smtpd::config::Config::parse(&text, "in-process.toml").expect("config");
    let built = smtpd::app::build(&config).await.expect("build");
    let (_, server) = &built.servers[0];
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "the corpus is there");
    let peer = "127.0.0.1:40000".parse().unwrap();
    let local = "127.0.0.1:25".parse().unwrap();
    let mut failed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let (client, served) = tokio::io::duplex(64 * 1024);
        // The client side is dropped when the transcript ends, which ends the session.
        let (result, ()) = tokio::join!(
            replay(client, &text),
            server.serve_connection(served, peer, local)
        );
        if let Err(e) = result {
            failed.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The messages of the corpus reached the Maildir, each with its Received header.
    let delivered = maildir_messages(&dir.join("Maildir"));
    assert!(!delivered.is_empty());
    assert!(delivered.iter().all(|m| m.starts_with("Received: from ")));
    assert!(
        delivered
            .iter()
            .any(|m| m.contains("Subject: transcript\r\n\r\n.dot-stuffed line\r\n")),
        "{delivered:?}"
    );
}
