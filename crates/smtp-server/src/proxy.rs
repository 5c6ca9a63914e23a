//! PROXY protocol v1 and v2 (HAProxy), so the real client address reaches `AuthRequest.remote_ip`
//! when the server runs behind a TCP load balancer. The header is read with exact-length reads,
//! so no byte after it is consumed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[cfg(feature = "tokio")]
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// The largest v2 address block we accept.
#[cfg(feature = "tokio")]
const V2_MAX_BODY: usize = 2048;

/// A malformed or missing PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PROXY protocol: {}", self.0)
    }
}

impl std::error::Error for ProxyError {}

/// A v1 port: 0–65535 in decimal, no sign, no leading zero (spec §2.1).
fn v1_port(text: &str) -> Option<u16> {
    let plain = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

/// Parses a v1 line (with its CRLF): the source address, or `None` for `UNKNOWN`.
///
/// The line must match the format exactly (spec §2.1): `PROXY`, one space, `TCP4` or `TCP6`,
/// then source and destination addresses of that family and the two ports, each after exactly
/// one space, and CRLF; at most 107 octets. Anything else aborts the connection. After
/// `UNKNOWN` the rest of the line is ignored, as the spec asks.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if line.len() > V1_MAX {
        return Err(ProxyError("v1 header too long"));
    }
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError("v1 header without CRLF"))?;
    if line.contains(&b'\r') || line.contains(&b'\n') {
        return Err(ProxyError("v1 header with a stray CR or LF"));
    }
    let text = std::str::from_utf8(line).map_err(|_| ProxyError("v1 header not ASCII"))?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError("v1 header without PROXY"));
    }
    let family = words.next();
    if family == Some("UNKNOWN") {
        return Ok(None);
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(ProxyError("v1 header has the wrong number of fields"));
    };
    let parse = |a: &str| -> Option<IpAddr> {
        match family {
            Some("TCP4") => a.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            Some("TCP6") => a.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        }
    };
    if !matches!(family, Some("TCP4" | "TCP6")) {
        return Err(ProxyError("v1 protocol family"));
    }
    let src = parse(src).ok_or(ProxyError("v1 source address"))?;
    parse(dst).ok_or(ProxyError("v1 destination address"))?;
    let sport = v1_port(sport).ok_or(ProxyError("v1 source port"))?;
    v1_port(dport).ok_or(ProxyError("v1 destination port"))?;
    Ok(Some(SocketAddr::new(src, sport)))
}

/// Parses a v2 header (16 octets) and its address block: the source address, or `None` for a
/// LOCAL command or an unsupported family.
pub fn parse_v2(header: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if header[..12] != V2_SIG {
        return Err(ProxyError("v2 signature"));
    }
    if header[12] >> 4 != 2 {
        return Err(ProxyError("v2 version"));
    }
    match header[12] & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyError("v2 command")),
    }
    let len = u16::from_be_bytes([header[14], header[15]]) as usize;
    if body.len() != len {
        return Err(ProxyError("v2 length"));
    }
    match header[13] {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2)
        0x11 if len >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2)
        0x21 if len >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port)))
        }
        0x11 | 0x21 => Err(ProxyError("v2 address block too short")),
        _ => Ok(None),
    }
}

