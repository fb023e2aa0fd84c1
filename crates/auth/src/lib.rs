//! Authentication and authorization for Postbox.
//!
//! Pure and synchronous: it turns CONNECT credentials, configuration and the current
//! time into a [`Principal`] or an [`AuthError`], and answers whether a principal may
//! read or write a destination. Files are read by the caller. Layout:
//!
//! - [`authenticator`]: [`Authenticator`] chooses how CONNECT is checked.
//! - [`jwt`]: JWT verification (HMAC, RSA, EC, Ed25519, JWKS).
//! - [`users`]: static users with argon2 or bcrypt password hashes.
//! - [`permissions`]: read/write patterns from token scopes and configured rules.
//! - [`pattern`]: destination patterns and wildcard coverage.
#![deny(missing_docs)]

pub mod authenticator;
pub mod error;
pub mod jwt;
pub mod pattern;
pub mod permissions;
pub mod users;

pub use authenticator::{Authenticator, Credentials, Method, Principal};
pub use error::AuthError;
pub use jwt::{JwtKey, JwtSettings, JwtVerifier, TokenError};
pub use pattern::DestinationPattern;
pub use permissions::{Operation, Permissions, RuleSpec, Rules};
pub use users::{Users, hash_password};
