//! Mechanisms through the server, end to end over a socket: OAUTHBEARER with its RFC 7628
//! error challenge, a handler's own PLAIN in place of the built-in one, and the session's AUTH
//! progress as the authenticator and the hooks see it.
#![cfg(feature = "tokio")]

mod common;

use std::sync::{Arc, Mutex};

use common::{Client, Recorder, b64, plain_config, start};
use smtp_auth::{
    AuthData, AuthDecision, AuthProgress, AuthRequest, AuthResult, AuthStatus, Registry,
    SecretBytes, ServerMechanism, SessionInfo, Step, Verdict, provider_fn,
};
use smtp_proto::Reply;
use smtp_server::{Authenticator, BoxFuture, Envelope, Handler, Server, Session};

/// An OAUTHBEARER client message (RFC 7628 §3.1) for `user` with `token`.
fn oauthbearer(user: &str, token: &str) -> String {
    b64(
        format!("n,a={user},\x01host=mx.test\x01port=587\x01auth=Bearer {token}\x01\x01")
            .as_bytes(),
    )
}

#[tokio::test]
async fn oauthbearer_through_the_server() {
    let mut registry = Registry::empty();
    let all = Registry::all_builtin();
    registry
        .register("OAUTHBEARER", move || all.create("OAUTHBEARER").unwrap())
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let provider = provider_fn(move |r: AuthRequest| {
        let ok = r.username == "alice" && r.password.expose_secret() == "good-token";
        s2.lock()
            .unwrap()
            .push((r.mechanism.clone(), r.username.clone()));
        async move {
            if ok {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            }
        }
    });
    let rec = Recorder::default();
    let cfg = plain_config().registry(registry).build();
    let srv = start(Server::new(cfg, rec.clone()).provider(provider)).await;
    let mut c = Client::connect(srv.addr).await;
    assert!(
        c.cmd("EHLO c.example")
            .await
            .ends_with("250 AUTH OAUTHBEARER")
    );
    // A refused token: the error JSON in a 334, the client's %x01, then 535.
    let r = c
        .cmd(&format!(
            "AUTH OAUTHBEARER {}",
            oauthbearer("alice", "stale")
        ))
        .await;
    assert_eq!(
        r,
        format!(
            "334 {}",
            b64(br#"{"status":"invalid_token","schemes":"bearer"}"#)
        )
    );
    assert_eq!(
        c.cmd(&b64(b"\x01")).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    // Without an initial response: an empty challenge first.
    assert_eq!(c.cmd("AUTH OAUTHBEARER").await, "334 ");
    assert_eq!(
        c.cmd(&oauthbearer("alice", "good-token")).await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<alice@example.org>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    assert_eq!(
        c.cmd("Subject: t\r\n\r\nhi\r\n.").await,
        "250 2.0.0 OK: queued"
    );
    let got = rec.taken();
    assert_eq!(got[0].login.as_deref(), Some("alice"));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("OAUTHBEARER".to_owned(), "alice".to_owned()),
            ("OAUTHBEARER".to_owned(), "alice".to_owned())
        ]
    );
    srv.shutdown().await;
}

/// A handler's PLAIN: a one-time code instead of a password, checked by the mechanism itself.
struct OtpPlain;

impl ServerMechanism for OtpPlain {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            None => Step::Challenge(Vec::new()),
            Some(m) => self.respond(info, m),
        }
    }

    fn respond(&mut self, _info: &SessionInfo, response: SecretBytes) -> Step {
        if response.expose_secret() == b"\0otp\0code-424242" {
            Step::Done(AuthResult::success(Some(AuthData::Custom {
                login: Some("otp-user".into()),
                data: Arc::new(()),
            })))
        } else {
            Step::Done(AuthResult::failure(AuthStatus::Invalid).with_message("535 5.7.8 Bad code"))
        }
    }
}

#[tokio::test]
async fn a_handlers_plain_replaces_the_builtin() {
    let rec = Recorder::default();
    let cfg = plain_config()
        .mechanism("PLAIN", || Box::new(OtpPlain))
        .build();
    // The provider would accept alice's password: the built-in PLAIN is no longer asked.
    let users = smtp_auth::MemoryProvider::new().with_user("alice", "wonderland");
    let srv = start(Server::new(cfg, rec.clone()).provider(users)).await;
    let mut c = Client::connect(srv.addr).await;
    // Same name, same place in the list.
    assert!(
        c.cmd("EHLO c.example")
            .await
            .ends_with("250 AUTH PLAIN LOGIN")
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "535 5.7.8 Bad code"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0otp\0code-424242")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.cmd("x\r\n.").await;
    assert_eq!(rec.taken()[0].login.as_deref(), Some("otp-user"));
    // LOGIN is still the built-in one, asking the provider.
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO c.example").await;
    c.cmd(&format!("AUTH LOGIN {}", b64(b"alice"))).await;
    assert_eq!(
        c.cmd(&b64(b"wonderland")).await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

/// Records the session's AUTH progress as each call sees it.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<(&'static str, AuthProgress)>>>);

impl Authenticator for Progress {
    fn authenticate(&self, session: &Session, request: AuthRequest) -> BoxFuture<Verdict> {
        self.0
            .lock()
            .unwrap()
            .push(("authenticate", session.auth_progress));
        let ok = request.password.expose_secret() == "wonderland";
        Box::pin(async move {
            if ok {
                AuthDecision::Ok.into()
            } else {
                AuthDecision::Invalid.into()
            }
        })
    }
}

impl Handler for Progress {
    async fn mail(
        &self,
        session: &Session,
        _envelope: &Envelope,
        _from: &smtp_proto::ReversePath,
        _params: &smtp_proto::MailParameters,
    ) -> Option<Reply> {
        self.0.lock().unwrap().push(("mail", session.auth_progress));
        None
    }
}

#[tokio::test]
async fn the_sessions_auth_progress_as_the_calls_see_it() {
    let p = Progress::default();
    let srv = start(Server::new(plain_config().build(), p.clone()).authenticator(p.clone())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO c.example").await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(b"alice")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64(b"wonderland")).await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<a@example.org>").await;
    // While the credential is checked the exchange is verifying; once it is over, none.
    assert_eq!(
        *p.0.lock().unwrap(),
        [
            ("authenticate", AuthProgress::Verifying),
            ("mail", AuthProgress::None)
        ]
    );
    srv.shutdown().await;
}
