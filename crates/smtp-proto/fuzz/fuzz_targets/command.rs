//! Any line: parsing never panics, and a parsed command encodes to bytes that parse to the
//! same command (parse → encode → parse is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::Command;

fuzz_target!(|line: &[u8]| {
    if let Ok(cmd) = Command::parse(line) {
        let wire = cmd.to_bytes();
        let again = Command::parse(&wire[..wire.len() - 2]).unwrap_or_else(|e| {
            panic!(
                "re-parse of {:?} failed: {e}",
                String::from_utf8_lossy(&wire)
            )
        });
        assert_eq!(again, cmd);
    }
});
