//! The blocking example (`examples/blocking.rs`: std::net, one thread per connection, the
//! sans-IO machine, no async runtime) serving real mail to Python's smtplib.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/blocking.rs"]
mod blocking;

use std::net::TcpListener;

#[allow(unreachable_pub)]
#[path = "common/python.rs"]
mod python;

use python::python_blocking as python;

#[test]
fn smtplib_sends_through_the_blocking_server() {
    let dir = std::env::temp_dir().join(format!("blocking-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = {
        let dir = dir.clone();
        std::thread::spawn(move || blocking::serve(listener, dir, Some(2)))
    };
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)
print(s.ehlo()[1].decode().splitlines()[-1])
try:
    s.sendmail('alice@example.org', ['bob@example.net'], 'Subject: no\r\n\r\nx\r\n')
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code, e.smtp_error.decode())
try:
    s.login('alice', 'nope')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
print(s.login('alice', 'wonderland'))
msg = 'Subject: hi\r\n\r\nHello\r\n.leading dot\r\n'
print(s.sendmail('alice@example.org', ['bob@example.net', 'carol@example.net'], msg))
print(s.quit())
s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)
s.ehlo()
print(s.docmd('AUTH', 'PLAIN'))
s.close()
"#
    ));
    assert_eq!(
        out,
        "AUTH PLAIN LOGIN\n\
         530 5.7.0 Authentication required\n\
         535 5.7.8 Authentication credentials invalid\n\
         (235, b'2.7.0 Authentication successful')\n\
         {}\n\
         (221, b'2.0.0 Bye')\n\
         (334, b'')\n"
    );
    served.join().unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["1.eml".to_string()]);
    assert_eq!(
        std::fs::read(dir.join("1.eml")).unwrap(),
        b"X-Authenticated-User: alice\r\nSubject: hi\r\n\r\nHello\r\n.leading dot\r\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
