//! Message bodies stream to a spool file above `spool_threshold` or past the server-wide
//! `memory_budget`: the exact bytes reach the handler, and a delivered, refused or abandoned
//! message leaves nothing in the spool directory.
#![cfg(feature = "tokio")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, b64, plain_config, start};
use smtp_auth::MemoryProvider;
use smtp_proto::Reply;
use smtp_server::{Envelope, Handler, Server, Session};

fn spool_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "smtp-spool-test-{name}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(d: &Path) -> usize {
    std::fs::read_dir(d).unwrap().count()
}

/// Whether a message was spooled, and its bytes.
type Kept = (bool, Vec<u8>);

/// Keeps each message as the handler saw it.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<Kept>>>);

impl Handler for Keep {
    async fn data(&self, _session: &Session, envelope: &Envelope) -> Reply {
        let bytes = envelope.body.to_bytes().await.unwrap().to_vec();
        assert_eq!(bytes.len() as u64, envelope.body.len());
        self.0
            .lock()
            .unwrap()
            .push((envelope.body.spool_path().is_some(), bytes));
        Reply::simple(250, Some((2, 0, 0)), "OK")
    }
}

/// A body of `n` lines, some dot-stuffed on the wire.
fn body(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    for i in 0..n {
        let line = if i % 50 == 0 {
            format!(".line {i:06} starts with a dot\r\n")
        } else {
            format!("line {i:06} of the message, some text to fill it up\r\n")
        };
        plain.extend_from_slice(line.as_bytes());
        if line.starts_with('.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line.as_bytes());
    }
    wire.extend_from_slice(b".\r\n");
    (plain, wire)
}

async fn session(addr: std::net::SocketAddr) -> Client<tokio::net::TcpStream> {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.example").await;
    c
}

#[tokio::test]
async fn a_large_message_is_spooled_and_delivered_exactly() {
    let dir = spool_dir("large");
    let keep = Keep::default();
    let cfg = plain_config()
        .spool_threshold(64 * 1024)
        .spool_dir(&dir)
        .build();
    let srv = start(Server::new(cfg, keep.clone())).await;
    let (small_plain, small_wire) = body(10);
    let (big_plain, big_wire) = body(60_000); // about 3 MiB
    let mut c = session(srv.addr).await;
    for wire in [&small_wire, &big_wire] {
        c.cmd("MAIL FROM:<a@example.org>").await;
        c.cmd("RCPT TO:<b@example.org>").await;
        assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
        c.send_bytes(wire).await;
        assert_eq!(c.reply().await, "250 2.0.0 OK");
    }
    // BDAT in three chunks, over the threshold too.
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    let third = big_plain.len() / 3;
    for (i, part) in [
        &big_plain[..third],
        &big_plain[third..2 * third],
        &big_plain[2 * third..],
    ]
    .into_iter()
    .enumerate()
    {
        let last = if i == 2 { " LAST" } else { "" };
        c.send(&format!("BDAT {}{last}\r\n", part.len())).await;
        c.send_bytes(part).await;
        let r = c.reply().await;
        assert!(r.starts_with("250"), "{r}");
    }
    let kept = keep.0.lock().unwrap().clone();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0], (false, small_plain));
    assert!(kept[1].0 && kept[2].0, "the large ones were spooled");
    assert!(
        kept[1].1 == big_plain && kept[2].1 == big_plain,
        "exact bytes"
    );
    assert_eq!(files_in(&dir), 0, "spool files are removed after delivery");
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn refused_and_abandoned_messages_leave_nothing() {
    let dir = spool_dir("refused");
    let cfg = plain_config()
        .spool_threshold(1024)
        .spool_dir(&dir)
        .max_message_size(200 * 1024)
        .build();
    let srv = start(Server::new(cfg, Keep::default())).await;
    let (_, wire) = body(10_000); // over max_message_size
    let mut c = session(srv.addr).await;
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&wire).await;
    assert_eq!(
        c.reply().await,
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(files_in(&dir), 0);
    // A client that goes away in the middle of a spooled body.
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&wire[..100 * 1024]).await;
    for _ in 0..200 {
        if files_in(&dir) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(files_in(&dir), 1, "spooling while it arrives");
    drop(c);
    for _ in 0..200 {
        if files_in(&dir) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        files_in(&dir),
        0,
        "the partial spool file went with the connection"
    );
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Holds each message until told, so several bodies are in the server at once.
#[derive(Clone)]
struct Slow(Keep, Arc<tokio::sync::Notify>);

impl Handler for Slow {
    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let r = self.0.data(session, envelope).await;
        self.1.notified().await;
        r
    }
}

