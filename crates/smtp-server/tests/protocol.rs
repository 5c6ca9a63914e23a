//! Raw-socket transcripts: pipelining, DATA and BDAT, smuggling, limits, timeouts, LMTP,
//! shutdown.
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::{Client, Recorder, plain_config, start};
use smtp_proto::Reply;
use smtp_server::{Envelope, Handler, Server, Session};

async fn greeted(addr: std::net::SocketAddr) -> Client<tokio::net::TcpStream> {
    let mut c = Client::connect(addr).await;
    assert!(
        c.cmd("EHLO client.example")
            .await
            .starts_with("250-localhost")
    );
    c
}

#[tokio::test]
async fn ehlo_lists_the_extensions() {
    let srv = start(Server::new(
        plain_config().max_message_size(1000).build(),
        Recorder::default(),
    ))
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.cmd("EHLO client.example").await,
        "250-localhost\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250-CHUNKING\n250-BINARYMIME\n250-SMTPUTF8\n250 AUTH PLAIN LOGIN"
    );
    assert_eq!(c.cmd("HELO client.example").await, "250 localhost");
    srv.shutdown().await;
}

#[tokio::test]
async fn pipelined_batch_gets_all_replies_in_order() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone())).await;
    let mut c = greeted(srv.addr).await;
    c.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<bad\r\nRCPT TO:<g@h.i>\r\nDATA\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.1.0 Sender OK");
    assert_eq!(c.reply().await, "250 2.1.5 Recipient OK");
    assert_eq!(c.reply().await, "501 5.1.3 Bad recipient address syntax");
    assert_eq!(c.reply().await, "250 2.1.5 Recipient OK");
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    c.send("..dot\r\nline\r\n.\r\nRSET\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 OK: queued");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    let m = rec.taken();
    assert_eq!(m[0].to, vec!["<d@e.f>", "<g@h.i>"]);
    assert_eq!(m[0].content, b".dot\r\nline\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn sequencing_errors() {
    let srv = start(Server::new(
        plain_config().max_recipients(1).build(),
        Recorder::default(),
    ))
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>").await,
        "503 5.5.1 Send HELO/EHLO first"
    );
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd("RCPT TO:<a@b.c>").await,
        "503 5.5.1 Need MAIL command"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Need MAIL command");
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c> SIZE=999999999999").await,
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c> X-UNKNOWN=1").await,
        "555 5.5.4 Unsupported parameter"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c> RET=HDRS ENVID=abc").await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>").await,
        "503 5.5.1 Sender already specified"
    );
    assert_eq!(c.cmd("DATA").await, "554 5.5.1 No valid recipients");
    assert_eq!(
        c.cmd("RCPT TO:<x@y.z> NOTIFY=SUCCESS ORCPT=rfc822;x@y.z")
            .await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x2@y.z>").await,
        "452 4.5.3 Too many recipients"
    );
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    assert_eq!(
        c.cmd("VRFY bob").await,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
    );
    assert_eq!(c.cmd("EXPN list").await, "502 5.5.1 EXPN not supported");
    assert_eq!(
        c.cmd("FROB").await,
        "500 5.5.2 Syntax error, command unrecognized"
    );
    assert_eq!(
        c.cmd(&format!("NOOP {}", "x".repeat(600))).await,
        "500 5.5.6 Line too long"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<用户@例子.广告>").await,
        "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<用户@例子.广告> SMTPUTF8").await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    srv.shutdown().await;
}

#[tokio::test]
async fn bare_lf_smuggling_is_refused() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone())).await;
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    // A smuggled second message after <LF>.<LF> must not be executed.
    c.send("Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nevil\r\n.\r\n").await;
    assert_eq!(
        c.reply().await,
        "550 5.6.0 Message refused: bare CR or LF in message data"
    );
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert!(rec.taken().is_empty(), "nothing delivered");
    srv.shutdown().await;
}

#[tokio::test]
async fn oversized_message_is_552_and_the_session_goes_on() {
    let rec = Recorder::default();
    let srv = start(Server::new(
        plain_config().max_message_size(100).build(),
        rec.clone(),
    ))
    .await;
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    let big = "x".repeat(70) + "\r\n";
    c.send(&big.repeat(50)).await;
    assert_eq!(
        c.cmd(".").await,
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, "250 2.1.0 Sender OK");
    assert!(rec.taken().is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn bdat_chunks() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone())).await;
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c> BODY=BINARYMIME").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    assert_eq!(
        c.cmd("DATA").await,
        "503 5.5.1 BODY=BINARYMIME requires BDAT"
    );
    c.send("BDAT 5\r\nab\r\n.").await;
    assert_eq!(c.reply().await, "250 2.0.0 5 octets received");
    c.send("BDAT 3 LAST\r\n\0\n\r").await;
    assert_eq!(c.reply().await, "250 2.0.0 OK: queued");
    assert_eq!(rec.taken()[0].content, b"ab\r\n.\0\n\r");
    srv.shutdown().await;
}

