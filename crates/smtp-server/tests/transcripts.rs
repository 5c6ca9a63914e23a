//! The transcript corpus in `tests/transcripts/`, run in-process: each session is served by
//! `Server::serve_connection` over a `tokio::io::duplex` pipe under paused tokio time, so
//! timeouts, `max_data_duration`, `auth_timeout` and the AUTH failure delay are exact to the
//! millisecond and take no real time.
//!
//! The format, one line each:
//! - `! key value`: a configuration option (durations as `60s` or `1500ms`);
//! - `C: text`: the client sends `text` and CRLF; `P: text`: sends `text` as is, with `\r` and
//!   `\n` written as escapes (pipelining, partial lines, message bodies);
//! - `S: text`: the next reply line is exactly `text`; `S~ text`: it starts with `text` (the
//!   lines before it are skipped, for EHLO lists);
//! - `T: 59s`: the client waits this long; `N:`: nothing has arrived by now (no time
//!   passes); `E:`: the server closed the connection.
#![cfg(feature = "tokio")]

use std::time::Duration;

use smtp_auth::{AuthDecision, AuthRequest, provider_fn};
use smtp_proto::Reply;
use smtp_server::{Envelope, Handler, Server, ServerConfig, Session};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Answers every message with its size, recipient count and login.
struct Sizes;

impl Handler for Sizes {
    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        Reply::simple(
            250,
            Some((2, 0, 0)),
            &format!(
                "Queued: {} octets for {} recipients from {}",
                envelope.body.len(),
                envelope.rcpt_to.len(),
                session.login_data.as_deref().unwrap_or("nobody")
            ),
        )
    }
}

fn duration(text: &str) -> Duration {
    if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("milliseconds"))
    } else if let Some(s) = text.strip_suffix('s') {
        Duration::from_secs(s.parse().expect("seconds"))
    } else {
        panic!("a duration ends in s or ms: {text}")
    }
}

fn config(text: &str) -> ServerConfig {
    let mut b = ServerConfig::builder()
        .hostname("mx.test")
        .greeting("ESMTP ready")
        .auth_require_tls(false)
        .auth_failure_delay(Duration::ZERO);
    for line in text.lines().filter_map(|l| l.strip_prefix("! ")) {
        let (key, value) = line.split_once(' ').expect("! key value");
        b = match key {
            "read_timeout" => b.read_timeout(duration(value)),
            "max_data_duration" => b.max_data_duration(duration(value)),
            "max_session_duration" => b.max_session_duration(duration(value)),
            "auth_failure_delay" => b.auth_failure_delay(duration(value)),
            "auth_timeout" => b.auth_timeout(duration(value)),
            "max_auth_failures" => b.max_auth_failures(value.parse().unwrap()),
            other => panic!("unknown option {other}"),
        };
    }
    b.build()
}

fn server(text: &str) -> Server<Sizes> {
    // alice/wonderland; "slow" never gets an answer; everyone else is refused.
    Server::new(config(text), Sizes).provider(provider_fn(|req: AuthRequest| async move {
        if req.username == "slow" {
            std::future::pending::<()>().await;
        }
        if req.username == "alice" && req.password.expose_secret() == "wonderland" {
            AuthDecision::Ok
        } else {
            AuthDecision::Invalid
        }
    }))
}

/// Runs one transcript; `Err` names the line that failed.
async fn run(text: &str) -> Result<(), String> {
    let srv = server(text);
    let (client, served) = tokio::io::duplex(64 * 1024);
    let conn = srv.serve_connection(
        served,
        "192.0.2.7:40000".parse().unwrap(),
        "192.0.2.25:25".parse().unwrap(),
    );
    let script = async move {
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        let mut line = String::new();
        for (n, l) in text.lines().enumerate() {
            let at = |what: String| format!("line {}: {l}: {what}", n + 1);
            if l.starts_with('#') || l.starts_with("! ") || l.is_empty() {
                continue;
            }
            let (tag, rest) = l.split_at(2);
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match tag {
                "C:" => w
                    .write_all(format!("{rest}\r\n").as_bytes())
                    .await
                    .map_err(|e| at(e.to_string()))?,
                "P:" => w
                    .write_all(rest.replace("\\r", "\r").replace("\\n", "\n").as_bytes())
                    .await
                    .map_err(|e| at(e.to_string()))?,
                "T:" => tokio::time::sleep(duration(rest)).await,
                "N:" => {
                    // Let the server act on everything due by now (both sides run in this
                    // task), then look without letting time pass.
                    for _ in 0..16 {
                        tokio::task::yield_now().await;
                    }
                    let got = tokio::time::timeout(Duration::ZERO, r.fill_buf()).await;
                    if let Ok(Ok(buf)) = got {
                        return Err(at(format!("got {:?}", String::from_utf8_lossy(buf))));
                    }
                }
                "E:" => {
                    line.clear();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => {}
                        Ok(_) => return Err(at(format!("got {line:?} instead of the end"))),
                    }
                }
                "S:" | "S~" => loop {
                    line.clear();
                    let read = r
                        .read_line(&mut line)
                        .await
                        .map_err(|e| at(e.to_string()))?;
                    if read == 0 {
                        return Err(at("connection closed".into()));
                    }
                    let got = line.trim_end_matches("\r\n");
                    if tag == "S:" {
                        if got != rest {
                            return Err(at(format!("got {got:?}")));
                        }
                        break;
                    }
                    if got.starts_with(rest) {
                        break;
                    }
                },
                _ => return Err(at("unknown tag".into())),
            }
        }
        Ok(())
    };
    let ((), result) = tokio::join!(conn, script);
    result
}

