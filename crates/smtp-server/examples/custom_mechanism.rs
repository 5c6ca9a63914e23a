//! A custom SASL mechanism (aiosmtpd's `auth_MECHANISM` hook): `X-KNOCK`, a two-step
//! exchange — the server asks "Who's there?", the client answers its name, the server asks
//! "<name> who?", the client answers its password. The mechanism is a sans-IO state machine;
//! it stops at `Step::Verify` and the server asks the same authenticator as for PLAIN; the
//! decision stands, so the exchange ends with the identity the `Verify` asked about.
//! Run it with `cargo run -p smtp-server --example custom_mechanism`.

use smtp_auth::{
    AuthProgress, AuthRequest, AuthResult, AuthStatus, MemoryProvider, Password, SecretBytes,
    ServerMechanism, SessionInfo, Step,
};
use smtp_server::{AcceptAll, Server, ServerConfig};

/// The server side of `X-KNOCK`.
#[derive(Default)]
pub struct Knock {
    name: Option<String>,
}

impl ServerMechanism for Knock {
    fn start(&mut self, _info: &SessionInfo, _initial: Option<SecretBytes>) -> Step {
        Step::Challenge(b"Who's there?".to_vec())
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        let Ok(text) = std::str::from_utf8(response.expose_secret()) else {
            return Step::Done(AuthResult::failure(AuthStatus::Malformed));
        };
        match self.name.take() {
            None if !text.is_empty() => {
                self.name = Some(text.to_owned());
                Step::Challenge(format!("{text} who?").into_bytes())
            }
            None => Step::Done(AuthResult::failure(AuthStatus::Malformed)),
            Some(name) => Step::Verify(AuthRequest::new(
                info,
                "X-KNOCK",
                name,
                Password::new(text.to_owned()),
                None,
            )),
        }
    }

    fn progress(&self) -> AuthProgress {
        AuthProgress::Custom
    }
}

/// A server offering PLAIN, LOGIN and X-KNOCK, all decided by one provider.
pub fn server() -> Server<AcceptAll> {
    let config = ServerConfig::builder()
        .auth_require_tls(false)
        .mechanism("X-KNOCK", || Box::new(Knock::default()))
        .build();
    Server::new(config, AcceptAll).provider(MemoryProvider::new().with_user("alice", "wonderland"))
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
    println!("listening on {}", listener.local_addr()?);
    server().serve(listener).await
}
