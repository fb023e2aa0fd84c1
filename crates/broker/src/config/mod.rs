//! Configuration: defaults, then `POSTBOX_*` environment variables, then the TOML file
//! given with `--config`, then command-line flags, each overriding the one before.
//!
//! Every option has one name everywhere (see [`options::OPTIONS`]): the TOML key
//! `max-frame-size`, the flag `--max-frame-size` and the variable
//! `POSTBOX_MAX_FRAME_SIZE` all set the same value.

pub mod options;
pub mod secret;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};
use postbox_auth::RuleSpec;
use postbox_router::{MAX_PREFETCH, Overflow, QueueSettings, RouterConfig};
use serde::{Deserialize, Serialize};

use options::{OPTIONS, OptionSpec, ValueKind};
pub use secret::{Secret, SecretUrl};

use crate::transport::Transport;
use crate::transport::tls::TlsFiles;

/// The precedence rule, as printed by `postbox --help`.
pub const PRECEDENCE: &str = "Each option can be given as a flag, a key in the --config TOML \
file, or a POSTBOX_* environment variable (POSTBOX_ plus the name in upper case with _ for -). \
Precedence: flags over the file, the file over the environment, the environment over defaults.";

/// The largest `heartbeat-grace`: with heart-beats capped at a day, a silence limit of
/// at most a hundred days stays far from overflowing `Instant` arithmetic.
pub const MAX_HEARTBEAT_GRACE: f64 = 100.0;

