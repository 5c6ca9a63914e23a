//! The `Received:` trace header (RFC 5321 §4.4) with the RFC 3848 `with` keywords, and an
//! RFC 5322 date.

use std::time::{SystemTime, UNIX_EPOCH};

use smtp_server::{Envelope, Session};

/// `ESMTPSA`, `ESMTPS`, `ESMTPA`, `ESMTP` or `SMTP` (RFC 3848), `LMTP` for LMTP.
pub fn protocol(session: &Session, lmtp: bool) -> &'static str {
    if lmtp {
        return "LMTP";
    }
    match (
        session.extended,
        session.tls.is_some(),
        session.authenticated,
    ) {
        (false, _, _) => "SMTP",
        (true, true, true) => "ESMTPSA",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, false, false) => "ESMTP",
    }
}

/// The header, folded, ending with CRLF.
pub fn header(
    session: &Session,
    envelope: &Envelope,
    hostname: &str,
    id: &str,
    lmtp: bool,
    now: SystemTime,
) -> String {
    let helo = session.helo_name.as_deref().unwrap_or("unknown");
    let mut h = format!(
        "Received: from {helo} ([{}])\r\n\tby {hostname} with {} id {id}",
        session.peer_addr.ip(),
        protocol(session, lmtp),
    );
    if let Some(user) = &session.login_data {
        // The user is already checked; keep the header to printable ASCII.
        let user: String = user.chars().filter(|c| c.is_ascii_graphic()).collect();
        h.push_str(&format!("\r\n\t(authenticated user {user})"));
    }
    if let [only] = envelope.rcpt_to.as_slice() {
        h.push_str(&format!("\r\n\tfor {only}"));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    h
}

/// `Tue, 24 Nov 2026 16:31:02 +0000`
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        WD[(days.rem_euclid(7)) as usize],
        MO[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        // 2026-11-24 16:31:02 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_537_862);
        assert_eq!(rfc5322_date(t), "Tue, 24 Nov 2026 16:31:02 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
