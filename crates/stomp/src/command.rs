//! The frame commands of STOMP 1.0, 1.1 and 1.2.

use std::fmt;

/// A frame command. Commands are case-sensitive on the wire (STOMP 1.2 "Frames and headers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.1+ spelling of CONNECT, handled identically).
    Stomp,
    /// Server: the session is open.
    Connected,
    /// Client: publish a message to a destination.
    Send,
    /// Client: register interest in a destination.
    Subscribe,
    /// Client: drop a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: refuse a message (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: apply a transaction.
    Commit,
    /// Client: discard a transaction.
    Abort,
    /// Client: close the session gracefully.
    Disconnect,
    /// Server: a message for a subscription.
    Message,
    /// Server: confirms a client frame that asked for a receipt.
    Receipt,
    /// Server: something went wrong; the connection closes after it.
    Error,
}

impl Command {
    /// Every command, client ones first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command's wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Whether `partial`, a command line without its EOL so far, can still become a
    /// command (a trailing CR may be the start of a CRLF).
    pub fn could_start(partial: &[u8]) -> bool {
        let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
        Command::ALL
            .iter()
            .any(|command| command.as_str().as_bytes().starts_with(partial))
    }

    /// Parses a wire spelling; `None` for anything else, including other letter cases.
    pub fn from_bytes(raw: &[u8]) -> Option<Command> {
        Some(match raw {
            b"SEND" => Command::Send,
            b"MESSAGE" => Command::Message,
            b"ACK" => Command::Ack,
            b"SUBSCRIBE" => Command::Subscribe,
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// Whether clients send this command (as opposed to servers).
    pub const fn is_client(self) -> bool {
        !matches!(
            self,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        )
    }

    /// Only SEND, MESSAGE and ERROR may carry a body (STOMP 1.2 "Frames and headers").
    pub const fn allows_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// CONNECT and CONNECTED headers are never escaped; STOMP is handled exactly like CONNECT.
    pub const fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_through_its_spelling() {
        for command in Command::ALL {
            assert_eq!(
                Command::from_bytes(command.as_str().as_bytes()),
                Some(command)
            );
        }
    }

    #[test]
    fn commands_are_case_sensitive() {
        assert_eq!(Command::from_bytes(b"send"), None);
        assert_eq!(Command::from_bytes(b"Send"), None);
        assert_eq!(Command::from_bytes(b"SEND "), None);
        assert_eq!(Command::from_bytes(b""), None);
    }

    #[test]
    fn only_send_message_and_error_take_a_body() {
        let with_body: Vec<_> = Command::ALL
            .into_iter()
            .filter(|c| c.allows_body())
            .collect();
        assert_eq!(with_body, [Command::Send, Command::Message, Command::Error]);
    }

    #[test]
    fn connect_frames_are_not_escaped() {
        let plain: Vec<_> = Command::ALL
            .into_iter()
            .filter(|c| !c.escapes_headers())
            .collect();
        assert_eq!(
            plain,
            [Command::Connect, Command::Stomp, Command::Connected]
        );
    }
}
