//! Property tests: parse(encode(x)) == x for commands and replies, and the DATA decoder's
//! invariants under arbitrary input and arbitrary read boundaries.

use bytes::BytesMut;
use proptest::prelude::*;
use smtp_proto::{
    BarePolicy, BodyType, Command, DataDecoder, DataEvent, DataVerdict, Domain, EnhancedCode,
    ForwardPath, Host, InitialResponse, LineDecoder, LineEvent, MailParameters, Mailbox, Mechanism,
    Notify, Orcpt, RcptParameters, Reply, ReplyCode, ReplyParser, Ret, ReversePath, encode_data,
};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = Domain> {
    prop::collection::vec(label(), 1..4)
        .prop_map(|l| Domain::try_from(l.join(".").as_str()).unwrap())
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        4 => domain().prop_map(Host::Domain),
        1 => any::<[u8; 4]>().prop_map(|o| Host::try_from(format!("[{}.{}.{}.{}]", o[0], o[1], o[2], o[3]).as_str()).unwrap()),
        1 => any::<[u16; 8]>().prop_map(|s| {
            let a = std::net::Ipv6Addr::from(s);
            Host::try_from(format!("[IPv6:{a}]").as_str()).unwrap()
        }),
    ]
}

fn mailbox() -> impl Strategy<Value = Mailbox> {
    let local = prop_oneof![
        3 => "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\\.[a-zA-Z0-9_+-]{1,8}){0,2}",
        1 => "\"([ a-zA-Z0-9.@<>]|\\\\\"){0,10}\"",
        1 => "[a-z]{1,3}[é用ü][a-z]{0,3}",
    ];
    (local, host()).prop_map(|(l, h)| format!("{l}@{h}").parse().unwrap())
}

fn xtext_value() -> impl Strategy<Value = String> {
    "[ -~]{1,20}"
}

fn mail_params() -> impl Strategy<Value = MailParameters> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop_oneof![
            Just(BodyType::SevenBit),
            Just(BodyType::EightBitMime),
            Just(BodyType::BinaryMime)
        ]),
        any::<bool>(),
        proptest::option::of(prop_oneof![
            Just(smtp_proto::AuthParam::Unknown),
            xtext_value().prop_map(smtp_proto::AuthParam::Identity)
        ]),
        proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Headers)]),
        proptest::option::of(xtext_value()),
        any::<bool>(),
    )
        .prop_map(|(size, body, smtputf8, auth, ret, envid, requiretls)| {
            let mut p = MailParameters::default();
            p.size = size;
            p.body = body;
            p.smtputf8 = smtputf8;
            p.auth = auth;
            p.ret = ret;
            p.envid = envid;
            p.requiretls = requiretls;
            p
        })
}

