//! The inverse of the derived decoders: turns an [`Input`] back into the bytes that
//! decode to it, which is how the hand-written seed corpus is stored.

use super::input::{Event, Input, Leave};

impl Input {
    /// Encodes an input so that [`Input::from_bytes`] gives it back: how the hand-written
    /// seeds are stored. Mirrors the derived decoders field by field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![
            self.setup.outbound,
            self.setup.queue_length,
            self.setup.max_deliveries,
        ];
        for event in &self.events {
            event.encode(&mut out);
        }
        out
    }
}

/// The bytes a derived decoder turns into variant `index` of an enum of `count`.
fn tag(out: &mut Vec<u8>, index: u64, count: u64) {
    let value = ((index << 32).div_ceil(count)) as u32;
    out.extend_from_slice(&value.to_le_bytes());
}

impl Leave {
    fn encode(self, out: &mut Vec<u8>) {
        tag(out, self as u64, 5);
    }
}

impl Event {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 14;
        let b = |v: bool| v as u8;
        match *self {
            Event::Connect {
                slot,
                pipe,
                version,
                chunk,
                heart_beat,
            } => {
                tag(out, 0, COUNT);
                out.extend([slot, pipe, version, chunk, heart_beat]);
            }
            Event::Subscribe {
                slot,
                sub,
                destination,
                ack,
                prefetch,
                receipt,
            } => {
                tag(out, 1, COUNT);
                out.extend([slot, sub, destination, ack, prefetch, b(receipt)]);
            }
            Event::Unsubscribe { slot, sub, receipt } => {
                tag(out, 2, COUNT);
                out.extend([slot, sub, b(receipt)]);
            }
            Event::Send {
                slot,
                destination,
                transaction,
                size,
                receipt,
            } => {
                tag(out, 3, COUNT);
                out.extend([slot, destination, transaction, size, b(receipt)]);
            }
            Event::Ack {
                slot,
                pick,
                nack,
                requeue,
                transaction,
                receipt,
            } => {
                tag(out, 4, COUNT);
                out.extend([slot, pick, b(nack), b(requeue), transaction, b(receipt)]);
            }
            Event::Begin { slot, transaction } => {
                tag(out, 5, COUNT);
                out.extend([slot, transaction]);
            }
            Event::Commit {
                slot,
                transaction,
                receipt,
            } => {
                tag(out, 6, COUNT);
                out.extend([slot, transaction, b(receipt)]);
            }
            Event::Abort { slot, transaction } => {
                tag(out, 7, COUNT);
                out.extend([slot, transaction]);
            }
            Event::Garbage { slot, kind } => {
                tag(out, 8, COUNT);
                out.extend([slot, kind]);
            }
            Event::Read { slot } => {
                tag(out, 9, COUNT);
                out.push(slot);
            }
            Event::Close { slot, how } => {
                tag(out, 10, COUNT);
                out.push(slot);
                how.encode(out);
            }
            Event::CloseMany { mask, how } => {
                tag(out, 11, COUNT);
                out.push(mask);
                how.encode(out);
            }
            Event::Yield { times } => {
                tag(out, 12, COUNT);
                out.push(times);
            }
            Event::Advance { tenths } => {
                tag(out, 13, COUNT);
                out.extend(tenths.to_le_bytes());
            }
        }
    }
}
