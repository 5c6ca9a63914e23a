//! Any body fed with any read boundaries: the decoder never panics, ends at the same place as
//! when fed whole, and only ever ends right after CRLF.CRLF.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use smtp_proto::{BarePolicy, DataDecoder, DataEvent};

fn run(input: &[u8], step: usize, policy: BarePolicy) -> Option<usize> {
    let mut d = DataDecoder::new(4096, policy);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        while let Some(ev) = d.decode(&mut buf) {
            if let DataEvent::End(_) = ev {
                return Some(fed - buf.len());
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = step as usize % 32 + 1;
    for policy in [BarePolicy::Reject, BarePolicy::Normalize] {
        let whole = run(input, input.len().max(1), policy);
        assert_eq!(whole, run(input, step, policy));
        if let Some(end) = whole {
            let framed = [b"\r\n".as_slice(), input].concat();
            assert!(framed[..end + 2].ends_with(b"\r\n.\r\n"));
        }
    }
});