/// The broker's effective configuration. Its `Debug` masks every secret (see [`Secret`]).
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

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the broker.
    Run,
    /// Print the effective configuration with the source of each value, then exit.
    PrintConfig,
    /// Validate a configuration file without binding anything, then exit.
    CheckConfig(PathBuf),
    /// Read a password on stdin and print its argon2 hash for a users file.
    HashPassword,
    /// Print the configuration reference (docs/configuration.md) in Markdown.
    ConfigReference,
    /// Check a running broker's health endpoint (for container health checks).
    Healthcheck(String),
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
    /// The built-in defaults.
    pub fn defaults() -> Config {
        let table: toml::Table = OPTIONS
            .iter()
            .map(|spec| (spec.name.to_owned(), default_value(spec)))
            .collect();
        Config::deserialize(toml::Value::Table(table))
            .expect("the option table's defaults fit Config")
    }

    /// Checks values that have the right type but may still be unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        let all = [
            ("listen", &self.listen),
            ("tls-listen", &self.tls_listen),
            ("ws-listen", &self.ws_listen),
            ("wss-listen", &self.wss_listen),
            ("http-listen", &self.http_listen),
        ];
        if all.iter().take(4).all(|(_, list)| list.is_empty()) {
            return invalid("listen", "at least one listener address is needed".into());
        }
        for (option, list) in all {
            for address in list {
                if let Err(error) = address.parse::<SocketAddr>() {
                    return invalid(option, format!("'{address}' is not host:port ({error})"));
                }
            }
        }
        let needs_tls = !self.tls_listen.is_empty() || !self.wss_listen.is_empty();
        if needs_tls && (self.tls_cert.is_empty() || self.tls_key.is_empty()) {
            return invalid(
                "tls-cert",
                "tls-listen and wss-listen need tls-cert and tls-key".into(),
            );
        }
        if !self.ws_path.starts_with('/') {
            return invalid("ws-path", "must start with /".into());
        }
        if self.ws_max_message_size < 1024 {
            return invalid("ws-max-message-size", "must be at least 1024 bytes".into());
        }
        for (option, value) in [
            ("max-connections", self.max_connections),
            ("max-frame-size", self.max_frame_size),
            ("max-body-size", self.max_body_size),
            ("max-headers", self.max_headers),
            ("max-header-length", self.max_header_length),
            ("max-subscriptions", self.max_subscriptions),
            ("max-temp-queues", self.max_temp_queues),
            ("max-transactions", self.max_transactions),
            ("max-transaction-frames", self.max_transaction_frames),
            ("max-transaction-bytes", self.max_transaction_bytes),
            ("max-staged-bytes", self.max_staged_bytes),
            ("outbound-buffer", self.outbound_buffer),
            ("max-queues", self.max_queues),
            ("queue-max-length", self.queue_max_length),
            ("queue-max-bytes", self.queue_max_bytes),
            ("default-prefetch", self.default_prefetch),
        ] {
            if value == 0 {
                return invalid(option, "must be greater than 0".into());
            }
        }
        if self.max_header_length < 64 {
            return invalid("max-header-length", "must be at least 64 bytes".into());
        }
        // The ceiling keeps "a day of heart-beats times the grace" a representable
        // deadline; a grace past a hundred intervals means heart-beats are not wanted.
        if !(1.0..=MAX_HEARTBEAT_GRACE).contains(&self.heartbeat_grace) {
            return invalid(
                "heartbeat-grace",
                format!("must be a number from 1.0 to {MAX_HEARTBEAT_GRACE}"),
            );
        }
        if self.lame_duck_ms >= self.drain_timeout_ms {
            return invalid(
                "lame-duck-ms",
                format!(
                    "must be shorter than drain-timeout-ms ({})",
                    self.drain_timeout_ms
                ),
            );
        }
        if self.outbound_stall_ms == 0 {
            return invalid("outbound-stall-ms", "must be greater than 0".into());
        }
        if self.connect_timeout_ms == 0 {
            return invalid("connect-timeout-ms", "must be greater than 0".into());
        }
        if self.auth_timeout_ms == 0 {
            return invalid("auth-timeout-ms", "must be greater than 0".into());
        }
        if Overflow::parse(&self.queue_overflow).is_none() {
            return invalid(
                "queue-overflow",
                format!(
                    "'{}' is not block, reject or drop-head",
                    self.queue_overflow
                ),
            );
        }
        if self.default_prefetch > MAX_PREFETCH {
            return invalid(
                "default-prefetch",
                format!("must be at most {MAX_PREFETCH}"),
            );
        }
        if self.dead_letter_suffix.is_empty()
            || self.dead_letter_suffix.chars().any(char::is_control)
        {
            return invalid(
                "dead-letter-suffix",
                "must be non-empty printable text".into(),
            );
        }
        if !self
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.node_id.len() > 64
        {
            return invalid("node-id", "use at most 64 letters, digits or _".into());
        }
        if let Err(error) = postbox_auth::Rules::new(&self.acl) {
            return invalid("acl", error.to_string());
        }
        if self.user_header.is_empty() {
            return invalid("user-header", "must not be empty".into());
        }
        let redis_url = ["redis://", "rediss://"]
            .iter()
            .any(|scheme| self.cluster.expose().starts_with(scheme));
        if !self.cluster.is_empty() && !redis_url {
            return invalid("cluster", "must be a redis:// or rediss:// URL".into());
        }
        if self.cluster_node_ttl_ms < 300 || self.cluster_claim_ms < 300 {
            return invalid(
                "cluster-node-ttl-ms",
                "cluster timings must be at least 300 ms".into(),
            );
        }
        if self
            .vhosts
            .iter()
            .any(|v| v.is_empty() || v.chars().any(char::is_control))
        {
            return invalid("vhosts", "names must be non-empty printable text".into());
        }
        Ok(())
    }

    /// Every listener: its transport and address (valid after [`Config::validate`]).
    pub fn listeners(&self) -> Vec<(Transport, SocketAddr)> {
        let parse = |transport, list: &Vec<String>| {
            list.iter()
                .filter_map(move |a| a.parse().ok().map(|addr| (transport, addr)))
                .collect::<Vec<_>>()
        };
        [
            parse(Transport::Stomp, &self.listen),
            parse(Transport::StompTls, &self.tls_listen),
            parse(Transport::Ws, &self.ws_listen),
            parse(Transport::Wss, &self.wss_listen),
            parse(Transport::Http, &self.http_listen),
        ]
        .concat()
    }

    /// Options whose values differ from `other`'s: (name, this value, other's value),
    /// secrets masked.
    pub fn differences(&self, other: &Config) -> Vec<(&'static str, String, String)> {
        let ours = toml::Table::try_from(self).expect("Config serializes to a table");
        let theirs = toml::Table::try_from(other).expect("Config serializes to a table");
        let (ours_shown, theirs_shown) = (self.shown(), other.shown());
        OPTIONS
            .iter()
            .filter(|spec| ours.get(spec.name) != theirs.get(spec.name))
            .map(|spec| {
                let show = |table: &toml::Table| {
                    table
                        .get(spec.name)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                };
                (spec.name, show(&ours_shown), show(&theirs_shown))
            })
            .collect()
    }

    /// The configuration as a TOML table fit to be shown: secrets are masked.
    fn shown(&self) -> toml::Table {
        let mut table = toml::Table::try_from(self).expect("Config serializes to a table");
        for (name, shown) in [
            ("admin-token", self.admin_token.to_string()),
            ("jwt-secret", self.jwt_secret.to_string()),
            ("cluster", self.cluster.to_string()),
            ("cluster-password", self.cluster_password.to_string()),
        ] {
            table.insert(name.to_owned(), toml::Value::String(shown));
        }
        table
    }

    /// Sets option `name` back to `other`'s value.
    pub fn restore(&mut self, name: &str, other: &Config) {
        let mut ours = toml::Table::try_from(&*self).expect("Config serializes to a table");
        let theirs = toml::Table::try_from(other).expect("Config serializes to a table");
        if let Some(value) = theirs.get(name) {
            ours.insert(name.to_owned(), value.clone());
            if let Ok(config) = Config::deserialize(toml::Value::Table(ours)) {
                *self = config;
            }
        }
    }

    /// The TLS files, when any listener needs them.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        (!self.tls_cert.is_empty() && !self.tls_key.is_empty()).then(|| TlsFiles {
            cert: self.tls_cert.clone().into(),
            key: self.tls_key.clone().into(),
            client_ca: (!self.tls_client_ca.is_empty()).then(|| self.tls_client_ca.clone().into()),
        })
    }

    /// `connect-timeout-ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The router settings for one virtual host.
    pub fn router_config(&self, vhost: &str, node_id: &str) -> RouterConfig {
        RouterConfig {
            vhost: vhost.to_owned(),
            node_id: node_id.to_owned(),
            queue: QueueSettings {
                max_length: self.queue_max_length,
                max_bytes: self.queue_max_bytes,
                overflow: Overflow::parse(&self.queue_overflow).unwrap_or(Overflow::Block),
                max_deliveries: self.max_deliveries,
                ttl: (self.queue_ttl_ms > 0).then(|| Duration::from_millis(self.queue_ttl_ms)),
                dead_letter: None,
            },
            dead_letter_suffix: self.dead_letter_suffix.clone(),
            default_prefetch: self.default_prefetch,
            max_queues: self.max_queues,
            budget: Default::default(),
        }
    }

    /// How to join the cluster, when one is configured.
    pub fn cluster_config(&self, node_id: &str) -> Option<postbox_cluster::ClusterConfig> {
        (!self.cluster.is_empty()).then(|| postbox_cluster::ClusterConfig {
            url: self.cluster.expose().to_owned(),
            password: (!self.cluster_password.is_empty())
                .then(|| self.cluster_password.expose().to_owned()),
            tls_ca: (!self.cluster_tls_ca.is_empty()).then(|| self.cluster_tls_ca.clone().into()),
            node_id: node_id.to_owned(),
            prefix: self.cluster_prefix.clone(),
            wait: self.cluster_wait,
            claim_idle: Duration::from_millis(self.cluster_claim_ms),
            node_ttl: Duration::from_millis(self.cluster_node_ttl_ms),
            queue_max_length: self.queue_max_length,
            queue_overflow: Overflow::parse(&self.queue_overflow).unwrap_or(Overflow::Block),
            store_timeout: Duration::from_millis(self.cluster_store_timeout_ms),
        })
    }

    /// `drain-timeout-ms` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Renders the configuration as TOML, each line commented with its source; secrets
    /// are masked, so the output is safe to paste into a bug report.
    pub fn to_annotated_toml(&self, sources: &BTreeMap<&'static str, Source>) -> String {
        let table = self.shown();
        let mut out = String::new();
        for spec in OPTIONS {
            let value = table
                .get(spec.name)
                .map(ToString::to_string)
                .unwrap_or_default();
            let source = sources.get(spec.name).cloned().unwrap_or(Source::Default);
            out.push_str(&format!("{} = {value}  # {source}\n", spec.name));
        }
        out
    }
}

