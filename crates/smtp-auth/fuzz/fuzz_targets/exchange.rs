//! Arbitrary lines into a server exchange of any mechanism never panic, and every call either
//! moves the exchange on or returns a wrong-state error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_auth::{AuthExchange, MemoryProvider, Registry, SessionInfo, Step};

const MECHS: &[&str] = &[
    "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER", "EXTERNAL", "NOPE",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let mech = MECHS[sel as usize % MECHS.len()];
    let provider = MemoryProvider::new().with_user("user", "pencil");
    let mut info = SessionInfo::default();
    info.external_identity = (sel & 0x80 != 0).then(|| "user".to_owned());
    let mut ex = AuthExchange::new(Registry::all_builtin(), info);
    let mut lines = rest.split(|&b| b == b'\n');
    let first = lines.next().filter(|l| !l.is_empty());
    let mut step = ex.start(mech, first).expect("a fresh exchange starts");
    for line in lines {
        step = match step {
            Step::Challenge(_) => ex.respond(line).expect("a challenge takes a response"),
            Step::Verify(r) => ex.decide(provider.check(&r)).expect("verify takes a decision"),
            Step::Lookup(r) => ex.supply(provider.lookup(&r)).expect("lookup takes a result"),
            Step::Done(_) => {
                assert!(ex.is_done());
                assert!(ex.respond(line).is_err());
                return;
            }
        };
    }
});
