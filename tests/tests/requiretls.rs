//! REQUIRETLS (RFC 8689) through the real binary: offered over TLS only, `MAIL … REQUIRETLS`
//! taken only over TLS, relayed only over verified TLS to an upstream that offers REQUIRETLS
//! (a second smtpd), else refused `550 5.7.30` (an smtpd without it, Postfix's smtp-sink
//! without STARTTLS, an upstream whose certificate is not trusted); and `TLS-Required: No`
//! (§5) lets a message go without TLS when TLS to the upstream fails.

use std::path::{Path, PathBuf};

use e2e::{Smtpd, cert_files, file_config, free_port, maildir_messages, python, temp_dir};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

/// An upstream smtpd with STARTTLS (a certificate for "localhost"), taking mail without AUTH
/// into its Maildir; `requiretls` says whether it offers REQUIRETLS. Its dir and port.
fn upstream(name: &str, requiretls: bool) -> (Smtpd, PathBuf, u16) {
    let dir = temp_dir(name);
    let port = free_port();
    let config = file_config(&dir, port, &format!("requiretls = {requiretls}"), true)
        .replace("auth_required = true", "auth_required = false");
    (Smtpd::start(&dir, &config, port), dir, port)
}

/// An edge smtpd (STARTTLS listener, user alice) relaying to `host:up_port` with the
/// `[delivery]` keys `delivery`.
fn edge(name: &str, host: &str, up_port: u16, delivery: &str) -> (Smtpd, PathBuf, u16) {
    let dir = temp_dir(name);
    let port = free_port();
    let (cert, key) = cert_files(&dir);
    let listener = format!("address = \"127.0.0.1:{port}\"\n");
    let config = e2e::relay_config(
        &dir,
        port,
        host,
        up_port,
        "auth_failure_delay_ms = 0\nsender_login = \"any\"",
        &format!("timeout_secs = 20\nreuse_idle_secs = 0\n{delivery}"),
    )
    .replace(&listener, &format!("{listener}tls = \"starttls\"\n"))
        + &format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n");
    (Smtpd::start(&dir, &config, port), dir, port)
}

/// Sends one message as alice (over STARTTLS when `tls`) with `mail_options`, `headers` in
/// front of it: `{}` or the refusal's code and text.
fn send(port: u16, tls: bool, mail_options: &str, headers: &str) -> String {
    let starttls = if tls {
        "import ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\ns.starttls(context=ctx)\ns.ehlo('client.test')\n"
    } else {
        ""
    };
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=60)
s.ehlo('client.test')
{starttls}
s.login('alice', 'wonder land')
msg = {headers:?} + 'From: alice@edge.test\r\nSubject: hop\r\n\r\nbody\r\n'
try:
    print(s.sendmail('alice@edge.test', ['carol@example.net'], msg, mail_options={mail_options}))
except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused) as e:
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        code, text = list(e.recipients.values())[0]
    else:
        code, text = e.smtp_code, e.smtp_error
    print(code, text.decode())
s.quit()
"#
    ))
}

fn messages(dir: &Path) -> Vec<String> {
    maildir_messages(&dir.join("Maildir"))
}

#[test]
fn offered_and_taken_over_tls_only() {
    setup();
    let (up, up_dir, up_port) = upstream("rtls-offer-up", true);
    let (srv, dir, port) = edge(
        "rtls-offer",
        "localhost",
        up_port,
        &format!("ca_file = {:?}", up_dir.join("cert.pem")),
    );
    let out = python(&format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=30)
s.ehlo('client.test')
s.login('alice', 'wonder land')
print('plain', s.has_extn('requiretls'))
print(*s.docmd('MAIL FROM:<alice@edge.test> REQUIRETLS'))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo('client.test')
s.login('alice', 'wonder land')
print('tls', s.has_extn('requiretls'))
print(*s.docmd('MAIL FROM:<alice@edge.test> REQUIRETLS=yes'))
s.quit()
"#
    ));
    assert_eq!(
        out,
        "plain False\n530 b'5.7.10 REQUIRETLS needs a TLS session: STARTTLS first'\ntls True\n\
         501 b'5.5.4 REQUIRETLS takes no value'\n",
        "{}",
        srv.log()
    );
    drop((srv, up));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(up_dir);
}

