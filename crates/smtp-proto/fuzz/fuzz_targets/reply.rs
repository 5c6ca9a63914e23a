//! Any bytes into the client-side reply parser never panic, memory stays bounded, and a reply
//! that parses encodes to bytes that parse to the same reply.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use smtp_proto::{Reply, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::new(512, 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(reply)) = parser.decode(&mut buf) {
        let wire = reply.to_bytes();
        let again = Reply::parse(&wire).expect("an encoded reply parses");
        assert_eq!(again, reply);
    }
    assert!(buf.len() <= data.len());
});
