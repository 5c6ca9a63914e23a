//! DKIM signing of authenticated submissions, checked by an independent verifier: Python's
//! dkimpy (`dkim.DKIM.verify` with a DNS stub answering the TXT records that
//! `smtpd dkim-keygen` printed), for rsa-sha256 and ed25519-sha256, through the Maildir and
//! through the relay into Postfix's smtp-sink. A message altered after signing fails; a 3 MiB
//! message is signed while it streams to disk (the server's peak RSS is measured).

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{Smtpd, file_config, free_port, maildir_messages, python, temp_dir};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    e2e::ensure_python_modules("dkim, nacl");
}

/// `smtpd dkim-keygen`: the key file and the DNS record (name, TXT value) it printed.
fn keygen(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> (PathBuf, String, String) {
    let key = dir.join(format!("{selector}.{domain}.{algorithm}.pem"));
    let out = Command::new(e2e::smtpd_bin())
        .args(["dkim-keygen", "--domain", domain, "--selector", selector])
        .args(["--algorithm", algorithm, "--out"])
        .arg(&key)
        .output()
        .expect("smtpd dkim-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let record = text
        .lines()
        .find(|l| l.contains("._domainkey."))
        .expect("a DNS record line");
    let (name, txt) = record.split_once(" IN TXT ").unwrap();
    // The zone-file strings joined back into one value.
    let value: String = txt
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    assert!(
        text.contains(&format!("[[dkim]]\ndomain = \"{domain}\"")),
        "{text}"
    );
    (key, name.trim_end_matches('.').to_owned(), value)
}

/// The `[[dkim]]` sections for `keys` (domain, selector, key file).
fn dkim_sections(keys: &[(&str, &str, &Path)]) -> String {
    keys.iter()
        .map(|(d, s, k)| format!("\n[[dkim]]\ndomain = \"{d}\"\nselector = \"{s}\"\nkey = {k:?}\n"))
        .collect()
}

/// Runs dkimpy over `message` (bytes in a file): one line per signature, `d s a verified`.
fn dkimpy(dir: &Path, message: &[u8], records: &[(String, String)]) -> String {
    let file = dir.join(format!("verify-{}.eml", e2e::free_port()));
    std::fs::write(&file, message).unwrap();
    let records: String = records
        .iter()
        .map(|(n, v)| format!("    {:?}: {:?},\n", format!("{n}."), v))
        .collect();
    python(&format!(
        r#"
import dkim, re
records = {{
{records}}}
def dns(name, timeout=5):
    return records.get(name.decode() if isinstance(name, bytes) else name, '').encode()
msg = open({file:?}, 'rb').read()
d = dkim.DKIM(msg)
sigs = [v for (k, v) in d.headers if k.lower() == b'dkim-signature']
for i, sig in enumerate(sigs):
    tags = dict(t.strip().split('=', 1) for t in re.sub(rb'\s+', b'', sig).decode().split(';') if '=' in t)
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dns)
    except Exception:
        ok = False
    print(tags['d'], tags['s'], tags['a'], tags['c'], ok)
    if i == 0:
        print('h=' + tags['h'].lower())
"#
    ))
}

/// Sends `message` as alice (any sender allowed) over smtplib.
fn submit(port: u16, from: &str, message: &str) -> String {
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=60)
s.login('alice', 'wonder land')
print(s.sendmail({from:?}, ['carol@example.net'], {message:?}))
s.quit()
"#
    ))
}

