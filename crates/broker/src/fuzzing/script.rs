//! Playing a script: each [`Event`] becomes frames written, reads, closes or time
//! passing, and updates what the client model expects the broker to do with them.

use std::time::Duration;

use postbox_stomp::Version;

use super::client::{Conn, Pending, Sub};
use super::frames::{self, ACK_MODES, DESTINATIONS, GARBAGE};
use super::input::{Event, Leave};
use super::world::{SLOTS, World, settle, trace};

impl World {
    /// Plays one event. Slot, subscription, destination and transaction indices wrap
    /// around; an event for a slot that cannot write does nothing.
    pub(super) async fn play(&mut self, event: &Event) {
        if trace() {
            eprintln!("{event:?}");
        }
        match *event {
            Event::Connect {
                slot,
                pipe,
                version,
                chunk,
                heart_beat,
            } => {
                let slot = slot as usize % SLOTS;
                self.leave(slot, Leave::Reset).await;
                let (io, session) = self.open(64 << (pipe % 8));
                let (accept, version) = match version % 4 {
                    0 => ("1.2", Version::V1_2),
                    1 => ("1.1", Version::V1_1),
                    2 => ("1.0", Version::V1_0),
                    _ => ("1.0,1.1,1.2", Version::V1_2),
                };
                let beats = if heart_beat % 2 == 1 {
                    "1000,1000"
                } else {
                    "0,0"
                };
                self.slots[slot] = Some(Conn::new(io, session, chunk as usize, version));
                let frame = frames::connect(accept, beats);
                self.write(slot, frame.as_bytes()).await;
            }
            Event::Subscribe {
                slot,
                sub,
                destination,
                ack,
                prefetch,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let id = format!("s{}", sub % 4);
                let ack = ACK_MODES[ack as usize % 3];
                let destination = DESTINATIONS[destination as usize % DESTINATIONS.len()];
                let prefetch = (prefetch > 0).then_some(prefetch % 16);
                let frame = frames::subscribe(&id, destination, ack, prefetch);
                // A duplicate id is refused by the broker (ERROR); the model keeps the first.
                conn.subs.entry(id).or_insert(Sub { ack });
                self.send_frame(slot, frame, receipt, None).await;
            }
            Event::Unsubscribe { slot, sub, receipt } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let id = format!("s{}", sub % 4);
                conn.subs.remove(&id);
                // What it held goes back to the queue: no longer acknowledgeable.
                conn.held.retain(|h| h.subscription != id);
                self.send_frame(slot, frames::unsubscribe(&id), receipt, None)
                    .await;
            }
            Event::Send {
                slot,
                destination,
                transaction,
                size,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                if self.live(slot).is_none() {
                    return;
                }
                let destination = DESTINATIONS[destination as usize % DESTINATIONS.len()];
                let n = self.oracle.next_message();
                let queue = destination.starts_with("/queue/");
                let tx = transaction.checked_sub(1).map(|t| t % 2);
                let frame = frames::send(destination, tx);
                let body = frames::body(n, size);
                let effect = queue.then_some(Pending::Sent(n));
                self.send_body(slot, frame, &body, receipt, effect, tx)
                    .await;
            }
            Event::Ack {
                slot,
                pick,
                nack,
                requeue,
                transaction,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                if conn.held.is_empty() {
                    return;
                }
                let index = pick as usize % conn.held.len();
                let held = conn.held[index].clone();
                let cumulative = conn.subs.get(&held.subscription).map(|s| s.ack) == Some("client");
                let tx = transaction.checked_sub(1).map(|t| t % 2);
                // A cumulative ACK settles every earlier delivery of the subscription. A NACK
                // is only sure to settle its own delivery, and within a transaction not even
                // that (the transaction may be aborted): what the model keeps may still be
                // acknowledged by a later cumulative ACK.
                let forgets = !nack || tx.is_none();
                let cumulative = cumulative && !nack;
                let mut settled = Vec::new();
                let mut position = 0;
                conn.held.retain(|h| {
                    let this = position == index && forgets;
                    let earlier =
                        position < index && cumulative && h.subscription == held.subscription;
                    position += 1;
                    if this || earlier {
                        settled.push(h.key.clone());
                        false
                    } else {
                        true
                    }
                });
                let frame = frames::ack(
                    conn.version,
                    nack,
                    &held.ack_id,
                    &held.subscription,
                    requeue,
                    tx,
                );
                let effect = if nack {
                    None
                } else {
                    self.oracle.ack_sent(&settled);
                    Some(Pending::Acked(settled))
                };
                self.send_frame(slot, frame, receipt, effect.map(|e| (e, tx)))
                    .await;
            }
            Event::Begin { slot, transaction } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                conn.transactions.insert(t, Vec::new());
                self.send_frame(slot, frames::transaction("BEGIN", t), false, None)
                    .await;
            }
            Event::Commit {
                slot,
                transaction,
                receipt,
            } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                let staged = conn.transactions.remove(&t).unwrap_or_default();
                // Confirmed by the COMMIT's own receipt or a later one.
                let seq = conn.seq + 1;
                conn.pending.extend(staged.into_iter().map(|p| (seq, p)));
                self.send_frame(slot, frames::transaction("COMMIT", t), receipt, None)
                    .await;
            }
            Event::Abort { slot, transaction } => {
                let slot = slot as usize % SLOTS;
                let Some(conn) = self.live(slot) else { return };
                let t = transaction % 2;
                conn.transactions.remove(&t);
                self.send_frame(slot, frames::transaction("ABORT", t), false, None)
                    .await;
            }
            Event::Garbage { slot, kind } => {
                let slot = slot as usize % SLOTS;
                if self.live(slot).is_none() {
                    return;
                }
                let bytes = GARBAGE[kind as usize % GARBAGE.len()];
                self.write(slot, bytes).await;
            }
            Event::Read { slot } => {
                let slot = slot as usize % SLOTS;
                settle().await;
                self.read_available(slot);
            }
            Event::Close { slot, how } => {
                self.leave(slot as usize % SLOTS, how).await;
            }
            Event::CloseMany { mask, how } => {
                // No broker task runs between two resets (or two DISCONNECTs that fit
                // in their pipes): the sessions see their clients go in one instant.
                for slot in 0..SLOTS {
                    if mask & (1 << slot) != 0 {
                        self.leave(slot, how).await;
                    }
                }
            }
            Event::Yield { times } => {
                for _ in 0..times % 32 {
                    tokio::task::yield_now().await;
                }
            }
            Event::Advance { tenths } => {
                tokio::time::advance(Duration::from_millis(u64::from(tenths) * 100)).await;
            }
        }
    }
}
