//! Command sequencing: what is allowed in which state and which reply a refusal gets. Plain
//! functions over the session, the envelope and the configuration, tested without sockets;
//! the connection loop only calls them.

use smtp_proto::{
    BodyType, EhloResponse, Extension, ForwardPath, Host, MailParameters, ProtoError,
    RcptParameters, Reply, ReversePath,
};

use crate::config::ServerConfig;
use crate::replies;
use crate::session::{Envelope, Session};

/// The order of checks, for every command: sequencing and state (503, 530, 538) first, then
/// the command's syntax (500, 501), then its parameters. A command that is out of sequence is
/// refused as such even when its arguments are also malformed (RFC 4954 §4: any AUTH after a
/// successful one gets 503).
pub(crate) fn sequencing(
    cfg: &ServerConfig,
    session: &Session,
    env: &Envelope,
    verb: &str,
) -> Option<Reply> {
    match verb {
        "AUTH" => check_auth(cfg, session, env).err(),
        "MAIL" => mail_state(cfg, session, env).err(),
        "RCPT" | "DATA" | "BDAT" if !env.in_transaction() => Some(replies::need_mail()),
        "STARTTLS" if session.tls.is_some() => Some(replies::tls_active()),
        _ => None,
    }
}

/// The state MAIL needs: a greeting, TLS and AUTH when required, no transaction open.
fn mail_state(cfg: &ServerConfig, session: &Session, env: &Envelope) -> Result<(), Reply> {
    if session.helo_name.is_none() {
        return Err(replies::need_helo());
    }
    if cfg.tls.is_some() && cfg.auth_required && cfg.auth_require_tls && session.tls.is_none() {
        return Err(replies::tls_required());
    }
    if cfg.auth_required && !session.authenticated {
        return Err(replies::auth_required());
    }
    if env.in_transaction() {
        return Err(replies::nested_mail());
    }
    Ok(())
}

/// MAIL FROM (RFC 5321 §4.1.1.2, RFC 1870, RFC 6531, RFC 4954 §5).
pub(crate) fn check_mail(
    cfg: &ServerConfig,
    session: &Session,
    env: &Envelope,
    from: &ReversePath,
    params: &MailParameters,
) -> Result<(), Reply> {
    mail_state(cfg, session, env)?;
    if params.first_unknown().is_some()
        || (params.smtputf8 && !cfg.smtputf8)
        || (params.requiretls && !cfg.requiretls)
    {
        return Err(ProtoError::UnknownParameter.reply());
    }
    // RFC 8689 §4.1: offered over TLS only, and a message that demands TLS on every hop
    // cannot arrive without it.
    if params.requiretls && session.tls.is_none() {
        return Err(replies::requiretls_needs_tls());
    }
    if let ReversePath::Mailbox(m) = from
        && m.is_utf8()
    {
        if !params.smtputf8 {
            return Err(replies::smtputf8_required());
        }
        if !international_host_ok(m.host()) {
            return Err(replies::bad_idn(m.host(), (5, 1, 7)));
        }
    }
    if params.size.is_some_and(|s| s > cfg.max_message_size) {
        return Err(replies::size_exceeded());
    }
    Ok(())
}

/// RCPT TO (RFC 5321 §4.1.1.3).
pub(crate) fn check_rcpt(
    cfg: &ServerConfig,
    env: &Envelope,
    to: &ForwardPath,
    params: &RcptParameters,
) -> Result<(), Reply> {
    if !env.in_transaction() {
        return Err(replies::need_mail());
    }
    if env.rcpt_to.len() >= cfg.max_recipients {
        return Err(replies::too_many_recipients());
    }
    if params.first_unknown().is_some() {
        return Err(ProtoError::UnknownParameter.reply());
    }
    if let ForwardPath::Mailbox(m) = to
        && m.is_utf8()
    {
        if !env.mail_params.smtputf8 {
            return Err(replies::smtputf8_required());
        }
        if !international_host_ok(m.host()) {
            return Err(replies::bad_idn(m.host(), (5, 1, 3)));
        }
    }
    Ok(())
}

