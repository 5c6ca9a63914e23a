//! # smtp-proto
//!
//! Runtime-free parsing and encoding of the SMTP wire protocol (RFC 5321 and its extensions),
//! built on [`nom`] and [`bytes`]. It is the lowest layer of this workspace: a server, a client,
//! a relay or a test tool can use it alone.
//!
//! - [`Command`]: every command of RFC 5321 §4.1 plus LHLO, BDAT, STARTTLS and AUTH, parsed from
//!   one line by [`Command::parse`] and encoded back by [`Command::encode`]. Unknown verbs parse
//!   to [`Command::Unknown`].
//! - Addresses ([`Mailbox`], [`ReversePath`], [`ForwardPath`], [`Domain`], [`AddressLiteral`])
//!   follow the RFC 5321 §4.1.2 grammar exactly; UTF-8 addresses (RFC 6531) are marked.
//! - ESMTP parameters: [`MailParameters`] and [`RcptParameters`] type SIZE, BODY, SMTPUTF8, AUTH,
//!   RET, ENVID, NOTIFY and ORCPT and keep every other parameter.
//! - Errors are typed ([`ProtoError`]) and each knows its reply ([`ProtoError::reply`]).
//! - [`Reply`] encodes single- and multi-line replies with enhanced status codes;
//!   [`ReplyParser`] reads them back on the client side; [`EhloResponse`] builds the EHLO reply.
//! - Framing: [`LineDecoder`] bounds command lines (512 octets by default) and drops overlong
//!   ones in bounded memory; [`DataDecoder`] un-stuffs DATA bodies and ends only at CRLF.CRLF,
//!   refusing bare CR/LF (SMTP smuggling) by default; [`BdatDecoder`] reads exact BDAT chunks.
//! - [`codec::SmtpCodec`] frames a server's input by mode (command lines, SASL lines, DATA,
//!   BDAT) with no runtime; with the `codec` feature it is also a tokio-util `Decoder`/`Encoder`.
//!
//! ## Example
//!
//! ```
//! use smtp_proto::{Command, ForwardPath, ProtoError, ReversePath};
//!
//! let cmd = Command::parse(b"MAIL FROM:<alice@example.org> SIZE=1200 BODY=8BITMIME").unwrap();
//! let Command::Mail { from, params } = &cmd else { unreachable!() };
//! assert_eq!(from.to_string(), "<alice@example.org>");
//! assert_eq!(params.size, Some(1200));
//! assert_eq!(cmd.to_bytes(), b"MAIL FROM:<alice@example.org> SIZE=1200 BODY=8BITMIME\r\n");
//!
//! // Errors carry their reply.
//! let err = Command::parse(b"RCPT TO:<no-domain>").unwrap_err();
//! assert_eq!(err, ProtoError::RecipientSyntax);
//! assert_eq!(err.reply().to_bytes(), b"501 5.1.3 Bad recipient address syntax\r\n");
//!
//! // AUTH lines keep their initial response out of Debug output.
//! let auth = Command::parse(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
//! assert!(!format!("{auth:?}").contains("AGFsaWNl"));
//! ```
//!
//! Decoding a DATA body from a read buffer:
//!
//! ```
//! use bytes::BytesMut;
//! use smtp_proto::{BarePolicy, DataDecoder, DataEvent, DataVerdict};
//!
//! let mut buf = BytesMut::from(&b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n"[..]);
//! let mut dec = DataDecoder::new(1 << 20, BarePolicy::Reject);
//! let mut body = Vec::new();
//! while let Some(ev) = dec.decode(&mut buf) {
//!     match ev {
//!         DataEvent::Chunk(c) => body.extend_from_slice(&c),
//!         DataEvent::End(end) => { assert_eq!(end.verdict, DataVerdict::Ok); break }
//!     }
//! }
//! assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\n");
//! assert_eq!(&buf[..], b"QUIT\r\n");
//! ```

// `unsafe` only in `text.rs`: two audited `from_utf8_unchecked` calls right after a pass that
// proved the octets ASCII (see there and docs/performance.md); nothing else.
#![deny(unsafe_code)]

mod bdat;
pub mod codec;
mod command;
mod data;
mod ehlo;
mod error;
mod line;
mod params;
mod path;
mod reply;
mod text;

pub use bdat::{BdatDecoder, BdatEvent};
pub use command::{Command, InitialResponse, Mechanism, ParseOptions};
pub use data::{
    BarePolicy, DataDecoder, DataEncoder, DataEnd, DataEvent, DataVerdict, encode_data,
};
pub use ehlo::{EhloResponse, Extension};
pub use error::ProtoError;
pub use line::{DEFAULT_MAX_LINE, LineDecoder, LineEvent, LineRef};
pub use params::{
    AuthParam, BodyType, MailParameters, Notify, Orcpt, Param, RcptParameters, Ret, xtext_decode,
    xtext_encode,
};
pub use path::{
    AddressLiteral, Domain, ForwardPath, Host, LocalPart, MAX_DOMAIN_LEN, MAX_PATH_LEN, Mailbox,
    ReversePath,
};
pub use reply::{EnhancedCode, Reply, ReplyCode, ReplyError, ReplyParser};
/// The small-string type of the address and parameter fields (inline up to 23 octets).
pub use smol_str::SmolStr;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
