//! Layering: the built-in defaults, then `POSTBOX_*` variables, then the `--config`
//! file, then flags, each overriding the one before; [`load`] also records where each
//! value came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::cli::{Action, action, command};
use super::options::{self, OPTIONS, OptionSpec, ValueKind};
use super::{Config, ConfigError};

/// Where an option's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// An environment variable.
    Env(String),
    /// The TOML file.
    File(PathBuf),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Flag => f.write_str("flag"),
        }
    }
}

/// The result of reading the command line, the environment and the file.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Where each option's value came from.
    pub sources: BTreeMap<&'static str, Source>,
    /// What to do.
    pub action: Action,
}

/// Reads the configuration from command-line arguments (program name first) and the
/// environment, as looked up by `env` (a function, so tests need not touch the process
/// environment), layers them, and validates the result.
pub fn load<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let (action, file) = action(&matches);

    let mut table = toml::Table::new();
    let mut sources = BTreeMap::new();
    for spec in OPTIONS {
        table.insert(spec.name.into(), spec.default_value());
        sources.insert(spec.name, Source::Default);
    }
    for spec in OPTIONS {
        let var = spec.env_var();
        if let Some(raw) = env(&var) {
            let source = Source::Env(var);
            table.insert(spec.name.into(), parse_text(spec, &[raw], &source)?);
            sources.insert(spec.name, source);
        }
    }
    if let Some(path) = file {
        for (key, value) in read_file(&path)? {
            let spec = options::find(&key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                path: path.clone(),
            })?;
            table.insert(key, value);
            sources.insert(spec.name, Source::File(path.clone()));
        }
    }
    for spec in OPTIONS {
        if let Some(value) = flag_value(spec, &matches)? {
            table.insert(spec.name.into(), value);
            sources.insert(spec.name, Source::Flag);
        }
    }

    let config =
        Config::deserialize(toml::Value::Table(table)).map_err(|error| ConfigError::Invalid {
            option: "config",
            reason: error.to_string(),
        })?;
    config.validate()?;
    Ok(Loaded {
        config,
        sources,
        action,
    })
}

/// Reads the `--config` file as a TOML table. A syntax error gives the line and column
/// but not the line itself, which may hold a secret.
fn read_file(path: &PathBuf) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|error| {
        let before = &text[..error.span().map_or(0, |span| span.start).min(text.len())];
        ConfigError::Toml {
            path: path.clone(),
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            message: error.message().trim().to_owned(),
        }
    })
}

/// The option's value from a flag given on the command line (not a clap default), in
/// the option's TOML type.
fn flag_value(
    spec: &'static OptionSpec,
    matches: &ArgMatches,
) -> Result<Option<toml::Value>, ConfigError> {
    if matches.value_source(spec.name) != Some(ValueSource::CommandLine) {
        return Ok(None);
    }
    let raw: Vec<String> = matches
        .get_many::<String>(spec.name)
        .map(|values| values.cloned().collect())
        .unwrap_or_default();
    parse_text(spec, &raw, &Source::Flag).map(Some)
}

/// Converts text from a flag or variable into the option's TOML type.
fn parse_text(
    spec: &'static OptionSpec,
    raw: &[String],
    source: &Source,
) -> Result<toml::Value, ConfigError> {
    let joined = raw.join(",");
    let bad = |expected| ConfigError::BadValue {
        option: spec.name,
        value: joined.clone(),
        origin: source.clone(),
        expected,
    };
    let text = joined.trim();
    Ok(match spec.kind {
        ValueKind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        ValueKind::Int => text
            .replace('_', "")
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| bad("a non-negative integer"))?,
        ValueKind::Float => text
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| bad("a number"))?,
        ValueKind::Str => toml::Value::String(text.to_owned()),
        ValueKind::Rules => {
            let doc: toml::Table = format!("v = {text}").parse().map_err(|_| {
                bad("a TOML array of tables such as [{user = \"alice\", read = [\"/topic/#\"]}]")
            })?;
            doc["v"].clone()
        }
        ValueKind::List => toml::Value::Array(
            joined
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        ),
    })
}

