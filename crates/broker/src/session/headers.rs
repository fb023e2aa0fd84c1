//! Reading the headers a frame handler needs, with the ERROR each way of getting them
//! wrong maps to.

use postbox_stomp::{ByteString, Frame};

use super::{SessionError, error};

/// A copy of `value` in an allocation of its own, not sharing the read buffer.
pub(super) fn owned(value: &ByteString) -> ByteString {
    ByteString::from(&**value)
}

/// The value of a header the frame must have.
pub(super) fn required<'f>(
    frame: &'f Frame,
    header: &'static str,
) -> Result<&'f ByteString, SessionError> {
    frame
        .headers
        .get_shared(header)
        .ok_or_else(|| missing(frame, header))
}

/// A numeric header, if present.
pub(super) fn number_header(
    frame: &Frame,
    header: &'static str,
    expected: &'static str,
) -> Result<Option<usize>, SessionError> {
    frame
        .get(header)
        .map(|value| {
            value
                .trim()
                .parse()
                .map_err(|_| invalid(frame, header, value, expected))
        })
        .transpose()
}

pub(super) fn invalid(
    frame: &Frame,
    header: &'static str,
    value: &str,
    expected: &'static str,
) -> SessionError {
    SessionError::InvalidHeader {
        command: frame.command,
        header,
        value: error::shorten(value),
        expected,
    }
}

pub(super) fn missing(frame: &Frame, header: &'static str) -> SessionError {
    SessionError::MissingHeader {
        command: frame.command,
        header,
    }
}
