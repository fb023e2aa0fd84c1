//! Destination names and what kind of destination each one is.
//!
//! Names follow RabbitMQ's STOMP plugin, so that clients written for it work unchanged:
//! `/topic/<name>` fans out to every subscriber, `/queue/<name>` gives each message to one
//! consumer, `/temp-queue/<name>` is a queue private to one connection, which others reach
//! through the `/reply-queue/<id>` name the broker puts in `reply-to`.

use std::fmt;

use postbox_stomp::ByteString;

use crate::RouteError;

/// The longest destination name accepted, in bytes (RabbitMQ allows 255 per routing key).
pub const MAX_DESTINATION_LEN: usize = 1024;

/// The kind of a destination, given by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// `/topic/...`: publish/subscribe.
    Topic,
    /// `/queue/...`: competing consumers.
    Queue,
    /// `/temp-queue/...`: a connection's private reply queue, as its owner names it.
    TempQueue,
    /// `/reply-queue/...`: the routable name of someone's temporary queue.
    ReplyQueue,
}

impl DestinationKind {
    /// The prefix that selects this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            DestinationKind::Topic => "/topic/",
            DestinationKind::Queue => "/queue/",
            DestinationKind::TempQueue => "/temp-queue/",
            DestinationKind::ReplyQueue => "/reply-queue/",
        }
    }
}

/// A parsed destination: its kind and the name after the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    kind: DestinationKind,
    full: ByteString,
}

impl Destination {
    /// Parses a `destination` header value.
    pub fn parse(raw: &ByteString) -> Result<Destination, RouteError> {
        if raw.len() > MAX_DESTINATION_LEN {
            return Err(RouteError::InvalidDestination {
                destination: truncated(raw),
                reason: "name is longer than 1024 bytes",
            });
        }
        let kind = [
            DestinationKind::Topic,
            DestinationKind::Queue,
            DestinationKind::TempQueue,
            DestinationKind::ReplyQueue,
        ]
        .into_iter()
        .find(|kind| raw.starts_with(kind.prefix()))
        .ok_or_else(|| RouteError::UnknownDestination(truncated(raw)))?;
        if raw.len() == kind.prefix().len() {
            return Err(RouteError::InvalidDestination {
                destination: raw.to_string(),
                reason: "the name after the prefix is empty",
            });
        }
        if raw.chars().any(char::is_control) {
            return Err(RouteError::InvalidDestination {
                destination: truncated(raw),
                reason: "control characters are not allowed",
            });
        }
        Ok(Destination {
            kind,
            full: raw.clone(),
        })
    }

    /// A destination of `kind` called `name` (without prefix).
    pub fn new(kind: DestinationKind, name: &str) -> Result<Destination, RouteError> {
        Destination::parse(&ByteString::from(format!("{}{name}", kind.prefix())))
    }

    /// The same destination in an allocation of its own, for one kept for long (a
    /// queue's name, a queued message's): a parsed header shares the read buffer.
    pub fn detached(&self) -> Destination {
        Destination {
            kind: self.kind,
            full: ByteString::from(&*self.full),
        }
    }

    /// The kind given by the prefix.
    pub fn kind(&self) -> DestinationKind {
        self.kind
    }

    /// The name after the prefix (the routing key of a topic).
    pub fn name(&self) -> &str {
        &self.full[self.kind.prefix().len()..]
    }

    /// The whole destination as clients spell it.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The whole destination, shared.
    pub fn shared(&self) -> &ByteString {
        &self.full
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A destination for error messages: at most 128 bytes, cut on a character boundary.
fn truncated(raw: &str) -> String {
    let mut end = raw.len().min(128);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Destination, RouteError> {
        Destination::parse(&ByteString::from(raw))
    }

    #[test]
    fn prefixes_select_the_kind() {
        assert_eq!(parse("/topic/a.b").unwrap().kind(), DestinationKind::Topic);
        assert_eq!(parse("/topic/a.b").unwrap().name(), "a.b");
        assert_eq!(parse("/queue/jobs").unwrap().kind(), DestinationKind::Queue);
        assert_eq!(
            parse("/temp-queue/r").unwrap().kind(),
            DestinationKind::TempQueue
        );
    }

    #[test]
    fn unknown_and_empty_names_are_refused() {
        assert!(matches!(
            parse("/foo/bar"),
            Err(RouteError::UnknownDestination(_))
        ));
        assert!(matches!(
            parse("queue/a"),
            Err(RouteError::UnknownDestination(_))
        ));
        assert!(matches!(
            parse("/topic/"),
            Err(RouteError::InvalidDestination { .. })
        ));
        assert!(matches!(
            parse("/queue/a\u{7}"),
            Err(RouteError::InvalidDestination { .. })
        ));
        let long = format!("/queue/{}", "x".repeat(2000));
        assert!(matches!(
            parse(&long),
            Err(RouteError::InvalidDestination { .. })
        ));
    }
}