/// The configuration reference in Markdown, generated from [`OPTIONS`].
pub fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `postbox config-reference` from the option table in\n\
         `crates/broker/src/config/options.rs`; a test fails when this file and the code differ.\n\n",
    );
    out.push_str(PRECEDENCE);
    out.push_str(
        "\n\nLists are TOML arrays in the file and comma-separated in flags and variables; \
         `acl` is a TOML array of tables everywhere. Options marked *reload* take effect on \
         SIGHUP for connections made afterwards; the others need a restart, and a reload \
         that changes one logs a warning and keeps the running value. A reload that would \
         turn authentication off (no users file and no JWT keys left where there were \
         some), or leave a non-loopback listener without authentication and without \
         allow-anonymous, is refused as a whole with an error in the log, and so is one \
         whose users file or keys cannot be read.\n\n",
    );
    out.push_str("| Option | Variable | Type | Default | | Meaning |\n|---|---|---|---|---|---|\n");
    for spec in OPTIONS {
        let kind = match spec.kind {
            ValueKind::Bool => "bool",
            ValueKind::Int => "integer",
            ValueKind::Float => "number",
            ValueKind::Str => "string",
            ValueKind::List => "list",
            ValueKind::Rules => "rules",
        };
        let reload = if reloadable(spec.name) { "reload" } else { "" };
        out.push_str(&format!(
            "| `{}` | `{}` | {kind} | `{}` | {reload} | {} |\n",
            spec.name,
            spec.env_var(),
            spec.default,
            spec.help.replace('|', "\\|")
        ));
    }
    out
}

