//! What an identity may do: read (SUBSCRIBE) and write (SEND) destination patterns, and
//! the rules in configuration that grant them.

use serde::{Deserialize, Serialize};

use crate::pattern::{DestinationPattern, PatternError};

/// The two things a client can do to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Receive from it (SUBSCRIBE).
    Read,
    /// Publish to it (SEND).
    Write,
}

impl Operation {
    /// The operation as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// Read and write patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    read: Vec<DestinationPattern>,
    write: Vec<DestinationPattern>,
}

impl Permissions {
    /// Permission to do anything (an open broker with no authentication configured).
    pub fn all() -> Permissions {
        let everything = DestinationPattern::parse("#").expect("# is valid");
        Permissions {
            read: vec![everything.clone()],
            write: vec![everything],
        }
    }

    /// Grants `operation` on `pattern`.
    pub fn grant(&mut self, operation: Operation, pattern: DestinationPattern) {
        let list = match operation {
            Operation::Read => &mut self.read,
            Operation::Write => &mut self.write,
        };
        if !list.contains(&pattern) {
            list.push(pattern);
        }
    }

    /// Adds everything `other` grants.
    pub fn extend(&mut self, other: &Permissions) {
        for pattern in &other.read {
            self.grant(Operation::Read, pattern.clone());
        }
        for pattern in &other.write {
            self.grant(Operation::Write, pattern.clone());
        }
    }

    /// Whether `operation` is allowed on `destination`; a destination with wildcard
    /// words is allowed only if one pattern covers all it can match.
    pub fn allows(&self, operation: Operation, destination: &str) -> bool {
        let list = match operation {
            Operation::Read => &self.read,
            Operation::Write => &self.write,
        };
        list.iter().any(|pattern| pattern.covers(destination))
    }

    /// Parses OAuth-style scopes: `read:<pattern>` and `write:<pattern>` items, as one
    /// space-separated string or a list. Other items are ignored (tokens carry scopes
    /// for other services too); malformed patterns are ignored as well.
    pub fn from_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Permissions {
        let mut permissions = Permissions::default();
        for scope in scopes.into_iter().flat_map(str::split_whitespace) {
            let (operation, pattern) = match scope.split_once(':') {
                Some(("read", pattern)) => (Operation::Read, pattern),
                Some(("write", pattern)) => (Operation::Write, pattern),
                _ => continue,
            };
            if let Ok(pattern) = DestinationPattern::parse(pattern) {
                permissions.grant(operation, pattern);
            }
        }
        permissions
    }
}

/// One rule from configuration: who, and what they may read and write.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A user name, or `*` for every authenticated user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A role (from the users file or the token's roles claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Destination patterns the subject may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Destination patterns the subject may write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// A rule set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule names neither a user nor a role, or both.
    #[error("rule {0}: give exactly one of user or role")]
    Subject(usize),
    /// A pattern is not valid.
    #[error("rule {index}: {error}")]
    Pattern {
        /// The rule's position, from 1.
        index: usize,
        /// What is wrong.
        error: PatternError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    AnyUser,
    Role(String),
}

/// Access rules from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<(Subject, Permissions)>,
}

impl Rules {
    /// Checks and compiles rules.
    pub fn new(specs: &[RuleSpec]) -> Result<Rules, RuleError> {
        let mut rules = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let index = index + 1;
            let subject = match (&spec.user, &spec.role) {
                (Some(user), None) if user == "*" => Subject::AnyUser,
                (Some(user), None) => Subject::User(user.clone()),
                (None, Some(role)) => Subject::Role(role.clone()),
                _ => return Err(RuleError::Subject(index)),
            };
            let mut permissions = Permissions::default();
            for (operation, patterns) in [
                (Operation::Read, &spec.read),
                (Operation::Write, &spec.write),
            ] {
                for pattern in patterns {
                    let pattern = DestinationPattern::parse(pattern)
                        .map_err(|error| RuleError::Pattern { index, error })?;
                    permissions.grant(operation, pattern);
                }
            }
            rules.push((subject, permissions));
        }
        Ok(Rules { rules })
    }

    /// Everything the rules grant to `user` with `roles`. `anonymous` users only get the
    /// rules that name them, not `*` rules.
    pub fn permissions_for(&self, user: &str, roles: &[String], anonymous: bool) -> Permissions {
        let mut permissions = Permissions::default();
        for (subject, granted) in &self.rules {
            let applies = match subject {
                Subject::User(name) => name == user,
                Subject::AnyUser => !anonymous,
                Subject::Role(role) => roles.contains(role),
            };
            if applies {
                permissions.extend(granted);
            }
        }
        permissions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_grant_read_and_write_patterns() {
        let permissions =
            Permissions::from_scopes(["read:/topic/chat.* write:/topic/chat.lobby openid"]);
        assert!(permissions.allows(Operation::Read, "/topic/chat.room1"));
        assert!(!permissions.allows(Operation::Write, "/topic/chat.room1"));
        assert!(permissions.allows(Operation::Write, "/topic/chat.lobby"));
        assert!(!permissions.allows(Operation::Read, "/queue/x"));
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let permissions = Permissions::default();
        assert!(!permissions.allows(Operation::Read, "/topic/a"));
        assert!(Permissions::all().allows(Operation::Write, "/queue/anything"));
    }

    fn rule(user: Option<&str>, role: Option<&str>, read: &[&str], write: &[&str]) -> RuleSpec {
        RuleSpec {
            user: user.map(str::to_owned),
            role: role.map(str::to_owned),
            read: read.iter().map(|s| s.to_string()).collect(),
            write: write.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rules_apply_by_user_role_and_star() {
        let rules = Rules::new(&[
            rule(Some("alice"), None, &["/queue/alice"], &[]),
            rule(None, Some("chat"), &["/topic/chat.#"], &["/topic/chat.#"]),
            rule(Some("*"), None, &["/topic/news"], &[]),
        ])
        .unwrap();
        let alice = rules.permissions_for("alice", &[], false);
        assert!(alice.allows(Operation::Read, "/queue/alice"));
        assert!(alice.allows(Operation::Read, "/topic/news"));
        assert!(!alice.allows(Operation::Write, "/topic/chat.a"));
        let bob = rules.permissions_for("bob", &["chat".into()], false);
        assert!(bob.allows(Operation::Write, "/topic/chat.a"));
        assert!(!bob.allows(Operation::Read, "/queue/alice"));
        let anonymous = rules.permissions_for("anonymous", &[], true);
        assert!(!anonymous.allows(Operation::Read, "/topic/news"));
    }

    #[test]
    fn rules_are_checked() {
        assert_eq!(
            Rules::new(&[rule(None, None, &[], &[])]),
            Err(RuleError::Subject(1))
        );
        assert!(matches!(
            Rules::new(&[rule(Some("a"), None, &["/nope/x"], &[])]),
            Err(RuleError::Pattern { index: 1, .. })
        ));
    }
}
