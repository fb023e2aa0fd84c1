//! CONNECT handling: version and heart-beat negotiation, virtual host selection and the
//! CONNECTED reply (STOMP 1.2 "Connecting").

use std::time::Duration;

use postbox_router::Router;
use postbox_stomp::headers::names;
use postbox_stomp::{Command, Frame, Version};

use super::SessionError;
use super::error::shorten;
use crate::session::Settings;
use crate::vhost::Vhosts;

/// The longest heart-beat interval either way. A client may announce any number of
/// milliseconds; past a day (longer than NATs and load balancers keep a silent connection
/// open) a value only means "rarely", and the cap keeps the timer arithmetic built on it
/// (`Instant + interval`, interval times the grace factor) far from overflowing.
pub const MAX_HEART_BEAT: Duration = Duration::from_secs(86_400);

/// What a successful CONNECT settled.
#[derive(Debug)]
pub struct Negotiated {
    /// The protocol version for the rest of the session.
    pub version: Version,
    /// The selected virtual host's router.
    pub router: Router,
    /// How often the server must send something (None: never).
    pub send_every: Option<Duration>,
    /// How often the client promised to send something (None: never checked).
    pub receive_every: Option<Duration>,
}

/// Validates a CONNECT or STOMP frame and decides the session's terms.
pub fn negotiate(
    frame: &Frame,
    settings: &Settings,
    vhosts: &Vhosts,
) -> Result<Negotiated, SessionError> {
    let accept = frame.get(names::ACCEPT_VERSION);
    let version =
        Version::negotiate(accept, &Version::ALL).ok_or_else(|| SessionError::NoCommonVersion {
            offered: shorten(accept.unwrap_or_default()),
        })?;
    let host = frame.get(names::HOST);
    let router = vhosts
        .select(host)
        .ok_or_else(|| SessionError::UnknownHost(shorten(host.unwrap_or_default())))?;

    // STOMP 1.0 has no heart-beating; a 1.0 client's header is ignored.
    let (client_send, client_receive) = match (version, frame.get(names::HEART_BEAT)) {
        (Version::V1_0, _) | (_, None) => (0, 0),
        (_, Some(value)) => parse_heart_beat(value).ok_or_else(|| SessionError::InvalidHeader {
            command: frame.command,
            header: names::HEART_BEAT,
            value: shorten(value),
            expected: "two non-negative integers such as 10000,10000",
        })?,
    };
    // The larger of the two (STOMP 1.2 "Heart-beating"): the server's own intervals are
    // the floor, so a client asking for heart-beats every millisecond gets them at the
    // server's pace. Like RabbitMQ, which rounds a client's value up to whole seconds,
    // Postbox never beats faster than configured.
    let every = |ours: u64, theirs: u64| {
        (ours > 0 && theirs > 0)
            .then(|| Duration::from_millis(ours.max(theirs)).min(MAX_HEART_BEAT))
    };
    Ok(Negotiated {
        version,
        router,
        send_every: every(settings.heartbeat_send_ms, client_receive),
        receive_every: every(settings.heartbeat_receive_ms, client_send),
    })
}

/// The CONNECTED frame for a negotiated session.
pub fn connected(negotiated: &Negotiated, session_id: &str, settings: &Settings) -> Frame {
    let mut frame = Frame::new(Command::Connected);
    if negotiated.version > Version::V1_0 {
        frame = frame.header(names::VERSION, negotiated.version.as_str());
    }
    frame = frame
        .header(names::SESSION, session_id)
        .header(names::SERVER, settings.server_name.clone());
    if negotiated.version > Version::V1_0 {
        frame = frame.header(
            names::HEART_BEAT,
            format!(
                "{},{}",
                settings.heartbeat_send_ms, settings.heartbeat_receive_ms
            ),
        );
    }
    frame
}

/// Parses `cx,cy`.
fn parse_heart_beat(value: &str) -> Option<(u64, u64)> {
    let (send, receive) = value.split_once(',')?;
    Some((millis(send)?, millis(receive)?))
}

