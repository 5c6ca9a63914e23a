//! An application on rustls's default provider: builds its server configuration with
//! `rustls::ServerConfig::builder()` (which panics when more than one provider is compiled in
//! and none was installed), serves smtp-server with it on 127.0.0.1, and completes a STARTTLS
//! handshake with a client configuration built the same way. Exits non-zero on any failure.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smtp_server::{AcceptAll, Server, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut reply = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).await.expect("read");
        reply.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return reply;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    // The point: the process default provider, chosen by rustls's own features.
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .expect("server config");
    let config = ServerConfig::builder().tls(Arc::new(tls)).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(Server::new(config, AcceptAll).serve(listener));

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut io = BufReader::new(stream);
    assert!(line(&mut io).await.starts_with("220 "));
    io.get_mut()
        .write_all(b"EHLO app.example\r\n")
        .await
        .expect("write");
    assert!(line(&mut io).await.contains("STARTTLS"));
    io.get_mut()
        .write_all(b"STARTTLS\r\n")
        .await
        .expect("write");
    assert!(line(&mut io).await.starts_with("220 "));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            ServerName::try_from("localhost").expect("name"),
            io.into_inner(),
        )
        .await
        .expect("TLS handshake");
    let mut io = BufReader::new(tls);
    io.get_mut()
        .write_all(b"EHLO app.example\r\n")
        .await
        .expect("write");
    let ehlo = line(&mut io).await;
    assert!(
        ehlo.starts_with("250") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    println!(
        "rustls defaults + smtp-server: STARTTLS handshake completed, provider chosen by rustls"
    );
}
