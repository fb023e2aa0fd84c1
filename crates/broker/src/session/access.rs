//! Who the client is and what it may do: CONNECT authentication (password checks on the
//! blocking pool, behind the login gate), token refresh on a live connection, token expiry,
//! and the per-destination authorization every SEND and SUBSCRIBE goes through.

use std::time::Duration;

use postbox_auth::{Credentials, Operation, Principal};
use postbox_router::{Destination, DestinationKind};
use postbox_stomp::Frame;
use postbox_stomp::headers::names;
use tracing::{debug, info};

use super::{Context, Peer, Session, SessionError, error};
use crate::auth;
use crate::login::{Refusal, Who};

/// Carries a bearer token on CONNECT, or a fresh one on any later frame.
const AUTHORIZATION: &str = "Authorization";

pub(super) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Checks CONNECT's credentials. Password hashes are slow on purpose, so those are
/// checked off the async threads, through the login gate and under `auth-timeout-ms`;
/// everything else (no auth, tokens, anonymous) is checked in place, saving a thread hop
/// per connection.
pub(super) async fn authenticate(
    context: &Context,
    connect: &Frame,
    peer: &Peer,
) -> Result<Principal, SessionError> {
    let authenticator = context.services.auth.current();
    let credentials = Credentials {
        login: connect.get(names::LOGIN),
        passcode: connect.get(names::PASSCODE),
        bearer: authorization(connect).and_then(bearer_token),
        query_token: peer.query_token.as_deref(),
    };
    if !authenticator.may_hash(&credentials) {
        return authenticator
            .authenticate(&credentials, auth::now())
            .map_err(|error| {
                info!(reason = %error, "authentication failed");
                SessionError::AuthenticationFailed
            });
    }
    let settings = context.services.settings();
    let gate = &context.services.logins;
    let who = Who {
        ip: peer.ip,
        login: credentials.login.unwrap_or_default(),
    };
    // One deadline for the wait for a turn and the check itself.
    let deadline = tokio::time::Instant::now() + settings.auth_timeout;
    let turn = match gate
        .enter(&who, settings.max_login_failures, deadline)
        .await
    {
        Ok(turn) => turn,
        Err(Refusal::Busy) => {
            info!("login refused: password checks are backed up");
            return Err(SessionError::LoginBusy);
        }
        Err(Refusal::Throttled(seconds)) => {
            info!("login refused: too many recent failures for this login and address");
            return Err(SessionError::LoginThrottled(seconds));
        }
    };
    let owned = |name| connect.get(name).map(str::to_owned);
    let login = owned(names::LOGIN);
    let passcode = owned(names::PASSCODE);
    let bearer = authorization(connect)
        .and_then(bearer_token)
        .map(str::to_owned);
    let query_token = peer.query_token.clone();
    let check = move || {
        let outcome = authenticator.authenticate(
            &Credentials {
                login: login.as_deref(),
                passcode: passcode.as_deref(),
                bearer: bearer.as_deref(),
                query_token: query_token.as_deref(),
            },
            auth::now(),
        );
        // The turn ends when the hash does, not when the client stops waiting for it,
        // so no more checks than turns ever run at once.
        drop(turn);
        outcome
    };
    let outcome = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(check)).await;
    let outcome = match outcome {
        Ok(Ok(Ok(principal))) => Ok(principal),
        Ok(Ok(Err(error))) => {
            info!(reason = %error, "authentication failed");
            Err(SessionError::AuthenticationFailed)
        }
        Ok(Err(_)) | Err(_) => {
            info!("authentication failed: the check did not finish in time");
            return Err(SessionError::LoginBusy);
        }
    };
    gate.record(&who, outcome.is_ok());
    outcome
}

/// The `Authorization` header, in either spelling HTTP-minded clients use.
pub(super) fn authorization(frame: &Frame) -> Option<&str> {
    frame
        .get(AUTHORIZATION)
        .or_else(|| frame.get("authorization"))
}

/// The token of an `Authorization: Bearer <token>` value.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Session {
    /// When the session's token expires, as a timer deadline. Tokens' dates are bounded
    /// (`postbox_auth::jwt::MAX_NUMERIC_DATE`), but an expiry past what the clock can
    /// represent still means "not in this process's lifetime", never a panic.
    pub(super) fn token_deadline(&self) -> Option<tokio::time::Instant> {
        let expires_at = self.principal.expires_at?;
        let left = expires_at.saturating_sub(auth::now());
        let now = tokio::time::Instant::now();
        Some(
            now.checked_add(Duration::from_secs(left))
                .unwrap_or_else(far_future),
        )
    }

    /// A fresh token in an `Authorization` header replaces the session's, if it names
    /// the same user. The header is removed so it never travels further.
    pub(super) fn refresh_credentials(&mut self, frame: &mut Frame) -> Result<(), SessionError> {
        let Some(value) = authorization(frame).map(str::to_owned) else {
            return Ok(());
        };
        frame.headers.remove(AUTHORIZATION);
        frame.headers.remove("authorization");
        let Some(token) = bearer_token(&value) else {
            info!("refused an Authorization header that is not a bearer token");
            return Err(SessionError::AuthenticationFailed);
        };
        match self
            .auth
            .current()
            .refresh(&self.principal, token, auth::now())
        {
            Ok(fresh) => {
                debug!(expires_at = ?fresh.expires_at, "access token refreshed");
                self.principal = fresh;
                Ok(())
            }
            Err(error) => {
                info!(reason = %error, "token refresh refused");
                Err(SessionError::AuthenticationFailed)
            }
        }
    }

    /// Refuses unless the principal may `operation` `destination`. A connection's own
    /// temporary queues are always its own; a reply queue's unguessable name is the
    /// permission to answer into it (and only its owner can read it, which the router
    /// enforces).
    pub(super) fn authorize(
        &self,
        operation: Operation,
        destination: &Destination,
    ) -> Result<(), SessionError> {
        let allowed = match destination.kind() {
            DestinationKind::TempQueue | DestinationKind::ReplyQueue => true,
            _ => self.principal.may(operation, destination.as_str()),
        };
        if allowed {
            return Ok(());
        }
        Err(SessionError::AccessRefused {
            user: self.principal.name.clone(),
            operation: match operation {
                Operation::Read => "read from",
                Operation::Write => "write to",
            },
            destination: error::shorten(destination.as_str()),
        })
    }
}
