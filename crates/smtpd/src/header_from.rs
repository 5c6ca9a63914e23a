//! The header bound to the login: the `From:` (and `Sender:`, when present) of an
//! authenticated submission must be addresses the login may use, under the same
//! `sender_login` policy as `MAIL FROM` ([`SenderPolicy`]). Binding the envelope alone lets a
//! stolen or shared account write any `From:` its readers see.
//!
//! The rules (RFC 5322 §3.6.2): display names and comments are free. With one `From:`
//! address, it must be owned, and so must the `Sender:` when there is one. With several
//! `From:` addresses (co-authors), a `Sender:` is required and it must be owned. A header
//! section that cannot be read whole within [`crate::submission::MAX_HEAD`] octets, a `From:`
//! or `Sender:` that is not an address list, or a `Sender:` of more than one address is refused:
//! what cannot be checked does not pass. A message without `From:` names no one and passes.
//! Header fields are parsed with `mail-parser`.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::sender::SenderPolicy;
use crate::submission::header_section;

/// Why a message's header fields do not fit its login: the text of the `550 5.7.1` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch(pub String);

/// The addresses of every `name:` field; `Err` when one is not an address list, holds no
/// address at all or an entry without one.
fn addresses(
    message: &mail_parser::Message<'_>,
    name: HeaderName<'static>,
    shown: &str,
) -> Result<Vec<String>, Mismatch> {
    let mut out = Vec::new();
    for value in message.header_values(name) {
        let HeaderValue::Address(list) = value else {
            return Err(Mismatch(format!("{shown}: header field is not an address")));
        };
        // An empty group ("From: PayPal Security:;") shows a name and owns no address.
        if list.iter().next().is_none() {
            return Err(Mismatch(format!("{shown}: header field holds no address")));
        }
        for a in list.iter() {
            match a.address() {
                Some(addr) if addr.contains('@') => out.push(addr.to_owned()),
                _ => {
                    return Err(Mismatch(format!(
                        "{shown}: header field holds an entry without an address"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Checks the `From:`/`Sender:` of a message submitted by `login` (its first octets in `head`;
/// `whole` when that is the whole message).
pub fn check(head: &[u8], whole: bool, login: &str, policy: &SenderPolicy) -> Result<(), Mismatch> {
    let Some(section) = header_section(head, whole) else {
        return Err(Mismatch(
            "Header section too long to check the From: field".into(),
        ));
    };
    // `None`: not one header field was found (a body sent without a header section), so
    // there is no From: to check.
    let Some(message) = MessageParser::default().parse_headers(section) else {
        return Ok(());
    };
    let from = addresses(&message, HeaderName::From, "From")?;
    let sender = addresses(&message, HeaderName::Sender, "Sender")?;
    let owned = |field: &str, address: &str| {
        if policy.allows(login, address) {
            Ok(())
        } else {
            Err(Mismatch(format!(
                "{field}: header address <{address}> not owned by user {login}"
            )))
        }
    };
    if sender.len() > 1 {
        return Err(Mismatch(
            "Sender: header field must hold one address".into(),
        ));
    }
    if let Some(s) = sender.first() {
        owned("Sender", s)?;
    }
    match from.as_slice() {
        [] => Ok(()),
        [one] => owned("From", one),
        _ if sender.is_empty() => Err(Mismatch(
            "Several From: addresses need a Sender: header field (RFC 5322 §3.6.2)".into(),
        )),
        // Several authors: the Sender, checked above, is the one who submits.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SenderLogin;

    fn policy(mode: SenderLogin, dir: &std::path::Path) -> SenderPolicy {
        let map = dir.join("senders");
        std::fs::write(&map, "sales@corp.test: alice\n@team.test: alice, bob\n").unwrap();
        SenderPolicy::load(mode, "mx.test", Some(&map)).unwrap()
    }

    fn msg(head: &str) -> Vec<u8> {
        format!("{head}\r\n\r\nbody\r\n").into_bytes()
    }

    #[test]
    fn each_sender_login_mode_with_and_without_sender() {
        let dir = std::env::temp_dir().join(format!("smtpd-header-from-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exact = policy(SenderLogin::Exact, &dir);
        let domain = policy(SenderLogin::Domain, &dir);
        let map = policy(SenderLogin::Map, &dir);
        let any = policy(SenderLogin::Any, &dir);
        let ok = |p: &SenderPolicy, login: &str, head: &str| check(&msg(head), false, login, p);

        // exact: the login itself.
        assert_eq!(
            ok(&exact, "alice", "From: Alice Liddell <alice@mx.test>"),
            Ok(())
        );
        assert_eq!(
            ok(&exact, "alice", "From: \"Bob, as alice\" <ALICE@MX.TEST>"),
            Ok(())
        );
        assert_eq!(
            ok(&exact, "alice", "From: Bob <bob@mx.test>"),
            Err(Mismatch(
                "From: header address <bob@mx.test> not owned by user alice".into()
            ))
        );
        // A display name that looks like an address changes nothing.
        assert!(ok(&exact, "alice", "From: \"alice@mx.test\" <bob@mx.test>").is_err());
        // exact with a Sender: both must be owned.
        assert_eq!(
            ok(
                &exact,
                "alice",
                "From: alice@mx.test\r\nSender: bob@mx.test"
            ),
            Err(Mismatch(
                "Sender: header address <bob@mx.test> not owned by user alice".into()
            ))
        );
        assert_eq!(
            ok(
                &exact,
                "alice",
                "Sender: alice@mx.test\r\nFrom: alice@mx.test"
            ),
            Ok(())
        );

        // domain: any address of the login's domain.
        assert_eq!(
            ok(&domain, "dave@corp.test", "From: Erin <erin@corp.test>"),
            Ok(())
        );
        assert!(ok(&domain, "dave@corp.test", "From: erin@other.test").is_err());
        assert!(
            ok(
                &domain,
                "dave@corp.test",
                "From: erin@corp.test\r\nSender: x@other.test"
            )
            .is_err()
        );

        // map: listed owners.
        assert_eq!(ok(&map, "alice", "From: Sales <sales@corp.test>"), Ok(()));
        assert!(ok(&map, "bob", "From: Sales <sales@corp.test>").is_err());
        assert_eq!(ok(&map, "bob", "From: anyone@team.test"), Ok(()));
        assert!(
            ok(
                &map,
                "bob",
                "From: anyone@team.test\r\nSender: sales@corp.test"
            )
            .is_err()
        );

        // any: nothing is checked (the handler does not even call this).
        assert_eq!(ok(&any, "alice", "From: president@example.gov"), Ok(()));

        // Several From: addresses need a Sender: the login owns.
        let two = "From: alice@mx.test, Carol <carol@elsewhere.test>";
        assert_eq!(
            ok(&exact, "alice", two),
            Err(Mismatch(
                "Several From: addresses need a Sender: header field (RFC 5322 §3.6.2)".into()
            ))
        );
        assert_eq!(
            ok(&exact, "alice", &format!("{two}\r\nSender: alice@mx.test")),
            Ok(())
        );
        assert!(
            ok(
                &exact,
                "alice",
                &format!("{two}\r\nSender: carol@elsewhere.test")
            )
            .is_err()
        );
        // Two From fields count as several addresses.
        assert!(ok(&exact, "alice", "From: alice@mx.test\r\nFrom: bob@mx.test").is_err());
        // A Sender of two addresses, a group without addresses, something not an address.
        assert!(
            ok(
                &exact,
                "alice",
                "From: alice@mx.test\r\nSender: alice@mx.test, bob@mx.test"
            )
            .is_err()
        );
        assert!(ok(&exact, "alice", "From: undisclosed:;").is_err());
        assert!(ok(&exact, "alice", "From: not an address").is_err());
        // Folded and encoded display names are fine.
        assert_eq!(
            ok(
                &exact,
                "alice",
                "From: =?utf-8?q?Al=C3=AFce?=\r\n <alice@mx.test>"
            ),
            Ok(())
        );
        // No From: names no one; nor does a message without any header field.
        assert_eq!(ok(&exact, "alice", "Subject: hi"), Ok(()));
        assert_eq!(check(b"pipelined body\r\n", true, "alice", &exact), Ok(()));
        // A header section that does not end within what was read cannot be checked.
        assert!(
            check(
                b"From: alice@mx.test\r\nX-Long: aaa",
                false,
                "alice",
                &exact
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