fn rcpt_params() -> impl Strategy<Value = RcptParameters> {
    (
        proptest::option::of(prop_oneof![
            Just(Notify {
                never: true,
                ..Default::default()
            }),
            (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_filter("one at least", |(a, b, c)| *a || *b || *c)
                .prop_map(|(success, failure, delay)| Notify {
                    never: false,
                    success,
                    failure,
                    delay
                })
        ]),
        proptest::option::of(xtext_value().prop_map(|a| Orcpt {
            addr_type: "rfc822".into(),
            address: a.into(),
        })),
    )
        .prop_map(|(notify, orcpt)| {
            let mut p = RcptParameters::default();
            p.notify = notify;
            p.orcpt = orcpt;
            p
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        host().prop_map(Command::Helo),
        host().prop_map(Command::Ehlo),
        host().prop_map(Command::Lhlo),
        (prop_oneof![1 => Just(ReversePath::Null), 4 => mailbox().prop_map(ReversePath::Mailbox)], mail_params())
            .prop_map(|(from, params)| Command::Mail { from, params }),
        (prop_oneof![1 => Just(ForwardPath::Postmaster), 4 => mailbox().prop_map(ForwardPath::Mailbox)], rcpt_params())
            .prop_map(|(to, params)| Command::Rcpt { to, params }),
        Just(Command::Data),
        (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
        Just(Command::Rset),
        proptest::option::of("[ -~]{0,30}").prop_map(Command::Noop),
        Just(Command::Quit),
        "[!-~][ -~]{0,30}".prop_map(Command::Vrfy),
        "[!-~][ -~]{0,30}".prop_map(Command::Expn),
        proptest::option::of("[ -~]{0,30}").prop_map(Command::Help),
        Just(Command::StartTls),
        ("[A-Z0-9_-]{1,20}", proptest::option::of("[A-Za-z0-9+/]{1,40}={0,2}|="))
            .prop_map(|(m, ir)| Command::Auth {
                mechanism: Mechanism::new(&m).unwrap(),
                initial_response: ir.map(InitialResponse::new)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_round_trip(cmd in command()) {
        let wire = cmd.to_bytes();
        prop_assert!(wire.ends_with(b"\r\n"));
        let parsed = Command::parse(&wire[..wire.len() - 2]);
        prop_assert_eq!(parsed, Ok(cmd));
    }

    #[test]
    fn parser_never_panics(line in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Command::parse(&line);
    }

    #[test]
    fn reply_round_trip(
        code in 200u16..600,
        enh in proptest::option::of((0u16..1000, 0u16..1000)),
        lines in prop::collection::vec("[!-~]([ -~]{0,40}[!-~])?", 1..5),
    ) {
        let rc = ReplyCode::new(code).unwrap();
        let class = (code / 100) as u8;
        let enhanced = enh.and_then(|(s, d)| EnhancedCode::new(class, s, d));
        // A text that itself begins like an enhanced code would be ambiguous without one.
        prop_assume!(enhanced.is_some() || !lines[0].starts_with(|c: char| c.is_ascii_digit()));
        let r = Reply::new(rc, enhanced, lines).unwrap();
        let mut p = ReplyParser::default();
        let mut buf = BytesMut::from(&r.to_bytes()[..]);
        let back = p.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, r);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn data_encode_decode(
        lines in prop::collection::vec("[.]{0,2}[ -~]{0,20}", 0..20),
        splits in prop::collection::vec(1usize..40, 1..50),
    ) {
        let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
        let mut wire = BytesMut::new();
        encode_data(&body, &mut wire);
        wire.extend_from_slice(b"NEXT");
        let mut dec = DataDecoder::new(u64::MAX, BarePolicy::Reject);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut src = &wire[..];
        let mut i = 0;
        let end = loop {
            if let Some(ev) = dec.decode(&mut buf) {
                match ev {
                    DataEvent::Chunk(c) => out.extend_from_slice(&c),
                    DataEvent::End(e) => break e,
                }
                continue;
            }
            prop_assert!(!src.is_empty(), "ran out of input before the end");
            let n = splits[i % splits.len()].min(src.len());
            i += 1;
            buf.extend_from_slice(&src[..n]);
            src = &src[n..];
        };
        prop_assert_eq!(end.verdict, DataVerdict::Ok);
        prop_assert_eq!(end.size, body.len() as u64);
        prop_assert_eq!(out, body);
        let mut rest = buf.to_vec();
        rest.extend_from_slice(src);
        prop_assert_eq!(rest, b"NEXT".to_vec());
    }

    #[test]
    fn data_decoder_on_arbitrary_bytes(
        input in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..400),
        step in 1usize..17,
        max in 0u64..500,
    ) {
        // Same result whatever the read boundaries; the end is only ever at CRLF.CRLF.
        let whole = decode_all(&input, input.len().max(1), max);
        let pieces = decode_all(&input, step, max);
        // The end (where and how) never depends on read boundaries; the content does not
        // either, for a message that is accepted (refused content is dropped as it streams).
        prop_assert_eq!(&whole.1, &pieces.1);
        if matches!(whole.1, Some((_, DataVerdict::Ok))) {
            prop_assert_eq!(&whole.0, &pieces.0);
        }
        if let (_, Some((consumed, _))) = &whole {
            let c = *consumed;
            let full = [b"\r\n".as_slice(), &input].concat();
            prop_assert!(full[..c + 2].ends_with(b"\r\n.\r\n"));
        }
    }

    #[test]
    fn normalized_bodies_have_only_crlf(
        input in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..200),
        step in 1usize..9,
    ) {
        let mut wire = input.clone();
        wire.extend_from_slice(b"\r\n.\r\n");
        let mut d = DataDecoder::new(u64::MAX, BarePolicy::Normalize);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut ended = false;
        'outer: for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(ev) = d.decode(&mut buf) {
                match ev {
                    DataEvent::Chunk(c) => out.extend_from_slice(&c),
                    DataEvent::End(e) => { prop_assert_eq!(e.verdict, DataVerdict::Ok); ended = true; break 'outer; }
                }
            }
        }
        prop_assert!(ended);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
            if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
        }
    }

    #[test]
    fn line_decoder_is_bounded(input in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..3000)) {
        let mut d = LineDecoder::new(64);
        let mut buf = BytesMut::new();
        for piece in input.chunks(37) {
            buf.extend_from_slice(piece);
            while let Some(ev) = d.decode(&mut buf) {
                if let LineEvent::Line(l) = ev {
                    prop_assert!(l.len() <= 63);
                }
            }
            prop_assert!(buf.len() < 64 + 37);
        }
    }
}

/// Decodes `input` fed in pieces; returns (content, bytes consumed up to the end if reached).
fn decode_all(input: &[u8], step: usize, max: u64) -> (Vec<u8>, Option<(usize, DataVerdict)>) {
    let mut d = DataDecoder::new(max, BarePolicy::Reject);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        while let Some(ev) = d.decode(&mut buf) {
            match ev {
                DataEvent::Chunk(c) => out.extend_from_slice(&c),
                DataEvent::End(e) => return (out, Some((fed - buf.len(), e.verdict))),
            }
        }
    }
    (out, None)
}
