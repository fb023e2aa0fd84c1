//! Static users with hashed passwords (argon2 or bcrypt; plain text is refused).
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `postbox hash-password`
//! roles = ["chat"]
//! ```

use std::collections::HashMap;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;

use crate::AuthError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// A users file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    /// Not valid TOML of the expected shape.
    #[error("users file: {0}")]
    Syntax(String),
    /// A password that is not an argon2 or bcrypt hash.
    #[error(
        "users file: the password of '{0}' is not an argon2 or bcrypt hash (plain text is refused; use `postbox hash-password`)"
    )]
    NotHashed(String),
    /// The same name twice.
    #[error("users file: user '{0}' appears twice")]
    Duplicate(String),
}

/// The users from a users file.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, UserEntry>,
}

/// A hash checked against unknown names, so that they take as long as known ones.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0S0dvHV1M2NAcrAfJWxlWBP6vu6VKOLyIh0AkDJTB/k";

impl Users {
    /// Parses a users file.
    pub fn from_toml(text: &str) -> Result<Users, UsersError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|e| UsersError::Syntax(e.to_string()))?;
        let mut by_name = HashMap::new();
        for entry in file.user {
            if !(entry.password.starts_with("$argon2") || is_bcrypt(&entry.password)) {
                return Err(UsersError::NotHashed(entry.name));
            }
            if by_name.contains_key(&entry.name) {
                return Err(UsersError::Duplicate(entry.name));
            }
            by_name.insert(entry.name.clone(), entry);
        }
        Ok(Users { by_name })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks a login and password; returns the user's roles.
    pub fn verify(&self, name: &str, password: &str) -> Result<Vec<String>, AuthError> {
        match self.by_name.get(name) {
            Some(entry) if check(&entry.password, password) => Ok(entry.roles.clone()),
            Some(_) => Err(AuthError::WrongPassword(name.to_owned())),
            None => {
                check(DECOY, password);
                Err(AuthError::UnknownUser(name.to_owned()))
            }
        }
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

fn check(hash: &str, password: &str) -> bool {
    if is_bcrypt(hash) {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    }
}

/// Hashes a password with argon2id and a random salt, for a users file.
pub fn hash_password(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let argon = hash_password("wonderland");
        let bcrypt = bcrypt::hash("builder", 4).unwrap();
        Users::from_toml(&format!(
            "[[user]]\nname = \"alice\"\npassword = \"{argon}\"\nroles = [\"chat\"]\n\
             [[user]]\nname = \"bob\"\npassword = \"{bcrypt}\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn argon2_and_bcrypt_hashes_verify() {
        let users = users();
        assert_eq!(users.verify("alice", "wonderland").unwrap(), ["chat"]);
        assert!(users.verify("bob", "builder").unwrap().is_empty());
        assert!(matches!(
            users.verify("alice", "nope"),
            Err(AuthError::WrongPassword(_))
        ));
        assert!(matches!(
            users.verify("carol", "x"),
            Err(AuthError::UnknownUser(_))
        ));
    }

    #[test]
    fn plain_text_passwords_are_refused() {
        let error =
            Users::from_toml("[[user]]\nname = \"eve\"\npassword = \"secret\"\n").unwrap_err();
        assert_eq!(error, UsersError::NotHashed("eve".into()));
    }

    #[test]
    fn duplicates_and_unknown_fields_are_refused() {
        let hash = hash_password("x");
        let twice = format!(
            "[[user]]\nname = \"a\"\npassword = \"{hash}\"\n[[user]]\nname = \"a\"\npassword = \"{hash}\"\n"
        );
        assert_eq!(
            Users::from_toml(&twice).unwrap_err(),
            UsersError::Duplicate("a".into())
        );
        assert!(matches!(
            Users::from_toml("[[user]]\nname = \"a\"\npasswd = \"x\"\n"),
            Err(UsersError::Syntax(_))
        ));
    }

    #[test]
    fn the_decoy_is_a_valid_hash() {
        assert!(argon2::password_hash::phc::PasswordHash::new(DECOY).is_ok());
    }
}
