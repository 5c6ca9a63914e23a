//! The LDAP store, against a real OpenLDAP `slapd` started by each test on a temporary
//! database: the library provider (direct bind and search-then-bind, filter and DN escaping,
//! the pool, slapd down and hanging), and `smtpd` with `backend = "ldap"` driven by smtplib and
//! swaks.

use std::time::{Duration, Instant};

use e2e::{Slapd, Smtpd, free_port, maildir_messages, python, slappasswd, temp_dir};
use smtp_auth::{AuthDecision, AuthRequest, Password, SessionInfo};
use smtp_auth_ldap::{LdapConfig, LdapProvider, Lookup};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

fn request(user: &str, password: &str) -> AuthRequest {
    AuthRequest::new(
        &SessionInfo::default(),
        "PLAIN",
        user.into(),
        Password::new(password.into()),
        None,
    )
}

fn people() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "alice",
            slappasswd("{SSHA}", "wonder land"),
            "alice@example.org",
        ),
        ("bob", slappasswd("{CRYPT}", "builder"), "bob@example.org"),
    ]
}

fn start(dir: &std::path::Path) -> Slapd {
    let people = people();
    let refs: Vec<(&str, &str, &str)> = people
        .iter()
        .map(|(u, h, m)| (*u, h.as_str(), *m))
        .collect();
    Slapd::start(dir, &refs)
}

fn search() -> Lookup {
    Lookup::Search {
        bind_dn: "cn=smtpd,dc=example,dc=org".into(),
        bind_password: Password::new("service-pw".into()),
        base: "ou=people,dc=example,dc=org".into(),
        filter: "(&(objectClass=inetOrgPerson)(uid=%u))".into(),
    }
}

