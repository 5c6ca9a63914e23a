//! The `handle_auth` hook (aiosmtpd's `handle_AUTH`): the handler sees every AUTH command
//! first and may run the whole exchange itself with `channel.challenge(...)` and
//! `channel.push(...)`. Here it implements a site-specific `X-PIN` mechanism and refuses a
//! blocked account with its own reply; everything else goes to the built-in mechanisms.
//! Run it with `cargo run -p smtp-server --example handle_auth`.

use smtp_auth::{AuthData, AuthResult, Identity, MemoryProvider};
use smtp_server::{AuthChannel, Handler, Server, ServerConfig, Session};

/// The handler with the AUTH hook.
#[derive(Clone, Default)]
pub struct PinDesk;

impl Handler for PinDesk {
    async fn handle_auth(
        &self,
        channel: &mut AuthChannel<'_>,
        _session: &Session,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> Option<AuthResult> {
        if mechanism == "PLAIN"
            && initial_response.is_some_and(|ir| ir.starts_with(b"AG1hbGxvcnkA"))
        {
            // "\0mallory\0...": this account is blocked; say so ourselves.
            // The hook replied itself: `handled` tells the server to send nothing more.
            let _ = channel.push("535 5.7.8 This account is blocked").await;
            return Some(AuthResult::handled());
        }
        if mechanism != "X-PIN" {
            return None; // the server runs PLAIN and LOGIN
        }
        let Ok(smtp_auth::sasl::Response::Data(user)) = channel.challenge(b"User?").await else {
            return Some(AuthResult::failure(smtp_auth::AuthStatus::Cancelled));
        };
        let Ok(smtp_auth::sasl::Response::Data(pin)) = channel.challenge(b"PIN?").await else {
            return Some(AuthResult::failure(smtp_auth::AuthStatus::Cancelled));
        };
        let user = String::from_utf8_lossy(user.expose_secret()).into_owned();
        if pin.expose_secret() == b"1234" {
            Some(AuthResult::success(Some(AuthData::Identity(Identity {
                login: user,
                authzid: None,
                mechanism: "X-PIN".into(),
            }))))
        } else {
            Some(AuthResult::failure(smtp_auth::AuthStatus::Invalid))
        }
    }
}

/// A server whose handler takes AUTH over for X-PIN and for blocked accounts.
pub fn server() -> Server<PinDesk> {
    let config = ServerConfig::builder().auth_require_tls(false).build();
    Server::new(config, PinDesk).provider(MemoryProvider::new().with_user("alice", "wonderland"))
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
    println!("listening on {}", listener.local_addr()?);
    server().serve(listener).await
}