/// Whether a change to option `name` can take effect without a restart (on SIGHUP).
/// Limits, heart-beats and authentication apply to connections made after the reload;
/// listeners, the cluster, virtual hosts, queues' policies and logging need a restart.
pub fn reloadable(name: &str) -> bool {
    matches!(
        name,
        "allow-anonymous"
            | "users-file"
            | "jwt-secret"
            | "jwt-public-keys"
            | "jwt-jwks-file"
            | "jwt-issuers"
            | "jwt-audiences"
            | "jwt-leeway-s"
            | "jwt-require-exp"
            | "jwt-user-claim"
            | "jwt-roles-claim"
            | "jwt-permissions-claim"
            | "acl"
            | "user-header"
            | "max-connections"
            | "max-frame-size"
            | "max-body-size"
            | "max-headers"
            | "max-header-length"
            | "max-subscriptions"
            | "max-temp-queues"
            | "max-transactions"
            | "max-transaction-frames"
            | "max-transaction-bytes"
            | "max-staged-bytes"
            | "connect-timeout-ms"
            | "auth-timeout-ms"
            | "max-login-failures"
            | "outbound-buffer"
            | "outbound-stall-ms"
            | "tcp-keepalive-s"
            | "memory-high-watermark"
            | "heartbeat-send-ms"
            | "heartbeat-receive-ms"
            | "heartbeat-grace"
            | "drain-timeout-ms"
            | "lame-duck-ms"
    )
}

