//! The client against a scripted server on 127.0.0.1 (the real Dovecot runs in the workspace's
//! e2e tests): answers routed by id out of order, a broken connection failing its waiting
//! requests at once and reconnecting on next use, the timeout, a malformed handshake.

use std::time::{Duration, Instant};

use smtp_auth_dovecot::{Answer, DovecotClient, DovecotConfig, Endpoint, Error, RequestInfo};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const HANDSHAKE: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n";

fn client(port: u16, timeout: Duration) -> DovecotClient {
    let mut c = DovecotConfig::new(Endpoint::parse(&format!("127.0.0.1:{port}")).unwrap());
    c.timeout = timeout;
    c.connections = 1;
    DovecotClient::new(c)
}

/// Accepts a connection, reads the client's hello, sends the handshake.
async fn accept(
    l: &TcpListener,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let (s, _) = l.accept().await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "VERSION\t1\t2\n");
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("CPID\t"), "{line}");
    w.write_all(HANDSHAKE.as_bytes()).await.unwrap();
    (r, w)
}

fn id_of(line: &str) -> u32 {
    line.split('\t').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn answers_reach_their_requests_out_of_order_and_a_break_reconnects() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut r, mut w) = accept(&l).await;
        // Two requests arrive; the second is answered first.
        let (mut a, mut b) = (String::new(), String::new());
        r.read_line(&mut a).await.unwrap();
        r.read_line(&mut b).await.unwrap();
        let (first, second) = if a.contains("resp=AGEAMQ==") {
            (a, b)
        } else {
            (b, a)
        };
        assert!(first.starts_with("AUTH\t") && first.contains("\tservice=smtp\tnologin\t"));
        w.write_all(format!("FAIL\t{}\tuser=b\n", id_of(&second)).as_bytes())
            .await
            .unwrap();
        w.write_all(format!("OK\t{}\tuser=a\n", id_of(&first)).as_bytes())
            .await
            .unwrap();
        // A third request, then the connection breaks without an answer.
        let mut c = String::new();
        r.read_line(&mut c).await.unwrap();
        drop((r, w));
        // The next request comes on a new connection.
        let (mut r, mut w) = accept(&l).await;
        let mut d = String::new();
        r.read_line(&mut d).await.unwrap();
        w.write_all(format!("OK\t{}\tuser=a\n", id_of(&d)).as_bytes())
            .await
            .unwrap();
        // Keep it open until the client is done.
        let mut rest = String::new();
        let _ = r.read_line(&mut rest).await;
    });
    let c = client(port, Duration::from_secs(5));
    let info = RequestInfo::default();
    let (one, two) = tokio::join!(
        c.start("PLAIN", &info, Some(b"\0a\x001")),
        c.start("plain", &info, Some(b"\0b\x002")),
    );
    assert_eq!(one.unwrap().1, Answer::Ok { user: "a".into() });
    assert_eq!(
        two.unwrap().1,
        Answer::Fail {
            user: Some("b".into()),
            temp: false,
            reason: None
        }
    );
    let started = Instant::now();
    let e = c
        .start("PLAIN", &info, Some(b"\0a\x003"))
        .await
        .unwrap_err();
    assert_eq!(e, Error::Unavailable("connection lost".into()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at once, not by the timeout"
    );
    let (_, answer) = c.start("PLAIN", &info, Some(b"\0a\x004")).await.unwrap();
    assert_eq!(answer, Answer::Ok { user: "a".into() });
    // A mechanism Dovecot did not announce is refused without a request.
    assert_eq!(
        c.start("SCRAM-SHA-256", &info, None).await.unwrap_err(),
        Error::UnknownMechanism("SCRAM-SHA-256".into())
    );
    drop(c);
    server.await.unwrap();
}

#[tokio::test]
async fn no_answer_within_the_timeout_and_a_bad_handshake() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // Answers the handshake, then never the request.
        let (mut r, _w) = accept(&l).await;
        let mut a = String::new();
        r.read_line(&mut a).await.unwrap();
        // Another major version on the next connection.
        let (s, _) = l.accept().await.unwrap();
        let (_r2, mut w2): (_, _) = s.into_split();
        w2.write_all(b"VERSION\t2\t0\nDONE\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(r);
    });
    let c = client(port, Duration::from_millis(300));
    let e = c
        .start("PLAIN", &RequestInfo::default(), Some(b"\0a\0secret-pw"))
        .await
        .unwrap_err();
    assert_eq!(e, Error::Timeout);
    let c2 = client(port, Duration::from_secs(2));
    let e = c2.mechanisms().await.unwrap_err();
    assert!(
        matches!(&e, Error::Protocol(m) if m.contains("unsupported protocol version")),
        "{e}"
    );
    assert!(!format!("{e} {e:?} {c:?}").contains("secret-pw"));
    // Nothing listens: unavailable, naming the endpoint.
    server.abort();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let e = client(dead, Duration::from_secs(2))
        .mechanisms()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.starts_with(&format!("127.0.0.1:{dead}: "))),
        "{e}"
    );
}

