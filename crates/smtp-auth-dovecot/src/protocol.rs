//! Dovecot's authentication client protocol, version 1.2, as lines: the handshake, `AUTH` and
//! `CONT` requests, and the server's `CONT`, `OK` and `FAIL` answers. No I/O here.
//!
//! Every line is tab-separated fields ending in LF. A value that may hold a tab, a line feed
//! or `\x01` is escaped: `\x01` → `\x01 1`, tab → `\x01 t`, LF → `\x01 n` (without the
//! spaces), as Dovecot's `str_tabescape` does.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// The protocol version this client speaks (major 1; minor 2 as Postfix sends).
pub const VERSION: (u32, u32) = (1, 2);

/// The longest line accepted from Dovecot; a longer one ends the connection.
pub const MAX_LINE: usize = 64 * 1024;

/// One mechanism Dovecot offers (`MECH <name> <flags>...`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MechanismInfo {
    /// The mechanism's name, upper-case.
    pub name: String,
    /// Its flags (`plaintext`, `dictionary`, `active`, `anonymous`, `forward-secrecy`,
    /// `mutual-auth`, `private`).
    pub flags: Vec<String>,
}

impl MechanismInfo {
    /// Whether the mechanism sends the password in clear (PLAIN, LOGIN): Dovecot refuses it on
    /// a connection it does not consider secured unless `disable_plaintext_auth = no`.
    pub fn plaintext(&self) -> bool {
        self.flags.iter().any(|f| f == "plaintext")
    }
}

/// What the handshake told the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The server's protocol version.
    pub version: (u32, u32),
    /// The mechanisms offered, in Dovecot's order.
    pub mechanisms: Vec<MechanismInfo>,
    /// The auth server process's PID (`SPID`).
    pub server_pid: Option<String>,
}

/// Reads the server's handshake one line at a time.
#[derive(Debug, Default)]
pub struct HandshakeReader {
    handshake: Handshake,
    seen_version: bool,
}

impl HandshakeReader {
    /// Takes one line (without LF). `Ok(Some(_))` at `DONE`; an error for a version this
    /// client does not speak or a line out of place.
    pub fn line(&mut self, line: &str) -> Result<Option<Handshake>, String> {
        let mut fields = line.split('\t');
        match fields.next().unwrap_or("") {
            "VERSION" => {
                let major = fields.next().and_then(|v| v.parse().ok());
                let minor = fields.next().and_then(|v| v.parse().ok());
                match (major, minor) {
                    (Some(major), Some(minor)) if major == VERSION.0 => {
                        self.handshake.version = (major, minor);
                        self.seen_version = true;
                    }
                    _ => return Err(format!("unsupported protocol version: {line:?}")),
                }
            }
            "MECH" => {
                let name = fields.next().unwrap_or("").to_ascii_uppercase();
                if name.is_empty() {
                    return Err("MECH without a name".into());
                }
                self.handshake.mechanisms.push(MechanismInfo {
                    name,
                    flags: fields.map(str::to_owned).collect(),
                });
            }
            "SPID" => self.handshake.server_pid = fields.next().map(str::to_owned),
            "DONE" => {
                if !self.seen_version {
                    return Err("DONE before VERSION".into());
                }
                return Ok(Some(std::mem::take(&mut self.handshake)));
            }
            // CUID, COOKIE and anything a newer minor version adds.
            _ => {}
        }
        Ok(None)
    }
}

/// The lines a client sends first: its version and its process id.
pub fn client_hello(pid: u32) -> String {
    format!("VERSION\t{}\t{}\nCPID\t{pid}\n", VERSION.0, VERSION.1)
}

/// The facts about the SMTP session that go with an `AUTH` request, so Dovecot's penalties,
/// `disable_plaintext_auth` and logs see the real client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The client's address (`rip`).
    pub remote_ip: Option<IpAddr>,
    /// The server's address the client reached (`lip`).
    pub local_ip: Option<IpAddr>,
    /// The session is encrypted (TLS): sent as `secured`.
    pub secured: bool,
    /// Asks Dovecot not to apply its per-address penalty (the growing delay after failures,
    /// up to 15 s): sent as `no-penalty`.
    pub no_penalty: bool,
}

