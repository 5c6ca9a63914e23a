//! The message body: DATA and BDAT, storing the body, and the answers that end a transaction.

use std::time::Instant;

use bytes::Bytes;
use smtp_proto::DataDecoder;
use smtp_proto::Reply;
use smtp_proto::codec::Mode;

use super::{Awaiting, Call, Event, Machine, State, WrongState};
use crate::body::Body;
use crate::protocol;
use crate::replies;
use crate::session::Envelope;

/// One mail transaction: the envelope and the state of its body, reset together (RSET, a
/// greeting, STARTTLS, the end of a message).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// MAIL, RCPT and the body, as the hooks see them.
    pub(super) envelope: Envelope,
    /// When the whole body must have arrived (set at its first octet).
    pub(super) body_deadline: Option<Instant>,
    /// A message body is being stored (a `MessageStart` was emitted).
    pub(super) body_started: bool,
    /// Body octets stored so far.
    pub(super) body_len: u64,
    /// Storing failed: the message is refused at its end.
    pub(super) storage_failed: bool,
    /// BDAT: the error that refuses the message at LAST.
    pub(super) bdat_error: Option<Reply>,
}

impl Machine {
    pub(super) fn start_body(&mut self) {
        if self.tx.body_deadline.is_none() {
            self.tx.body_deadline = Some(self.now + self.cfg.max_data_duration);
        }
    }

    pub(super) fn begin_message(&mut self) {
        self.discard_body();
        self.tx.body_started = true;
        self.tx.body_len = 0;
        self.tx.storage_failed = false;
        self.events.push_back(Event::MessageStart);
    }

    pub(super) fn discard_body(&mut self) {
        if self.tx.body_started {
            self.tx.body_started = false;
            self.events.push_back(Event::MessageDiscard);
        }
    }

    pub(super) fn reset_transaction(&mut self) {
        // Everything of the transaction goes at once; a body being stored is dropped.
        if std::mem::take(&mut self.tx).body_started {
            self.events.push_back(Event::MessageDiscard);
        }
    }

    pub(super) fn data(&mut self) {
        if let Err(r) = protocol::check_data(&self.tx.envelope) {
            self.send(&r);
            return;
        }
        // RFC 2920 §3.1: the client must wait for the 354. Octets already waiting behind the
        // DATA line were sent without it (Postfix: "improper command pipelining after DATA").
        let early = self.input_pending();
        self.send(&replies::start_data());
        self.start_body();
        self.set_mode(Mode::Data(DataDecoder::new(
            self.cfg.max_message_size,
            self.cfg.bare_line_endings,
        )));
        self.state = State::Data { early };
        self.begin_message();
    }

    /// A piece of a DATA body: stored unless storing already failed.
    pub(super) fn data_chunk(&mut self, c: Bytes) -> Option<Event> {
        if self.tx.storage_failed {
            return None;
        }
        self.tx.body_len += c.len() as u64;
        Some(Event::MessageChunk(c))
    }

    pub(super) fn data_end(&mut self, end: smtp_proto::DataEnd) {
        let early = matches!(self.state, State::Data { early: true });
        self.state = State::Commands;
        if let Some(e) = end.error() {
            tracing::info!(target: "smtp_server::machine", size = end.size, reason = %e, "message refused");
            self.end_message(&e.reply(), end.size);
            return;
        }
        if early && !self.cfg.allow_pipelined_body {
            tracing::info!(target: "smtp_server::machine",
                peer = %self.session.peer_addr,
                size = end.size,
                "improper command pipelining after DATA: message refused"
            );
            self.end_message(&replies::pipelined_body(), end.size);
            return;
        }
        self.store_message();
    }

    /// The message could not be stored: refused with 451, the transaction over.
    fn unstored(&mut self) {
        tracing::error!(target: "smtp_server::machine", "cannot spool the message: refused");
        self.end_message(&replies::local_error(), self.tx.body_len);
    }

    /// The transaction ends with `reply` for a message of `octets`: reset, observed, answered.
    fn end_message(&mut self, reply: &Reply, octets: u64) {
        self.reset_transaction();
        self.observe_message(reply, octets);
        self.send(reply);
    }

    pub(super) fn store_message(&mut self) {
        if self.tx.storage_failed {
            self.unstored();
            return;
        }
        if !self.tx.body_started {
            // BDAT 0 LAST: an empty message.
            self.begin_message();
        }
        self.call(Awaiting::Stored, Call::StoreMessage);
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let refused = protocol::check_bdat(&self.tx.envelope).err();
        if refused.is_none() {
            self.tx.envelope.chunked = true;
        }
        // The chunk's octets are read in every case, so the stream stays in sync.
        self.start_body();
        self.set_mode(Mode::bdat(size));
        self.state = State::Bdat {
            size,
            last,
            refused,
        };
    }