/// Whether a mailbox's host is a domain IDNA2008 allows as written (RFC 5890, UTS 46
/// non-transitional processing with the STD3 rules): its U-labels hold no disallowed code
/// point and none that the mapping would remove or change, other than upper case. A domain
/// with U+200B (zero width space) in it displays as another one and is refused. ASCII hosts
/// and address literals are not looked at.
#[cfg(feature = "idna")]
pub(crate) fn international_host_ok(host: &Host) -> bool {
    use idna::uts46::{AsciiDenyList, Hyphens, Uts46};
    let Host::Domain(d) = host else {
        return true;
    };
    let d = d.as_str();
    if d.is_ascii() {
        return true;
    }
    let (mapped, result) =
        Uts46::new().to_unicode(d.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow);
    result.is_ok() && mapped == d.to_lowercase()
}

/// Without the `idna` feature, U-labels are checked for RFC 6531 syntax only.
#[cfg(not(feature = "idna"))]
pub(crate) fn international_host_ok(_host: &Host) -> bool {
    true
}

/// DATA (RFC 5321 §4.1.1.4, RFC 3030 for BINARYMIME).
pub(crate) fn check_data(env: &Envelope) -> Result<(), Reply> {
    if !env.in_transaction() {
        return Err(replies::need_mail());
    }
    if env.chunked {
        return Err(replies::bdat_data_mix());
    }
    if env.rcpt_to.is_empty() {
        return Err(replies::no_valid_recipients());
    }
    if env.mail_params.body == Some(BodyType::BinaryMime) {
        return Err(replies::binarymime_needs_bdat());
    }
    Ok(())
}

/// BDAT (RFC 3030).
pub(crate) fn check_bdat(env: &Envelope) -> Result<(), Reply> {
    if !env.in_transaction() {
        return Err(replies::need_mail());
    }
    if env.rcpt_to.is_empty() {
        return Err(replies::no_valid_recipients());
    }
    Ok(())
}

/// AUTH (RFC 4954 §4): after EHLO, once, outside a transaction, over TLS when required.
pub(crate) fn check_auth(
    cfg: &ServerConfig,
    session: &Session,
    env: &Envelope,
) -> Result<(), Reply> {
    if session.helo_name.is_none() || !session.extended {
        return Err(replies::need_helo());
    }
    if session.authenticated {
        return Err(replies::already_authenticated());
    }
    if env.in_transaction() {
        return Err(replies::auth_in_transaction());
    }
    if !cfg.auth_allowed(session.tls.is_some()) {
        return Err(replies::encryption_required());
    }
    Ok(())
}

/// True when the session has a `tls-exporter` channel binding (RFC 9266): TLS 1.3.
pub(crate) fn channel_binding_available(session: &Session) -> bool {
    session
        .tls
        .as_ref()
        .is_some_and(|t| t.protocol == "TLSv1_3")
}

