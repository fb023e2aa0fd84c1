//! Checking CONNECT: from credentials to a [`Principal`].
//!
//! Where a token can come from, most explicit first: an `Authorization: Bearer` header on
//! CONNECT, the `passcode` header (RabbitMQ's OAuth 2 convention: login may be anything),
//! or a query parameter of the WebSocket upgrade for browser clients that cannot set
//! headers. Without a token, `login` and `passcode` are checked against the users file.

pub use crate::error::AuthError;
use crate::jwt::{JwtVerifier, TokenError};
use crate::permissions::{Operation, Permissions, Rules};
use crate::users::Users;

/// How a principal was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No authentication is configured: everyone may do everything (loopback only,
    /// unless explicitly allowed).
    Open,
    /// No credentials, let in because anonymous access is enabled.
    Anonymous,
    /// Login and password from the users file.
    Password,
    /// A JWT.
    Token,
}

/// Who is on the other end of a session, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (stamped on messages they send).
    pub name: String,
    /// Roles, from the users file or the token.
    pub roles: Vec<String>,
    /// How they got in.
    pub method: Method,
    /// When their token expires (seconds since the epoch), if it does.
    pub expires_at: Option<u64>,
    permissions: Permissions,
}

impl Principal {
    /// Whether `operation` on `destination` is allowed.
    pub fn may(&self, operation: Operation, destination: &str) -> bool {
        self.permissions.allows(operation, destination)
    }

    /// Everything granted.
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }
}

/// The credentials a client presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// CONNECT `login`.
    pub login: Option<&'a str>,
    /// CONNECT `passcode`.
    pub passcode: Option<&'a str>,
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<&'a str>,
    /// A token from the WebSocket upgrade's query string.
    pub query_token: Option<&'a str>,
}

/// Decides who may connect and with which permissions.
#[derive(Debug, Clone)]
pub struct Authenticator {
    users: Option<Users>,
    jwt: Option<JwtVerifier>,
    rules: Rules,
    anonymous: bool,
}

impl Authenticator {
    /// No authentication: every client is let in with every permission.
    pub fn open() -> Authenticator {
        Authenticator {
            users: None,
            jwt: None,
            rules: Rules::default(),
            anonymous: true,
        }
    }

    /// Authentication by users file and/or JWT, permissions from token scopes and
    /// `rules`; `anonymous` lets clients without credentials in with the rules for user
    /// `anonymous`.
    pub fn new(
        users: Option<Users>,
        jwt: Option<JwtVerifier>,
        rules: Rules,
        anonymous: bool,
    ) -> Authenticator {
        Authenticator {
            users,
            jwt,
            rules,
            anonymous,
        }
    }

    /// Whether no authentication is configured.
    pub fn is_open(&self) -> bool {
        self.users.is_none() && self.jwt.is_none()
    }

    /// Whether checking `credentials` may verify a password hash, which is slow on
    /// purpose (milliseconds) and so belongs off the async threads. Every other check
    /// takes microseconds.
    pub fn may_hash(&self, credentials: &Credentials<'_>) -> bool {
        self.users.is_some() && credentials.login.is_some() && credentials.passcode.is_some()
    }

    /// Whether tokens are accepted.
    pub fn accepts_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    /// Checks CONNECT credentials at time `now` (seconds since the epoch).
    pub fn authenticate(
        &self,
        credentials: &Credentials<'_>,
        now: u64,
    ) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal {
                name: credentials.login.unwrap_or("anonymous").to_owned(),
                roles: Vec::new(),
                method: Method::Open,
                expires_at: None,
                permissions: Permissions::all(),
            });
        }
        let passcode_token = credentials
            .passcode
            .filter(|p| self.jwt.is_some() && looks_like_jwt(p));
        if let Some(token) = credentials
            .bearer
            .or(passcode_token)
            .or(credentials.query_token)
        {
            let result = self.token(token, now);
            // A password that merely looks like a token still gets checked as one.
            let password_fallback =
                matches!(result, Err(AuthError::Token(TokenError::Malformed(_))))
                    && credentials.bearer.is_none()
                    && passcode_token.is_some()
                    && self.users.is_some()
                    && credentials.login.is_some();
            if !password_fallback {
                return result;
            }
        }
        match (credentials.login, credentials.passcode) {
            (Some(login), Some(passcode)) => {
                let users = self
                    .users
                    .as_ref()
                    .ok_or(AuthError::PasswordsNotConfigured)?;
                let roles = users.verify(login, passcode)?;
                Ok(Principal {
                    permissions: self.rules.permissions_for(login, &roles, false),
                    name: login.to_owned(),
                    roles,
                    method: Method::Password,
                    expires_at: None,
                })
            }
            _ if self.anonymous => Ok(Principal {
                name: "anonymous".into(),
                roles: Vec::new(),
                method: Method::Anonymous,
                expires_at: None,
                permissions: self.rules.permissions_for("anonymous", &[], true),
            }),
            _ => Err(AuthError::NoCredentials),
        }
    }

    fn token(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let jwt = self.jwt.as_ref().ok_or(AuthError::TokensNotConfigured)?;
        let verified = jwt.verify(token, now)?;
        let mut permissions = verified.permissions;
        permissions.extend(
            &self
                .rules
                .permissions_for(&verified.user, &verified.roles, false),
        );
        Ok(Principal {
            name: verified.user,
            roles: verified.roles,
            method: Method::Token,
            expires_at: verified.expires_at,
            permissions,
        })
    }

    /// Checks a fresh token sent during a session; it must name the same user.
    pub fn refresh(
        &self,
        current: &Principal,
        token: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let fresh = self.token(token, now)?;
        if fresh.name != current.name {
            return Err(AuthError::SubjectChanged {
                was: current.name.clone(),
                now: fresh.name,
            });
        }
        Ok(fresh)
    }
}

/// Three base64url parts separated by dots.
fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}