/// The clap command: one flag per option, plus `--config` and the subcommands.
pub fn command() -> clap::Command {
    let mut command = clap::Command::new("postbox")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Postbox, a STOMP 1.2 message broker")
        .after_help(PRECEDENCE)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .global(true)
                .help("Read options from this TOML file"),
        )
        .subcommand(
            clap::Command::new("print-config")
                .about("Print the effective configuration and where each value came from"),
        )
        .subcommand(
            clap::Command::new("healthcheck")
                .about(
                    "Exit 0 if a broker's HTTP endpoint answers 200 (for container health checks)",
                )
                .arg(
                    Arg::new("url")
                        .default_value("http://127.0.0.1:8080/readyz")
                        .value_name("URL"),
                ),
        )
        .subcommand(
            clap::Command::new("config-reference")
                .about("Print the reference of every option in Markdown (docs/configuration.md)"),
        )
        .subcommand(clap::Command::new("hash-password").about(
            "Read a password from standard input and print its argon2id hash for a users file",
        ))
        .subcommand(
            clap::Command::new("check-config")
                .about("Validate a configuration file without starting the broker")
                .arg(Arg::new("file").required(true).value_name("FILE")),
        );
    for spec in OPTIONS {
        command = command.arg(flag(spec));
    }
    command
}

fn flag(spec: &'static OptionSpec) -> Arg {
    let help = format!(
        "{} [env: {}] [default: {}]",
        spec.help,
        spec.env_var(),
        spec.default
    );
    let arg = Arg::new(spec.name).long(spec.name).global(true).help(help);
    match spec.kind {
        // `--flag` alone means true; `--flag=false` turns a default-true option off.
        ValueKind::Bool => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_name("BOOL"),
        ValueKind::Rules => arg.value_name("TOML"),
        ValueKind::List => arg
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_name("LIST"),
        ValueKind::Int => arg.value_name("N"),
        ValueKind::Float => arg.value_name("X"),
        ValueKind::Str => arg.value_name("TEXT"),
    }
}

/// Reads the configuration from command-line arguments (program name first) and the
/// environment, as looked up by `env`.
pub fn load<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let (action, file) = match matches.subcommand() {
        Some(("print-config", _)) => (Action::PrintConfig, config_path(&matches)),
        Some(("hash-password", _)) => (Action::HashPassword, None),
        Some(("config-reference", _)) => (Action::ConfigReference, None),
        Some(("healthcheck", sub)) => {
            let url = sub.get_one::<String>("url").cloned().unwrap_or_default();
            (Action::Healthcheck(url), None)
        }
        Some(("check-config", sub)) => {
            let file: PathBuf = sub.get_one::<String>("file").expect("required").into();
            (Action::CheckConfig(file.clone()), Some(file))
        }
        _ => (Action::Run, config_path(&matches)),
    };

    let mut table = toml::Table::new();
    let mut sources = BTreeMap::new();
    for spec in OPTIONS {
        table.insert(spec.name.into(), default_value(spec));
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

fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    matches.get_one::<String>("config").map(PathBuf::from)
}

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

