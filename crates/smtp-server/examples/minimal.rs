//! A minimal SMTP submission server: a handler that keeps each message and an authenticator
//! for one user. Run it with `cargo run -p smtp-server --example minimal`, then send with
//! Python's smtplib: `s = smtplib.SMTP('127.0.0.1', 2525); s.login('alice', 'wonderland')`.

use std::sync::{Arc, Mutex};

use smtp_auth::{AuthDecision, AuthRequest, provider_fn};
use smtp_proto::Reply;
use smtp_server::{Envelope, Handler, Server, ServerConfig, Session};

/// One accepted message: who sent it, to whom, and its bytes.
#[derive(Debug, Clone)]
pub struct Message {
    /// The authenticated login.
    pub login: Option<String>,
    /// The reverse-path.
    pub from: String,
    /// The forward-paths.
    pub to: Vec<String>,
    /// The message as received.
    pub content: Vec<u8>,
}

/// The handler: accepts every message and keeps it in memory.
#[derive(Clone, Default)]
pub struct Inbox(pub Arc<Mutex<Vec<Message>>>);

impl Handler for Inbox {
    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        // The body is in memory when small and in a spool file when large; this handler
        // wants the bytes (fine for the sizes it accepts).
        let Ok(content) = envelope.body.to_bytes().await else {
            return Reply::simple(451, Some((4, 3, 0)), "Cannot read the message");
        };
        let message = Message {
            login: session.login_data.clone(),
            from: envelope
                .mail_from
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default(),
            to: envelope.rcpt_to.iter().map(|t| t.to_string()).collect(),
            content: content.to_vec(),
        };
        self.0.lock().unwrap().push(message);
        Reply::simple(250, Some((2, 0, 0)), "Kept")
    }
}

/// The server: AUTH required, allowed without TLS because it listens on loopback only.
pub fn server(inbox: Inbox) -> Server<Inbox> {
    let config = ServerConfig::builder()
        .hostname("mx.example")
        .auth_required(true)
        .auth_require_tls(false)
        .build();
    Server::new(config, inbox).provider(provider_fn(|req: AuthRequest| async move {
        if req.username == "alice" && req.password.expose_secret() == "wonderland" {
            AuthDecision::Ok
        } else {
            AuthDecision::Invalid
        }
    }))
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
    println!("listening on {}", listener.local_addr()?);
    server(Inbox::default()).serve(listener).await
}
