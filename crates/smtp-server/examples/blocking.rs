//! A blocking SMTP submission server with no async runtime: `std::net`, one thread per
//! connection, each driving the sans-IO session machine (`smtp_server::machine`). The machine
//! decides every protocol rule (sequencing, AUTH, limits, timeouts, pipelining); this file
//! only moves bytes, sleeps and answers the machine's calls. It builds without the crate's
//! `tokio` feature.
//!
//! Run it with `cargo run -p smtp-server --example blocking -- /tmp/mail`, then send with
//! Python's smtplib: `s = smtplib.SMTP('127.0.0.1', 2526); s.login('alice', 'wonderland')`.
//! Each accepted message becomes a file `<n>.eml` in the directory, behind one header naming
//! the login that sent it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use smtp_auth::{AuthDecision, LookupResult};
use smtp_proto::Reply;
use smtp_server::machine::{Call, Event, Machine, WrongState};
use smtp_server::{Body, ServerConfig};

/// The configuration: AUTH required, allowed without TLS because it listens on loopback.
pub fn config() -> ServerConfig {
    ServerConfig::builder()
        .hostname("blocking.example")
        .auth_required(true)
        .auth_require_tls(false)
        .max_message_size(1024 * 1024)
        .build()
}

/// Serves `connections` connections (all of them when `None`), each on its own thread,
/// writing accepted messages into `dir`. Returns once the last accepted connection is over.
pub fn serve(listener: TcpListener, dir: PathBuf, connections: Option<usize>) {
    // One configuration, so one AUTH failure limiter, for every connection: failures count
    // across them.
    let cfg = Arc::new(config());
    let dir: Arc<Path> = Arc::from(dir);
    let seq = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for stream in listener.incoming().take(connections.unwrap_or(usize::MAX)) {
        let Ok(stream) = stream else { continue };
        let (cfg, dir, seq) = (cfg.clone(), dir.clone(), seq.clone());
        threads.push(std::thread::spawn(move || {
            if let Err(e) = session(stream, cfg, &dir, &seq) {
                eprintln!("session ended: {e}");
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// One connection: read, feed, act on `next()`, write, sleep.
fn session(
    mut stream: TcpStream,
    cfg: Arc<ServerConfig>,
    dir: &Path,
    seq: &AtomicU64,
) -> std::io::Result<()> {
    let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
    let mut m = Machine::new(cfg, peer, local, Instant::now());
    let mut body = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        m.now(Instant::now());
        match m.next() {
            Event::Send => {
                stream.write_all(m.output())?;
                m.sent();
            }
            Event::Wait { deadline, read } => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    continue; // the machine acts on the deadline at the next step
                }
                if !read {
                    std::thread::sleep(left);
                    continue;
                }
                stream.set_read_timeout(Some(left))?;
                match stream.read(&mut buf) {
                    Ok(0) => m.input_closed(),
                    Ok(n) => m.enqueue_input(&buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => m.input_closed(),
                }
            }
            Event::MessageStart | Event::MessageDiscard => body.clear(),
            // The machine enforces the size limit; the chunks add up to at most that.
            Event::MessageChunk(chunk) => body.extend_from_slice(&chunk),
            Event::Call(call) => {
                if let Err(e) = answer(&mut m, call, &mut body, dir, seq) {
                    eprintln!("{e}");
                }
            }
            // Every call is answered at once here, and there is no handle_auth hook.
            Event::Pending | Event::AuthResponse(_) | Event::Close => return Ok(()),
        }
    }
}

/// Answers the machine's calls: one user, messages into files, every other hook its default.
fn answer(
    m: &mut Machine,
    call: Call,
    body: &mut Vec<u8>,
    dir: &Path,
    seq: &AtomicU64,
) -> Result<(), WrongState> {
    match call {
        Call::Auth { .. } => m.answer_auth(None),
        Call::Verify(req) => {
            let ok = req.username == "alice" && req.password.expose_secret() == "wonderland";
            // The decision alone: the exchange builds the identity it authenticated.
            m.answer_verify(
                if ok {
                    AuthDecision::Ok
                } else {
                    AuthDecision::Invalid
                }
                .into(),
            )
        }
        Call::Lookup(_) => m.answer_lookup(LookupResult::NotFound),
        Call::StoreMessage => {
            m.answer_stored(Some(Body::Memory(Bytes::from(std::mem::take(body)))))
        }
        Call::Data => {
            let reply = match deliver(m, dir, seq) {
                Ok(name) => Reply::simple(250, Some((2, 0, 0)), &format!("Kept as {name}")),
                Err(e) => {
                    eprintln!("cannot write the message: {e}");
                    Reply::simple(451, Some((4, 3, 0)), "Cannot store the message")
                }
            };
            m.answer_data(reply)
        }
        Call::DataLmtp => m.answer_lmtp(Vec::new()),
        // No TLS configured: the machine never asks.
        Call::StartTls => m.tls_failed(),
        _ => m.answer(None),
    }
}

/// Writes the envelope's message to `<dir>/<n>.eml` (through a temporary name, so a reader
/// never sees half a file).
fn deliver(m: &Machine, dir: &Path, seq: &AtomicU64) -> std::io::Result<String> {
    let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("{n}.eml");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let login = m.session().login_data.as_deref().unwrap_or("");
    write!(f, "X-Authenticated-User: {login}\r\n")?;
    let content = m.envelope().body.as_memory().cloned().unwrap_or_default();
    f.write_all(&content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(&name))?;
    Ok(name)
}

#[allow(dead_code)]
fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "mail".into()));
    std::fs::create_dir_all(&dir).expect("the mail directory can be created");
    let listener = TcpListener::bind("127.0.0.1:2526").expect("127.0.0.1:2526 is free");
    println!("listening on 127.0.0.1:2526, writing to {}", dir.display());
    serve(listener, dir, None);
}
