//! The whole session machine under arbitrary input: bytes split at arbitrary points, arbitrary
//! hook answers and clock jumps. It must never panic or loop, never send more than one final
//! reply per line it read (plus the greeting and one closing 421), never send after it closed,
//! and send the same bytes whatever the split points.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use smtp_auth::{AuthData, AuthDecision, AuthResult, AuthStatus, Identity, LookupResult, Verdict};
use smtp_proto::Reply;
use smtp_server::machine::{Call, Event, Machine};
use smtp_server::{Body, ServerConfig};

/// xorshift64: hook answers and cuts from the input's own bytes, so a run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn config(sel: u8) -> ServerConfig {
    ServerConfig::builder()
        .hostname("mx.fuzz")
        .auth_require_tls(false)
        .auth_required(sel & 1 != 0)
        .max_errors(if sel & 2 != 0 { 3 } else { 20 })
        .max_message_size(if sel & 4 != 0 { 64 } else { 1 << 20 })
        .auth_failure_delay(if sel & 8 != 0 {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        })
        .forbid_bare_newline(sel & 16 != 0)
        .lenient_paths(sel & 32 != 0)
        .max_junk_commands(if sel & 64 != 0 { 2 } else { 100 })
        // What arrives before the 354 and after STARTTLS depends on the split points by
        // design; with these the replies must not.
        .allow_pipelined_body(true)
        .build()
}

struct Outcome {
    out: Vec<u8>,
    closed: bool,
}

/// Runs the input through a machine, cut into pieces at `cuts`; `jumps` moves the clock by
/// random amounts while waiting (timeouts) instead of only through delays.
fn drive(cfg: &Arc<ServerConfig>, input: &[u8], cuts: &[usize], seed: u64, jumps: bool) -> Outcome {
    let mut t = Instant::now();
    let mut m = Machine::new(
        cfg.clone(),
        "192.0.2.1:4000".parse().unwrap(),
        "192.0.2.2:25".parse().unwrap(),
        t,
    );
    let mut answers = Rng(seed | 1);
    let mut clock = Rng(seed.rotate_left(17) | 1);
    let mut body = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cut = cuts.iter().copied().filter(|&c| c > 0 && c < input.len());
    let mut closed = false;
    for _ in 0..200_000 {
        match m.next() {
            Event::Send => {
                assert!(!closed, "a reply after the close");
                out.extend_from_slice(m.output());
                m.sent();
            }
            Event::Wait { deadline, read } => {
                if read && jumps && clock.below(8) == 0 {
                    t += Duration::from_secs(clock.below(400));
                    m.now(t);
                } else if read && pos < input.len() {
                    let end = cut.next().filter(|&c| c > pos).unwrap_or(input.len());
                    m.enqueue_input(&input[pos..end]);
                    pos = end;
                } else if read {
                    m.input_closed();
                } else {
                    assert!(deadline > t, "a delay that is already over");
                    t = deadline;
                    m.now(t);
                }
            }
            Event::Pending => panic!("every call is answered at once"),
            Event::AuthResponse(_) => panic!("no handle_auth hook asked for a response"),
            Event::MessageStart | Event::MessageDiscard => body.clear(),
            Event::MessageChunk(c) => body.extend_from_slice(&c),
            Event::Call(call) => {
                let r = answer(&mut m, call, &mut answers, &mut body);
                assert!(r.is_ok(), "the machine asked for this answer: {r:?}");
            }
            Event::Close => {
                if closed {
                    return Outcome { out, closed };
                }
                closed = true;
                // Whatever comes after the close is ignored.
                m.enqueue_input(b"NOOP\r\nQUIT\r\n");
                assert!(m.answer(None).is_err());
            }
        }
    }
    panic!("the session did not end");
}

fn answer(
    m: &mut Machine,
    call: Call,
    rng: &mut Rng,
    body: &mut Vec<u8>,
) -> Result<(), smtp_server::machine::WrongState> {
    let refuse = Reply::simple(550, Some((5, 7, 1)), "Refused");
    match call {
        Call::Auth { .. } => match rng.below(6) {
            0 => m.answer_auth(Some(AuthResult::failure(AuthStatus::Invalid))),
            1 => m.answer_auth(Some(AuthResult::success(None))),
            _ => m.answer_auth(None),
        },
        Call::Verify(req) => m.answer_verify(match rng.below(5) {
            0 => Verdict::ok(Some(AuthData::Identity(Identity {
                login: req.username.clone(),
                authzid: None,
                mechanism: req.mechanism.clone(),
            }))),
            1 => AuthDecision::Failure.into(),
            2 => AuthDecision::Locked.into(),
            3 => Verdict::ok(None).with_message("535 5.7.8 mismatched"),
            _ => AuthDecision::Invalid.into(),
        }),
        Call::Lookup(_) => m.answer_lookup(if rng.below(2) == 0 {
            LookupResult::NotFound
        } else {
            LookupResult::Failure
        }),
        Call::StoreMessage => {
            let b = std::mem::take(body);
            m.answer_stored((rng.below(8) != 0).then(|| Body::Memory(Bytes::from(b))))
        }
        Call::Data => {
            let len = m.envelope().body.len();
            m.answer_data(if rng.below(4) == 0 {
                Reply::simple(451, Some((4, 3, 0)), "Later")
            } else {
                Reply::simple(250, Some((2, 0, 0)), &format!("{len} octets"))
            })
        }
        Call::DataLmtp => m.answer_lmtp(Vec::new()),
        Call::StartTls => m.tls_failed(),
        _ => m.answer(match rng.below(4) {
            0 => Some(refuse),
            1 => Some(Reply::simple(250, Some((2, 0, 0)), "Fine")),
            _ => None,
        }),
    }
}

/// Final reply lines (`ddd text`, not `ddd-text`).
fn finals(out: &[u8]) -> usize {
    out.split(|&b| b == b'\n')
        .filter(|l| l.len() >= 4 && l[..3].iter().all(u8::is_ascii_digit) && l[3] == b' ')
        .count()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, input) = data.split_at(3);
    let cfg = Arc::new(config(head[0]));
    let seed = u64::from(head[1]) << 8 | u64::from(head[2]);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut cuts: Vec<usize> = (0..rng.below(12))
        .map(|_| rng.below(input.len() as u64 + 1) as usize)
        .collect();
    cuts.sort_unstable();
    let whole = drive(&cfg, input, &[], seed, false);
    let split = drive(&cfg, input, &cuts, seed, false);
    assert!(whole.closed && split.closed);
    assert_eq!(
        String::from_utf8_lossy(&whole.out),
        String::from_utf8_lossy(&split.out),
        "the replies depend on the split points {cuts:?}"
    );
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    assert!(
        finals(&whole.out) <= lines + 2,
        "more replies than lines: {}",
        String::from_utf8_lossy(&whole.out)
    );
    // With clock jumps: timeouts anywhere, still no panic, no loop, nothing after the close.
    let jumped = drive(&cfg, input, &cuts, seed, true);
    assert!(finals(&jumped.out) <= lines + 2);
});
