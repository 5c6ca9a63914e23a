//! An `Authenticator` implemented by hand (aiosmtpd's `authenticator` callback): how its
//! verdict's `message`, `auth_data` and failures reach the client and the session.
#![cfg(feature = "tokio")]

mod common;

use std::sync::{Arc, Mutex};

use common::{Client, b64, plain_config, start};
use smtp_auth::{AuthData, AuthDecision, AuthRequest, Verdict};
use smtp_proto::Reply;
use smtp_server::{Authenticator, BoxFuture, Envelope, Handler, Server, Session};

/// What the authenticator attaches on success.
#[derive(Debug, PartialEq)]
struct Account {
    id: u32,
    quota_mib: u32,
}

struct Accounts;

impl Authenticator for Accounts {
    fn authenticate(&self, session: &Session, request: AuthRequest) -> BoxFuture<Verdict> {
        // Read-only session facts are available to the decision.
        let helo = session.helo_name.clone().unwrap_or_default();
        Box::pin(async move {
            match (
                request.username.as_str(),
                request.password.expose_secret().as_str(),
            ) {
                ("alice", "wonderland") => Verdict::ok(Some(AuthData::Custom {
                    login: Some("alice@example.org".into()),
                    data: Arc::new(Account {
                        id: 7,
                        quota_mib: 512,
                    }),
                }))
                .with_message(format!("235 2.7.0 Welcome alice, {helo}")),
                ("bob", _) => Verdict::new(AuthDecision::Invalid)
                    .with_message("535 5.7.8 Account locked, call the help desk"),
                ("carol", _) => AuthDecision::Failure.into(),
                _ => AuthDecision::Invalid.into(),
            }
        })
    }
}

/// (authenticated, login_data, the account id in auth_data, auth_mechanism)
type SessionFacts = (bool, Option<String>, Option<u32>, Option<String>);

/// Records the session as the DATA hook sees it.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SessionFacts>>>);

impl Handler for Seen {
    async fn data(&self, session: &Session, _envelope: &Envelope) -> Reply {
        let account = match &session.auth_data {
            Some(AuthData::Custom { data, .. }) => data.downcast_ref::<Account>().map(|a| a.id),
            _ => None,
        };
        self.0.lock().unwrap().push((
            session.authenticated,
            session.login_data.clone(),
            account,
            session.auth_mechanism.clone(),
        ));
        Reply::simple(250, Some((2, 0, 0)), "OK")
    }
}

fn plain(user: &str, pw: &str) -> String {
    b64(format!("\0{user}\0{pw}").as_bytes())
}

#[tokio::test]
async fn message_auth_data_and_failures_reach_client_and_session() {
    let seen = Seen::default();
    let srv =
        start(Server::new(plain_config().build(), seen.clone()).authenticator(Accounts)).await;

    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // A failure with its own message: sent as is, the session stays unauthenticated.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "x"))).await,
        "535 5.7.8 Account locked, call the help desk"
    );
    // A failure without a message: the standard reply for its status.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("carol", "x"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<x@example.org>").await,
        "250 2.1.0 Sender OK",
        "auth_required is off here"
    );
    c.cmd("RSET").await;
    // Success with a message and custom data.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "235 2.7.0 Welcome alice, client.example"
    );
    c.cmd("MAIL FROM:<alice@example.org>").await;
    c.cmd("RCPT TO:<bob@example.net>").await;
    c.cmd("DATA").await;
    assert_eq!(c.cmd("Subject: x\r\n\r\nbody\r\n.").await, "250 2.0.0 OK");
    assert_eq!(
        seen.0.lock().unwrap().clone(),
        vec![(
            true,
            Some("alice@example.org".to_owned()),
            Some(7),
            Some("PLAIN".to_owned())
        )]
    );
    srv.shutdown().await;
}