/// The EHLO/LHLO response for the session's current state.
pub(crate) fn ehlo_response(cfg: &ServerConfig, session: &Session) -> EhloResponse {
    let mut r = EhloResponse::new(cfg.hostname.clone())
        .with(Extension::Pipelining)
        .with(Extension::Size(Some(cfg.max_message_size)))
        .with(Extension::EightBitMime)
        .with(Extension::EnhancedStatusCodes)
        .with(Extension::Chunking)
        .with(Extension::BinaryMime);
    if cfg.smtputf8 {
        r = r.with(Extension::SmtpUtf8);
    }
    if cfg.tls.is_some() && session.tls.is_none() {
        r = r.with(Extension::StartTls);
    }
    if cfg.requiretls && session.tls.is_some() {
        r = r.with(Extension::RequireTls);
    }
    // Channel-binding mechanisms only where a `tls-exporter` binding exists (TLS 1.3).
    let bound = channel_binding_available(session);
    let mechs = cfg.registry.offered(bound);
    if cfg.auth_allowed(session.tls.is_some()) && !mechs.is_empty() {
        r = r.with(Extension::Auth(
            mechs.into_iter().map(str::to_owned).collect(),
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TlsInfo;

    fn session() -> Session {
        let mut s = Session::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:25".parse().unwrap(),
        );
        s.helo_name = Some("client".into());
        s.extended = true;
        s
    }

    fn mb(s: &str) -> ReversePath {
        ReversePath::Mailbox(s.parse().unwrap())
    }

    fn code(r: Result<(), Reply>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(r) => r.to_string(),
        }
    }

    #[test]
    fn mail_rules() {
        let cfg = ServerConfig::default();
        let env = Envelope::default();
        let p = MailParameters::default();
        assert_eq!(
            code(check_mail(&cfg, &session(), &env, &mb("a@b.c"), &p)),
            "ok"
        );
        let mut s = session();
        s.helo_name = None;
        assert_eq!(
            code(check_mail(&cfg, &s, &env, &mb("a@b.c"), &p)),
            "503 5.5.1 Send HELO/EHLO first"
        );
        let cfg_auth = ServerConfig::builder().auth_required(true).build();
        assert_eq!(
            code(check_mail(&cfg_auth, &session(), &env, &mb("a@b.c"), &p)),
            "530 5.7.0 Authentication required"
        );
        let mut big = MailParameters::default();
        big.size = Some(cfg.max_message_size + 1);
        assert_eq!(
            code(check_mail(&cfg, &session(), &env, &mb("a@b.c"), &big)),
            "552 5.3.4 Message size exceeds fixed limit"
        );
        let unknown = MailParameters::parse("X-FOO=1").unwrap();
        assert_eq!(
            code(check_mail(&cfg, &session(), &env, &mb("a@b.c"), &unknown)),
            "555 5.5.4 Unsupported parameter"
        );
        let utf8_address = |params: &MailParameters| {
            code(check_mail(
                &cfg,
                &session(),
                &env,
                &mb("用户@例子.广告"),
                params,
            ))
        };
        assert_eq!(
            utf8_address(&p),
            "553 5.6.7 Non-ASCII address requires SMTPUTF8"
        );
        let utf8 = MailParameters::parse("SMTPUTF8").unwrap();
        assert_eq!(utf8_address(&utf8), "ok");
        // DSN and AUTH= parameters are accepted.
        let dsn = MailParameters::parse("RET=HDRS ENVID=x AUTH=<>").unwrap();
        assert_eq!(
            code(check_mail(&cfg, &session(), &env, &mb("a@b.c"), &dsn)),
            "ok"
        );
        let in_tx = Envelope {
            mail_from: Some(ReversePath::Null),
            ..Default::default()
        };
        assert_eq!(
            code(check_mail(&cfg, &session(), &in_tx, &mb("a@b.c"), &p)),
            "503 5.5.1 Sender already specified"
        );
    }

    #[test]
    fn rcpt_data_bdat_rules() {
        let cfg = ServerConfig::builder().max_recipients(1).build();
        let to = ForwardPath::Postmaster;
        let p = RcptParameters::default();
        let mut env = Envelope::default();
        assert_eq!(
            code(check_rcpt(&cfg, &env, &to, &p)),
            "503 5.5.1 Need MAIL command"
        );
        assert_eq!(code(check_data(&env)), "503 5.5.1 Need MAIL command");
        env.mail_from = Some(ReversePath::Null);
        assert_eq!(code(check_data(&env)), "554 5.5.1 No valid recipients");
        assert_eq!(code(check_bdat(&env)), "554 5.5.1 No valid recipients");
        assert_eq!(code(check_rcpt(&cfg, &env, &to, &p)), "ok");
        env.rcpt_to.push(to.clone());
        assert_eq!(
            code(check_rcpt(&cfg, &env, &to, &p)),
            "452 4.5.3 Too many recipients"
        );
        assert_eq!(code(check_data(&env)), "ok");
        env.chunked = true;
        assert_eq!(
            code(check_data(&env)),
            "503 5.5.1 DATA not allowed after BDAT"
        );
        env.chunked = false;
        env.mail_params.body = Some(BodyType::BinaryMime);
        assert_eq!(
            code(check_data(&env)),
            "503 5.5.1 BODY=BINARYMIME requires BDAT"
        );
        assert_eq!(code(check_bdat(&env)), "ok");
    }

    #[cfg(feature = "idna")]
    #[test]
    fn international_domains_idna_refuses_are_refused_with_553() {
        let cfg = ServerConfig::default();
        let env = Envelope {
            mail_from: Some(ReversePath::Null),
            mail_params: MailParameters::parse("SMTPUTF8").unwrap(),
            ..Default::default()
        };
        let rcpt = |a: &str| {
            let to = ForwardPath::Mailbox(a.parse().unwrap());
            code(check_rcpt(&cfg, &env, &to, &RcptParameters::default()))
        };
        // Invisible code points IDNA2008 disallows (UTS 46 would map them away, so the domain
        // would display as example.com).
        assert_eq!(
            rcpt("test@exam\u{200b}ple.com"),
            "553 5.1.3 Invalid international domain name exam\\u{200b}ple.com"
        );
        assert_eq!(
            rcpt("test@exam\u{2060}ple.com"),
            "553 5.1.3 Invalid international domain name exam\\u{2060}ple.com"
        );
        assert_eq!(
            rcpt("test@\u{feff}example.com"),
            "553 5.1.3 Invalid international domain name \\u{feff}example.com"
        );
        // A decomposed "ü" (u + U+0308) is not in NFC; private use is disallowed.
        assert!(rcpt("a@bu\u{308}cher.de").starts_with("553 5.1.3"));
        assert!(rcpt("a@\u{e000}.example").starts_with("553 5.1.3"));
        // Valid U-labels, in either case, and a non-ASCII local part, pass.
        assert_eq!(rcpt("a@b\u{fc}cher.de"), "ok");
        assert_eq!(rcpt("a@B\u{dc}CHER.de"), "ok");
        assert_eq!(rcpt("用户@例子.广告"), "ok");
        assert_eq!(rcpt("j\u{f6}rg@example.com"), "ok");
        // The sender is checked the same way, as 5.1.7.
        let from = mb("test@exam\u{200b}ple.com");
        let utf8 = MailParameters::parse("SMTPUTF8").unwrap();
        assert_eq!(
            code(check_mail(
                &cfg,
                &session(),
                &Envelope::default(),
                &from,
                &utf8
            )),
            "553 5.1.7 Invalid international domain name exam\\u{200b}ple.com"
        );
    }

    #[test]
    fn requiretls_is_offered_and_taken_over_tls_only_when_on() {
        let off = ServerConfig::default();
        let on = ServerConfig::builder().requiretls(true).build();
        let env = Envelope::default();
        let p = MailParameters::parse("REQUIRETLS").unwrap();
        let mut tls = session();
        tls.tls = Some(TlsInfo {
            protocol: "TLSv1_3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            sni: None,
            implicit: false,
            peer_certificate: None,
        });
        // Off (the default): neither offered nor accepted, even over TLS.
        assert!(!ehlo_response(&off, &tls).has("REQUIRETLS"));
        assert_eq!(
            code(check_mail(&off, &tls, &env, &mb("a@b.c"), &p)),
            "555 5.5.4 Unsupported parameter"
        );
        // On: offered over TLS only; MAIL … REQUIRETLS without TLS is refused.
        assert!(ehlo_response(&on, &tls).has("REQUIRETLS"));
        assert!(!ehlo_response(&on, &session()).has("REQUIRETLS"));
        assert_eq!(
            code(check_mail(&on, &session(), &env, &mb("a@b.c"), &p)),
            "530 5.7.10 REQUIRETLS needs a TLS session: STARTTLS first"
        );
        assert_eq!(code(check_mail(&on, &tls, &env, &mb("a@b.c"), &p)), "ok");
    }

    #[test]
    fn auth_rules_and_advertising() {
        let cfg = ServerConfig::default();
        let env = Envelope::default();
        // TLS required by default: no AUTH in EHLO, 538 on AUTH.
        assert_eq!(
            code(check_auth(&cfg, &session(), &env)),
            "538 5.7.11 Encryption required for requested authentication mechanism"
        );
        assert!(ehlo_response(&cfg, &session()).auth_mechanisms().is_empty());
        let plain = ServerConfig::builder().auth_require_tls(false).build();
        assert_eq!(
            ehlo_response(&plain, &session()).auth_mechanisms(),
            &["PLAIN", "LOGIN"]
        );
        assert_eq!(code(check_auth(&plain, &session(), &env)), "ok");
        let mut s = session();
        s.extended = false;
        assert_eq!(
            code(check_auth(&plain, &s, &env)),
            "503 5.5.1 Send HELO/EHLO first"
        );
        s.extended = true;
        s.authenticated = true;
        assert_eq!(
            code(check_auth(&plain, &s, &env)),
            "503 5.5.1 Already authenticated"
        );
        let in_tx = Envelope {
            mail_from: Some(ReversePath::Null),
            ..Default::default()
        };
        assert_eq!(
            code(check_auth(&plain, &session(), &in_tx)),
            "503 5.5.1 AUTH not permitted during a mail transaction"
        );
        let excluded = ServerConfig::builder()
            .auth_require_tls(false)
            .exclude_mechanism("LOGIN")
            .build();
        assert_eq!(
            ehlo_response(&excluded, &session()).auth_mechanisms(),
            &["PLAIN"]
        );
    }
}
