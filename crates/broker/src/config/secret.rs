//! Option values that must never be printed: tokens and passwords ([`Secret`]) and URLs
//! that may carry a password ([`SecretUrl`]).
//!
//! Both serialize as their real value, so a [`Config`](super::Config) still round-trips
//! through TOML (reloads compare and restore options that way), but `Debug` and
//! `Display` show a mask: a `{:?}` of the configuration in a log, `print-config` and the
//! reload log lines cannot leak them. The real value is reached only through `expose`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// What is shown instead of a secret.
pub const MASK: &str = "****";

/// A secret string. Shown as `****` when set and as an empty string when not, so an
/// operator can still tell whether it is configured.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The real value, for the code that uses it (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { MASK })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        secret_string(deserializer).map(Secret)
    }
}

/// A URL whose password, if it has one (`redis://user:password@host`), is masked when
/// shown: `redis://user:****@host`. Without a user name the whole user part is masked,
/// since Redis URLs put a lone password there.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The real URL, for the code that connects (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no URL is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for SecretUrl {
    fn from(value: &str) -> SecretUrl {
        SecretUrl(value.to_owned())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            // Not a URL at all: nothing can be told apart, so nothing is shown.
            return f.write_str(if url.is_empty() { "" } else { MASK });
        };
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let Some(at) = authority.rfind('@') else {
            return f.write_str(url);
        };
        let user = match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}"),
            None => MASK.to_owned(),
        };
        write!(f, "{}://{user}@{}", &url[..scheme_end], &rest[at + 1..])
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretUrl, D::Error> {
        secret_string(deserializer).map(SecretUrl)
    }
}

/// A string, or an error that does not repeat what was given instead (serde's own
/// "invalid type" errors quote the value).
fn secret_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(deserializer) {
        Ok(toml::Value::String(value)) => Ok(value),
        _ => Err(serde::de::Error::custom(
            "expected a string (the value given is not shown: it may be a secret)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_a_mask_or_nothing() {
        let secret = Secret::from("hunter2-hunter2");
        assert_eq!(secret.to_string(), "****");
        assert_eq!(format!("{secret:?}"), "\"****\"");
        assert_eq!(secret.expose(), "hunter2-hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn urls_show_everything_but_the_password() {
        for (url, shown) in [
            (
                "redis://user:pw@10.0.0.1:6379/0",
                "redis://user:****@10.0.0.1:6379/0",
            ),
            ("rediss://:pw@redis:6380", "rediss://:****@redis:6380"),
            ("redis://pw@redis", "redis://****@redis"),
            ("redis://a:p@ss@redis", "redis://a:****@redis"),
            ("redis://redis:6379", "redis://redis:6379"),
            ("redis://redis/x@y", "redis://redis/x@y"),
            ("not a url pw", "****"),
            ("", ""),
        ] {
            assert_eq!(SecretUrl::from(url).to_string(), shown, "{url}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_repeated() {
        let error = Secret::deserialize(toml::Value::Integer(987654321)).unwrap_err();
        assert!(!error.to_string().contains("987654321"), "{error}");
        let secret = Secret::deserialize(toml::Value::String("s".into())).unwrap();
        assert_eq!(secret.expose(), "s");
    }
}
