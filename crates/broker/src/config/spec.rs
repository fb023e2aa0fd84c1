//! What an option declaration says: the value's type, when a change takes effect and
//! whether the value is secret, plus the constructors the table in [`options`](super::options)
//! is written with.

/// The type of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off` from env and flags).
    Bool,
    /// A non-negative integer.
    Int,
    /// A decimal number.
    Float,
    /// A string.
    Str,
    /// A list of strings; comma-separated in env and flags.
    List,
    /// A list of tables (access rules); a TOML array literal in env and flags.
    Rules,
}

/// When a changed value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// On SIGHUP, for connections (and handshakes) made afterwards.
    Live,
    /// Only at the next start: a reload that changes it logs a warning and keeps the
    /// running value.
    Restart,
}

/// Whether an option's value may be shown, and how it is hidden when not. A secret
/// option's [`Config`](super::Config) field has the matching type from
/// [`secret`](super::secret), which masks it in `Debug`; a test checks the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrecy {
    /// Shown as it is.
    Public,
    /// A token or password: shown as `****` when set, held in a [`Secret`](super::Secret).
    Secret,
    /// A URL that may carry a password: shown with the password masked, held in a
    /// [`SecretUrl`](super::SecretUrl).
    Url,
}

/// One configuration option.
#[derive(Debug)]
pub struct OptionSpec {
    /// The name, in kebab-case.
    pub name: &'static str,
    /// The value's type.
    pub kind: ValueKind,
    /// The default, as a TOML literal.
    pub default: &'static str,
    /// What the option means.
    pub help: &'static str,
    /// Whether a reload applies a change, or it waits for a restart.
    pub reload: Reload,
    /// Whether the value is hidden wherever the configuration is shown.
    pub secrecy: Secrecy,
}

impl OptionSpec {
    /// The environment variable that sets this option.
    pub fn env_var(&self) -> String {
        format!("POSTBOX_{}", self.name.to_uppercase().replace('-', "_"))
    }

    /// The default as a TOML value.
    pub fn default_value(&self) -> toml::Value {
        let doc: toml::Table = format!("v = {}", self.default)
            .parse()
            .expect("defaults in the option table are TOML literals");
        doc["v"].clone()
    }

    /// Whether the value must never be shown as it is.
    pub fn is_secret(&self) -> bool {
        self.secrecy != Secrecy::Public
    }

    /// Marks a token or password (see [`Secrecy::Secret`]).
    pub(super) const fn secret(self) -> OptionSpec {
        OptionSpec {
            secrecy: Secrecy::Secret,
            ..self
        }
    }

    /// Marks a URL that may carry a password (see [`Secrecy::Url`]).
    pub(super) const fn secret_url(self) -> OptionSpec {
        OptionSpec {
            secrecy: Secrecy::Url,
            ..self
        }
    }
}

/// An option whose changes a reload applies, public unless marked otherwise.
pub(super) const fn live(
    name: &'static str,
    kind: ValueKind,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        help,
        reload: Reload::Live,
        secrecy: Secrecy::Public,
    }
}

/// An option that takes effect only at start, public unless marked otherwise.
pub(super) const fn restart(
    name: &'static str,
    kind: ValueKind,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        reload: Reload::Restart,
        ..live(name, kind, default, help)
    }
}
