//! An authenticated relayer (the example aiosmtpd's AUTH documentation points to): clients
//! log in, and each accepted message is passed on to an upstream SMTP server before the 250,
//! with the upstream's refusal handed back to the client. The client side is a few lines on
//! top of `smtp-proto` (reply parser, dot-stuffing) and `smtp-auth` (PLAIN client).
//! Run it with `cargo run -p smtp-server --example relayer -- UPSTREAM_HOST:PORT`.

use std::net::SocketAddr;

use bytes::BytesMut;
use smtp_auth::{ClientMechanism, MemoryProvider, encode_challenge, mechanism::PlainClient};
use smtp_proto::{Reply, ReplyParser, encode_data};
use smtp_server::{Envelope, Handler, Server, ServerConfig, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upstream and the account to use there.
#[derive(Clone)]
pub struct Relay {
    /// The upstream server.
    pub upstream: SocketAddr,
    /// The account on the upstream.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// One reply from the upstream (bounded: 10 s).
async fn reply(io: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Reply> {
    let mut parser = ReplyParser::default();
    loop {
        if let Some(r) = parser.decode(buf).map_err(std::io::Error::other)? {
            return Ok(r);
        }
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), io.read_buf(buf));
        if read.await.map_err(std::io::Error::other)?? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

impl Relay {
    /// Sends one message upstream; the upstream's reply when it refuses.
    async fn send(&self, envelope: &Envelope) -> std::io::Result<Result<(), Reply>> {
        let mut io = TcpStream::connect(self.upstream).await?;
        let mut buf = BytesMut::new();
        let mut plain = PlainClient::new(&self.user, &self.password, None);
        let ir = plain
            .initial_response()
            .map(|r| encode_challenge(r.expose_secret()));
        let mut steps = vec![
            ("EHLO relay.example".to_owned(), 2),
            (format!("AUTH PLAIN {}", ir.unwrap_or_default()), 2),
        ];
        let from = envelope
            .mail_from
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default();
        steps.push((format!("MAIL FROM:{from}"), 2));
        for to in &envelope.rcpt_to {
            steps.push((format!("RCPT TO:{to}"), 2));
        }
        steps.push(("DATA".to_owned(), 3));
        reply(&mut io, &mut buf).await?; // greeting
        for (line, class) in steps {
            io.write_all(format!("{line}\r\n").as_bytes()).await?;
            let r = reply(&mut io, &mut buf).await?;
            if r.code().class() != class {
                return Ok(Err(r));
            }
        }
        let mut body = BytesMut::new();
        encode_data(&envelope.body.to_bytes().await?, &mut body);
        io.write_all(&body).await?;
        let r = reply(&mut io, &mut buf).await?;
        let _ = io.write_all(b"QUIT\r\n").await;
        Ok(if r.code().class() == 2 {
            Ok(())
        } else {
            Err(r)
        })
    }
}

impl Handler for Relay {
    async fn data(&self, _session: &Session, envelope: &Envelope) -> Reply {
        match self.send(envelope).await {
            Ok(Ok(())) => Reply::simple(250, Some((2, 0, 0)), "Relayed"),
            Ok(Err(refused)) => refused,
            Err(e) => Reply::simple(451, Some((4, 4, 0)), &format!("Upstream unavailable: {e}")),
        }
    }
}

/// A relayer for `users`, passing mail to `relay.upstream`.
pub fn server(relay: Relay, users: MemoryProvider) -> Server<Relay> {
    let config = ServerConfig::builder()
        .hostname("relay.example")
        .auth_required(true)
        .auth_require_tls(false)
        .build();
    Server::new(config, relay).provider(users)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    let upstream = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:25".parse().expect("an address"));
    let relay = Relay {
        upstream,
        user: "relay".into(),
        password: "relay-password".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
    println!(
        "listening on {}, relaying to {upstream}",
        listener.local_addr()?
    );
    server(
        relay,
        MemoryProvider::new().with_user("alice", "wonderland"),
    )
    .serve(listener)
    .await
}