#[test]
fn relayed_only_over_verified_tls_to_an_upstream_that_offers_it() {
    setup();
    let (up, up_dir, up_port) = upstream("rtls-up", true);
    // `starttls` is off: a REQUIRETLS message turns it on; other messages go as configured.
    let trusted = format!("ca_file = {:?}", up_dir.join("cert.pem"));
    let (srv, dir, port) = edge("rtls-edge", "localhost", up_port, &trusted);
    assert_eq!(
        send(port, true, "['REQUIRETLS']", ""),
        "{}\n",
        "{}",
        srv.log()
    );
    assert_eq!(send(port, true, "[]", ""), "{}\n");
    let got = messages(&up_dir);
    assert_eq!(got.len(), 2, "{}", up.log());
    // The REQUIRETLS hop was TLS (ESMTPS: the upstream took REQUIRETLS over it); the other one
    // went as configured, in the clear.
    assert_eq!(
        got.iter()
            .filter(|m| m.contains("by mx.test with ESMTPS id"))
            .count(),
        1
    );
    assert_eq!(
        got.iter()
            .filter(|m| m.contains("by mx.test with ESMTP id"))
            .count(),
        1
    );
    drop(srv);

    // An upstream whose certificate is not trusted: refused, nothing delivered.
    let (srv, dir2, port) = edge("rtls-untrusted", "localhost", up_port, "");
    let out = send(port, true, "['REQUIRETLS']", "");
    assert!(
        out.starts_with("550 5.7.30 REQUIRETLS support required: TLS: invalid peer certificate"),
        "{out}"
    );
    assert_eq!(messages(&up_dir).len(), 2);
    drop(srv);

    // An upstream with STARTTLS but without REQUIRETLS: refused.
    let (plain_up, plain_dir, plain_port) = upstream("rtls-no-up", false);
    let trusted = format!("ca_file = {:?}", plain_dir.join("cert.pem"));
    let (srv, dir3, port) = edge("rtls-edge-no", "localhost", plain_port, &trusted);
    assert_eq!(
        send(port, true, "['REQUIRETLS']", ""),
        "550 5.7.30 REQUIRETLS support required: the upstream does not offer REQUIRETLS\n"
    );
    assert!(messages(&plain_dir).is_empty());
    // `TLS-Required: No` does not lift REQUIRETLS (§5: the header field is then ignored).
    assert_eq!(
        send(port, true, "['REQUIRETLS']", "TLS-Required: No\r\n"),
        "550 5.7.30 REQUIRETLS support required: the upstream does not offer REQUIRETLS\n"
    );
    assert!(messages(&plain_dir).is_empty());
    drop((srv, plain_up, up));
    for d in [dir, dir2, dir3, up_dir, plain_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn an_upstream_without_starttls_refuses_requiretls_and_tls_required_no_goes_in_the_clear() {
    setup();
    let work = temp_dir("rtls-sink");
    let dumps = work.join("dumps");
    let (_sink, up) = e2e::smtp_sink(&dumps);
    let dumped = || std::fs::read_dir(&dumps).unwrap().count();
    // Without `starttls`: a REQUIRETLS message needs it, and smtp-sink has none.
    let (srv, dir, port) = edge("rtls-sink-edge", "127.0.0.1", up, "");
    assert_eq!(
        send(port, true, "['REQUIRETLS']", ""),
        "550 5.7.30 REQUIRETLS support required: upstream offers no STARTTLS\n",
        "{}",
        srv.log()
    );
    assert_eq!(dumped(), 0);
    drop(srv);
    // With `starttls = true` TLS is required for every message: one without `TLS-Required: No`
    // is refused at the end of DATA; one with it goes without TLS, the header field kept.
    let (srv, dir2, port) = edge("rtls-sink-strict", "127.0.0.1", up, "starttls = true");
    let out = send(port, false, "[]", "");
    assert_eq!(
        out,
        "451 4.4.0 Upstream failure: upstream offers no STARTTLS\n",
        "{}",
        srv.log()
    );
    assert_eq!(dumped(), 0);
    assert_eq!(
        send(port, false, "[]", "TLS-Required: No\r\n"),
        "{}\n",
        "{}",
        srv.log()
    );
    assert_eq!(dumped(), 1);
    let file = std::fs::read_dir(&dumps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dump = std::fs::read_to_string(file).unwrap();
    assert!(dump.contains("\nTLS-Required: No\n"), "{dump}");
    assert!(srv.log().contains("sent without TLS"), "{}", srv.log());
    drop(srv);
    for d in [dir, dir2, work] {
        let _ = std::fs::remove_dir_all(d);
    }
}