fn provider(url: &str, lookup: Lookup, timeout: Duration) -> LdapProvider {
    let mut c = LdapConfig::new(url, lookup);
    c.timeout = timeout;
    c.connections = 2;
    LdapProvider::new(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_search_binds_against_a_real_slapd() {
    let dir = temp_dir("ldap-lib");
    let mut slapd = start(&dir);
    let url = slapd.url();
    let direct = provider(
        &url,
        Lookup::Template("uid=%u,ou=people,dc=example,dc=org".into()),
        Duration::from_secs(5),
    );
    let searched = provider(&url, search(), Duration::from_secs(5));
    for p in [&direct, &searched] {
        let check =
            |u: &'static str, pw: &'static str| async move { p.check(&request(u, pw)).await };
        assert_eq!(
            check("alice", "wonder land").await,
            AuthDecision::Ok,
            "{p:?}"
        );
        assert_eq!(
            check("bob", "builder").await,
            AuthDecision::Ok,
            "{{CRYPT}} $6$"
        );
        assert_eq!(check("alice", "wonderland").await, AuthDecision::Invalid);
        assert_eq!(check("nobody", "wonder land").await, AuthDecision::Invalid);
        // An empty password would be an unauthenticated bind: never sent.
        assert_eq!(check("alice", "").await, AuthDecision::Invalid);
        // A user name that would widen the filter or the DN, with alice's password: escaped,
        // it names no entry. Unescaped, `al*` would find alice and log in as her.
        for sly in [
            "al*",
            "*)(uid=*",
            "*",
            "alice)(|(uid=*",
            "alice,ou=people",
            "alice\0",
        ] {
            assert_eq!(
                check(sly, "wonder land").await,
                AuthDecision::Invalid,
                "{sly:?}"
            );
        }
    }
    // StartTLS, the server's certificate checked against the test's CA; with the Mozilla
    // roots instead it is not trusted, and the check fails rather than send the password.
    let tls_url = url.replace("127.0.0.1", "localhost");
    let with_roots = |ca: Option<&std::path::Path>| {
        let mut c = LdapConfig::new(tls_url.as_str(), search());
        c.starttls = true;
        c.tls = Some(smtpd::tls::client_config(ca).unwrap());
        LdapProvider::new(c).unwrap()
    };
    let trusted = with_roots(Some(&dir.join("cert.pem")));
    assert_eq!(
        trusted.check(&request("alice", "wonder land")).await,
        AuthDecision::Ok
    );
    assert_eq!(
        trusted.check(&request("alice", "wrong")).await,
        AuthDecision::Invalid
    );
    assert_eq!(
        with_roots(None)
            .check(&request("alice", "wonder land"))
            .await,
        AuthDecision::Failure
    );
    // Many logins at once over the pool of two connections.
    let many: Vec<_> = (0..30)
        .map(|i| {
            let p = searched.clone();
            tokio::spawn(async move {
                let (user, pw) = if i % 2 == 0 {
                    ("alice", "wonder land")
                } else {
                    ("bob", "nope")
                };
                (i % 2 == 0, p.check(&request(user, pw)).await)
            })
        })
        .collect();
    for h in many {
        let (right, d) = h.await.unwrap();
        assert_eq!(
            d,
            if right {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            }
        );
    }

    // slapd down: a temporary failure at once; back: the same provider binds again.
    slapd.daemon.stop();
    let started = Instant::now();
    assert_eq!(
        searched.check(&request("alice", "wonder land")).await,
        AuthDecision::Failure
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    slapd.daemon.resume_service();
    assert_eq!(
        searched.check(&request("alice", "wonder land")).await,
        AuthDecision::Ok
    );
    // Hanging: the timeout answers; thawed, logins work again.
    let slow = provider(&url, search(), Duration::from_millis(500));
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Ok
    );
    slapd.daemon.freeze();
    let started = Instant::now();
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Failure
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    slapd.daemon.thaw();
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Ok
    );

    let shown = format!("{searched:?} {:?}", request("alice", "wonder land"));
    for secret in ["service-pw", "wonder land"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    drop(slapd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smtpd_logs_in_through_ldap_with_smtplib_and_swaks() {
    setup();
    let dir = temp_dir("ldap-smtpd");
    let mut slapd = start(&dir);
    let (port, mport) = (free_port(), free_port());
    let maildir = dir.join("Maildir");
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_require_tls = false
auth_failure_delay_ms = 0
auth_timeout_secs = 2
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "ldap"
url = "{url}"
bind_dn = "cn=smtpd,dc=example,dc=org"
bind_password = "service-pw"
base = "ou=people,dc=example,dc=org"
filter = "(&(objectClass=inetOrgPerson)(uid=%u))"
[delivery]
kind = "maildir"
path = {maildir:?}
[metrics]
address = "127.0.0.1:{mport}"
"#,
        url = slapd.url()
    );
    let srv = Smtpd::start(&dir, &config, port);
    // /readyz asks the directory ("Who am I?"): HTTP status and body.
    let readyz = || {
        let out = e2e::run(std::process::Command::new("curl").args([
            "-s",
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{mport}/readyz"),
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(readyz(), "ready\n 200");
    let login = |user: &str, password: &str| {
        python(&format!(
            r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.ehlo()
try:
    s.user, s.password = {user:?}, {password:?}
    print(s.auth('PLAIN', s.auth_plain)[0])
    s.sendmail('{user}@mx.test', ['carol@example.org'], 'Subject: via ldap\r\n\r\nHello\r\n')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#
        ))
    };
    assert_eq!(login("alice", "wonder land"), "235\n");
    assert_eq!(
        login("alice", "wrong"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    assert_eq!(
        login("al*", "wonder land"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    e2e::swaks_send(
        port,
        "bob",
        "builder",
        "bob@mx.test",
        "carol@example.org",
        "swaks through ldap",
    );
    let msgs = maildir_messages(&maildir);
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .any(|m| m.contains("\t(authenticated user alice)\r\n"))
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("\t(authenticated user bob)\r\n")
                && m.contains("swaks through ldap"))
    );

    // Down: bob's credential is cached (swaks), alice's is not (her failed login dropped it):
    // 454 for her; back: she logs in.
    slapd.daemon.stop();
    assert_eq!(
        login("bob", "builder"),
        "235\n",
        "answered by the credential cache"
    );
    assert_eq!(
        login("alice", "wonder land"),
        "454 4.7.0 Temporary authentication failure\n"
    );
    slapd.daemon.resume_service();
    // Hanging: 454 within auth_timeout_secs (2 s); thawed, logins work again.
    slapd.daemon.freeze();
    let started = std::time::Instant::now();
    assert_eq!(
        login("alice", "other-pw"),
        "454 4.7.0 Temporary authentication failure\n"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // Not ready while the directory hangs (the store's timeout or the probe's, both 2 s).
    let hanging = readyz();
    assert!(
        hanging.starts_with("identity store ldap ") && hanging.ends_with(" 503"),
        "{hanging}"
    );
    slapd.daemon.thaw();
    assert_eq!(readyz(), "ready\n 200");
    assert_eq!(
        login("alice", "other-pw"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    assert_eq!(
        login("alice", "wonder land"),
        "235\n",
        "slapd answers again"
    );
    let log = srv.log();
    for secret in ["service-pw", "wonder land", "builder"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    drop(srv);
    drop(slapd);
    let _ = std::fs::remove_dir_all(&dir);
}