/// [`load`] with the program name put first and the environment taken from `env`, for
/// tests here and in the sibling modules.
#[cfg(test)]
pub(super) fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args = std::iter::once("postbox").chain(args.iter().copied());
    load(args, |var| env.get(var).cloned())
}

#[cfg(test)]
mod tests {
    use postbox_testkit::certs::temp_dir;

    use super::*;

    #[test]
    fn defaults_listen_on_loopback_61613() {
        let loaded = load_with(&[], &[]).unwrap();
        assert_eq!(loaded.config.listen, ["127.0.0.1:61613"]);
        assert_eq!(loaded.action, Action::Run);
        assert!(loaded.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_the_environment() {
        let dir = temp_dir("postbox-config");
        let file = dir.join("postbox.toml");
        std::fs::write(&file, "max-headers = 10\nmax-subscriptions = 20\n").unwrap();
        let file = file.to_str().unwrap();
        let env = [
            ("POSTBOX_MAX_HEADERS", "1"),
            ("POSTBOX_MAX_SUBSCRIPTIONS", "2"),
            ("POSTBOX_MAX_CONNECTIONS", "3"),
        ];
        let loaded = load_with(&["--config", file, "--max-headers", "100"], &env).unwrap();
        assert_eq!(loaded.config.max_headers, 100);
        assert_eq!(loaded.config.max_subscriptions, 20);
        assert_eq!(loaded.config.max_connections, 3);
        assert_eq!(loaded.sources["max-headers"], Source::Flag);
        assert!(matches!(
            loaded.sources["max-subscriptions"],
            Source::File(_)
        ));
        assert_eq!(
            loaded.sources["max-connections"],
            Source::Env("POSTBOX_MAX_CONNECTIONS".into())
        );
        let printed = loaded.config.to_annotated_toml(&loaded.sources);
        assert!(printed.contains("max-headers = 100  # flag"), "{printed}");
    }

    #[test]
    fn lists_and_bools_from_flags_and_env() {
        let loaded = load_with(
            &["--listen", "127.0.0.1:1,127.0.0.1:2", "--allow-anonymous"],
            &[("POSTBOX_VHOSTS", "a, b")],
        )
        .unwrap();
        assert_eq!(loaded.config.listen, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(loaded.config.allow_anonymous);
        assert_eq!(loaded.config.vhosts, ["a", "b"]);
    }

    #[test]
    fn bad_values_name_the_option_and_the_source() {
        let error = load_with(&[], &[("POSTBOX_MAX_HEADERS", "lots")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value \"lots\" for 'max-headers' from env POSTBOX_MAX_HEADERS: \
             expected a non-negative integer"
        );
        let error = load_with(&["--listen", "nowhere"], &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid 'listen': 'nowhere' is not host:port")
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = temp_dir("postbox-config-bad");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "max-headerz = 1\n").unwrap();
        let error = load_with(&["check-config", file.to_str().unwrap()], &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown option 'max-headerz'"),
            "{error}"
        );
    }

    const JWT_SECRET: &str = "jwt-secret-value-0123456789abcdef0123";

    #[test]
    fn config_file_errors_do_not_quote_secrets() {
        let dir = temp_dir("postbox-config-secret");
        let unterminated = dir.join("unterminated.toml");
        std::fs::write(
            &unterminated,
            format!("max-headers = 10\njwt-secret = \"{}\n", JWT_SECRET),
        )
        .unwrap();
        let wrong_type = dir.join("wrong-type.toml");
        std::fs::write(&wrong_type, "admin-token = 9876543210\n").unwrap();
        for (file, secret) in [(&unterminated, JWT_SECRET), (&wrong_type, "9876543210")] {
            let error = load_with(&["check-config", file.to_str().unwrap()], &[]).unwrap_err();
            let text = format!("{error} {error:?}");
            assert!(!text.contains(secret), "{text}");
        }
        let error = load_with(&["check-config", unterminated.to_str().unwrap()], &[]).unwrap_err();
        assert!(error.to_string().contains("line 2, column"), "{error}");
    }
}
