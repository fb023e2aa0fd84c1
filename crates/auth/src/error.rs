//! Why authentication failed.

use crate::jwt::TokenError;

/// Why authentication failed. The precise reason is for logs; clients only learn that
/// authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Nothing to check and anonymous access is off.
    #[error("no credentials given and anonymous access is disabled")]
    NoCredentials,
    /// The login names no user.
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    /// The password does not match.
    #[error("wrong password for user '{0}'")]
    WrongPassword(String),
    /// A login and password, but no users file is configured.
    #[error("password login attempted but no users are configured")]
    PasswordsNotConfigured,
    /// A token, but no JWT keys are configured.
    #[error("token presented but JWT authentication is not configured")]
    TokensNotConfigured,
    /// The token was refused.
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    /// A refreshed token names someone else.
    #[error("refreshed token is for '{now}', not '{was}'")]
    SubjectChanged {
        /// The session's user.
        was: String,
        /// The new token's user.
        now: String,
    },
}
