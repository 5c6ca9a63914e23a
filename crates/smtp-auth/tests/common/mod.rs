//! Plays a client mechanism against a server exchange through base64, as on the wire.

#![allow(dead_code, unreachable_pub)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use smtp_auth::{
    AuthExchange, AuthResult, ClientMechanism, MemoryProvider, Registry, SessionInfo, Step,
};

pub fn b64(bytes: &[u8]) -> Vec<u8> {
    STANDARD.encode(bytes).into_bytes()
}

/// Runs the whole exchange; the provider answers Verify and Lookup steps.
pub fn drive(
    registry: Registry,
    info: SessionInfo,
    client: &mut dyn ClientMechanism,
    provider: &MemoryProvider,
    send_initial: bool,
) -> AuthResult {
    let mut ex = AuthExchange::new(registry, info);
    let ir = if send_initial {
        client.initial_response().map(|ir| {
            if ir.expose_secret().is_empty() {
                b"=".to_vec()
            } else {
                b64(ir.expose_secret())
            }
        })
    } else {
        None
    };
    let mut step = ex.start(client.name(), ir.as_deref()).unwrap();
    for _ in 0..10 {
        step = match step {
            Step::Challenge(c) => match client.respond(&c) {
                Ok(r) => ex.respond(&b64(r.expose_secret())).unwrap(),
                Err(_) => ex.respond(b"*").unwrap(),
            },
            Step::Verify(req) => ex.decide(provider.check(&req)).unwrap(),
            Step::Lookup(req) => ex.supply(provider.lookup(&req)).unwrap(),
            Step::Done(r) => return r,
        };
    }
    panic!("exchange did not end");
}
