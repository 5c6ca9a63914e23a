//! Submission hygiene (RFC 6409 §8.2, §8.3): a message submitted by an authenticated user
//! that has no `Date:` or no `Message-ID:` gets one; a message that has them is left as it is.
//! Many receivers (Gmail among them) refuse mail without a Message-ID.

use std::time::SystemTime;

/// How much of a message's start is read to find its header section: a header section longer
/// than this is left untouched (its fields cannot all be seen).
pub const MAX_HEAD: usize = 64 * 1024;

/// Which of the two fields a header section has, when its end was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present {
    /// A `Date:` field.
    pub date: bool,
    /// A `Message-ID:` field.
    pub message_id: bool,
}

/// Scans the start of a message (`head`, at most [`MAX_HEAD`] octets of it) for `Date:` and
/// `Message-ID:` fields in its header section (up to the first empty line, or the whole message
/// when it has none). `None` when the section does not end within `head` and `head` is not the
/// whole message (`whole` false): nothing is known then.
pub fn scan(head: &[u8], whole: bool) -> Option<Present> {
    let mut present = Present {
        date: false,
        message_id: false,
    };
    let mut rest = head;
    loop {
        let (line, next, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) => (&rest[..n], &rest[n + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        if !complete && !whole {
            // A line cut by the end of `head`: the section goes on beyond what was read.
            return None;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The empty line that ends the header section (or the end of the message).
            return Some(present);
        }
        // Folded continuation lines start with white space and name no field.
        if !matches!(line[0], b' ' | b'\t') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = name.trim_ascii_end();
            if name.eq_ignore_ascii_case(b"Date") {
                present.date = true;
            } else if name.eq_ignore_ascii_case(b"Message-ID") {
                present.message_id = true;
            }
        }
        if !complete {
            return Some(present);
        }
        rest = next;
    }
}

/// The first [`MAX_HEAD`] octets of a message body and whether they are all of it; `None` when
/// a spooled body cannot be read.
pub async fn head(body: &smtp_server::Body) -> Option<(bytes::Bytes, bool)> {
    let whole = body.len() <= MAX_HEAD as u64;
    if let Some(b) = body.as_memory() {
        return Some((b.slice(..b.len().min(MAX_HEAD)), whole));
    }
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(MAX_HEAD.min(body.len() as usize));
    let r = body.reader().await.ok()?;
    r.take(MAX_HEAD as u64).read_to_end(&mut head).await.ok()?;
    Some((head.into(), whole))
}

/// The header section of a message whose first octets are `head` (`whole`: `head` is the
/// whole message): up to and with the line break before the empty line, or `None` when it does
/// not end within `head`.
pub fn header_section(head: &[u8], whole: bool) -> Option<&[u8]> {
    let mut at = 0;
    while at < head.len() {
        let end = match head[at..].iter().position(|&b| b == b'\n') {
            Some(n) => at + n + 1,
            None => return whole.then_some(head),
        };
        let line = &head[at..end];
        if line == b"\r\n" || line == b"\n" {
            return Some(&head[..at]);
        }
        at = end;
    }
    whole.then_some(head)
}

/// The header fields of a header section, top down, as (name, value): the value is all after
/// the colon, folded lines and the closing CRLF included (what relaxed canonicalisation
/// reads). A line without a colon is no field and is skipped.
pub fn fields(section: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < section.len() {
            let start = at;
            let mut end = at;
            loop {
                match section[end..].iter().position(|&b| b == b'\n') {
                    Some(n) => {
                        end += n + 1;
                        if end < section.len() && matches!(section[end], b' ' | b'\t') {
                            continue;
                        }
                    }
                    None => end = section.len(),
                }
                break;
            }
            at = end;
            let field = &section[start..end];
            if let Some(colon) = field.iter().position(|&b| b == b':') {
                return Some((&field[..colon], &field[colon + 1..]));
            }
        }
        None
    })
}

/// Whether a message's header section (its first octets in `head`, `whole` when that is the
/// whole message) holds `TLS-Required: No` (RFC 8689 §5): the sender lets it travel without
/// TLS when TLS fails. The last such field counts.
pub fn tls_required_no(head: &[u8], whole: bool) -> bool {
    header_section(head, whole)
        .and_then(|section| {
            fields(section)
                .filter(|(name, _)| name.trim_ascii_end().eq_ignore_ascii_case(b"TLS-Required"))
                .last()
        })
        .is_some_and(|(_, value)| value.trim_ascii().eq_ignore_ascii_case(b"No"))
}

