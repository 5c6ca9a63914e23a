//! Reload without dropping sessions: SIGHUP re-reads the TLS certificate and key and the
//! sender/login map (the users file has its own test in `auth_scale.rs`) for what follows;
//! a session already in TLS keeps going; a broken file is refused and the old one stays.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use e2e::{Smtpd, file_config, free_port, maildir_messages, python, temp_dir};

/// A fresh STARTTLS handshake: the SHA-256 of the certificate the server presents, and
/// whether it is the one in `cert` (PEM) now.
fn handshake(port: u16, cert: &std::path::Path) -> String {
    python(&format!(
        r#"
import smtplib, ssl, hashlib
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.starttls(context=ctx)
der = s.sock.getpeercert(binary_form=True)
on_disk = ssl.PEM_cert_to_DER_cert(open({cert:?}).read())
print(hashlib.sha256(der).hexdigest()[:16], der == on_disk)
s.quit()
"#
    ))
}

#[test]
fn sighup_swaps_the_certificate_and_the_sender_map_for_new_sessions_only() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("reload");
    let port = free_port();
    let map = dir.join("senders");
    std::fs::write(&map, "alice@mx.test: alice\n").unwrap();
    let extra = format!("sender_login = \"map\"\nsender_login_map = {map:?}");
    let srv = Smtpd::start(&dir, &file_config(&dir, port, &extra, true), port);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));

    let first = handshake(port, &cert);
    assert!(first.ends_with(" True\n"), "{first}");

    // A session opened now, inside TLS with the first certificate, that sends its message
    // only after the reload.
    let flag = dir.join("go");
    let mut held = Command::new("python3")
        .arg("-c")
        .arg(format!(
            r#"
import smtplib, ssl, hashlib, os, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)
s.starttls(context=ctx)
s.login('alice', 'wonder land')
print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()[:16], flush=True)
for _ in range(400):
    if os.path.exists({flag:?}):
        break
    time.sleep(0.05)
try:
    s.sendmail('sales@mx.test', ['carol@example.org'], 'Subject: held\r\n\r\nbody\r\n')
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code)
print(s.sendmail('alice@mx.test', ['carol@example.org'], 'Subject: held\r\n\r\nbody\r\n'))
s.quit()
"#
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        first.split(' ').next().unwrap(),
        "the held session's cert"
    );

    // Renewal: a new certificate and key on disk, the sales address granted to alice.
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    std::fs::write(&key, renewed.key_pair.serialize_pem()).unwrap();
    std::fs::write(&map, "alice@mx.test: alice\nsales@mx.test: alice\n").unwrap();
    srv.sighup();
    srv.wait_for_log("TLS certificate and key reloaded", 1);
    srv.wait_for_log("sender/login map reloaded", 1);

    // A fresh handshake presents the new certificate.
    let second = handshake(port, &cert);
    assert!(second.ends_with(" True\n"), "{second}");
    assert_ne!(first, second);
    // The new map holds for a new session.
    let sent = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.login('alice', 'wonder land')
print(s.sendmail('sales@mx.test', ['carol@example.org'], 'Subject: new map\r\n\r\nbody\r\n'))
s.quit()
"#
    ));
    assert_eq!(sent, "{}\n");

    // The held session goes on in its TLS session, undisturbed; the map is a policy read at
    // each MAIL, so its next MAIL may use the granted address too.
    std::fs::write(&flag, "").unwrap();
    let mut rest = String::new();
    for l in out.lines() {
        rest.push_str(&l.unwrap());
        rest.push('\n');
    }
    assert!(held.wait().unwrap().success());
    assert_eq!(rest, "{}\n");

    // Broken files are refused; what was in force stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&map, "no colon here\n").unwrap();
    srv.sighup();
    srv.wait_for_log("TLS reload refused", 1);
    srv.wait_for_log("sender/login map reload refused", 1);
    let log = srv.log();
    assert!(log.contains("tls.cert"), "the log names the problem: {log}");
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    let third = handshake(port, &cert);
    assert_eq!(third, second, "the renewed certificate stays in force");
    // The new session's message and the held session's two.
    assert_eq!(maildir_messages(&dir.join("Maildir")).len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}