/// Whether `name` may stand in a request as a mechanism name (letters, digits, `-`, `_`).
pub fn valid_mechanism(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `AUTH <id> <mechanism> service=<service> nologin [lip=…] [rip=…] [secured] [no-penalty]
/// [resp=<base64>]`; `service` is the name passdb queries and logs see as `%s` (`smtp`).
/// `initial` is the client's initial response, decoded (`Some(b"")` for an empty one, sent as
/// `resp=`). The line holds credentials: it is wiped when dropped.
pub fn auth_line(
    id: u32,
    mechanism: &str,
    service: &str,
    info: &RequestInfo,
    initial: Option<&[u8]>,
) -> Zeroizing<String> {
    let mut line = Zeroizing::new(String::with_capacity(128));
    line.push_str("AUTH\t");
    line.push_str(&id.to_string());
    line.push('\t');
    line.push_str(mechanism);
    line.push_str("\tservice=");
    line.push_str(&escape(service));
    // No login process follows: the SMTP server only needs the answer (Postfix sends it).
    line.push_str("\tnologin");
    if let Some(ip) = info.local_ip {
        line.push_str(&format!("\tlip={ip}"));
    }
    if let Some(ip) = info.remote_ip {
        line.push_str(&format!("\trip={ip}"));
    }
    if info.secured {
        line.push_str("\tsecured");
    }
    if info.no_penalty {
        line.push_str("\tno-penalty");
    }
    if let Some(ir) = initial {
        line.push_str("\tresp=");
        STANDARD.encode_string(ir, &mut line);
    }
    line.push('\n');
    line
}

/// `CONT <id> <base64 response>`, wiped when dropped.
pub fn cont_line(id: u32, response: &[u8]) -> Zeroizing<String> {
    let mut line = Zeroizing::new(String::with_capacity(16 + response.len() * 4 / 3));
    line.push_str("CONT\t");
    line.push_str(&id.to_string());
    line.push('\t');
    STANDARD.encode_string(response, &mut line);
    line.push('\n');
    line
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// `CONT`: a challenge (decoded) for the client.
    Continue(Vec<u8>),
    /// `OK`: authenticated as `user` (Dovecot's canonical name, which may differ from the name
    /// the client gave).
    Ok {
        /// The user name Dovecot settled on.
        user: String,
    },
    /// `FAIL`.
    Fail {
        /// The user the failure concerns, when Dovecot got that far.
        user: Option<String>,
        /// A temporary failure (`temp`): the passdb is down or failed; retry later.
        temp: bool,
        /// Dovecot's reason for the client (`reason=`), when it gave one.
        reason: Option<String>,
    },
}

/// A server line that answers a request: its id and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's id.
    pub id: u32,
    /// The answer.
    pub answer: Answer,
}

/// Parses a server line after the handshake. `Ok(None)` for lines that answer no request
/// (a newer version's additions); an error for a malformed answer.
pub fn parse_reply(line: &str) -> Result<Option<Reply>, String> {
    let mut fields = line.split('\t');
    let kind = fields.next().unwrap_or("");
    if !matches!(kind, "CONT" | "OK" | "FAIL") {
        return Ok(None);
    }
    let id: u32 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{kind} without a request id"))?;
    let answer = match kind {
        "CONT" => {
            let data = fields.next().unwrap_or("");
            let challenge = STANDARD
                .decode(data)
                .map_err(|_| "CONT with a challenge that is not base64".to_string())?;
            Answer::Continue(challenge)
        }
        "OK" => {
            let user = fields
                .filter_map(|f| f.strip_prefix("user="))
                .map(unescape)
                .next()
                .ok_or_else(|| "OK without user=".to_string())?;
            Answer::Ok { user }
        }
        _ => {
            let mut user = None;
            let mut temp = false;
            let mut reason = None;
            for f in fields {
                if let Some(u) = f.strip_prefix("user=") {
                    user = Some(unescape(u));
                } else if let Some(r) = f.strip_prefix("reason=") {
                    reason = Some(unescape(r));
                } else if f == "temp" {
                    temp = true;
                }
            }
            Answer::Fail { user, temp, reason }
        }
    };
    Ok(Some(Reply { id, answer }))
}

