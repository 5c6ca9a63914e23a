//! TLS with certificates made in the test: STARTTLS then AUTH, the STARTTLS injection case
//! (CVE-2011-0411), and implicit TLS.
#![cfg(feature = "tokio")]

mod common;

use common::{Client, Recorder, b64, start, tls_configs, tls_connect};
use smtp_auth::MemoryProvider;
use smtp_server::{Server, ServerConfig};
use tokio::io::BufReader;

fn users() -> MemoryProvider {
    MemoryProvider::new().with_user("alice", "wonderland")
}

#[tokio::test]
async fn starttls_then_auth() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder()
        .tls(server_tls)
        .auth_failure_delay(std::time::Duration::ZERO)
        .build();
    let rec = Recorder::default();
    let srv = start(Server::new(cfg, rec.clone()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.ends_with("250 STARTTLS"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let tls = tls_connect(client_tls, c.into_inner()).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // RFC 3207 §4.2: the client must greet again; AUTH before it is refused.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "503 5.5.1 Send HELO/EHLO first"
    );
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").await, "503 5.5.1 TLS already active");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<alice@example.org>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    assert_eq!(c.cmd("secret mail\r\n.").await, "250 2.0.0 OK: queued");
    let m = rec.taken();
    assert!(m[0].tls && m[0].authenticated);
    assert_eq!(m[0].login.as_deref(), Some("alice"));
    srv.shutdown().await;
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder().tls(server_tls).build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // The injection: plaintext commands after STARTTLS in the same packet.
    c.send("STARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    let tls = tls_connect(client_tls, c.into_inner()).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // Had MAIL been executed, the greeting would be there and RCPT would get 250.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        c.cmd("RCPT TO:<x@y.z>").await,
        "503 5.5.1 Need MAIL command"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn implicit_tls() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder()
        .tls(server_tls)
        .implicit_tls(true)
        .build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let tls = tls_connect(client_tls, tcp).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    assert!(c.reply().await.starts_with("220 localhost"));
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.ends_with("250 AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn external_with_a_client_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A CA, a server certificate and a client certificate, all made here.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["client.example".into()]).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "client.example");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp.signed_by(&client_key, &ca, &ca_key).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    let known: CertificateDer<'static> = client_cert.der().clone();
    let cfg = ServerConfig::builder()
        .tls(Arc::new(server_tls))
        .implicit_tls(true)
        .auth_failure_delay(std::time::Duration::ZERO)
        .mechanism("EXTERNAL", || {
            Box::new(smtp_auth::mechanism::ExternalServer::default())
        })
        .external_identity(move |cert| {
            (cert.as_ref() == known.as_ref()).then(|| "client.example".to_owned())
        })
        .build();
    let rec = Recorder::default();
    let users = MemoryProvider::new().with_user("client.example", "unused");
    let srv = start(Server::new(cfg, rec.clone()).provider(users)).await;

    let client_builder = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
    };
    // With the certificate: EXTERNAL authenticates as its identity.
    let with_cert = client_builder()
        .with_client_auth_cert(
            vec![client_cert.der().clone()],
            PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = Client {
        io: BufReader::new(tls_connect(Arc::new(with_cert), tcp).await),
    };
    c.reply().await;
    assert!(
        c.cmd("EHLO client.example")
            .await
            .ends_with("250 AUTH PLAIN LOGIN EXTERNAL")
    );
    assert_eq!(
        c.cmd("AUTH EXTERNAL =").await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<a@client.example>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    c.cmd("DATA").await;
    c.cmd("x\r\n.").await;
    assert_eq!(rec.taken()[0].login.as_deref(), Some("client.example"));
    // Without one: nothing to authenticate.
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = Client {
        io: BufReader::new(
            tls_connect(Arc::new(client_builder().with_no_client_auth()), tcp).await,
        ),
    };
    c.reply().await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd("AUTH EXTERNAL =").await,
        "535 5.7.8 Authentication credentials invalid"
    );
    srv.shutdown().await;
}
