//! Static users with hashed passwords (argon2 or bcrypt; plain text is refused).
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `postbox hash-password`
//! roles = ["chat"]
//! ```

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;

use argon2::password_hash::phc::{Output, PasswordHash, Salt};
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
    /// A password that looks like a hash but cannot be verified against: it would refuse
    /// every login, and faster than a real hash, which tells the name apart.
    #[error("users file: the password hash of '{0}' is malformed ({1})")]
    BadHash(String, String),
    /// The same name twice.
    #[error("users file: user '{0}' appears twice")]
    Duplicate(String),
}

/// One user, with the decoy that unknown names mapped to it are checked against.
#[derive(Debug, Clone)]
struct User {
    hash: String,
    roles: Vec<String>,
    /// A hash of the same algorithm and cost as `hash` that no password matches.
    decoy: String,
}

/// The users from a users file.
///
/// A login with an unknown name costs as much as one with a known name: it is checked
/// against the decoy of a user picked from the name by a keyed hash. Picking by name
/// (instead of one fixed decoy) matters when the file mixes costs, say bcrypt and argon2:
/// each unknown name then takes as long as some real user's login, always the same one,
/// so timing tells an unknown name from a known one no better than guessing from how
/// the costs are spread over the file. The key is derived from the file's hashes, whose
/// salts are secret, so the mapping can neither be computed from outside nor changes
/// between restarts (which would give unknown names away as the ones whose timing moves).
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
    /// Names in a fixed order, for picking a decoy.
    order: Vec<String>,
    /// The key of that pick.
    key: u64,
}

/// The decoy of an empty users file: argon2id with the parameters of `hash_password`.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0S0dvHV1M2NAcrAfJWxlWBP6vu6VKOLyIh0AkDJTB/k";

impl Users {
    /// Parses a users file.
    pub fn from_toml(text: &str) -> Result<Users, UsersError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|e| UsersError::Syntax(e.to_string()))?;
        let mut by_name = HashMap::new();
        let mut order = Vec::new();
        let mut key = DefaultHasher::new();
        for entry in file.user {
            let decoy = decoy_for(&entry.password).map_err(|error| match error {
                None => UsersError::NotHashed(entry.name.clone()),
                Some(why) => UsersError::BadHash(entry.name.clone(), why),
            })?;
            if by_name.contains_key(&entry.name) {
                return Err(UsersError::Duplicate(entry.name));
            }
            entry.password.hash(&mut key);
            order.push(entry.name.clone());
            by_name.insert(
                entry.name,
                User {
                    hash: entry.password,
                    roles: entry.roles,
                    decoy,
                },
            );
        }
        Ok(Users {
            by_name,
            order,
            key: key.finish(),
        })
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
            Some(user) if check(&user.hash, password) => Ok(user.roles.clone()),
            Some(_) => Err(AuthError::WrongPassword(name.to_owned())),
            None => {
                // The outcome is ignored: only the time it takes matters.
                check(self.decoy(name), password);
                Err(AuthError::UnknownUser(name.to_owned()))
            }
        }
    }

    /// The decoy an unknown `name` is checked against.
    fn decoy(&self, name: &str) -> &str {
        if self.order.is_empty() {
            return DECOY;
        }
        let mut pick = DefaultHasher::new();
        self.key.hash(&mut pick);
        name.hash(&mut pick);
        let index = (pick.finish() % self.order.len() as u64) as usize;
        &self.by_name[&self.order[index]].decoy
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

/// A hash of the same algorithm and cost as `hash` that no password matches: the same
/// parameters and lengths, with a random salt and a random output. Built without hashing,
/// so loading a users file costs no more than parsing it. `Err(None)`: not a hash at all.
fn decoy_for(hash: &str) -> Result<String, Option<String>> {
    if is_bcrypt(hash) {
        let parts = bcrypt::HashParts::from_str(hash).map_err(|e| Some(e.to_string()))?;
        let (mut salt, mut output) = ([0; 16], [0; 23]);
        random(&mut salt);
        random(&mut output);
        return Ok(format!(
            "{}{:02}${}{}",
            &hash[..4],
            parts.get_cost(),
            bcrypt_base64(&salt),
            bcrypt_base64(&output)
        ));
    }
    if !hash.starts_with("$argon2") {
        return Err(None);
    }
    let mut parsed = PasswordHash::new(hash).map_err(|e| Some(e.to_string()))?;
    argon2::Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| Some(e.to_string()))?;
    argon2::Params::try_from(&parsed).map_err(|e| Some(e.to_string()))?;
    let (Some(salt), Some(output)) = (parsed.salt, parsed.hash.as_ref()) else {
        return Err(Some("no salt or no hash".into()));
    };
    let mut bytes = [0; 64];
    random(&mut bytes[..salt.len()]);
    parsed.salt = Some(Salt::new(&bytes[..salt.len()]).map_err(|e| Some(e.to_string()))?);
    random(&mut bytes[..output.len()]);
    parsed.hash = Some(Output::new(&bytes[..output.len()]).map_err(|e| Some(e.to_string()))?);
    Ok(parsed.to_string())
}

