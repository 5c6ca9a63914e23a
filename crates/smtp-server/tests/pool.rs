//! Bounded verification through a real server: more concurrent logins than workers all
//! succeed; a login that waits past `auth_timeout` gets 454 4.7.0; a client that hangs up
//! while queued gives up its place (its check never runs).
#![cfg(feature = "tokio")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Recorder, b64, plain_config, start};
use smtp_auth::{AuthDecision, AuthRequest, provider_fn};
use smtp_server::{Server, VerifyPool};

/// Counts sessions that ended.
#[derive(Clone, Default)]
struct Disconnects(Arc<std::sync::atomic::AtomicUsize>);

impl smtp_server::Handler for Disconnects {
    async fn disconnect(&self, _session: &smtp_server::Session) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn plain(user: &str, pw: &str) -> String {
    b64(format!("\0{user}\0{pw}").as_bytes())
}

/// A provider whose checks run on `pool`; a password of `block` holds its worker until the
/// gate opens. Counts the checks that ran, by user.
fn pooled(
    pool: VerifyPool,
    gate: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    ran: Arc<Mutex<Vec<String>>>,
) -> impl tower_service::Service<
    AuthRequest,
    Response = AuthDecision,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    provider_fn(move |r: AuthRequest| {
        let (pool, gate, ran) = (pool.clone(), gate.clone(), ran.clone());
        async move {
            let user = r.username.clone();
            let pw = r.password.expose_secret().clone();
            pool.run(move || {
                ran.lock().unwrap().push(user);
                if pw == "block" {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
                }
                if pw == "right" || pw == "block" {
                    AuthDecision::Ok
                } else {
                    AuthDecision::Invalid
                }
            })
            .await
            .unwrap_or(AuthDecision::Failure)
        }
    })
}

#[tokio::test]
async fn more_logins_than_workers_all_succeed() {
    let pool = VerifyPool::new(2);
    let (_open, gate) = std::sync::mpsc::channel();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let provider = pooled(pool.clone(), Arc::new(Mutex::new(gate)), ran.clone());
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(provider)).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.cmd("EHLO client.example").await;
            c.cmd(&format!("AUTH PLAIN {}", plain(&format!("u{i}"), "right")))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "235 2.7.0 Authentication successful");
    }
    assert_eq!(pool.completed(), 16);
    assert_eq!(ran.lock().unwrap().len(), 16);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_queued_login_past_auth_timeout_is_454_and_a_leaver_is_skipped() {
    let pool = VerifyPool::new(1);
    let (open, gate) = std::sync::mpsc::channel();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let provider = pooled(pool.clone(), Arc::new(Mutex::new(gate)), ran.clone());
    let cfg = plain_config()
        // C hangs up well before its own timeout would drop its check: only noticing the
        // hang-up can skip it.
        .auth_timeout(Duration::from_secs(1))
        .build();
    let gone = Disconnects::default();
    let srv = start(Server::new(cfg, gone.clone()).provider(provider)).await;

    // A holds the only worker (past its own timeout: it gets 454 too, the worker stays busy).
    let mut a = Client::connect(srv.addr).await;
    a.cmd("EHLO client.example").await;
    a.send(&format!("AUTH PLAIN {}\r\n", plain("holder", "block")))
        .await;
    while ran.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // B waits in the queue past auth_timeout: a temporary failure, never a hang.
    let mut b = Client::connect(srv.addr).await;
    b.cmd("EHLO client.example").await;
    assert_eq!(
        b.cmd(&format!("AUTH PLAIN {}", plain("waiter", "right")))
            .await,
        "454 4.7.0 Temporary authentication failure"
    );
    // C queues and hangs up.
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.send(&format!("AUTH PLAIN {}\r\n", plain("leaver", "right")))
        .await;
    while pool.queued() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(c);
    // The server notices the hang-up at once (its session ends), well before C's own 1 s
    // timeout could drop the check.
    for _ in 0..100 {
        if gone.0.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(gone.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        a.reply().await,
        "454 4.7.0 Temporary authentication failure"
    );
    open.send(()).unwrap();
    // The worker now drains the queue: B's and C's checks were abandoned, neither runs.
    let mut d = Client::connect(srv.addr).await;
    d.cmd("EHLO client.example").await;
    assert_eq!(
        d.cmd(&format!("AUTH PLAIN {}", plain("later", "right")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(*ran.lock().unwrap(), vec!["holder", "later"]);
    assert_eq!(pool.skipped(), 2);
    srv.shutdown().await;
}
