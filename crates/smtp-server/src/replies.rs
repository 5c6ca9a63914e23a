//! The one table of this crate's reply texts. Each function names its RFC meaning.
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use smtp_proto::Reply;

fn r(code: u16, e: (u8, u16, u16), text: &str) -> Reply {
    Reply::simple(code, Some(e), text)
}

pub(crate) fn ok() -> Reply {
    r(250, (2, 0, 0), "OK")
}
pub(crate) fn sender_ok() -> Reply {
    r(250, (2, 1, 0), "Sender OK")
}
pub(crate) fn recipient_ok() -> Reply {
    r(250, (2, 1, 5), "Recipient OK")
}
pub(crate) fn queued() -> Reply {
    r(250, (2, 0, 0), "OK: message accepted")
}
pub(crate) fn start_data() -> Reply {
    Reply::simple(354, None, "End data with <CR><LF>.<CR><LF>")
}
pub(crate) fn bdat_chunk(n: u64) -> Reply {
    r(250, (2, 0, 0), &format!("{n} octets received"))
}
pub(crate) fn bye() -> Reply {
    r(221, (2, 0, 0), "Bye")
}
pub(crate) fn ready_tls() -> Reply {
    r(220, (2, 0, 0), "Ready to start TLS")
}
pub(crate) fn help() -> Reply {
    r(214, (2, 0, 0), "See RFC 5321")
}
pub(crate) fn vrfy() -> Reply {
    r(
        252,
        (2, 5, 0),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub(crate) fn expn() -> Reply {
    r(502, (5, 5, 1), "EXPN not supported")
}
pub(crate) fn need_helo() -> Reply {
    r(503, (5, 5, 1), "Send HELO/EHLO first")
}
pub(crate) fn nested_mail() -> Reply {
    r(503, (5, 5, 1), "Sender already specified")
}
pub(crate) fn need_mail() -> Reply {
    r(503, (5, 5, 1), "Need MAIL command")
}
pub(crate) fn no_valid_recipients() -> Reply {
    r(554, (5, 5, 1), "No valid recipients")
}
pub(crate) fn already_authenticated() -> Reply {
    r(503, (5, 5, 1), "Already authenticated")
}
pub(crate) fn auth_in_transaction() -> Reply {
    r(
        503,
        (5, 5, 1),
        "AUTH not permitted during a mail transaction",
    )
}
pub(crate) fn auth_required() -> Reply {
    r(530, (5, 7, 0), "Authentication required")
}
pub(crate) fn encryption_required() -> Reply {
    r(
        538,
        (5, 7, 11),
        "Encryption required for requested authentication mechanism",
    )
}
pub(crate) fn tls_required() -> Reply {
    r(530, (5, 7, 0), "Must issue a STARTTLS command first")
}
pub(crate) fn tls_unavailable() -> Reply {
    r(454, (4, 7, 0), "TLS not available")
}
pub(crate) fn tls_active() -> Reply {
    r(503, (5, 5, 1), "TLS already active")
}
pub(crate) fn too_many_auth_failures() -> Reply {
    r(
        421,
        (4, 7, 0),
        "Too many failed authentication attempts, closing connection",
    )
}
pub(crate) fn too_many_recipients() -> Reply {
    r(452, (4, 5, 3), "Too many recipients")
}
pub(crate) fn size_exceeded() -> Reply {
    r(552, (5, 3, 4), "Message size exceeds fixed limit")
}
pub(crate) fn requiretls_needs_tls() -> Reply {
    r(
        530,
        (5, 7, 10),
        "REQUIRETLS needs a TLS session: STARTTLS first",
    )
}
pub(crate) fn smtputf8_required() -> Reply {
    r(553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8")
}
pub(crate) fn bad_idn(host: &smtp_proto::Host, code: (u8, u16, u16)) -> Reply {
    // The domain is named with its non-ASCII characters escaped: some are invisible.
    let shown: String = host.to_string().escape_default().collect();
    r(
        553,
        code,
        &format!("Invalid international domain name {shown}"),
    )
}
pub(crate) fn binarymime_needs_bdat() -> Reply {
    r(503, (5, 5, 1), "BODY=BINARYMIME requires BDAT")
}
pub(crate) fn bdat_data_mix() -> Reply {
    r(503, (5, 5, 1), "DATA not allowed after BDAT")
}
pub(crate) fn timeout() -> Reply {
    r(421, (4, 4, 2), "Timeout, closing connection")
}
pub(crate) fn shutting_down() -> Reply {
    r(421, (4, 3, 2), "Service shutting down, closing connection")
}
pub(crate) fn too_many_connections() -> Reply {
    r(421, (4, 3, 2), "Too many connections, try again later")
}
pub(crate) fn lmtp_ehlo() -> Reply {
    r(500, (5, 5, 1), "This is an LMTP server: use LHLO")
}
pub(crate) fn not_lmtp() -> Reply {
    r(500, (5, 5, 2), "LHLO is for LMTP servers")
}
pub(crate) fn unknown_command() -> Reply {
    smtp_proto::ProtoError::UnknownCommand.reply()
}
pub(crate) fn local_error() -> Reply {
    r(451, (4, 3, 0), "Local error in processing")
}
pub(crate) fn too_many_errors() -> Reply {
    r(421, (4, 7, 0), "Too many errors, closing connection")
}
pub(crate) fn pipelined_body() -> Reply {
    r(
        554,
        (5, 5, 0),
        "Improper pipelining: message sent before the 354 reply, refused",
    )
}
pub(crate) fn too_many_from_address() -> Reply {
    r(
        421,
        (4, 7, 0),
        "Too many connections from your address, try again later",
    )
}
pub(crate) fn session_too_long() -> Reply {
    r(
        421,
        (4, 4, 2),
        "Maximum session duration reached, closing connection",
    )
}