/// The peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn rsa_and_ed25519_signatures_verify_through_the_maildir_and_alterations_fail() {
    setup();
    let dir = temp_dir("dkim-maildir");
    let (rsa, rsa_name, rsa_txt) = keygen(&dir, "example.org", "rsa1", "rsa");
    let (ed, ed_name, ed_txt) = keygen(&dir, "example.org", "ed1", "ed25519");
    let records = [(rsa_name, rsa_txt), (ed_name, ed_txt)];
    let port = free_port();
    let metrics = free_port();
    let config = file_config(&dir, port, "sender_login = \"any\"", false)
        + &dkim_sections(&[("example.org", "rsa1", &rsa), ("example.org", "ed1", &ed)])
        + &format!("\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n");
    let srv = Smtpd::start(&dir, &config, port);
    // No Date: and no Message-ID: the fields smtpd adds are signed too. A folded Subject and
    // trailing white space exercise relaxed canonicalisation.
    let message = "From: Alice <alice@example.org>\r\nTo: carol@example.net\r\n\
                   Subject: signed\r\n  and folded  \r\n\r\nHello,  world \r\n\r\n.dot line\r\n";
    assert_eq!(
        submit(port, "alice@example.org", message),
        "{}\n",
        "{}",
        srv.log()
    );
    let msgs = maildir_messages(&dir.join("Maildir"));
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.starts_with("Received: from client.test"), "{m}");
    assert_eq!(m.matches("DKIM-Signature: ").count(), 2, "{m}");
    let out = dkimpy(&dir, m.as_bytes(), &records);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "example.org rsa1 rsa-sha256 relaxed/relaxed True",
        "{out}\n{m}"
    );
    assert_eq!(
        lines[2], "example.org ed1 ed25519-sha256 relaxed/relaxed True",
        "{out}"
    );
    // From is oversigned; the Date: and Message-ID: we added are covered.
    let h = lines[1].strip_prefix("h=").unwrap();
    assert_eq!(h.matches("from").count(), 2, "{h}");
    for f in ["to", "subject", "date", "message-id"] {
        assert!(h.split(':').any(|x| x == f), "{f} in {h}");
    }
    assert!(!h.contains("received"), "{h}");
    // Altered after signing: a body line, a signed header field, a second From: each fail.
    for (what, altered) in [
        ("body", m.replace("Hello,  world", "Hello, world!")),
        ("subject", m.replace("Subject: signed", "Subject: changed")),
        (
            "added From",
            m.replacen("To: carol", "From: mallory@example.org\r\nTo: carol", 1),
        ),
    ] {
        let out = dkimpy(&dir, altered.as_bytes(), &records);
        assert_eq!(out.matches(" False").count(), 2, "{what}: {out}");
    }
    // A domain with no key is sent unsigned; so is nothing else.
    let other = "From: alice@example.com\r\nSubject: unsigned\r\n\r\nbody\r\n";
    assert_eq!(submit(port, "alice@example.com", other), "{}\n");
    let msgs = maildir_messages(&dir.join("Maildir"));
    let unsigned = msgs
        .iter()
        .find(|m| m.contains("Subject: unsigned"))
        .unwrap();
    assert!(!unsigned.contains("DKIM-Signature"), "{unsigned}");
    // A subdomain's mail is signed with its parent's keys (DMARC relaxed alignment).
    let sub = "From: alice@eu.example.org\r\nSubject: sub\r\n\r\nbody\r\n";
    assert_eq!(submit(port, "alice@eu.example.org", sub), "{}\n");
    let msgs = maildir_messages(&dir.join("Maildir"));
    let m = msgs.iter().find(|m| m.contains("Subject: sub")).unwrap();
    let out = dkimpy(&dir, m.as_bytes(), &records);
    assert_eq!(out.matches(" True").count(), 2, "{out}");
    // Counted: two signed, one without a key.
    let scraped =
        e2e::run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")]));
    let scraped = String::from_utf8_lossy(&scraped.stdout);
    assert!(
        scraped.contains("smtpd_dkim_total{result=\"signed\"} 2"),
        "{scraped}"
    );
    assert!(
        scraped.contains("smtpd_dkim_total{result=\"no_key\"} 1"),
        "{scraped}"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends a 3 MiB message from alice@example.org through the server at `port` (process `pid`),
/// after a small one (so that the first message's allocations are not counted): the peak RSS
/// (KiB) before and after.
fn send_3_mib(port: u16, pid: u32) -> (u64, u64) {
    let small = "From: alice@example.org\r\nSubject: warm-up\r\n\r\nhello\r\n";
    assert_eq!(submit(port, "alice@example.org", small), "{}\n");
    let before = peak_rss_kib(pid);
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n";
    let big = python(&format!(
        r#"
import smtplib
body = {line:?} * {n}
msg = 'From: alice@example.org\r\nSubject: large\r\n\r\n' + body
s = smtplib.SMTP('127.0.0.1', {port}, timeout=120)
s.login('alice', 'wonder land')
print(s.sendmail('alice@example.org', ['carol@example.net'], msg))
s.quit()
"#,
        n = 3 * 1024 * 1024 / line.len() + 1
    ));
    assert_eq!(big, "{}\n");
    (before, peak_rss_kib(pid))
}

/// The 3 MiB message as `what` delivered it verifies, and the body was hashed as it arrived
/// and never held whole: the peak grows by far less than the message.
fn check_large(
    dir: &Path,
    what: &str,
    message: &str,
    records: &[(String, String)],
    rss: (u64, u64),
) {
    assert!(message.len() > 3 * 1024 * 1024);
    let out = dkimpy(dir, message.as_bytes(), records);
    assert!(
        out.starts_with("example.org big rsa-sha256 relaxed/relaxed True"),
        "{out}"
    );
    let (before, after) = rss;
    let grown = after.saturating_sub(before);
    eprintln!(
        "{what}: peak RSS {before} KiB before, {after} KiB after a 3 MiB signed message (+{grown} KiB)"
    );
    assert!(
        grown < 1024,
        "{what}: peak RSS grew {grown} KiB for a 3 MiB message"
    );
}

#[test]
fn a_3_mib_message_is_signed_while_it_streams_to_disk() {
    setup();
    let dir = temp_dir("dkim-large");
    let (rsa, name, txt) = keygen(&dir, "example.org", "big", "rsa");
    let records = [(name, txt)];
    let sections = dkim_sections(&[("example.org", "big", &rsa)]);
    // The Maildir takes every body straight into its tmp/ as it arrives.
    let port = free_port();
    let config = file_config(&dir, port, "sender_login = \"any\"", false) + &sections;
    let srv = Smtpd::start(&dir, &config, port);
    let rss = send_3_mib(port, srv.child.id());
    let msgs = maildir_messages(&dir.join("Maildir"));
    let m = msgs.iter().find(|m| m.contains("Subject: large")).unwrap();
    check_large(&dir, "maildir", m, &records, rss);
    drop(srv);
    // The relay: a body over `spool_threshold` goes to a spool file as it arrives and is
    // streamed upstream from it. (At the default 1 MiB, the first MiB is held in memory until
    // it spills, +2.4 MiB peak with or without signing; 64 KiB here.)
    let dumps = dir.join("dumps");
    let (_sink, up) = e2e::smtp_sink(&dumps);
    let relay_dir = dir.join("relay");
    std::fs::create_dir_all(&relay_dir).unwrap();
    let port = free_port();
    let config = e2e::relay_config(
        &relay_dir,
        port,
        "127.0.0.1",
        up,
        "sender_login = \"any\"\nspool_threshold = 65536",
        "timeout_secs = 60",
    ) + &sections;
    let srv = Smtpd::start(&relay_dir, &config, port);
    let rss = send_3_mib(port, srv.child.id());
    let large = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|d| d.contains("Subject: large"))
        .expect("the large message reached smtp-sink")
        .replace('\n', "\r\n");
    check_large(&dir, "relay", &large, &records, rss);
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn relayed_into_smtp_sink_the_signature_verifies() {
    setup();
    e2e::ensure_tool("smtp-sink");
    let dir = temp_dir("dkim-relay");
    let (ed, ed_name, ed_txt) = keygen(&dir, "edge.test", "e1", "ed25519");
    let (rsa, rsa_name, rsa_txt) = keygen(&dir, "edge.test", "r1", "rsa");
    let records = [(ed_name, ed_txt), (rsa_name, rsa_txt)];
    let dumps = dir.join("dumps");
    let (_sink, up) = e2e::smtp_sink(&dumps);
    let port = free_port();
    let config = e2e::relay_config(
        &dir,
        port,
        "127.0.0.1",
        up,
        "sender_login = \"any\"",
        "timeout_secs = 20",
    ) + &dkim_sections(&[("edge.test", "e1", &ed), ("edge.test", "r1", &rsa)]);
    let srv = Smtpd::start(&dir, &config, port);
    let message = "From: alice@edge.test\r\nTo: carol@example.net\r\nSubject: relayed\r\n\r\nThrough the relay\r\n";
    assert_eq!(
        submit(port, "alice@edge.test", message),
        "{}\n",
        "{}",
        srv.log()
    );
    let files: Vec<_> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // smtp-sink writes LF line ends and its own X- fields on top (unsigned: they do not count).
    let dump = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace('\n', "\r\n");
    let out = dkimpy(&dir, dump.as_bytes(), &records);
    assert_eq!(out.matches(" True").count(), 2, "{out}\n{dump}");
    let altered = dump.replace("Through the relay", "Through the relay!");
    let out = dkimpy(&dir, altered.as_bytes(), &records);
    assert_eq!(out.matches(" False").count(), 2, "{out}");
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keys_reload_on_sighup_and_a_broken_key_keeps_the_old_ones() {
    setup();
    let dir = temp_dir("dkim-reload");
    let (first, name1, txt1) = keygen(&dir, "example.org", "s1", "ed25519");
    let key = dir.join("live.pem");
    std::fs::copy(&first, &key).unwrap();
    let port = free_port();
    let config = file_config(&dir, port, "sender_login = \"any\"", false)
        + &dkim_sections(&[("example.org", "s1", &key)]);
    let srv = Smtpd::start(&dir, &config, port);
    let send = |subject: &str| {
        let m = format!("From: alice@example.org\r\nSubject: {subject}\r\n\r\nx\r\n");
        assert_eq!(submit(port, "alice@example.org", &m), "{}\n");
        maildir_messages(&dir.join("Maildir"))
            .into_iter()
            .find(|m| m.contains(&format!("Subject: {subject}")))
            .unwrap()
    };
    let hup = |srv: &Smtpd, line: &str| {
        let before = srv.log().matches(line).count();
        Command::new("kill")
            .args(["-HUP", &srv.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..100 {
            if srv.log().matches(line).count() > before {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no `{line}` after SIGHUP: {}", srv.log());
    };
    let old = [(name1.clone(), txt1.clone())];
    assert!(dkimpy(&dir, send("one").as_bytes(), &old).contains(" True"));
    // A new key under the same file: signed with it after SIGHUP (the old record fails it).
    let (second, name2, txt2) = keygen(&dir, "example.org", "s1", "rsa");
    assert_eq!(name1, name2);
    std::fs::copy(&second, &key).unwrap();
    hup(&srv, "DKIM keys reloaded");
    let m = send("two");
    assert!(dkimpy(&dir, m.as_bytes(), &[(name2, txt2.clone())]).contains(" True"));
    assert!(dkimpy(&dir, m.as_bytes(), &old).contains(" False"));
    // A broken key file is refused; the keys in force stay.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    hup(&srv, "DKIM key reload refused");
    let m = send("three");
    assert!(dkimpy(&dir, m.as_bytes(), &[(name1, txt2)]).contains(" True"));
    assert!(
        !srv.log().contains("BEGIN PRIVATE"),
        "no key material in the log"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_takes_openssl_keys_and_names_a_short_one() {
    setup();
    let dir = temp_dir("dkim-check");
    let users = e2e::users_file(&dir, &[("a", "b")]);
    let openssl = |args: &[&str], out: &Path| {
        let o = e2e::run(Command::new("openssl").args(args).arg("-out").arg(out));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let ed = dir.join("ed.pem");
    openssl(&["genpkey", "-algorithm", "ed25519"], &ed);
    let rsa8 = dir.join("rsa8.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        &rsa8,
    );
    let rsa1 = dir.join("rsa1.pem");
    openssl(&["genrsa", "-traditional"], &rsa1);
    let short = dir.join("short.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
        &short,
    );
    let check = |keys: &[(&str, &str, &Path)]| {
        let path = dir.join("check.toml");
        let config =
            format!("[auth]\nbackend = \"file\"\nusers_file = {users:?}\n") + &dkim_sections(keys);
        std::fs::write(&path, config).unwrap();
        let o = e2e::run(
            Command::new(e2e::smtpd_bin())
                .arg("check-config")
                .arg(&path),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    // Ed25519 (PKCS#8 v1), RSA in PKCS#8 and in PKCS#1, as OpenSSL writes them.
    let (ok, out) = check(&[
        ("example.org", "ed", &ed),
        ("example.org", "rsa8", &rsa8),
        ("example.net", "rsa1", &rsa1),
    ]);
    assert!(ok, "{out}");
    // A 1024-bit key is refused, naming the section and the file, showing no key material.
    let (ok, out) = check(&[("example.org", "ed", &ed), ("example.org", "old", &short)]);
    assert!(!ok);
    assert!(out.contains("key `dkim[1].key`"), "{out}");
    assert!(
        out.contains("RSA key of 1024 bits; DKIM keys need at least 2048"),
        "{out}"
    );
    assert!(out.contains("short.pem"), "{out}");
    assert!(!out.contains("BEGIN"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
