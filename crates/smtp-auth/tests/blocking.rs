//! The blocking example, driven by real clients: Python's smtplib (PLAIN, LOGIN with and
//! without initial response, CRAM-MD5) and raw transcripts over a socket (SCRAM, cancel).

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/blocking.rs"]
mod blocking;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use smtp_auth::ClientMechanism;
use smtp_auth::mechanism::ScramSha256Client;

fn start(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        blocking::serve(listener, blocking::demo_users(), Some(connections))
    });
    port
}

fn python(port: u16, body: &str) -> String {
    let script = format!(
        "import smtplib, sys\ns = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.example', timeout=10)\ns.ehlo()\n{body}\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn smtplib_logs_in_with_each_mechanism() {
    let port = start(6);
    let body = r#"
def attempt(mech, fn, pw, ir=True):
    global s
    s = smtplib.SMTP('127.0.0.1', PORT, local_hostname='client.example', timeout=10)
    s.ehlo()
    s.user, s.password = 'demo', pw
    try:
        code, msg = s.auth(mech, fn(), initial_response_ok=ir)
        print(mech, ir, code, msg.decode())
    except smtplib.SMTPAuthenticationError as e:
        print(mech, ir, e.smtp_code, e.smtp_error.decode())
    s.quit()

print(sorted(s.esmtp_features['auth'].split()))
s.quit()
attempt('PLAIN', lambda: s.auth_plain, 'demo-password')
attempt('LOGIN', lambda: s.auth_login, 'demo-password', True)
attempt('LOGIN', lambda: s.auth_login, 'demo-password', False)
attempt('CRAM-MD5', lambda: s.auth_cram_md5, 'demo-password', False)
attempt('PLAIN', lambda: s.auth_plain, 'wrong')
"#
    .replace("PORT", &port.to_string());
    let out = python(port, &body);
    assert_eq!(
        out,
        "['CRAM-MD5', 'EXTERNAL', 'LOGIN', 'OAUTHBEARER', 'PLAIN', 'SCRAM-SHA-256', 'XOAUTH2']\n\
         PLAIN True 235 2.7.0 Authentication successful\n\
         LOGIN True 235 2.7.0 Authentication successful\n\
         LOGIN False 235 2.7.0 Authentication successful\n\
         CRAM-MD5 False 235 2.7.0 Authentication successful\n\
         PLAIN True 535 5.7.8 Authentication credentials invalid\n"
    );
}

struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut r = Self {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        assert!(r.read_line().starts_with("220 "));
        r
    }

    fn read_line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }

    /// Sends a line and returns the full reply (all lines).
    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut lines = vec![self.read_line()];
        while lines.last().unwrap().as_bytes().get(3) == Some(&b'-') {
            lines.push(self.read_line());
        }
        lines
    }
}

#[test]
fn raw_transcripts() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let port = start(1);
    let mut c = Raw::connect(port);
    assert_eq!(
        c.cmd("AUTH PLAIN AGRlbW8AZGVtby1wYXNzd29yZA=="),
        ["503 5.5.1 Send EHLO first"]
    );
    assert_eq!(c.cmd("EHLO client.example").len(), 3);
    // Cancel with "*".
    assert_eq!(c.cmd("AUTH LOGIN"), ["334 VXNlcm5hbWU6"]);
    assert_eq!(c.cmd("*"), ["501 5.7.0 Authentication cancelled"]);
    assert_eq!(
        c.cmd("AUTH FOO"),
        ["504 5.5.4 Unrecognized authentication type"]
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>"),
        ["530 5.7.0 Authentication required"]
    );
    // SCRAM-SHA-256 with our client mechanism over the wire.
    let mut scram = ScramSha256Client::new("demo", "demo-password", None);
    let first = scram.initial_response().unwrap();
    let reply = c.cmd(&format!(
        "AUTH SCRAM-SHA-256 {}",
        b64(first.expose_secret())
    ));
    let server_first = reply[0].strip_prefix("334 ").unwrap();
    let server_first = base64::engine::general_purpose::STANDARD
        .decode(server_first)
        .unwrap();
    let client_final = scram.respond(&server_first).unwrap();
    let reply = c.cmd(&b64(client_final.expose_secret()));
    let server_final = base64::engine::general_purpose::STANDARD
        .decode(reply[0].strip_prefix("334 ").unwrap())
        .unwrap();
    assert!(server_final.starts_with(b"v="));
    assert!(
        scram
            .respond(&server_final)
            .unwrap()
            .expose_secret()
            .is_empty()
    );
    assert_eq!(c.cmd(""), ["235 2.7.0 Authentication successful"]);
    assert_eq!(
        c.cmd("AUTH PLAIN AGRlbW8AZGVtby1wYXNzd29yZA=="),
        ["503 5.5.1 Already authenticated"]
    );
    assert_eq!(c.cmd("QUIT"), ["221 2.0.0 Bye"]);
}