#[tokio::test(start_paused = true)]
async fn the_corpus_runs_in_process_with_exact_time() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the corpus is there");
    let mut failed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if let Err(e) = run(&text).await {
            failed.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_expectation_fails() {
    // The runner itself: a transcript that expects the wrong text or the wrong time fails.
    let text = "! read_timeout 60s\nS: 220 mx.test ESMTP ready\nT: 59s\nS: 421 4.4.2 Timeout, closing connection\n";
    // The 421 comes at 60 s: waiting 59 s then reading gets it; "nothing yet" at 60 s fails.
    assert!(run(text).await.is_ok());
    let early = "! read_timeout 60s\nS: 220 mx.test ESMTP ready\nT: 60s\nN:\n";
    assert!(run(early).await.unwrap_err().contains("421 4.4.2"));
    let wrong = "S: 220 mx.test ESMTP ready\nC: NOOP\nS: 250 2.0.0 Fine\n";
    assert!(run(wrong).await.unwrap_err().contains("250 2.0.0 OK"));
}

/// A `handle_auth` hook that challenges once and reports what its read returned.
struct Challenger(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Handler for Challenger {
    async fn handle_auth(
        &self,
        channel: &mut smtp_server::AuthChannel<'_>,
        _session: &Session,
        _mechanism: &str,
        _initial: Option<&[u8]>,
    ) -> Option<smtp_auth::AuthResult> {
        let got = channel.challenge(b"PIN?").await;
        self.0.lock().unwrap().push(match &got {
            Ok(smtp_auth::sasl::Response::Data(r)) => {
                format!("response {}", String::from_utf8_lossy(r.expose_secret()))
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error {:?}", e.kind()),
        });
        match got {
            Ok(smtp_auth::sasl::Response::Data(_)) => Some(smtp_auth::AuthResult::success(None)),
            _ => Some(smtp_auth::AuthResult::failure(
                smtp_auth::AuthStatus::Cancelled,
            )),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_handle_auth_hook_reads_under_the_read_timeout() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = || {
        ServerConfig::builder()
            .hostname("mx.test")
            .auth_require_tls(false)
            .read_timeout(Duration::from_secs(20))
            .build()
    };
    // An answer: the hook gets it, decoded by the one SASL decoder.
    let srv = Server::new(cfg(), Challenger(seen.clone()));
    let (client, served) = tokio::io::duplex(4096);
    let peer = "192.0.2.7:1".parse().unwrap();
    let script = async move {
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        let mut out = String::new();
        w.write_all(b"EHLO c\r\nAUTH X-PIN\r\n").await.unwrap();
        while !out.ends_with("334 UElOPw==\r\n") {
            r.read_line(&mut out).await.unwrap();
        }
        w.write_all(b"MTIzNA==\r\nQUIT\r\n").await.unwrap();
        let mut rest = String::new();
        while r.read_line(&mut rest).await.unwrap() > 0 {}
        rest
    };
    let ((), rest) = tokio::join!(srv.serve_connection(served, peer, peer), script);
    assert_eq!(
        rest,
        "235 2.7.0 Authentication successful\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(seen.lock().unwrap().pop().unwrap(), "response 1234");
    // No answer: the read timeout ends the session at 20 s exactly, and the hook's read fails.
    let srv = Server::new(cfg(), Challenger(seen.clone()));
    let (client, served) = tokio::io::duplex(4096);
    let script = async move {
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        let mut out = String::new();
        w.write_all(b"EHLO c\r\nAUTH X-PIN\r\n").await.unwrap();
        while !out.ends_with("334 UElOPw==\r\n") {
            r.read_line(&mut out).await.unwrap();
        }
        let asked = tokio::time::Instant::now();
        let mut rest = String::new();
        while r.read_line(&mut rest).await.unwrap() > 0 {}
        (rest, asked.elapsed())
    };
    let ((), (rest, waited)) = tokio::join!(srv.serve_connection(served, peer, peer), script);
    assert_eq!(rest, "421 4.4.2 Timeout, closing connection\r\n");
    assert_eq!(waited, Duration::from_secs(20));
    assert_eq!(seen.lock().unwrap().pop().unwrap(), "error UnexpectedEof");
}