#[tokio::test]
async fn past_the_memory_budget_small_bodies_are_spooled_too() {
    let dir = spool_dir("budget");
    let keep = Keep::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let cfg = plain_config()
        .spool_threshold(1024 * 1024)
        .memory_budget(64 * 1024)
        .spool_dir(&dir)
        .auth_require_tls(false)
        .build();
    let srv = start(
        Server::new(cfg, Slow(keep.clone(), release.clone()))
            .provider(MemoryProvider::new().with_user("a", "b")),
    )
    .await;
    let (plain, wire) = body(700); // about 35 KiB: under the threshold
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = session(srv.addr).await;
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0a\0b"))).await;
        c.cmd("MAIL FROM:<a@example.org>").await;
        c.cmd("RCPT TO:<b@example.org>").await;
        c.cmd("DATA").await;
        c.send_bytes(&wire).await;
        // Wait until the handler holds it (so its memory stays taken).
        let n = clients.len() + 1;
        for _ in 0..200 {
            if keep.0.lock().unwrap().len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        clients.push(c);
    }
    let spooled: Vec<bool> = keep.0.lock().unwrap().iter().map(|(s, _)| *s).collect();
    // 64 KiB hold one 35 KiB body; the next ones went to disk.
    assert_eq!(spooled, vec![false, true, true]);
    assert!(keep.0.lock().unwrap().iter().all(|(_, b)| *b == plain));
    for _ in 0..3 {
        release.notify_one();
    }
    for mut c in clients {
        assert_eq!(c.reply().await, "250 2.0.0 OK");
    }
    assert_eq!(files_in(&dir), 0);
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes every body straight into `dir/<n>.msg` after a prefix, and moves it to
/// `dir/done-<n>` when accepted.
#[derive(Clone)]
struct Files(PathBuf, Arc<std::sync::atomic::AtomicUsize>, Keep);

impl Handler for Files {
    async fn body_target(
        &self,
        _session: &Session,
        _envelope: &Envelope,
    ) -> Option<smtp_server::BodyTarget> {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(smtp_server::BodyTarget {
            path: self.0.join(format!("{n}.msg")),
            prefix: bytes::Bytes::from_static(b"X-Prefix: 1\r\n"),
        })
    }

    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let r = self.2.data(session, envelope).await;
        let path = envelope
            .body
            .spool_path()
            .expect("written to the target")
            .to_path_buf();
        let done = self.0.join(format!(
            "done-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::rename(&path, &done).unwrap();
        r
    }
}

#[tokio::test]
async fn a_handlers_body_target_gets_the_body_straight_and_can_keep_the_file() {
    let dir = spool_dir("target");
    let keep = Keep::default();
    let cfg = plain_config().max_message_size(100 * 1024).build();
    let srv = start(Server::new(
        cfg,
        Files(dir.clone(), Arc::default(), keep.clone()),
    ))
    .await;
    let (plain, wire) = body(100); // small: it still goes to the file, not to memory
    let mut c = session(srv.addr).await;
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&wire).await;
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    // The handler's Body excludes the prefix; the file holds prefix + body, moved by the handler.
    assert_eq!(keep.0.lock().unwrap()[0], (true, plain.clone()));
    let mut expected = b"X-Prefix: 1\r\n".to_vec();
    expected.extend_from_slice(&plain);
    assert_eq!(std::fs::read(dir.join("done-0.msg")).unwrap(), expected);
    // A refused message (too large) and an abandoned one leave no file behind.
    let (_, big) = body(5_000);
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&big).await;
    assert_eq!(
        c.reply().await,
        "552 5.3.4 Message size exceeds fixed limit"
    );
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&wire[..1000]).await;
    for _ in 0..200 {
        if dir.join("2.msg").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dir.join("2.msg").exists(), "written while it arrives");
    drop(c);
    for _ in 0..200 {
        if !dir.join("2.msg").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(files_in(&dir), 1, "only the accepted message stays");
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Records what it saw of a body, piece by piece.
#[derive(Debug, Default)]
struct Seen {
    bytes: Vec<u8>,
    pieces: usize,
    finished: bool,
}

impl smtp_server::BodyObserver for Seen {
    fn update(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        self.pieces += 1;
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

/// Observes every body and compares what its observer saw with what was stored.
#[derive(Clone, Default)]
struct Observing(Arc<Mutex<Vec<(usize, bool, bool)>>>);

impl Handler for Observing {
    fn body_observer(
        &self,
        _session: &Session,
        _envelope: &Envelope,
    ) -> Option<Box<dyn smtp_server::BodyObserver>> {
        Some(Box::new(Seen::default()))
    }

    async fn data(&self, _session: &Session, envelope: &Envelope) -> Reply {
        let stored = envelope.body.to_bytes().await.unwrap();
        let o = envelope.observed.as_deref().expect("observed");
        let seen = (o as &dyn std::any::Any)
            .downcast_ref::<Seen>()
            .expect("the handler's own type");
        self.0
            .lock()
            .unwrap()
            .push((seen.pieces, seen.finished, seen.bytes == stored[..]));
        Reply::simple(250, Some((2, 0, 0)), "OK")
    }
}

#[tokio::test]
async fn a_body_observer_sees_exactly_the_stored_body_in_pieces_while_it_arrives() {
    let seen = Observing::default();
    let dir = spool_dir("observer");
    let cfg = plain_config()
        .spool_threshold(16 * 1024)
        .spool_dir(dir.clone())
        .build();
    let srv = start(Server::new(cfg, seen.clone())).await;
    let mut c = session(srv.addr).await;
    // A spooled DATA body with dot-stuffed lines.
    let (_, wire) = body(3_000);
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.send_bytes(&wire).await;
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    // A BDAT message in two chunks.
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.send_bytes(b"BDAT 12\r\nSubject: x\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 12 octets received");
    c.send_bytes(b"BDAT 6 LAST\r\n\r\nhi\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    let got = seen.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for (pieces, finished, same) in &got {
        assert!(*finished, "finished before the DATA hook");
        assert!(*same, "saw exactly the stored body");
        assert!(*pieces >= 2, "fed while it arrives, {pieces} pieces");
    }
    assert!(got[0].0 > 10, "a large body arrives in many pieces");
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
