//! The table of every configuration option: its one name (used as the TOML key, the
//! flag `--name` and the variable `POSTBOX_NAME`), its type, default and meaning.
//!
//! This table is the single source of truth: the CLI, the environment and the TOML file
//! are all read through it, and a test checks it against [`Config`](super::Config).

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
}

const fn opt(
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
    }
}

/// Every option, in the order `--help` and the docs list them.
pub const OPTIONS: &[OptionSpec] = &[
    opt(
        "listen",
        ValueKind::List,
        r#"["127.0.0.1:61613"]"#,
        "Addresses for STOMP over TCP (host:port; port 0 picks a free one).",
    ),
    opt(
        "tls-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over TLS (61614 is the usual port); needs tls-cert and tls-key.",
    ),
    opt(
        "ws-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over WebSocket (15674 is the usual port); also answers GET \
         /healthz and /readyz.",
    ),
    opt(
        "wss-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over WebSocket over TLS; needs tls-cert and tls-key.",
    ),
    opt(
        "http-listen",
        ValueKind::List,
        "[]",
        "Addresses for plain HTTP: /healthz, /readyz, /metrics and the admin API.",
    ),
    opt(
        "ws-http-endpoints",
        ValueKind::Bool,
        "false",
        "Also serve /metrics and the admin API on ws-listen and wss-listen addresses. Off, \
         those answer only the STOMP path, /healthz and /readyz (for load balancers that \
         probe the traffic port), and 404 to anything else.",
    ),
    opt(
        "admin-token",
        ValueKind::Str,
        r#""""#,
        "Bearer token for the admin API. Prefer the environment variable to the flag.",
    ),
    opt(
        "admin-role",
        ValueKind::Str,
        r#""admin""#,
        "A JWT whose roles claim includes this role may use the admin API.",
    ),
    opt(
        "metrics-queue-top",
        ValueKind::Int,
        "20",
        "Per-queue metrics cover at most this many queues, the deepest, so label \
         cardinality stays bounded; totals cover all.",
    ),
    opt(
        "tls-cert",
        ValueKind::Str,
        r#""""#,
        "PEM certificate chain, leaf first (certbot's fullchain.pem). Reloaded when it changes.",
    ),
    opt(
        "tls-key",
        ValueKind::Str,
        r#""""#,
        "PEM private key (certbot's privkey.pem). Reloaded when it changes.",
    ),
    opt(
        "tls-client-ca",
        ValueKind::Str,
        r#""""#,
        "PEM CA certificates; when set, TLS clients must present a certificate issued by one.",
    ),
    opt(
        "tls-reload-ms",
        ValueKind::Int,
        "5000",
        "How often the certificate files are checked for changes (0: only on SIGHUP).",
    ),
    opt(
        "ws-path",
        ValueKind::Str,
        r#""/ws""#,
        "The HTTP path that upgrades to STOMP over WebSocket.",
    ),
    opt(
        "ws-max-message-size",
        ValueKind::Int,
        "16777216",
        "Largest WebSocket message in bytes.",
    ),
    opt(
        "ws-allowed-origins",
        ValueKind::List,
        "[]",
        "Origins allowed to open WebSockets (e.g. https://chat.example.com); others get \
         HTTP 403. Empty allows any origin.",
    ),
    opt(
        "allow-anonymous",
        ValueKind::Bool,
        "false",
        "Allow listening on a non-loopback address without authentication configured; with \
         authentication configured, let clients without credentials in as user anonymous.",
    ),
    opt(
        "users-file",
        ValueKind::Str,
        r#""""#,
        "TOML file of users with argon2 or bcrypt password hashes (see `postbox hash-password`); \
         enables login/passcode authentication.",
    ),
    opt(
        "jwt-secret",
        ValueKind::Str,
        r#""""#,
        "Shared secret for HS256/HS384/HS512 tokens; enables JWT authentication. Prefer the \
         environment variable to the flag, which other users can see.",
    ),
    opt(
        "jwt-public-keys",
        ValueKind::List,
        "[]",
        "PEM public key files (RSA, EC or Ed25519) for RS*/PS*/ES*/EdDSA tokens.",
    ),
    opt(
        "jwt-jwks-file",
        ValueKind::Str,
        r#""""#,
        "A JWKS file; keys are chosen by the token's kid.",
    ),
    opt(
        "jwt-issuers",
        ValueKind::List,
        "[]",
        "Accepted iss values (empty: any).",
    ),
    opt(
        "jwt-audiences",
        ValueKind::List,
        "[]",
        "Accepted aud values (empty: any).",
    ),
    opt(
        "jwt-leeway-s",
        ValueKind::Int,
        "30",
        "Clock skew tolerated on exp and nbf, in seconds.",
    ),
    opt(
        "jwt-require-exp",
        ValueKind::Bool,
        "true",
        "Refuse tokens without exp.",
    ),
    opt(
        "jwt-user-claim",
        ValueKind::Str,
        r#""sub""#,
        "The claim that names the user.",
    ),
    opt(
        "jwt-roles-claim",
        ValueKind::Str,
        r#""roles""#,
        "The claim listing the user's roles (matched by acl rules).",
    ),
    opt(
        "jwt-permissions-claim",
        ValueKind::Str,
        r#""scope""#,
        "The claim with read:<pattern> and write:<pattern> scopes.",
    ),
    opt(
        "jwt-query-param",
        ValueKind::Str,
        r#""access_token""#,
        "Query parameter of the WebSocket URL that may carry the token, for browser clients \
         that cannot set headers (empty: none).",
    ),
    opt(
        "acl",
        ValueKind::Rules,
        "[]",
        "Access rules: [{user = \"alice\" or role = \"chat\" or user = \"*\", read = [patterns], \
         write = [patterns]}]. Patterns are destinations with * and # words, or # for all.",
    ),
    opt(
        "user-header",
        ValueKind::Str,
        r#""user-id""#,
        "Header stamped on every MESSAGE with the sender's authenticated name; a value the \
         client sent is replaced.",
    ),
    opt(
        "cluster",
        ValueKind::Str,
        r#""""#,
        "Redis URL (redis://host:port, rediss:// for TLS) of the cluster to join; empty runs \
         alone.",
    ),
    opt(
        "cluster-password",
        ValueKind::Str,
        r#""""#,
        "Redis password, if not in the URL.",
    ),
    opt(
        "cluster-tls-ca",
        ValueKind::Str,
        r#""""#,
        "PEM CA certificates to trust for rediss:// (default: the system's).",
    ),
    opt(
        "cluster-wait",
        ValueKind::Bool,
        "false",
        "At start, wait for Redis instead of failing when it cannot be reached.",
    ),
    opt(
        "cluster-prefix",
        ValueKind::Str,
        r#""postbox""#,
        "Prefix of the cluster's Redis keys and channels, so clusters can share a Redis.",
    ),
    opt(
        "cluster-claim-ms",
        ValueKind::Int,
        "30000",
        "Queue messages held this long by a node that stopped responding are delivered by \
         another node.",
    ),
    opt(
        "cluster-node-ttl-ms",
        ValueKind::Int,
        "5000",
        "A node silent this long is considered gone; its subscribers stop counting.",
    ),
    opt(
        "cluster-store-timeout-ms",
        ValueKind::Int,
        "5000",
        "How long a SEND to a cluster queue waits for Redis before it is refused.",
    ),
    opt(
        "vhosts",
        ValueKind::List,
        "[]",
        "Virtual hosts selected by the CONNECT host header. Empty: one host, any name accepted.",
    ),
    opt(
        "max-connections",
        ValueKind::Int,
        "10000",
        "Most client connections at once; more are refused with an ERROR frame.",
    ),
    opt(
        "max-frame-size",
        ValueKind::Int,
        "8454144",
        "Largest frame in bytes, headers and body together.",
    ),
    opt(
        "max-body-size",
        ValueKind::Int,
        "8388608",
        "Largest frame body in bytes.",
    ),
    opt(
        "max-headers",
        ValueKind::Int,
        "1000",
        "Most header lines in one frame, as RabbitMQ and ActiveMQ allow; max-header-length \
         and max-frame-size bound their bytes.",
    ),
    opt(
        "max-header-length",
        ValueKind::Int,
        "16384",
        "Longest header line in bytes.",
    ),
    opt(
        "max-subscriptions",
        ValueKind::Int,
        "1024",
        "Most subscriptions on one connection.",
    ),
    opt(
        "max-temp-queues",
        ValueKind::Int,
        "64",
        "Most temporary queues (/temp-queue/ names, in SUBSCRIBE, SEND or reply-to) on one \
         connection; the subscriptions reply-to makes for them count against \
         max-subscriptions too.",
    ),
    opt(
        "max-transactions",
        ValueKind::Int,
        "64",
        "Most transactions open at once on one connection.",
    ),
    opt(
        "max-transaction-frames",
        ValueKind::Int,
        "10000",
        "Most frames (SEND, ACK, NACK) staged in one transaction.",
    ),
    opt(
        "max-transaction-bytes",
        ValueKind::Int,
        "16777216",
        "Most bytes (bodies and headers) of the frames staged in one transaction; past it \
         the client gets an ERROR and the transaction is dropped.",
    ),
    opt(
        "max-staged-bytes",
        ValueKind::Int,
        "33554432",
        "Most bytes staged in all open transactions of one connection together.",
    ),
    opt(
        "connect-timeout-ms",
        ValueKind::Int,
        "10000",
        "Time a new connection has to send CONNECT.",
    ),
    opt(
        "auth-timeout-ms",
        ValueKind::Int,
        "5000",
        "Time a password check may take, waiting for its turn included; password checks \
         run one per core at a time, and a CONNECT that gets no turn in time is refused \
         as server busy.",
    ),
    opt(
        "max-login-failures",
        ValueKind::Int,
        "10",
        "Failed password checks allowed for one login from one address within a minute; \
         further attempts are refused unchecked until the minute is over (0: no limit).",
    ),
    opt(
        "outbound-buffer",
        ValueKind::Int,
        "8388608",
        "Bytes that may wait to be written to one connection; past it the client is \
         disconnected as a slow consumer.",
    ),
    opt(
        "tcp-keepalive-s",
        ValueKind::Int,
        "60",
        "Idle seconds before the kernel probes a quiet client connection; a peer that \
         answers none of 6 probes 10 s apart is closed (0: no keepalive). Finds dead \
         peers that negotiated no heart-beats.",
    ),
    opt(
        "outbound-stall-ms",
        ValueKind::Int,
        "10000",
        "Time a connection past its outbound buffer may go without reading anything \
         before it is closed as a slow consumer; meanwhile its frames are not read.",
    ),
    opt(
        "memory-high-watermark",
        ValueKind::Int,
        "0",
        "Resident memory in bytes above which publishers are paused (their SENDs wait, \
         their sockets are not read) until it falls below 95% of it; consumers keep \
         draining. 0: 40% of the machine's memory, or of the cgroup's limit.",
    ),
    opt(
        "max-queues",
        ValueKind::Int,
        "100000",
        "Most queues in one virtual host, temporary queues included; a SEND or SUBSCRIBE \
         that would create one more gets an ERROR. Idle queues (no messages, no \
         consumers) are forgotten and do not count.",
    ),
    opt(
        "queue-max-length",
        ValueKind::Int,
        "100000",
        "Most ready messages in one queue.",
    ),
    opt(
        "queue-max-bytes",
        ValueKind::Int,
        "67108864",
        "Most bytes of ready messages in one queue, headers as well as bodies.",
    ),
    opt(
        "max-queued-bytes",
        ValueKind::Int,
        "0",
        "Most bytes of messages (headers and bodies, waiting or awaiting acknowledgement) \
         held by all queues of all virtual hosts together. A SEND that would pass it is \
         handled as one to a full queue, by `queue-overflow`. 0: a quarter of the \
         machine's memory, or of the cgroup's limit. Not changed by a reload.",
    ),
    opt(
        "queue-overflow",
        ValueKind::Str,
        r#""block""#,
        "When a queue is full: block (stop reading the producer until there is room), \
         reject (ERROR to the producer) or drop-head (drop the oldest message).",
    ),
    opt(
        "queue-ttl-ms",
        ValueKind::Int,
        "0",
        "Time a message may wait in a queue before it expires (0: forever). A SUBSCRIBE \
         that creates a queue may set its own with x-message-ttl.",
    ),
    opt(
        "max-deliveries",
        ValueKind::Int,
        "10",
        "Deliveries after which a message that keeps coming back moves to the dead-letter \
         queue (0: never).",
    ),
    opt(
        "dead-letter-suffix",
        ValueKind::Str,
        r#"".dlq""#,
        "The dead-letter queue of /queue/NAME is /queue/NAME plus this suffix.",
    ),
    opt(
        "default-prefetch",
        ValueKind::Int,
        "1000",
        "Unacknowledged messages per subscription when SUBSCRIBE has no prefetch-count.",
    ),
    opt(
        "heartbeat-send-ms",
        ValueKind::Int,
        "10000",
        "Shortest interval at which the server offers to send heart-beats (0: never).",
    ),
    opt(
        "heartbeat-receive-ms",
        ValueKind::Int,
        "10000",
        "Shortest interval at which the server asks clients for heart-beats (0: never).",
    ),
    opt(
        "heartbeat-grace",
        ValueKind::Float,
        "1.5",
        "A client silent for this many negotiated heart-beat intervals is disconnected (1 to 100).",
    ),
    opt(
        "drain-timeout-ms",
        ValueKind::Int,
        "10000",
        "On SIGINT/SIGTERM, how long connections get to flush before the process exits.",
    ),
    opt(
        "lame-duck-ms",
        ValueKind::Int,
        "3000",
        "On shutdown, connections are sent away one by one over this window (within the \
         drain timeout), so a cluster's clients reconnect elsewhere gradually.",
    ),
    opt(
        "log-format",
        ValueKind::Str,
        r#""human""#,
        "Log format: human or json.",
    ),
    opt(
        "log-level",
        ValueKind::Str,
        r#""info""#,
        "Log filter when RUST_LOG is not set (tracing-subscriber EnvFilter syntax).",
    ),
    opt(
        "node-id",
        ValueKind::Str,
        r#""""#,
        "This broker's id in message ids and logs; empty picks a random one at start.",
    ),
];

/// The option called `name`.
pub fn find(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.name == name)
}