/// Escapes a value for a field (Dovecot's `str_tabescape`).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`] (Dovecot's `str_tabunescape`); an unknown escape keeps its character.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_of_dovecot_2_3() {
        let mut r = HandshakeReader::default();
        let lines = [
            "VERSION\t1\t2",
            "MECH\tPLAIN\tplaintext",
            "MECH\tLOGIN\tplaintext",
            "MECH\tSCRAM-SHA-256\tmutual-auth",
            "MECH\tCRAM-MD5\tdictionary\tactive",
            "SPID\t13206",
            "CUID\t1",
            "COOKIE\t1094ad6acdc1beb134376fc26e33660c",
        ];
        for l in lines {
            assert_eq!(r.line(l), Ok(None));
        }
        let h = r.line("DONE").unwrap().unwrap();
        assert_eq!(h.version, (1, 2));
        assert_eq!(h.server_pid.as_deref(), Some("13206"));
        let names: Vec<_> = h.mechanisms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"]);
        assert!(h.mechanisms[0].plaintext());
        assert!(!h.mechanisms[2].plaintext());
    }

    #[test]
    fn another_major_version_or_done_first_is_refused() {
        let mut r = HandshakeReader::default();
        assert!(r.line("VERSION\t2\t0").is_err());
        let mut r = HandshakeReader::default();
        assert_eq!(r.line("DONE"), Err("DONE before VERSION".into()));
    }

    #[test]
    fn auth_lines_as_postfix_sends_them() {
        let info = RequestInfo {
            remote_ip: Some("192.0.2.7".parse().unwrap()),
            local_ip: Some("127.0.0.1".parse().unwrap()),
            secured: true,
            no_penalty: false,
        };
        assert_eq!(
            auth_line(7, "PLAIN", "smtp", &info, Some(b"\0alice\0secret")).as_str(),
            "AUTH\t7\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.7\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n"
        );
        let plain = RequestInfo::default();
        assert_eq!(
            auth_line(1, "LOGIN", "smtp", &plain, None).as_str(),
            "AUTH\t1\tLOGIN\tservice=smtp\tnologin\n"
        );
        assert_eq!(
            auth_line(2, "PLAIN", "smtp", &plain, Some(b"")).as_str(),
            "AUTH\t2\tPLAIN\tservice=smtp\tnologin\tresp=\n"
        );
        assert_eq!(cont_line(3, b"bob").as_str(), "CONT\t3\tYm9i\n");
        let quiet = RequestInfo {
            no_penalty: true,
            ..RequestInfo::default()
        };
        assert_eq!(
            auth_line(4, "PLAIN", "smtp", &quiet, None).as_str(),
            "AUTH\t4\tPLAIN\tservice=smtp\tnologin\tno-penalty\n"
        );
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_reply("CONT\t4\tVXNlcm5hbWU6"),
            Ok(Some(Reply {
                id: 4,
                answer: Answer::Continue(b"Username:".to_vec())
            }))
        );
        assert_eq!(
            parse_reply("OK\t1\tuser=alice"),
            Ok(Some(Reply {
                id: 1,
                answer: Answer::Ok {
                    user: "alice".into()
                }
            }))
        );
        assert_eq!(
            parse_reply("FAIL\t2\tuser=a\x01tb\ttemp\treason=Try later"),
            Ok(Some(Reply {
                id: 2,
                answer: Answer::Fail {
                    user: Some("a\tb".into()),
                    temp: true,
                    reason: Some("Try later".into())
                }
            }))
        );
        assert_eq!(
            parse_reply("FAIL\t3"),
            Ok(Some(Reply {
                id: 3,
                answer: Answer::Fail {
                    user: None,
                    temp: false,
                    reason: None
                }
            }))
        );
        assert_eq!(parse_reply("SOMETHING\tNEW"), Ok(None));
        assert!(parse_reply("OK\tx\tuser=a").is_err());
        assert!(parse_reply("OK\t1").is_err());
        assert!(parse_reply("CONT\t1\t@@@").is_err());
    }

    #[test]
    fn escaping_round_trips() {
        for v in ["plain", "tab\there", "nl\nx", "\x01one", "cr\r", ""] {
            assert_eq!(unescape(&escape(v)), v);
            assert!(!escape(v).contains(['\t', '\n']));
        }
        assert_eq!(unescape("end\x01"), "end");
    }

    #[test]
    fn mechanism_names() {
        assert!(valid_mechanism("SCRAM-SHA-256"));
        assert!(!valid_mechanism("PLAIN\tresp=x"));
        assert!(!valid_mechanism(""));
    }
}
