//! A blocking SMTP AUTH server on `std::net` with no async runtime: the proof that the sans-IO
//! core runs anywhere. Threads, blocking sockets, `smtp-proto` for framing, `smtp-auth` for
//! every AUTH exchange.
//!
//! Run: `cargo run -p smtp-auth --example blocking` (listens on 127.0.0.1:2525; set
//! `SMTP_AUTH_EXAMPLE_ADDR` to change it). Demo user: `demo` / `demo-password`.
//! Try: `curl -v smtp://127.0.0.1:2525 --user demo:demo-password --mail-from a@b.c` (it
//! authenticates, then the example refuses mail: it only does AUTH).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use smtp_auth::{AuthExchange, MemoryProvider, Registry, SessionInfo, Step, smtp};
use smtp_proto::{Command, LineDecoder, LineEvent, Reply};

/// Most simultaneous sessions; more are answered 421 and closed.
const MAX_SESSIONS: usize = 64;
/// Every read and every write waits at most this long.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed AUTH attempts per connection before 421.
const MAX_AUTH_FAILURES: u32 = 3;

/// The demo users.
pub fn demo_users() -> MemoryProvider {
    MemoryProvider::new().with_user("demo", "demo-password")
}

/// Accepts connections until `max_connections` were served (`None`: forever).
pub fn serve(listener: TcpListener, users: MemoryProvider, max_connections: Option<usize>) {
    let registry = Registry::all_builtin();
    let active = Arc::new(AtomicUsize::new(0));
    let mut served = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_SESSIONS {
            let _ = stream.write_all(b"421 4.3.2 Too many connections\r\n");
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (registry, users, active) = (registry.clone(), users.clone(), active.clone());
        std::thread::spawn(move || {
            let _ = session(stream, &registry, &users);
            active.fetch_sub(1, Ordering::SeqCst);
        });
        served += 1;
        if max_connections.is_some_and(|m| served >= m) {
            return;
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// The next line under `decoder`'s limit; `None` at EOF, timeout or error.
    fn line(&mut self, decoder: &mut LineDecoder) -> Option<LineEvent> {
        loop {
            if let Some(ev) = decoder.decode(&mut self.buf) {
                return Some(ev);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())
    }
}

fn session(stream: TcpStream, registry: &Registry, users: &MemoryProvider) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
    };
    let mut commands = LineDecoder::default();
    let mut sasl = LineDecoder::new(12288 + 2);
    let mut info = SessionInfo::default();
    info.remote_ip = Some(peer.ip());
    info.server_name = "localhost".into();
    let mut authenticated: Option<String> = None;
    let mut failures = 0;
    conn.send("220 localhost ESMTP smtp-auth blocking example")?;
    loop {
        let cmd = match conn.line(&mut commands) {
            None => return Ok(()),
            Some(LineEvent::TooLong) => Err(smtp_proto::ProtoError::LineTooLong),
            Some(LineEvent::Line(l)) => Command::parse(&l),
        };
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                conn.send(&e.reply().to_string())?;
                continue;
            }
        };
        match cmd {
            Command::Ehlo(host) => {
                info.helo_name = Some(host.to_string());
                let mechs = registry.offered(false).join(" ");
                conn.send(&format!(
                    "250-localhost\r\n250-AUTH {mechs}\r\n250 ENHANCEDSTATUSCODES"
                ))?;
            }
            Command::Helo(host) => {
                info.helo_name = Some(host.to_string());
                conn.send("250 localhost")?;
            }
            Command::Auth { .. } if info.helo_name.is_none() => {
                conn.send("503 5.5.1 Send EHLO first")?
            }
            Command::Auth { .. } if authenticated.is_some() => {
                conn.send("503 5.5.1 Already authenticated")?
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                let mut ex = AuthExchange::new(registry.clone(), info.clone());
                let ir = initial_response.as_ref().map(|r| r.expose_secret());
                let mut step = ex
                    .start(mechanism.as_str(), ir)
                    .map_err(std::io::Error::other)?;
                let result = loop {
                    step = match step {
                        Step::Challenge(c) => {
                            conn.send(&smtp::challenge_line(&c))?;
                            match conn.line(&mut sasl) {
                                None => return Ok(()),
                                Some(LineEvent::TooLong) => {
                                    break smtp_auth::AuthResult::failure(
                                        smtp_auth::AuthStatus::TooLong,
                                    );
                                }
                                Some(LineEvent::Line(l)) => ex.respond(&l),
                            }
                        }
                        // A blocking driver answers from its provider directly.
                        Step::Verify(req) => ex.decide(users.check(&req)),
                        Step::Lookup(req) => ex.supply(users.lookup(&req)),
                        Step::Done(r) => break r,
                    }
                    .map_err(std::io::Error::other)?;
                };
                if let Some(reply) = smtp::reply(&result) {
                    conn.send(&reply.to_string())?;
                }
                if result.is_success() {
                    authenticated = result.auth_data.and_then(|d| d.login().map(str::to_owned));
                } else {
                    failures += 1;
                    if failures >= MAX_AUTH_FAILURES {
                        conn.send("421 4.7.0 Too many failed authentication attempts")?;
                        return Ok(());
                    }
                }
            }
            Command::Noop(_) => conn.send("250 2.0.0 OK")?,
            Command::Rset => conn.send("250 2.0.0 OK")?,
            Command::Quit => {
                conn.send("221 2.0.0 Bye")?;
                return Ok(());
            }
            Command::Mail { .. } if authenticated.is_none() => {
                conn.send("530 5.7.0 Authentication required")?
            }
            Command::Unknown(_) => {
                conn.send(&Reply::simple(500, Some((5, 5, 2)), "Command unrecognized").to_string())?
            }
            _ => conn.send("502 5.5.1 This example only authenticates")?,
        }
    }
}

#[allow(dead_code)]
fn main() {
    let addr = std::env::var("SMTP_AUTH_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:2525".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("listening on {addr}; demo user: demo / demo-password");
    serve(listener, demo_users(), None);
}