/// A non-negative decimal number of milliseconds. Numbers past `u64::MAX` saturate
/// rather than fail: they are capped to [`MAX_HEART_BEAT`] anyway.
fn millis(text: &str) -> Option<u64> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            heartbeat_send_ms: 5000,
            heartbeat_receive_ms: 8000,
            ..Settings::for_tests()
        }
    }

    fn connect(headers: &[(&str, &str)]) -> Frame {
        headers
            .iter()
            .fold(Frame::new(Command::Connect), |f, (n, v)| f.header(*n, *v))
    }

    fn negotiate_with(headers: &[(&str, &str)]) -> Result<Negotiated, SessionError> {
        negotiate(
            &connect(headers),
            &settings(),
            &Vhosts::new(&crate::Config::defaults(), "n"),
        )
    }

    #[test]
    fn heart_beats_use_the_larger_value_each_way() {
        let n = negotiate_with(&[("accept-version", "1.2"), ("heart-beat", "10000,1000")]).unwrap();
        // Client sends every 10 s, server wants 8 s: expect every 10 s.
        assert_eq!(n.receive_every, Some(Duration::from_millis(10000)));
        // Client wants every 1 s, server can do 5 s: send every 5 s.
        assert_eq!(n.send_every, Some(Duration::from_millis(5000)));
    }

    #[test]
    fn a_client_cannot_ask_for_heart_beats_faster_than_the_server_offers() {
        let n = negotiate_with(&[("accept-version", "1.2"), ("heart-beat", "1,1")]).unwrap();
        assert_eq!(n.send_every, Some(Duration::from_millis(5000)));
        assert_eq!(n.receive_every, Some(Duration::from_millis(8000)));
    }

    #[test]
    fn huge_heart_beats_are_capped_not_refused() {
        for huge in [
            "86400001",
            "18446744073709551615",
            "99999999999999999999",
            "000000000000000000000000000000000000000099999999999999999999999",
        ] {
            let value = format!("{huge},{huge}");
            let n = negotiate_with(&[("accept-version", "1.2"), ("heart-beat", &value)])
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(n.send_every, Some(MAX_HEART_BEAT), "{value}");
            assert_eq!(n.receive_every, Some(MAX_HEART_BEAT), "{value}");
            // The session multiplies the receive interval by heartbeat-grace.
            let silence = n.receive_every.unwrap().as_secs_f64() * 1e6;
            assert!(Duration::try_from_secs_f64(silence).is_ok(), "{value}");
        }
        let n = negotiate_with(&[("accept-version", "1.2"), ("heart-beat", "86400000,0")]).unwrap();
        assert_eq!(n.receive_every, Some(MAX_HEART_BEAT));
        assert_eq!(n.send_every, None);
    }

    #[test]
    fn the_servers_own_intervals_are_capped_too() {
        let settings = Settings {
            heartbeat_send_ms: u64::MAX,
            heartbeat_receive_ms: u64::MAX,
            ..Settings::for_tests()
        };
        let frame = connect(&[("accept-version", "1.2"), ("heart-beat", "1,1")]);
        let n = negotiate(
            &frame,
            &settings,
            &Vhosts::new(&crate::Config::defaults(), "n"),
        )
        .unwrap();
        assert_eq!(
            (n.send_every, n.receive_every),
            (Some(MAX_HEART_BEAT), Some(MAX_HEART_BEAT))
        );
    }

    #[test]
    fn zero_means_no_heart_beats_that_way() {
        let n = negotiate_with(&[("accept-version", "1.2"), ("heart-beat", "0,1000")]).unwrap();
        assert_eq!(n.receive_every, None);
        assert!(n.send_every.is_some());
        let n = negotiate_with(&[("accept-version", "1.2")]).unwrap();
        assert_eq!((n.send_every, n.receive_every), (None, None));
    }

    #[test]
    fn version_negotiation_and_its_error() {
        assert_eq!(negotiate_with(&[]).unwrap().version, Version::V1_0);
        assert_eq!(
            negotiate_with(&[("accept-version", "1.1,1.0")])
                .unwrap()
                .version,
            Version::V1_1
        );
        assert!(matches!(
            negotiate_with(&[("accept-version", "2.0")]),
            Err(SessionError::NoCommonVersion { .. })
        ));
    }

    #[test]
    fn malformed_heart_beat_is_an_error() {
        for bad in [
            "10", "a,b", "-1,5", "1,2,3", "", ",", "1,", " ,1", "1 0,1", "+1,1",
        ] {
            assert!(
                matches!(
                    negotiate_with(&[("accept-version", "1.2"), ("heart-beat", bad)]),
                    Err(SessionError::InvalidHeader { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn connected_names_version_session_server_and_heart_beat() {
        let n = negotiate_with(&[("accept-version", "1.2")]).unwrap();
        let frame = connected(&n, "s-1", &settings());
        assert_eq!(frame.get("version"), Some("1.2"));
        assert_eq!(frame.get("session"), Some("s-1"));
        assert!(frame.get("server").unwrap().starts_with("postbox/"));
        assert_eq!(frame.get("heart-beat"), Some("5000,8000"));
    }
}