#[tokio::test]
async fn bdat_without_transaction_reads_and_refuses() {
    let srv = start(Server::new(plain_config().build(), Recorder::default())).await;
    let mut c = greeted(srv.addr).await;
    // The 4 octets "QUIT" are the chunk, not a command.
    c.send("BDAT 6\r\nQUIT\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL command");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_client_gets_421_4_4_2() {
    let cfg = plain_config()
        .read_timeout(Duration::from_millis(300))
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = greeted(srv.addr).await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout, closing connection");
    assert_eq!(c.reply().await, "");
    // Also in the middle of DATA.
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    c.send("partial line").await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout, closing connection");
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_421() {
    let srv = start(Server::new(plain_config().build(), Recorder::default())).await;
    let mut c = greeted(srv.addr).await;
    let addr = srv.addr;
    srv.shutdown().await;
    assert_eq!(
        c.reply().await,
        "421 4.3.2 Service shutting down, closing connection"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_lets_data_in_flight_finish() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone())).await;
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    c.send("first half\r\n").await;
    let stop = tokio::spawn(srv.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.cmd("second half\r\n.").await, "250 2.0.0 OK: queued");
    assert_eq!(
        c.reply().await,
        "421 4.3.2 Service shutting down, closing connection"
    );
    stop.await.unwrap();
    assert_eq!(rec.taken()[0].content, b"first half\r\nsecond half\r\n");
}

#[tokio::test]
async fn max_connections() {
    let srv = start(Server::new(
        plain_config().max_connections(1).build(),
        Recorder::default(),
    ))
    .await;
    let _first = greeted(srv.addr).await;
    let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut second = Client {
        io: tokio::io::BufReader::new(s),
    };
    assert_eq!(
        second.reply().await,
        "421 4.3.2 Too many connections, try again later"
    );
    srv.shutdown().await;
}

struct Lmtp;
impl Handler for Lmtp {
    async fn data_lmtp(&self, _s: &Session, env: &Envelope) -> Vec<Reply> {
        env.rcpt_to
            .iter()
            .map(|r| {
                if r.to_string().contains("full") {
                    Reply::simple(452, Some((4, 2, 2)), "Mailbox full")
                } else {
                    Reply::simple(250, Some((2, 0, 0)), "Delivered")
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn lmtp_replies_per_recipient() {
    let srv = start(Server::new(plain_config().lmtp(true).build(), Lmtp)).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.cmd("EHLO x.y").await,
        "500 5.5.1 This is an LMTP server: use LHLO"
    );
    assert!(c.cmd("LHLO x.y").await.starts_with("250-localhost"));
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<one@b.c>").await;
    c.cmd("RCPT TO:<full@b.c>").await;
    c.cmd("DATA").await;
    c.send("hi\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Delivered");
    assert_eq!(c.reply().await, "452 4.2.2 Mailbox full");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_sending_only_garbage_is_dropped() {
    let srv = start(Server::new(
        plain_config().max_errors(3).build(),
        Recorder::default(),
    ))
    .await;
    let mut c = greeted(srv.addr).await;
    assert_eq!(
        c.cmd("FROB").await,
        "500 5.5.2 Syntax error, command unrecognized"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<bad").await,
        "501 5.1.7 Bad sender address syntax"
    );
    c.send("\x00\x01\r\n").await;
    assert_eq!(
        c.reply().await,
        "500 5.5.2 Syntax error, command unrecognized"
    );
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert_eq!(c.reply().await, "");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let cfg = plain_config()
        .read_timeout(Duration::from_millis(300))
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    // Pipeline NOOPs without ever reading a reply: the server's replies fill the socket
    // buffers, its writes stall, the write deadline ends the session, our writes then fail.
    let batch = b"NOOP\r\n".repeat(10_000);
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..2_000 {
            if s.write_all(&batch).await.is_err() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(outcome, Ok(true), "the server closed the connection");
    srv.shutdown().await;
}

#[tokio::test]
async fn ehlo_names_that_are_not_domains() {
    let srv = start(Server::new(plain_config().build(), Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    assert!(c.cmd("EHLO DESKTOP_42").await.starts_with("250-localhost"));
    srv.shutdown().await;
    let srv = start(Server::new(
        plain_config().lenient_helo(false).build(),
        Recorder::default(),
    ))
    .await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.cmd("EHLO DESKTOP_42").await,
        "501 5.5.4 Invalid domain name"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_trickling_body_hits_the_data_deadline() {
    let cfg = plain_config()
        .read_timeout(Duration::from_secs(5))
        .max_data_duration(Duration::from_millis(500))
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = greeted(srv.addr).await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    // One line every 100 ms: each read is quick, the body as a whole is too slow.
    let mut answer = String::new();
    for _ in 0..30 {
        c.send("x\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), c.reply()).await {
            answer = r;
            break;
        }
    }
    assert_eq!(answer, "421 4.4.2 Timeout, closing connection");
    srv.shutdown().await;
}

#[tokio::test]
async fn paths_without_brackets_follow_the_lenient_paths_option() {
    for (lenient, from, rcpt) in [
        (true, "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"),
        (
            false,
            "501 5.1.7 Bad sender address syntax",
            "503 5.5.1 Need MAIL command",
        ),
    ] {
        let cfg = plain_config().lenient_paths(lenient).build();
        let srv = start(Server::new(cfg, Recorder::default())).await;
        let mut c = greeted(srv.addr).await;
        c.cmd("EHLO client.example").await;
        assert_eq!(
            c.cmd("MAIL FROM:  alice@example.org").await,
            from,
            "{lenient}"
        );
        assert_eq!(c.cmd("RCPT TO: bob@example.org").await, rcpt, "{lenient}");
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn bare_lf_command_lines_follow_the_forbid_bare_newline_option() {
    for (forbid, noop) in [
        (false, "250 2.0.0 OK"),
        (
            true,
            "500 5.5.2 Command line must end with CRLF, not a bare LF",
        ),
    ] {
        let cfg = plain_config().forbid_bare_newline(forbid).build();
        let srv = start(Server::new(cfg, Recorder::default())).await;
        let mut c = greeted(srv.addr).await;
        c.send("NOOP\n").await;
        assert_eq!(c.reply().await, noop, "{forbid}");
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
        srv.shutdown().await;
    }
}
