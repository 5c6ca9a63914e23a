//! Discard: every message is accepted and dropped (benchmarks, tests).

use super::{Delivery, DeliveryError, DeliveryFuture, Message};

/// Accepts and drops every message, without reading it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl Delivery for Discard {
    fn kind(&self) -> &'static str {
        "discard"
    }

    fn reads_body(&self) -> bool {
        false
    }

    fn deliver<'a>(
        &'a self,
        _message: Message<'a>,
    ) -> DeliveryFuture<'a, Result<(), DeliveryError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_without_reading() {
        let session = smtp_server::Session::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let envelope = smtp_server::Envelope::default();
        let m = Message {
            session: &session,
            envelope: &envelope,
            id: "x",
            header: "",
        };
        assert!(Discard.deliver(m).await.is_ok());
        assert!(!Discard.reads_body());
        assert_eq!(Discard.kind(), "discard");
    }
}