/// The fields to add before the message for what `present` lacks: `Date:` now and a
/// `Message-ID:` made of the queue id and the server's host name.
pub fn additions(present: Present, id: &str, hostname: &str, now: SystemTime) -> String {
    let mut out = String::new();
    if !present.date {
        out.push_str(&format!("Date: {}\r\n", crate::received::rfc5322_date(now)));
    }
    if !present.message_id {
        out.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_the_header_section_only() {
        let both = b"From: a@b\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\nbody\r\n";
        assert_eq!(
            scan(both, true),
            Some(Present {
                date: true,
                message_id: true
            })
        );
        // In the body, or as a folded continuation, they do not count.
        let body_only = b"From: a@b\r\nSubject: x\r\n Date: no\r\n\r\nDate: in the body\r\nMessage-ID: <b@b>\r\n";
        assert_eq!(
            scan(body_only, true),
            Some(Present {
                date: false,
                message_id: false
            })
        );
        // "Message-ID :" (space before the colon, obsolete syntax) is still the field.
        assert_eq!(
            scan(b"Message-ID : <x@y>\n\nb", true).map(|p| p.message_id),
            Some(true)
        );
        // No empty line: the whole message is its header section.
        assert_eq!(
            scan(b"Subject: only headers\r\nDate: x", true).map(|p| p.date),
            Some(true)
        );
        // A header section that does not end within what was read: unknown.
        assert_eq!(scan(b"Subject: x\r\nX-Long: aaaa", false), None);
        assert!(scan(b"Subject: x\r\n\r\nbody that goes on", false).is_some());
    }

    #[test]
    fn the_header_section_ends_at_the_first_empty_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody", false),
            Some(&b"A: 1\r\nB: 2\r\n"[..])
        );
        assert_eq!(
            header_section(b"A: 1\nB: 2\n\nbody", false),
            Some(&b"A: 1\nB: 2\n"[..])
        );
        assert_eq!(header_section(b"A: 1\r\nB: 2", false), None);
        assert_eq!(
            header_section(b"A: 1\r\nB: 2", true),
            Some(&b"A: 1\r\nB: 2"[..])
        );
    }

    #[test]
    fn fields_are_split_with_their_folded_lines() {
        let f: Vec<(&[u8], &[u8])> =
            fields(b"Subject: a\r\n  b\r\nFrom:x@y\r\nno colon\r\nTo : z\r\n").collect();
        assert_eq!(
            f,
            vec![
                (&b"Subject"[..], &b" a\r\n  b\r\n"[..]),
                (&b"From"[..], &b"x@y\r\n"[..]),
                (&b"To "[..], &b" z\r\n"[..]),
            ]
        );
    }

    #[test]
    fn tls_required_no_is_read_in_the_header_section_only() {
        assert!(tls_required_no(
            b"Subject: x\r\nTLS-Required:  no \r\n\r\nbody\r\n",
            true
        ));
        assert!(tls_required_no(b"tls-required: No\n\n", true));
        assert!(!tls_required_no(b"TLS-Required: Yes\r\n\r\n", true));
        assert!(!tls_required_no(
            b"Subject: x\r\n\r\nTLS-Required: No\r\n",
            true
        ));
        assert!(!tls_required_no(
            b"Subject: x\r\n TLS-Required: No\r\n\r\n",
            true
        ));
        assert!(!tls_required_no(b"X-TLS-Required: No\r\n\r\n", true));
    }

    #[test]
    fn additions_for_what_is_missing() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let none = Present {
            date: false,
            message_id: false,
        };
        assert_eq!(
            additions(none, "1795000000.M0P1Q2", "mx.test", t),
            format!(
                "Date: {}\r\nMessage-ID: <1795000000.M0P1Q2@mx.test>\r\n",
                crate::received::rfc5322_date(t)
            )
        );
        let both = Present {
            date: true,
            message_id: true,
        };
        assert_eq!(additions(both, "id", "mx.test", t), "");
    }
}
