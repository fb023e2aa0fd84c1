//! SEND: authorization, the sender stamp, temporary queues and `reply-to`, then the
//! router (or the transaction the frame belongs to).

use postbox_auth::{Method, Operation};
use postbox_router::{DETACH_BELOW, Destination, DestinationKind};
use postbox_stomp::Frame;
use postbox_stomp::headers::names;

use super::headers::required;
use super::{Flow, Session, SessionError};

/// Where a requester wants replies.
pub(super) const REPLY_TO: &str = "reply-to";

impl Session {
    pub(super) async fn send(&mut self, mut frame: Frame) -> Result<Flow, SessionError> {
        let mut destination = Destination::parse(required(&frame, names::DESTINATION)?)?;
        self.authorize(Operation::Write, &destination)?;
        // Answers to reply-to will be written there on this client's behalf, so it must
        // be a destination this client could write to itself.
        if let Some(reply_to) = frame.headers.get_shared(REPLY_TO)
            && let Ok(target) = Destination::parse(reply_to)
        {
            self.authorize(Operation::Write, &target)?;
        }
        let user_header = self.settings.user_header.clone();
        match self.principal.method {
            Method::Open => {
                frame.headers.remove(&user_header);
            }
            _ => frame.headers.set(user_header, self.principal.name.clone()),
        }
        if destination.kind() == DestinationKind::TempQueue {
            // The owner sending to its own temporary queue.
            destination = self.temp_queue(destination.name())?.reply_to().clone();
        }
        if let Some(reply_to) = frame.get(REPLY_TO)
            && let Some(name) = reply_to.strip_prefix(DestinationKind::TempQueue.prefix())
        {
            let name = name.to_owned();
            let routable = self.reply_queue(&name)?;
            frame.headers.set(REPLY_TO, routable);
        }
        self.connection
            .opened
            .traffic
            .messages_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(transaction) = frame.headers.get_shared(names::TRANSACTION).cloned() {
            // Kept until COMMIT: a small frame leaves the read buffer it shares.
            let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
            let frame = if headers + frame.body.len() < DETACH_BELOW {
                frame.detached()
            } else {
                frame
            };
            self.stage_send(&transaction, destination.detached(), frame)?;
            return Ok(Flow::Continue);
        }
        self.router
            .publish(
                &mut self.queue_cache,
                destination,
                frame.headers,
                frame.body,
            )
            .await?;
        Ok(Flow::Continue)
    }
}
