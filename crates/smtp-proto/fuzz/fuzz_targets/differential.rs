//! Differential: the same command line to Stalwart's smtp-proto 0.2.5 and to ours. Whatever
//! Stalwart parses as a well-formed command we parse to the same verb and the same address,
//! or refuse for one of the documented strictness reasons (docs/conformance.md): addresses
//! and domains beyond the RFC 5321 grammar, parameters we do not type, and the like. A panic in
//! either, or a disagreement on what a command is, is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::{Command, ForwardPath, ProtoError, ReversePath};
use stalwart_smtp_proto::Request;

/// The errors that are deliberate strictness, not disagreement: each refuses a line Stalwart
/// takes because our grammar is the RFC's (or the leniency is off by default).
fn deliberate(e: &ProtoError) -> bool {
    matches!(
        e,
        ProtoError::SenderSyntax
            | ProtoError::RecipientSyntax
            | ProtoError::ArgumentSyntax(_)
            | ProtoError::ParameterSyntax(_)
            | ProtoError::DuplicateParameter
            | ProtoError::UnknownParameter
            | ProtoError::Syntax(_)
            | ProtoError::InvalidUtf8
    )
}

fn addr_rev(p: ReversePath) -> String {
    match p {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

fn addr_fwd(p: ForwardPath) -> String {
    match p {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Mailbox(m) => m.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > 510 || line.contains(&b'\r') {
        return;
    }
    let mut wire = line.to_vec();
    wire.extend_from_slice(b"\r\n");
    let Ok(theirs) = Request::parse(&mut wire.iter()) else {
        return;
    };
    let ours = match Command::parse(line) {
        Ok(c) => c,
        // A command starts with its verb, and only SP separates it (RFC 5321 §4.1.1);
        // Stalwart skips leading white space and takes TAB and the like as separators.
        Err(ProtoError::UnknownCommand)
            if line
                .first()
                .is_some_and(|b| b.is_ascii_whitespace() || *b < 0x20)
                || line
                    .iter()
                    .take_while(|&&b| b != b' ')
                    .any(|b| b.is_ascii_whitespace() || *b < 0x20 || *b == 0x7f) =>
        {
            return;
        }
        Err(e) => {
            assert!(
                deliberate(&e),
                "Stalwart parses {:?} as {}; we refuse it with {e:?}",
                String::from_utf8_lossy(line),
                theirs.name()
            );
            return;
        }
    };
    // The same command.
    let verb = ours.verb().to_ascii_uppercase();
    match (&theirs, &ours) {
        // Verbs we do not implement come out as Unknown on our side (500 5.5.2).
        (
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. },
            Command::Unknown(_),
        ) => {}
        _ => assert_eq!(
            theirs.name(),
            verb,
            "{:?}: Stalwart {} / ours {verb}",
            String::from_utf8_lossy(line),
            theirs.name()
        ),
    }
    // The same address (neither side has angle brackets), compared case-insensitively, with
    // our quoted local part unquoted (we keep the wire form, Stalwart the unescaped text).
    let plain = |s: &str| s.to_lowercase();
    let norm = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {}
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out.to_lowercase()
    };
    match (&theirs, &ours) {
        (Request::Mail { from }, Command::Mail { from: f, .. }) => assert_eq!(
            plain(&from.address),
            norm(&addr_rev(f.clone())),
            "{:?}",
            String::from_utf8_lossy(line)
        ),
        // RFC 5321 §4.1.1.3's <Postmaster> (any case, no domain): Stalwart hands out an empty
        // address for it.
        (
            Request::Rcpt { .. },
            Command::Rcpt {
                to: ForwardPath::Postmaster,
                ..
            },
        ) => {}
        (Request::Rcpt { to }, Command::Rcpt { to: t, .. }) => assert_eq!(
            plain(&to.address),
            norm(&addr_fwd(t.clone())),
            "{:?}",
            String::from_utf8_lossy(line)
        ),
        (
            Request::Bdat {
                chunk_size,
                is_last,
            },
            Command::Bdat { size, last },
        ) => {
            assert_eq!((*chunk_size as u64, *is_last), (*size, *last));
        }
        _ => {}
    }
});