fn default_value(spec: &OptionSpec) -> toml::Value {
    let doc: toml::Table = format!("v = {}", spec.default)
        .parse()
        .expect("defaults in the option table are TOML literals");
    doc["v"].clone()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = std::iter::once("postbox").chain(args.iter().copied());
        load(args, |var| env.get(var).cloned())
    }

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

    #[test]
    fn defaults_listen_on_loopback_61613() {
        let loaded = load_with(&[], &[]).unwrap();
        assert_eq!(loaded.config.listen, ["127.0.0.1:61613"]);
        assert_eq!(loaded.action, Action::Run);
        assert!(loaded.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_the_environment() {
        let dir = std::env::temp_dir().join(format!("postbox-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
        std::fs::remove_dir_all(dir).unwrap();
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
        for bad in ["0.5", "100.5", "1e300", "inf", "NaN"] {
            let error = load_with(&["--heartbeat-grace", bad], &[]).unwrap_err();
            assert!(
                error.to_string().contains("heartbeat-grace"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("postbox-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "max-headerz = 1\n").unwrap();
        let error = load_with(&["check-config", file.to_str().unwrap()], &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown option 'max-headerz'"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    const SECRETS: [&str; 4] = [
        "jwt-secret-value-0123456789abcdef0123",
        "admin-token-value",
        "redis-url-password",
        "cluster-password-value",
    ];

    #[test]
    fn secrets_are_masked_in_print_config_debug_and_differences() {
        let url = format!("redis://postbox:{}@10.0.0.5:6379", SECRETS[2]);
        let loaded = load_with(
            &["--admin-token", SECRETS[1], "--cluster", &url],
            &[
                ("POSTBOX_JWT_SECRET", SECRETS[0]),
                ("POSTBOX_CLUSTER_PASSWORD", SECRETS[3]),
            ],
        )
        .unwrap();
        assert_eq!(loaded.config.jwt_secret.expose(), SECRETS[0]);
        assert_eq!(loaded.config.cluster.expose(), url);
        let printed = loaded.config.to_annotated_toml(&loaded.sources);
        let debug = format!("{loaded:?}");
        let differences = format!("{:?}", Config::defaults().differences(&loaded.config));
        let cluster = format!("{:?}", loaded.config.cluster_config("n1"));
        for text in [&printed, &debug, &differences, &cluster] {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
        assert!(
            printed.contains("jwt-secret = \"****\"  # env POSTBOX_JWT_SECRET"),
            "{printed}"
        );
        assert!(
            printed.contains("admin-token = \"****\"  # flag"),
            "{printed}"
        );
        assert!(
            printed.contains("cluster = \"redis://postbox:****@10.0.0.5:6379\"  # flag"),
            "{printed}"
        );
        assert!(printed.contains("cluster-password = \"****\""), "{printed}");
        // An unset secret shows as unset.
        let defaults = Config::defaults().to_annotated_toml(&BTreeMap::new());
        assert!(
            defaults.contains("jwt-secret = \"\"  # default"),
            "{defaults}"
        );
        let changed = Config::defaults().differences(&loaded.config);
        let jwt = changed
            .iter()
            .find(|(name, _, _)| *name == "jwt-secret")
            .unwrap();
        assert_eq!((jwt.1.as_str(), jwt.2.as_str()), (r#""""#, r#""****""#));
    }

    #[test]
    fn config_file_errors_do_not_quote_secrets() {
        let dir =
            std::env::temp_dir().join(format!("postbox-config-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unterminated = dir.join("unterminated.toml");
        std::fs::write(
            &unterminated,
            format!("max-headers = 10\njwt-secret = \"{}\n", SECRETS[0]),
        )
        .unwrap();
        let wrong_type = dir.join("wrong-type.toml");
        std::fs::write(&wrong_type, "admin-token = 9876543210\n").unwrap();
        for (file, secret) in [(&unterminated, SECRETS[0]), (&wrong_type, "9876543210")] {
            let error = load_with(&["check-config", file.to_str().unwrap()], &[]).unwrap_err();
            let text = format!("{error} {error:?}");
            assert!(!text.contains(secret), "{text}");
        }
        let error = load_with(&["check-config", unterminated.to_str().unwrap()], &[]).unwrap_err();
        assert!(error.to_string().contains("line 2, column"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn help_documents_every_option_and_the_precedence() {
        let help = command().render_long_help().to_string();
        for spec in OPTIONS {
            assert!(help.contains(&format!("--{}", spec.name)), "{}", spec.name);
            assert!(help.contains(&spec.env_var()), "{}", spec.name);
        }
        assert!(help.contains("Precedence"));
    }
}
