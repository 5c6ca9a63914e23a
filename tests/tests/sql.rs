//! The SQL store, against a real PostgreSQL (`initdb` into a temporary folder, started and
//! stopped by the test) and an SQLite file: the library provider (schemes as stored, the
//! `enabled` and `scram` columns, the user name as a bound parameter, the database down and
//! hanging), and `smtpd` with `backend = "sql"` driven by smtplib, swaks and gsasl.

use std::time::{Duration, Instant};

use e2e::{Postgres, Smtpd, doveadm_hash, free_port, maildir_messages, python, temp_dir};
use smtp_auth::{AuthDecision, AuthRequest, LookupRequest, LookupResult, Password, SessionInfo};
use smtp_auth_sql::{SqlConfig, SqlProvider};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

const QUERY: &str = "SELECT password, active AS enabled, scram FROM mailbox WHERE username = $1";

/// (user, stored hash, active, scram keys): one user per scheme, a disabled one, a weak one.
fn users() -> Vec<(String, String, bool, Option<String>)> {
    vec![
        (
            "alice".into(),
            smtpd::users::hash_password("wonder land").unwrap(),
            true,
            Some(smtpd::users::scram_keys("wonder land").unwrap()),
        ),
        (
            "bob".into(),
            doveadm_hash("BLF-CRYPT", "builder"),
            true,
            None,
        ),
        (
            "carol".into(),
            doveadm_hash("SHA512-CRYPT", "carol-pw"),
            false,
            None,
        ),
        (
            "dave".into(),
            doveadm_hash("SSHA512", "dave-pw"),
            true,
            None,
        ),
        ("eve".into(), "{PLAIN}eve-pw".into(), true, None),
    ]
}

/// The table's SQL: `boolean` is PostgreSQL's type for `active`, `integer` SQLite's.
fn table_sql(boolean: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE mailbox (username text PRIMARY KEY, password text, active {boolean} NOT NULL, scram text);\n"
    );
    for (u, h, active, scram) in users() {
        let active = match (boolean, active) {
            ("boolean", a) => a.to_string(),
            (_, a) => u8::from(a).to_string(),
        };
        let scram = scram.map_or("NULL".to_string(), |s| format!("'{s}'"));
        sql.push_str(&format!(
            "INSERT INTO mailbox VALUES ('{u}', '{h}', {active}, {scram});\n"
        ));
    }
    sql
}

fn sqlite_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("users.db");
    python(&format!(
        "import sqlite3\nc = sqlite3.connect({path:?})\nc.executescript({sql:?})\nc.commit()\n",
        sql = table_sql("integer")
    ));
    path
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