fn random(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the operating system's random source works");
}

/// Base64 with bcrypt's alphabet and no padding, as in the salt and hash of `$2b$`.
fn bcrypt_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(group >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
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
    fn the_decoy_of_an_empty_file_is_a_valid_hash() {
        assert!(PasswordHash::new(DECOY).is_ok());
        assert_eq!(Users::default().decoy("anyone"), DECOY);
    }

    /// The part of an argon2 PHC string that sets its cost: algorithm, version, params.
    fn argon2_cost(hash: &str) -> (String, Option<u32>, String, usize, usize) {
        let parsed = PasswordHash::new(hash).unwrap();
        (
            parsed.algorithm.to_string(),
            parsed.version,
            parsed.params.to_string(),
            parsed.salt.unwrap().len(),
            parsed.hash.unwrap().len(),
        )
    }

    #[test]
    fn decoys_have_their_users_algorithm_and_cost_and_match_no_password() {
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, Some(24)).unwrap(),
        )
        .hash_password(b"wonderland")
        .unwrap()
        .to_string();
        let argon_decoy = decoy_for(&argon).unwrap();
        assert_eq!(argon2_cost(&argon_decoy), argon2_cost(&argon));
        assert_ne!(argon_decoy, argon);
        assert!(!check(&argon_decoy, "wonderland"));

        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let bcrypt = bcrypt::hash("builder", 5)
                .unwrap()
                .replacen("$2b$", prefix, 1);
            let decoy = decoy_for(&bcrypt).unwrap();
            assert!(decoy.starts_with(&format!("{prefix}05$")), "{decoy}");
            assert_eq!(decoy.len(), 60);
            let parts = bcrypt::HashParts::from_str(&decoy).expect("a valid bcrypt hash");
            assert_eq!(parts.get_cost(), 5);
            assert!(!check(&decoy, "builder"));
        }
    }

    #[test]
    fn bcrypt_base64_matches_the_bcrypt_crate() {
        let parts = bcrypt::hash_with_salt("x", 4, *b"0123456789abcdef").unwrap();
        assert_eq!(bcrypt_base64(b"0123456789abcdef"), parts.get_salt());
    }

    #[test]
    fn unknown_names_are_checked_against_decoys_spread_over_the_files_users() {
        let argon = hash_password("wonderland");
        let bcrypt = bcrypt::hash("builder", 4).unwrap();
        let text = format!(
            "[[user]]\nname = \"alice\"\npassword = \"{argon}\"\n\
             [[user]]\nname = \"bob\"\npassword = \"{bcrypt}\"\n"
        );
        let users = Users::from_toml(&text).unwrap();
        let names: Vec<String> = (0..64).map(|i| format!("nobody{i}")).collect();
        let picks: Vec<&str> = names.iter().map(|n| users.decoy(n)).collect();
        assert!(
            picks.iter().any(|d| is_bcrypt(d)),
            "no unknown name costs a bcrypt check"
        );
        assert!(
            picks.iter().any(|d| d.starts_with("$argon2id$")),
            "none costs argon2"
        );
        // Always the same cost for one name, also after the file is read again.
        let again = Users::from_toml(&text).unwrap();
        for (name, pick) in names.iter().zip(&picks) {
            assert_eq!(users.decoy(name), *pick);
            assert_eq!(is_bcrypt(again.decoy(name)), is_bcrypt(pick));
        }

        // A file of bcrypt users only: an unknown name costs a bcrypt check of that
        // cost, not argon2 (which took longer and gave bcrypt users away).
        let bcrypt_only = Users::from_toml(&format!(
            "[[user]]\nname = \"bob\"\npassword = \"{bcrypt}\"\n"
        ))
        .unwrap();
        assert!(bcrypt_only.decoy("carol").starts_with("$2b$04$"));
        assert!(matches!(
            bcrypt_only.verify("carol", "builder"),
            Err(AuthError::UnknownUser(_))
        ));
    }

    #[test]
    fn malformed_hashes_are_refused_at_load() {
        for bad in [
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
            "$argon2xx$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0S0dvHV1M2NAcrAfJWxlWBP6vu6VKOLyIh0AkDJTB/k",
            "$2b$04$tooshort",
        ] {
            let error =
                Users::from_toml(&format!("[[user]]\nname = \"eve\"\npassword = \"{bad}\"\n"))
                    .unwrap_err();
            assert!(
                matches!(error, UsersError::BadHash(ref name, _) if name == "eve"),
                "{bad}: {error}"
            );
        }
    }
}
