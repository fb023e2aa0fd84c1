//! Configuration: defaults, then `POSTBOX_*` environment variables, then the TOML file
//! given with `--config`, then command-line flags, each overriding the one before.
//!
//! Every option has one name everywhere (see [`options::OPTIONS`]): the TOML key
//! `max-frame-size`, the flag `--max-frame-size` and the variable
//! `POSTBOX_MAX_FRAME_SIZE` all set the same value.
//!
//! This file holds the schema ([`Config`] and [`ConfigError`]); each other job has its
//! own module, and everything the rest of the crate uses is re-exported here:
//! - [`options`]: the option table, the single source of truth for names, types,
//!   defaults, reload policy and secrecy;
//! - `spec`: what one declaration in that table says ([`options::OptionSpec`]);
//! - [`secret`]: value types that never print their secret;
//! - `layers`: [`load`], the precedence of defaults, environment, file and flags;
//! - `cli`: the clap [`command`] and the [`Action`] it asks for;
//! - `validate`: [`Config::validate`];
//! - `project`: the settings other parts take from a [`Config`] ([`Config::router_config`]...);
//! - `show`: `print-config`'s annotated TOML, secrets masked;
//! - `reload`: what a SIGHUP may change ([`reloadable`], [`Config::differences`]);
//! - `reference`: the generated Markdown [`reference()`].

mod cli;
mod layers;
pub mod options;
mod project;
mod reference;
mod reload;
pub mod secret;
mod show;
mod spec;
mod validate;

use std::path::PathBuf;

use postbox_auth::RuleSpec;
use serde::{Deserialize, Serialize};

pub use cli::{Action, PRECEDENCE, command};
pub use layers::{Loaded, Source, load};
pub use reference::reference;
pub use reload::reloadable;
pub use secret::{Secret, SecretUrl};
pub use validate::MAX_HEARTBEAT_GRACE;

use options::OPTIONS;

/// The broker's effective configuration: one field per option of [`options::OPTIONS`],
/// named in snake_case. Its `Debug` masks every secret (see [`Secret`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in `options::OPTIONS`
pub struct Config {
    pub listen: Vec<String>,
    pub http_listen: Vec<String>,
    pub ws_http_endpoints: bool,
    pub admin_token: Secret,
    pub admin_role: String,
    pub metrics_queue_top: usize,
    pub tls_listen: Vec<String>,
    pub ws_listen: Vec<String>,
    pub wss_listen: Vec<String>,
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_client_ca: String,
    pub tls_reload_ms: u64,
    pub ws_path: String,
    pub ws_max_message_size: usize,
    pub ws_allowed_origins: Vec<String>,
    pub allow_anonymous: bool,
    pub users_file: String,
    pub jwt_secret: Secret,
    pub jwt_public_keys: Vec<String>,
    pub jwt_jwks_file: String,
    pub jwt_issuers: Vec<String>,
    pub jwt_audiences: Vec<String>,
    pub jwt_leeway_s: u64,
    pub jwt_require_exp: bool,
    pub jwt_user_claim: String,
    pub jwt_roles_claim: String,
    pub jwt_permissions_claim: String,
    pub jwt_query_param: String,
    pub acl: Vec<RuleSpec>,
    pub user_header: String,
    pub cluster: SecretUrl,
    pub cluster_password: Secret,
    pub cluster_tls_ca: String,
    pub cluster_wait: bool,
    pub cluster_prefix: String,
    pub cluster_claim_ms: u64,
    pub cluster_node_ttl_ms: u64,
    pub cluster_store_timeout_ms: u64,
    pub vhosts: Vec<String>,
    pub max_connections: usize,
    pub max_frame_size: usize,
    pub max_body_size: usize,
    pub max_headers: usize,
    pub max_header_length: usize,
    pub max_subscriptions: usize,
    pub max_temp_queues: usize,
    pub max_transactions: usize,
    pub max_transaction_frames: usize,
    pub max_transaction_bytes: usize,
    pub max_staged_bytes: usize,
    pub connect_timeout_ms: u64,
    pub auth_timeout_ms: u64,
    pub max_login_failures: u32,
    pub outbound_buffer: usize,
    pub outbound_stall_ms: u64,
    pub tcp_keepalive_s: u64,
    pub memory_high_watermark: u64,
    pub max_queues: usize,
    pub queue_max_length: usize,
    pub queue_max_bytes: usize,
    pub max_queued_bytes: u64,
    pub queue_overflow: String,
    pub queue_ttl_ms: u64,
    pub max_deliveries: u32,
    pub dead_letter_suffix: String,
    pub presence: Vec<String>,
    pub presence_companion_suffix: String,
    pub default_prefetch: usize,
    pub heartbeat_send_ms: u64,
    pub heartbeat_receive_ms: u64,
    pub heartbeat_grace: f64,
    pub drain_timeout_ms: u64,
    pub lame_duck_ms: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    pub node_id: String,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line could not be parsed (includes `--help` and `--version`).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML. The offending line is not quoted: it may hold a secret.
    #[error("config file {path} is not valid TOML: line {line}, column {column}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Where, counted from 1.
        line: usize,
        /// Where in the line, counted from 1.
        column: usize,
        /// Why.
        message: String,
    },
    /// The file names an option that does not exist.
    #[error("unknown option '{key}' in {path}; run 'postbox --help' for the list")]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// A value from a flag, the environment or the file has the wrong type.
    #[error("invalid value {value:?} for '{option}' from {origin}: expected {expected}")]
    BadValue {
        /// The option.
        option: &'static str,
        /// The value as given.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What was expected.
        expected: &'static str,
    },
    /// A value has the right type but is not usable.
    #[error("invalid '{option}': {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// The built-in defaults from the option table: the bottom layer of [`load`].
    pub fn defaults() -> Config {
        let table: toml::Table = OPTIONS
            .iter()
            .map(|spec| (spec.name.to_owned(), spec.default_value()))
            .collect();
        Config::deserialize(toml::Value::Table(table))
            .expect("the option table's defaults fit Config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_table_and_config_agree() {
        let table = toml::Table::try_from(Config::defaults()).unwrap();
        let fields: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut names: Vec<&str> = OPTIONS.iter().map(|s| s.name).collect();
        names.sort();
        let mut fields = fields;
        fields.sort();
        assert_eq!(fields, names);
    }

    /// The table's secrecy and the field types agree: a secret option's field masks it
    /// in `Debug` as its declaration says, and a public string is not hidden.
    #[test]
    fn secret_options_have_secret_types() {
        let url = "redis://user:hunter2-hunter2@10.0.0.5";
        for spec in OPTIONS {
            let mut table = toml::Table::try_from(Config::defaults()).unwrap();
            table.insert(spec.name.into(), toml::Value::String(url.into()));
            let Ok(config) = Config::deserialize(toml::Value::Table(table)) else {
                assert!(!spec.is_secret(), "{} does not take a string", spec.name);
                continue;
            };
            let debug = format!("{config:?}");
            let field = format!("{}: ", spec.name.replace('-', "_"));
            let shown = match spec.secrecy {
                options::Secrecy::Public => format!("{field}{url:?}"),
                options::Secrecy::Secret => format!("{field}\"****\""),
                options::Secrecy::Url => format!("{field}\"redis://user:****@10.0.0.5\""),
            };
            assert!(debug.contains(&shown), "{}: {debug}", spec.name);
            assert_eq!(
                debug.contains("hunter2"),
                !spec.is_secret(),
                "{}",
                spec.name
            );
            if spec.is_secret() {
                assert_eq!(spec.kind, options::ValueKind::Str, "{}", spec.name);
            }
        }
    }
}