fn provider(url: &str, timeout: Duration) -> SqlProvider {
    let mut c = SqlConfig::new(url, QUERY);
    c.timeout = timeout;
    c.connections = 2;
    SqlProvider::new(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_sqlite_tables_decide_as_stored() {
    let dir = temp_dir("sql-lib");
    let mut pg = Postgres::start(&dir, &table_sql("boolean"));
    let sqlite = format!("sqlite://{}", sqlite_file(&dir).display());
    for url in [pg.url(), sqlite] {
        let p = provider(&url, Duration::from_secs(5));
        let check = |u: &'static str, pw: &'static str| {
            let p = p.clone();
            async move { p.check(&request(u, pw)).await }
        };
        assert_eq!(
            check("alice", "wonder land").await,
            AuthDecision::Ok,
            "{url}"
        );
        assert_eq!(
            check("bob", "builder").await,
            AuthDecision::Ok,
            "{{BLF-CRYPT}}"
        );
        assert_eq!(
            check("dave", "dave-pw").await,
            AuthDecision::Ok,
            "{{SSHA512}}"
        );
        assert_eq!(check("alice", "wonderland").await, AuthDecision::Invalid);
        // Disabled: the right password is refused.
        assert_eq!(check("carol", "carol-pw").await, AuthDecision::Invalid);
        // A weak scheme is refused unless allowed.
        assert_eq!(check("eve", "eve-pw").await, AuthDecision::Invalid);
        assert_eq!(check("nobody", "wonder land").await, AuthDecision::Invalid);
        // The user name is a bound parameter: SQL in it is just a name.
        assert_eq!(
            check("nobody' OR '1'='1", "wonder land").await,
            AuthDecision::Invalid
        );
        assert_eq!(
            check("alice' --", "wonder land").await,
            AuthDecision::Invalid
        );
        let mut weak = SqlConfig::new(url.as_str(), QUERY);
        weak.allow_weak_schemes = true;
        assert_eq!(
            SqlProvider::new(weak)
                .unwrap()
                .check(&request("eve", "eve-pw"))
                .await,
            AuthDecision::Ok
        );
        // SCRAM keys from the scram column; none for a user without, or a disabled one.
        let lookup = |u: &str| LookupRequest {
            username: u.into(),
            mechanism: "SCRAM-SHA-256".into(),
            remote_ip: String::new(),
        };
        assert!(matches!(
            p.lookup(&lookup("alice")).await,
            LookupResult::Found(smtp_auth::StoredSecret::ScramSha256(_))
        ));
        assert!(matches!(
            p.lookup(&lookup("bob")).await,
            LookupResult::NotFound
        ));
        // Concurrent logins over two connections.
        let many: Vec<_> = (0..20)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move {
                    let pw = if i % 2 == 0 { "builder" } else { "nope" };
                    (i % 2 == 0, p.check(&request("bob", pw)).await)
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
    }

    // PostgreSQL down: a temporary failure at once; back: the same provider answers.
    let p = provider(&pg.url(), Duration::from_secs(5));
    assert_eq!(p.check(&request("bob", "builder")).await, AuthDecision::Ok);
    pg.daemon.stop();
    let started = Instant::now();
    assert_eq!(
        p.check(&request("bob", "builder")).await,
        AuthDecision::Failure
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    pg.resume();
    assert_eq!(p.check(&request("bob", "builder")).await, AuthDecision::Ok);
    // Hanging: the timeout answers; thawed, it answers again.
    let slow = provider(&pg.url(), Duration::from_millis(500));
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Ok
    );
    pg.daemon.freeze();
    let started = Instant::now();
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Failure
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    pg.daemon.thaw();
    assert_eq!(
        slow.check(&request("bob", "builder")).await,
        AuthDecision::Ok
    );

    // A URL's password never prints.
    let secretive = SqlProvider::new(SqlConfig::new(
        "postgres://mail:hunter2@127.0.0.1:1/mail",
        QUERY,
    ))
    .unwrap();
    let shown = format!("{secretive:?} {:?}", request("bob", "builder"));
    assert!(
        !shown.contains("hunter2") && !shown.contains("builder"),
        "{shown}"
    );
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

fn smtpd_config(port: u16, url: &str, maildir: &std::path::Path) -> String {
    format!(
        r#"
[server]
hostname = "mx.test"
auth_require_tls = false
auth_failure_delay_ms = 0
auth_timeout_secs = 2
mechanisms = ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "sql"
url = "{url}"
query = "{QUERY}"
[delivery]
kind = "maildir"
path = {maildir:?}
"#
    )
}

fn login(port: u16, user: &str, password: &str) -> String {
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.ehlo()
try:
    s.user, s.password = {user:?}, {password:?}
    print(s.auth('PLAIN', s.auth_plain)[0])
    s.sendmail('{user}@mx.test', ['zed@example.org'], 'Subject: via sql\r\n\r\nHello\r\n')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#
    ))
}

#[test]
fn smtpd_logs_in_through_postgres_with_smtplib_swaks_and_gsasl() {
    setup();
    let dir = temp_dir("sql-smtpd");
    let mut pg = Postgres::start(&dir, &table_sql("boolean"));
    let port = free_port();
    let maildir = dir.join("Maildir");
    let srv = Smtpd::start(&dir, &smtpd_config(port, &pg.url(), &maildir), port);
    assert_eq!(login(port, "alice", "wonder land"), "235\n");
    assert_eq!(
        login(port, "carol", "carol-pw"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    e2e::swaks_send(
        port,
        "bob",
        "builder",
        "bob@mx.test",
        "zed@example.org",
        "swaks through sql",
    );
    let msgs = maildir_messages(&maildir);
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .any(|m| m.contains("\t(authenticated user alice)\r\n"))
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("\t(authenticated user bob)\r\n"))
    );
    // SCRAM-SHA-256 from the scram column: gsasl checks our server signature.
    let gsasl = |password: &str| e2e::gsasl_scram(port, "alice", password);
    let out = gsasl("wonder land");
    assert!(
        out.contains("\n235 2.7.0 Authentication successful"),
        "{out}"
    );
    assert!(out.contains("server trusted"), "{out}");
    assert!(gsasl("wonderland").contains("535 5.7.8"));

    // Down: dave (never cached) gets 454; back: he logs in.
    pg.daemon.stop();
    assert_eq!(
        login(port, "dave", "dave-pw"),
        "454 4.7.0 Temporary authentication failure\n"
    );
    pg.resume();
    assert_eq!(login(port, "dave", "dave-pw"), "235\n");
    // Hanging: 454 within auth_timeout_secs (2 s); thawed, logins work again.
    pg.daemon.freeze();
    let started = std::time::Instant::now();
    assert_eq!(
        login(port, "bob", "other-pw"),
        "454 4.7.0 Temporary authentication failure\n"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    pg.daemon.thaw();
    assert_eq!(
        login(port, "bob", "other-pw"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    let log = srv.log();
    for secret in ["wonder land", "builder", "dave-pw"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    drop(srv);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smtpd_logs_in_through_sqlite() {
    setup();
    let dir = temp_dir("sql-sqlite");
    let db = sqlite_file(&dir);
    let port = free_port();
    let maildir = dir.join("Maildir");
    let _srv = Smtpd::start(
        &dir,
        &smtpd_config(port, &format!("sqlite://{}", db.display()), &maildir),
        port,
    );
    assert_eq!(login(port, "bob", "builder"), "235\n");
    assert_eq!(
        login(port, "bob", "wrong"),
        "535 5.7.8 Authentication credentials invalid\n"
    );
    assert_eq!(maildir_messages(&maildir).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