#[tokio::test]
async fn a_temporary_failure_is_a_failure_not_a_refusal() {
    use smtp_auth::{AuthDecision, AuthRequest, AuthStatus, Password, SessionInfo};
    use smtp_auth_dovecot::{DovecotProvider, Proxy, ProxyStep};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut r, mut w) = accept(&l).await;
        // Dovecot's passdb is down: every request fails with `temp`.
        for _ in 0..2 {
            let mut a = String::new();
            r.read_line(&mut a).await.unwrap();
            w.write_all(
                format!("FAIL\t{}\tuser=alice\ttemp\treason=try later\n", id_of(&a)).as_bytes(),
            )
            .await
            .unwrap();
        }
        let mut rest = String::new();
        let _ = r.read_line(&mut rest).await;
    });
    let c = client(port, Duration::from_secs(5));
    let req = AuthRequest::new(
        &SessionInfo::default(),
        "PLAIN",
        "alice".into(),
        Password::new("pw".into()),
        None,
    );
    assert_eq!(
        DovecotProvider::new(c.clone()).check(&req).await,
        AuthDecision::Failure
    );
    let (_, step) = Proxy::start(&c, "LOGIN", &RequestInfo::default(), None).await;
    let ProxyStep::Done(r) = step else {
        panic!("{step:?}")
    };
    assert_eq!(r.status, AuthStatus::TempFail);
    assert_eq!(r.auth_data.unwrap().login(), Some("alice"));
    drop(c);
    server.await.unwrap();
}

#[tokio::test]
async fn names_in_the_first_message_are_checked_before_dovecot_sees_them() {
    use base64::Engine as _;
    use smtp_auth::sasl::Response;
    use smtp_auth::{AuthStatus, SecretBytes};
    use smtp_auth_dovecot::{Proxy, ProxyStep};
    let b64 = base64::engine::general_purpose::STANDARD;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    // The scripted Dovecot answers AUTH with an empty CONT, a CONT from the client with a
    // password prompt, and the second CONT with OK; it keeps every line it read.
    let server = tokio::spawn(async move {
        let (mut r, mut w) = accept(&l).await;
        let mut seen = Vec::new();
        let mut conts = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let id = id_of(&line);
            let answer = if line.starts_with("AUTH\t") {
                format!("CONT\t{id}\t\n")
            } else {
                conts += 1;
                if conts == 1 {
                    format!("CONT\t{id}\tUGFzc3dvcmQ6\n")
                } else {
                    format!("OK\t{id}\tuser=alice\n")
                }
            };
            seen.push(line);
            w.write_all(answer.as_bytes()).await.unwrap();
        }
        seen
    });
    let c = client(port, Duration::from_secs(5));
    let info = RequestInfo::default();
    let data = |d: &[u8]| Response::Data(SecretBytes::new(d.to_vec()));
    let malformed = |step: ProxyStep| match step {
        ProxyStep::Done(r) => assert_eq!(r.status, AuthStatus::Malformed),
        other => panic!("{other:?}"),
    };
    // In the initial response: Dovecot is not asked at all.
    let (_, step) = Proxy::start(&c, "SCRAM-SHA-256", &info, Some(b"n,,n=al\0ice,r=abc")).await;
    malformed(step);
    // In the answer to the first challenge: the exchange ends without a CONT to Dovecot.
    let (mut proxy, step) = Proxy::start(&c, "PLAIN", &info, None).await;
    assert!(
        matches!(step, ProxyStep::Challenge(ref c) if c.is_empty()),
        "{step:?}"
    );
    malformed(proxy.respond(data(b"\0al\rice\0password")).await);
    // Only the first message holds names: LOGIN's second, the password, goes on as it is.
    let (mut proxy, _) = Proxy::start(&c, "LOGIN", &info, None).await;
    let step = proxy.respond(data(b"alice")).await;
    assert!(matches!(step, ProxyStep::Challenge(_)), "{step:?}");
    let ProxyStep::Done(r) = proxy.respond(data(b"p\x07w")).await else {
        panic!("LOGIN did not end")
    };
    assert_eq!(r.status, AuthStatus::Success);
    drop((proxy, c));
    let seen = server.await.unwrap();
    let kinds: Vec<String> = seen
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.trim_end().split('\t').collect();
            match f[0] {
                "AUTH" => format!("AUTH {}", f[2]),
                _ => format!("CONT {}", f.get(2).copied().unwrap_or("")),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "AUTH PLAIN".to_owned(),
            "AUTH LOGIN".to_owned(),
            format!("CONT {}", b64.encode("alice")),
            format!("CONT {}", b64.encode("p\x07w")),
        ]
    );
}