    pub(super) fn bdat_chunk(&mut self, c: Bytes) -> Option<Event> {
        let State::Bdat { refused, .. } = &self.state else {
            return None;
        };
        if refused.is_some() || self.tx.bdat_error.is_some() {
            return None;
        }
        if self.tx.body_len + c.len() as u64 > self.cfg.max_message_size {
            self.tx.bdat_error = Some(replies::size_exceeded());
            return None;
        }
        if !self.tx.body_started {
            self.begin_message();
        }
        if self.tx.storage_failed {
            return None;
        }
        self.tx.body_len += c.len() as u64;
        self.events.push_back(Event::MessageChunk(c));
        self.events.pop_front()
    }

    pub(super) fn bdat_end(&mut self) {
        let State::Bdat {
            size,
            last,
            refused,
        } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return;
        };
        if let Some(r) = refused {
            self.tx.body_deadline = None;
            self.send(&r);
            return;
        }
        if self.tx.storage_failed && self.tx.bdat_error.is_none() {
            tracing::error!(target: "smtp_server::machine", "cannot spool the message");
            self.tx.bdat_error = Some(replies::local_error());
        }
        if !last {
            match self.tx.bdat_error.clone() {
                Some(r) => self.send(&r),
                None => self.send(&replies::bdat_chunk(size)),
            }
            return;
        }
        if let Some(r) = self.tx.bdat_error.take() {
            self.end_message(&r, self.tx.body_len);
            return;
        }
        self.store_message();
    }

    /// A message's final reply, for the observer.
    pub(super) fn observe_message(&self, reply: &Reply, octets: u64) {
        if let Some(o) = &self.cfg.observer {
            o.message(reply.code().class(), octets);
        }
    }

    /// Answers [`Call::StoreMessage`]: the stored body, or `None` when it could not be stored
    /// (the message is refused with 451).
    pub fn answer_stored(&mut self, body: Option<Body>) -> Result<(), WrongState> {
        self.answer_stored_observed(body, None)
    }

    /// [`Machine::answer_stored`] with the handler's finished
    /// [`BodyObserver`](crate::BodyObserver), which the envelope then carries
    /// ([`Envelope::observed`](crate::Envelope::observed)).
    pub fn answer_stored_observed(
        &mut self,
        body: Option<Body>,
        observed: Option<std::sync::Arc<dyn crate::BodyObserver>>,
    ) -> Result<(), WrongState> {
        self.expect(Awaiting::Stored, "answer_stored")?;
        self.tx.body_started = false;
        let Some(body) = body else {
            self.state = State::Commands;
            self.unstored();
            return Ok(());
        };
        self.tx.envelope.body = body;
        self.tx.envelope.observed = observed;
        if self.cfg.lmtp {
            self.state = State::Awaiting(Awaiting::Lmtp);
            self.events.push_back(Event::Call(Call::DataLmtp));
        } else {
            self.state = State::Awaiting(Awaiting::Data);
            self.events.push_back(Event::Call(Call::Data));
        }
        Ok(())
    }

    /// Answers [`Call::Data`] with the message's reply (a 2xx only once it is safe).
    pub fn answer_data(&mut self, reply: Reply) -> Result<(), WrongState> {
        self.expect(Awaiting::Data, "answer_data")?;
        self.state = State::Commands;
        tracing::debug!(target: "smtp_server::machine",
            size = self.tx.envelope.body.len(),
            recipients = self.tx.envelope.rcpt_to.len(),
            code = reply.code().get(),
            "message"
        );
        if reply.code().class() == 2 {
            self.messages += 1;
        }
        self.end_message(&reply, self.tx.envelope.body.len());
        Ok(())
    }

    /// Answers [`Call::DataLmtp`]: one reply per accepted recipient, in order (RFC 2033 §4.2;
    /// missing ones become 451, extra ones are dropped).
    pub fn answer_lmtp(&mut self, mut replies: Vec<Reply>) -> Result<(), WrongState> {
        self.expect(Awaiting::Lmtp, "answer_lmtp")?;
        self.state = State::Commands;
        replies.resize(self.tx.envelope.rcpt_to.len(), replies::local_error());
        if replies.iter().any(|r| r.code().class() == 2) {
            self.messages += 1;
        }
        let summary = replies
            .iter()
            .find(|r| r.code().class() == 2)
            .or(replies.first());
        if let Some(r) = summary {
            self.observe_message(r, self.tx.envelope.body.len());
        }
        for r in &replies {
            self.send(r);
        }
        self.reset_transaction();
        Ok(())
    }

    /// Storing the message body failed (a full disk): the message is refused at its end and
    /// the rest of it is read and dropped, so the stream stays in sync.
    pub fn storage_failed(&mut self) {
        self.tx.storage_failed = true;
    }
}
