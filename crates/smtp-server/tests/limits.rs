//! Connection limits crossed with short configured values: connections per address (IPv6 per
//! /64, after the PROXY header), commands that do no work, and the session's total duration.
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::{Client, Recorder, plain_config, start};
use smtp_server::Server;
use tokio::io::BufReader;
use tokio::net::TcpStream;

/// Connects and returns the first reply (the greeting or the refusal) and the client.
async fn first_reply(
    addr: std::net::SocketAddr,
    proxy: Option<&str>,
) -> (String, Client<TcpStream>) {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = Client {
        io: BufReader::new(s),
    };
    if let Some(p) = proxy {
        c.send(p).await;
    }
    let r = c.reply().await;
    (r, c)
}

const REFUSED: &str = "421 4.7.0 Too many connections from your address, try again later";

#[tokio::test]
async fn connections_per_address() {
    let cfg = plain_config().max_connections_per_ip(2).build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let (r1, c1) = first_reply(srv.addr, None).await;
    let (r2, _c2) = first_reply(srv.addr, None).await;
    assert!(r1.starts_with("220 ") && r2.starts_with("220 "));
    let (r3, _) = first_reply(srv.addr, None).await;
    assert_eq!(r3, REFUSED);
    // A slot comes back when a connection ends.
    drop(c1);
    let mut greeted = false;
    for _ in 0..200 {
        let (r, _c) = first_reply(srv.addr, None).await;
        if r.starts_with("220 ") {
            greeted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(greeted, "the freed slot was never given back");
    srv.shutdown().await;
}

#[tokio::test]
async fn ipv6_addresses_count_per_64_behind_proxy() {
    let cfg = plain_config()
        .proxy_protocol(true)
        .max_connections_per_ip(1)
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let header = |src: &str| format!("PROXY TCP6 {src} 2001:db8:ffff::1 40000 587\r\n");
    let (r1, _c1) = first_reply(srv.addr, Some(&header("2001:db8:0:1::1"))).await;
    assert!(r1.starts_with("220 "), "{r1}");
    // Same /64, another host: refused.
    let (r2, _) = first_reply(srv.addr, Some(&header("2001:db8:0:1:abcd::2"))).await;
    assert_eq!(r2, REFUSED);
    // Another /64, and the load balancer's own address does not count.
    let (r3, _c3) = first_reply(srv.addr, Some(&header("2001:db8:0:2::1"))).await;
    assert!(r3.starts_with("220 "), "{r3}");
    srv.shutdown().await;
}

#[tokio::test]
async fn junk_commands_count_as_errors_past_the_limit() {
    let cfg = plain_config().max_junk_commands(3).max_errors(2).build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    for _ in 0..3 {
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    }
    // The 4th is answered but counted; the 5th reaches max_errors.
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    c.send("VRFY bob\r\n").await;
    assert!(c.reply().await.starts_with("252 "));
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert_eq!(c.reply().await, "", "closed");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_duration() {
    let cfg = plain_config()
        .max_session_duration(Duration::from_secs(1))
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    assert!(c.cmd("EHLO client.example").await.starts_with("250"));
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    // Chatty or idle, the session ends when its time is up.
    assert_eq!(
        c.reply().await,
        "421 4.4.2 Maximum session duration reached, closing connection"
    );
    assert_eq!(c.reply().await, "");
    srv.shutdown().await;
}
