//! [`AuthChannel`]: the connection as a `handle_auth` hook sees it (aiosmtpd's `push()` and
//! `challenge_auth()`). It lives on the hook side: the driver that serves the connection
//! hands one in, built on whatever runtime it runs.

use std::future::Future;
use std::pin::Pin;

use smtp_auth::sasl::Response;

/// A boxed future borrowing the driver.
pub(crate) type ChannelFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::io::Result<T>> + Send + 'a>>;

/// What a driver does for an [`AuthChannel`].
pub(crate) trait ChannelDriver: Send {
    /// Sends one reply line (without CRLF) and flushes it.
    fn push<'a>(&'a mut self, line: &'a str) -> ChannelFuture<'a, ()>;
    /// Sends `334 <base64(challenge)>` and reads the client's response line.
    fn challenge<'a>(&'a mut self, challenge: &'a [u8]) -> ChannelFuture<'a, Response>;
}

/// The connection as a `handle_auth` hook sees it: it can push reply lines and send
/// challenges. Responses are read by the session machine with the one SASL response codec of
/// `smtp-auth` ([`smtp_auth::sasl`]), under the read timeout and shutdown.
pub struct AuthChannel<'a> {
    driver: &'a mut dyn ChannelDriver,
}

impl std::fmt::Debug for AuthChannel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthChannel")
    }
}

impl<'a> AuthChannel<'a> {
    pub(crate) fn new(driver: &'a mut dyn ChannelDriver) -> Self {
        Self { driver }
    }

    /// Sends one reply line (without CRLF; CR and LF are removed) and flushes it.
    pub async fn push(&mut self, line: &str) -> std::io::Result<()> {
        self.driver.push(line).await
    }

    /// Sends `334 <base64(challenge)>` and reads the client's response line: its decoded
    /// octets, or why there are none (`*`, not base64, too long). An error when the session
    /// ended meanwhile (read timeout, hang-up, shutdown).
    pub async fn challenge(&mut self, challenge: &[u8]) -> std::io::Result<Response> {
        self.driver.challenge(challenge).await
    }
}
