//! A custom mechanism hook and a whole-AUTH hook (`handle_AUTH`), each used end to end.
#![cfg(feature = "tokio")]

mod common;

use common::{Client, Recorder, b64, plain_config, start};
use smtp_auth::{
    AuthData, AuthResult, AuthStatus, SecretBytes, ServerMechanism, SessionInfo, Step,
};
use smtp_proto::Reply;
use smtp_server::{AuthChannel, Envelope, Handler, Server, Session};

/// `X-OTP`: the client answers a challenge with a one-time code.
struct Otp;

impl ServerMechanism for Otp {
    fn start(&mut self, _info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            Some(_) => Step::Done(AuthResult::failure(AuthStatus::Malformed)),
            None => Step::Challenge(b"code?".to_vec()),
        }
    }

    fn respond(&mut self, _info: &SessionInfo, response: SecretBytes) -> Step {
        if response.expose_secret() == b"123456" {
            Step::Done(AuthResult::success(Some(AuthData::Custom {
                login: Some("otp-user".into()),
                data: std::sync::Arc::new(()),
            })))
        } else {
            Step::Done(AuthResult::failure(AuthStatus::Invalid).with_message("535 5.7.8 Bad code"))
        }
    }
}

#[tokio::test]
async fn custom_mechanism_hook() {
    let cfg = plain_config().mechanism("X-OTP", || Box::new(Otp)).build();
    let rec = Recorder::default();
    let srv = start(Server::new(cfg, rec.clone())).await;
    let mut c = Client::connect(srv.addr).await;
    assert!(
        c.cmd("EHLO c.example")
            .await
            .ends_with("250 AUTH PLAIN LOGIN X-OTP")
    );
    assert_eq!(c.cmd("AUTH X-OTP").await, format!("334 {}", b64(b"code?")));
    assert_eq!(c.cmd(&b64(b"000000")).await, "535 5.7.8 Bad code");
    assert_eq!(c.cmd("AUTH X-OTP").await, format!("334 {}", b64(b"code?")));
    assert_eq!(
        c.cmd(&b64(b"123456")).await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    c.cmd("x\r\n.").await;
    assert_eq!(rec.taken()[0].login.as_deref(), Some("otp-user"));
    srv.shutdown().await;
}

/// Takes AUTH over for the mechanism "X-HOOK", leaving every other one to the server.
#[derive(Clone, Default)]
struct WholeAuth {
    inner: Recorder,
}

impl Handler for WholeAuth {
    async fn data(&self, s: &Session, e: &Envelope) -> Reply {
        self.inner.data(s, e).await
    }

    async fn handle_auth(
        &self,
        channel: &mut AuthChannel<'_>,
        _session: &Session,
        mechanism: &str,
        _initial: Option<&[u8]>,
    ) -> Option<AuthResult> {
        if mechanism != "X-HOOK" {
            return None;
        }
        let user = match channel.challenge(b"who?").await.ok()? {
            smtp_auth::sasl::Response::Data(r) => {
                String::from_utf8_lossy(r.expose_secret()).into_owned()
            }
            smtp_auth::sasl::Response::Cancelled => {
                channel.push("501 5.7.0 Cancelled by hook").await.ok()?;
                return Some(AuthResult::handled());
            }
            _ => return Some(AuthResult::failure(AuthStatus::Undecodable)),
        };
        if user == "root" {
            channel.push("535 5.7.8 Not you").await.ok()?;
            return Some(AuthResult::handled());
        }
        Some(
            AuthResult::success(Some(AuthData::Custom {
                login: Some(user),
                data: std::sync::Arc::new(()),
            }))
            .with_message("235 2.7.0 Welcome via hook"),
        )
    }
}

#[tokio::test]
async fn whole_auth_hook() {
    let h = WholeAuth::default();
    let srv = start(Server::new(
        plain_config().max_auth_failures(5).build(),
        h.clone(),
    ))
    .await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO c.example").await;
    assert_eq!(c.cmd("AUTH X-HOOK").await, format!("334 {}", b64(b"who?")));
    assert_eq!(c.cmd("*").await, "501 5.7.0 Cancelled by hook");
    assert_eq!(c.cmd("AUTH X-HOOK").await, format!("334 {}", b64(b"who?")));
    assert_eq!(c.cmd(&b64(b"root")).await, "535 5.7.8 Not you");
    // Other mechanisms still go to the server (no authenticator: 535).
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0a\0b"))).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(c.cmd("AUTH X-HOOK").await, format!("334 {}", b64(b"who?")));
    assert_eq!(c.cmd(&b64(b"carol")).await, "235 2.7.0 Welcome via hook");
    c.cmd("MAIL FROM:<a@b.c>").await;
    c.cmd("RCPT TO:<d@e.f>").await;
    c.cmd("DATA").await;
    c.cmd("x\r\n.").await;
    assert_eq!(h.inner.taken()[0].login.as_deref(), Some("carol"));
    srv.shutdown().await;
}
