//! BEGIN, COMMIT and ABORT: frames staged per transaction under count and byte bounds,
//! applied in order at COMMIT.

use postbox_router::Destination;
use postbox_stomp::headers::names;
use postbox_stomp::{ByteString, Frame};

use super::ack::Acknowledgement;
use super::headers::{owned, required};
use super::{Flow, Session, SessionError, error};

/// A frame held back until its transaction commits.
#[derive(Debug)]
enum Staged {
    /// A SEND, already checked and rewritten.
    Send(Destination, Frame),
    /// An ACK or NACK resolved to its subscription and delivery tag.
    Ack(Acknowledgement),
}

/// An open transaction: its frames in order and what they weigh.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    frames: Vec<Staged>,
    bytes: usize,
}

impl Staged {
    /// What the staged frame counts against the transaction byte limits: a SEND's body
    /// and headers, an ACK's naming header (plus a little for the rest).
    pub(super) fn cost(&self) -> usize {
        const OVERHEAD: usize = 64;
        match self {
            Staged::Send(destination, frame) => {
                let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                OVERHEAD + destination.as_str().len() + headers + frame.body.len()
            }
            Staged::Ack(ack) => OVERHEAD + ack.subscription.len() + ack.named_by.1.len(),
        }
    }
}

impl Session {
    pub(super) fn begin(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        if self.transactions.contains_key(transaction) {
            return Err(SessionError::DuplicateTransaction(error::shorten(
                transaction,
            )));
        }
        if self.transactions.len() >= self.settings.max_transactions {
            return Err(SessionError::TooManyTransactions(
                self.settings.max_transactions,
            ));
        }
        // The id is kept until COMMIT or ABORT: a copy, not a slice of the read buffer.
        self.transactions
            .insert(owned(transaction), Transaction::default());
        Ok(Flow::Continue)
    }

    /// Holds a SEND, ACK or NACK back until its transaction commits. Past a limit the
    /// transaction is dropped at once (its memory freed) and the client gets an ERROR.
    /// Holds a SEND back until its transaction commits.
    pub(super) fn stage_send(
        &mut self,
        transaction: &ByteString,
        destination: Destination,
        frame: Frame,
    ) -> Result<(), SessionError> {
        self.stage(transaction, Staged::Send(destination, frame))
    }

    /// Holds an ACK or NACK back until its transaction commits.
    pub(super) fn stage_ack(
        &mut self,
        transaction: &ByteString,
        ack: Acknowledgement,
    ) -> Result<(), SessionError> {
        self.stage(transaction, Staged::Ack(ack))
    }

    fn stage(&mut self, transaction: &ByteString, staged: Staged) -> Result<(), SessionError> {
        let settings = &self.settings;
        let open = self
            .transactions
            .get_mut(transaction)
            .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(transaction)))?;
        let cost = staged.cost();
        let refusal = if open.frames.len() >= settings.max_transaction_frames {
            Some(SessionError::TransactionTooLarge {
                transaction: error::shorten(transaction),
                limit: settings.max_transaction_frames,
            })
        } else if open.bytes + cost > settings.max_transaction_bytes {
            Some(SessionError::TransactionTooManyBytes {
                transaction: error::shorten(transaction),
                limit: settings.max_transaction_bytes,
            })
        } else if self.staged_bytes + cost > settings.max_staged_bytes {
            Some(SessionError::StagedTooManyBytes(settings.max_staged_bytes))
        } else {
            None
        };
        if let Some(error) = refusal {
            let dropped = self.transactions.remove(transaction).unwrap_or_default();
            self.staged_bytes -= dropped.bytes;
            return Err(error);
        }
        open.frames.push(staged);
        open.bytes += cost;
        self.staged_bytes += cost;
        Ok(())
    }

    /// Applies a transaction's frames in order, with no frame of this connection in
    /// between.
    pub(super) async fn commit(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let staged = self.take_transaction(frame)?;
        for item in staged {
            match item {
                Staged::Send(destination, send) => {
                    self.router
                        .publish(&mut self.queue_cache, destination, send.headers, send.body)
                        .await?;
                }
                Staged::Ack(ack) => self.apply_ack(ack)?,
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) fn abort(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        self.take_transaction(frame)?;
        Ok(Flow::Continue)
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Vec<Staged>, SessionError> {
        let transaction = required(frame, names::TRANSACTION)?;
        let taken = self
            .transactions
            .remove(transaction)
            .ok_or_else(|| SessionError::UnknownTransaction(error::shorten(transaction)))?;
        self.staged_bytes -= taken.bytes;
        Ok(taken.frames)
    }
}