/// Reads one PROXY header (v1 or v2) from `io`.
#[cfg(feature = "tokio")]
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    let io_err = |_| ProxyError("connection closed in the header");
    let mut start = [0u8; 8];
    io.read_exact(&mut start).await.map_err(io_err)?;
    if start.starts_with(b"PROXY ") {
        let mut line = start.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyError("v1 header too long"));
            }
            line.push(io.read_u8().await.map_err(io_err)?);
        }
        parse_v1(&line)
    } else if start == V2_SIG[..8] {
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&start);
        io.read_exact(&mut header[8..]).await.map_err(io_err)?;
        let len = u16::from_be_bytes([header[14], header[15]]) as usize;
        if len > V2_MAX_BODY {
            return Err(ProxyError("v2 address block too long"));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await.map_err(io_err)?;
        parse_v2(&header, &body)
    } else {
        Err(ProxyError("no PROXY header"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 587\r\n").unwrap(),
            Some("192.0.2.7:56324".parse().unwrap())
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n").unwrap(),
            Some("[2001:db8::7]:4000".parse().unwrap())
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
        assert!(parse_v1(b"PROXY TCP4 999.0.0.1 1.1.1.1 1 2\r\n").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.1.1.1 1.1.1.1 1\r\n").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.1.1.1 1.1.1.1 1 2").is_err());
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 0 65535\r\n").unwrap(),
            Some("192.0.2.7:0".parse().unwrap())
        );
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n").unwrap(),
            None
        );
    }

    #[test]
    fn v1_malformed_forms_are_refused_one_by_one() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"PROXY TCP4 192.0.2.7 999.51.100.1 56324 587\r\n",
                "v1 destination address",
            ),
            (
                b"PROXY TCP4 192.0.2.7 2001:db8::1 56324 587\r\n",
                "v1 destination address",
            ),
            (
                b"PROXY TCP6 2001:db8::7 198.51.100.1 56324 587\r\n",
                "v1 destination address",
            ),
            (
                b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 587\r\n",
                "v1 source address",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 056324 587\r\n",
                "v1 source port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 00 587\r\n",
                "v1 source port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 +5632 587\r\n",
                "v1 source port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 587\r\n",
                "v1 source port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 0587\r\n",
                "v1 destination port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 70000\r\n",
                "v1 destination port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 \r\n",
                "v1 destination port",
            ),
            (
                b"PROXY TCP4  192.0.2.7 198.51.100.1 56324 587\r\n",
                "v1 header has the wrong number of fields",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 587 \r\n",
                "v1 header has the wrong number of fields",
            ),
            (
                b"PROXY  TCP4 192.0.2.7 198.51.100.1 56324 587\r\n",
                "v1 header has the wrong number of fields",
            ),
            (
                b"PROXY tcp4 192.0.2.7 198.51.100.1 56324 587\r\n",
                "v1 protocol family",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 587\n",
                "v1 header without CRLF",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r587\r\n",
                "v1 header with a stray CR or LF",
            ),
            (
                b"PROXY TCP4 192.0.2.07 198.51.100.1 56324 587\r\n",
                "v1 source address",
            ),
        ];
        for (line, why) in cases {
            assert_eq!(
                parse_v1(line),
                Err(ProxyError(why)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.extend_from_slice(&[b'x'; 100]);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_v1(&long), Err(ProxyError("v1 header too long")));
    }

    #[test]
    fn v2() {
        let mut h = [0u8; 16];
        h[..12].copy_from_slice(&V2_SIG);
        h[12] = 0x21;
        h[13] = 0x11;
        h[14..16].copy_from_slice(&12u16.to_be_bytes());
        let body = [203, 0, 113, 9, 10, 0, 0, 1, 0x30, 0x39, 0, 25];
        assert_eq!(
            parse_v2(&h, &body).unwrap(),
            Some("203.0.113.9:12345".parse().unwrap())
        );
        h[12] = 0x20;
        assert_eq!(parse_v2(&h, &body).unwrap(), None);
        h[12] = 0x21;
        assert!(parse_v2(&h, &body[..4]).is_err());
        h[0] = 0;
        assert!(parse_v2(&h, &body).is_err());
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn reads_exactly_the_header() {
        let data = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 587\r\nEHLO x\r\n".to_vec();
        let mut r = &data[..];
        let src = read_header(&mut r).await.unwrap();
        assert_eq!(src, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(r, b"EHLO x\r\n");
        let mut r = &b"EHLO x\r\n\r\n"[..];
        assert!(read_header(&mut r).await.is_err());
    }
}
