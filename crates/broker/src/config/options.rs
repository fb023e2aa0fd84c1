//! The table of every configuration option: its one name (used as the TOML key, the
//! flag `--name` and the variable `POSTBOX_NAME`), its type, default and meaning,
//! whether a reload applies it, and whether its value is a secret.
//!
//! This table is the single source of truth: the CLI, the environment and the TOML file
//! are all read through it, and a test checks it against [`Config`](super::Config).

pub use super::spec::{OptionSpec, Reload, Secrecy, ValueKind};

use super::spec::{live, restart};

/// Every option, in the order `--help` and the docs list them.
pub const OPTIONS: &[OptionSpec] = &[
    restart(
        "listen",
        ValueKind::List,
        r#"["127.0.0.1:61613"]"#,
        "Addresses for STOMP over TCP (host:port; port 0 picks a free one).",
    ),
    restart(
        "tls-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over TLS (61614 is the usual port); needs tls-cert and tls-key.",
    ),
    restart(
        "ws-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over WebSocket (15674 is the usual port); also answers GET \
         /healthz and /readyz.",
    ),
    restart(
        "wss-listen",
        ValueKind::List,
        "[]",
        "Addresses for STOMP over WebSocket over TLS; needs tls-cert and tls-key.",
    ),
    restart(
        "http-listen",
        ValueKind::List,
        "[]",
        "Addresses for plain HTTP: /healthz, /readyz, /metrics and the admin API.",
    ),
    restart(
        "ws-http-endpoints",
        ValueKind::Bool,
        "false",
        "Also serve /metrics and the admin API on ws-listen and wss-listen addresses. Off, \
         those answer only the STOMP path, /healthz and /readyz (for load balancers that \
         probe the traffic port), and 404 to anything else.",
    ),
    restart(
        "admin-token",
        ValueKind::Str,
        r#""""#,
        "Bearer token for the admin API. Prefer the environment variable to the flag.",
    )
    .secret(),
    restart(
        "admin-role",
        ValueKind::Str,
        r#""admin""#,
        "A JWT whose roles claim includes this role may use the admin API.",
    ),
    restart(
        "metrics-queue-top",
        ValueKind::Int,
        "20",
        "Per-queue metrics cover at most this many queues, the deepest, so label \
         cardinality stays bounded; totals cover all.",
    ),
    restart(
        "tls-cert",
        ValueKind::Str,
        r#""""#,
        "PEM certificate chain, leaf first (certbot's fullchain.pem). Reloaded when it changes.",
    ),
    restart(
        "tls-key",
        ValueKind::Str,
        r#""""#,
        "PEM private key (certbot's privkey.pem). Reloaded when it changes.",
    ),
    restart(
        "tls-client-ca",
        ValueKind::Str,
        r#""""#,
        "PEM CA certificates; when set, TLS clients must present a certificate issued by one.",
    ),
    restart(
        "tls-reload-ms",
        ValueKind::Int,
        "5000",
        "How often the certificate files are checked for changes (0: only on SIGHUP).",
    ),
    restart(
        "ws-path",
        ValueKind::Str,
        r#""/ws""#,
        "The HTTP path that upgrades to STOMP over WebSocket.",
    ),
    restart(
        "ws-max-message-size",
        ValueKind::Int,
        "16777216",
        "Largest WebSocket message in bytes.",
    ),
    restart(
        "ws-allowed-origins",
        ValueKind::List,
        "[]",
        "Origins allowed to open WebSockets (e.g. https://chat.example.com); others get \
         HTTP 403. Empty allows any origin.",
    ),
    live(
        "allow-anonymous",
        ValueKind::Bool,
        "false",
        "Allow listening on a non-loopback address without authentication configured; with \
         authentication configured, let clients without credentials in as user anonymous.",
    ),
    live(
        "users-file",
        ValueKind::Str,
        r#""""#,
        "TOML file of users with argon2 or bcrypt password hashes (see `postbox hash-password`); \
         enables login/passcode authentication.",
    ),
    live(
        "jwt-secret",
        ValueKind::Str,
        r#""""#,
        "Shared secret for HS256/HS384/HS512 tokens; enables JWT authentication. Prefer the \
         environment variable to the flag, which other users can see.",
    )
    .secret(),
    live(
        "jwt-public-keys",
        ValueKind::List,
        "[]",
        "PEM public key files (RSA, EC or Ed25519) for RS*/PS*/ES*/EdDSA tokens.",
    ),
    live(
        "jwt-jwks-file",
        ValueKind::Str,
        r#""""#,
        "A JWKS file; keys are chosen by the token's kid.",
    ),
    live(
        "jwt-issuers",
        ValueKind::List,
        "[]",
        "Accepted iss values (empty: any).",
    ),
    live(
        "jwt-audiences",
        ValueKind::List,
        "[]",
        "Accepted aud values (empty: any).",
    ),
    live(
        "jwt-leeway-s",
        ValueKind::Int,
        "30",
        "Clock skew tolerated on exp and nbf, in seconds.",
    ),
    live(
        "jwt-require-exp",
        ValueKind::Bool,
        "true",
        "Refuse tokens without exp.",
    ),
    live(
        "jwt-user-claim",
        ValueKind::Str,
        r#""sub""#,
        "The claim that names the user.",
    ),
    live(
        "jwt-roles-claim",
        ValueKind::Str,
        r#""roles""#,
        "The claim listing the user's roles (matched by acl rules).",
    ),
    live(
        "jwt-permissions-claim",
        ValueKind::Str,
        r#""scope""#,
        "The claim with read:<pattern> and write:<pattern> scopes.",
    ),
    restart(
        "jwt-query-param",
        ValueKind::Str,
        r#""access_token""#,
        "Query parameter of the WebSocket URL that may carry the token, for browser clients \
         that cannot set headers (empty: none).",
    ),
    live(
        "acl",
        ValueKind::Rules,
        "[]",
        "Access rules: [{user = \"alice\" or role = \"chat\" or user = \"*\", read = [patterns], \
         write = [patterns]}]. Patterns are destinations with * and # words, or # for all.",
    ),
    live(
        "user-header",
        ValueKind::Str,
        r#""user-id""#,
        "Header stamped on every MESSAGE with the sender's authenticated name; a value the \
         client sent is replaced.",
    ),
    restart(
        "cluster",
        ValueKind::Str,
        r#""""#,
        "Redis URL (redis://host:port, rediss:// for TLS) of the cluster to join; empty runs \
         alone.",
    )
    .secret_url(),
    restart(
        "cluster-password",
        ValueKind::Str,
        r#""""#,
        "Redis password, if not in the URL.",
    )
    .secret(),
    restart(
        "cluster-tls-ca",
        ValueKind::Str,
        r#""""#,
        "PEM CA certificates to trust for rediss:// (default: the system's).",
    ),
    restart(
        "cluster-wait",
        ValueKind::Bool,
        "false",
        "At start, wait for Redis instead of failing when it cannot be reached.",
    ),
    restart(
        "cluster-prefix",
        ValueKind::Str,
        r#""postbox""#,
        "Prefix of the cluster's Redis keys and channels, so clusters can share a Redis.",
    ),
    restart(
        "cluster-claim-ms",
        ValueKind::Int,
        "30000",
        "Queue messages held this long by a node that stopped responding are delivered by \
         another node.",
    ),
    restart(
        "cluster-node-ttl-ms",
        ValueKind::Int,
        "5000",
        "A node silent this long is considered gone; its subscribers stop counting.",
    ),
    restart(
        "cluster-store-timeout-ms",
        ValueKind::Int,
        "5000",
        "How long a SEND to a cluster queue waits for Redis before it is refused.",
    ),
    restart(
        "vhosts",
        ValueKind::List,
        "[]",
        "Virtual hosts selected by the CONNECT host header. Empty: one host, any name accepted.",
    ),
    live(
        "max-connections",
        ValueKind::Int,
        "10000",
        "Most client connections at once; more are refused with an ERROR frame.",
    ),
    live(
        "max-frame-size",
        ValueKind::Int,
        "8454144",
        "Largest frame in bytes, headers and body together.",
    ),
    live(
        "max-body-size",
        ValueKind::Int,
        "8388608",
        "Largest frame body in bytes.",
    ),
    live(
        "max-headers",
        ValueKind::Int,
        "1000",
        "Most header lines in one frame, as RabbitMQ and ActiveMQ allow; max-header-length \
         and max-frame-size bound their bytes.",
    ),
    live(
        "max-header-length",
        ValueKind::Int,
        "16384",
        "Longest header line in bytes.",
    ),
    live(
        "max-subscriptions",
        ValueKind::Int,
        "1024",
        "Most subscriptions on one connection.",
    ),
    live(
        "max-temp-queues",
        ValueKind::Int,
        "64",
        "Most temporary queues (/temp-queue/ names, in SUBSCRIBE, SEND or reply-to) on one \
         connection; the subscriptions reply-to makes for them count against \
         max-subscriptions too.",
    ),
    live(
        "max-transactions",
        ValueKind::Int,
        "64",
        "Most transactions open at once on one connection.",
    ),
    live(
        "max-transaction-frames",
        ValueKind::Int,
        "10000",
        "Most frames (SEND, ACK, NACK) staged in one transaction.",
    ),
    live(
        "max-transaction-bytes",
        ValueKind::Int,
        "16777216",
        "Most bytes (bodies and headers) of the frames staged in one transaction; past it \
         the client gets an ERROR and the transaction is dropped.",
    ),
    live(
        "max-staged-bytes",
        ValueKind::Int,
        "33554432",
        "Most bytes staged in all open transactions of one connection together.",
    ),
    live(
        "connect-timeout-ms",
        ValueKind::Int,
        "10000",
        "Time a new connection has to send CONNECT.",
    ),
    live(
        "auth-timeout-ms",
        ValueKind::Int,
        "5000",
        "Time a password check may take, waiting for its turn included; password checks \
         run one per core at a time, and a CONNECT that gets no turn in time is refused \
         as server busy.",
    ),
    live(
        "max-login-failures",
        ValueKind::Int,
        "10",
        "Failed password checks allowed for one login from one address within a minute; \
         further attempts are refused unchecked until the minute is over (0: no limit).",
    ),
    live(
        "outbound-buffer",
        ValueKind::Int,
        "8388608",
        "Bytes that may wait to be written to one connection; past it the client is \
         disconnected as a slow consumer.",
    ),
    live(
        "tcp-keepalive-s",
        ValueKind::Int,
        "60",
        "Idle seconds before the kernel probes a quiet client connection; a peer that \
         answers none of 6 probes 10 s apart is closed (0: no keepalive). Finds dead \
         peers that negotiated no heart-beats.",
    ),
    live(
        "outbound-stall-ms",
        ValueKind::Int,
        "10000",
        "Time a connection past its outbound buffer may go without reading anything \
         before it is closed as a slow consumer; meanwhile its frames are not read.",
    ),
    live(
        "memory-high-watermark",
        ValueKind::Int,
        "0",
        "Resident memory in bytes above which publishers are paused (their SENDs wait, \
         their sockets are not read) until it falls below 95% of it; consumers keep \
         draining. 0: 40% of the machine's memory, or of the cgroup's limit.",
    ),
    restart(
        "max-queues",
        ValueKind::Int,
        "100000",
        "Most queues in one virtual host, temporary queues included; a SEND or SUBSCRIBE \
         that would create one more gets an ERROR. Idle queues (no messages, no \
         consumers) are forgotten and do not count.",
    ),
    restart(
        "queue-max-length",
        ValueKind::Int,
        "100000",
        "Most ready messages in one queue.",
    ),
    restart(
        "queue-max-bytes",
        ValueKind::Int,
        "67108864",
        "Most bytes of ready messages in one queue, headers as well as bodies.",
    ),
    restart(
        "max-queued-bytes",
        ValueKind::Int,
        "0",
        "Most bytes of messages (headers and bodies, waiting or awaiting acknowledgement) \
         held by all queues of all virtual hosts together. A SEND that would pass it is \
         handled as one to a full queue, by `queue-overflow`. 0: a quarter of the \
         machine's memory, or of the cgroup's limit. Not changed by a reload.",
    ),
    restart(
        "queue-overflow",
        ValueKind::Str,
        r#""block""#,
        "When a queue is full: block (stop reading the producer until there is room), \
         reject (ERROR to the producer) or drop-head (drop the oldest message).",
    ),
    restart(
        "queue-ttl-ms",
        ValueKind::Int,
        "0",
        "Time a message may wait in a queue before it expires (0: forever). A SUBSCRIBE \
         that creates a queue may set its own with x-message-ttl.",
    ),
    restart(
        "max-deliveries",
        ValueKind::Int,
        "10",
        "Deliveries after which a message that keeps coming back moves to the dead-letter \
         queue (0: never).",
    ),
    restart(
        "dead-letter-suffix",
        ValueKind::Str,
        r#"".dlq""#,
        "The dead-letter queue of /queue/NAME is /queue/NAME plus this suffix.",
    ),
    restart(
        "presence",
        ValueKind::List,
        "[]",
        "Destinations whose subscribers are counted as members, by person, with ENTER and \
         QUIT events and a presence-count header (e.g. [\"/topic/chat.room.*\"]; * and # \
         words allowed). Single node only for now.",
    ),
    restart(
        "presence-companion-suffix",
        ValueKind::Str,
        r#""""#,
        "Empty: presence events go into the room's destination itself. Otherwise to the \
         destination named like the room plus this suffix (e.g. \".presence\").",
    ),
    restart(
        "default-prefetch",
        ValueKind::Int,
        "1000",
        "Unacknowledged messages per subscription when SUBSCRIBE has no prefetch-count.",
    ),
    live(
        "heartbeat-send-ms",
        ValueKind::Int,
        "10000",
        "Shortest interval at which the server offers to send heart-beats (0: never).",
    ),
    live(
        "heartbeat-receive-ms",
        ValueKind::Int,
        "10000",
        "Shortest interval at which the server asks clients for heart-beats (0: never).",
    ),
    live(
        "heartbeat-grace",
        ValueKind::Float,
        "1.5",
        "A client silent for this many negotiated heart-beat intervals is disconnected (1 to 100).",
    ),
    live(
        "drain-timeout-ms",
        ValueKind::Int,
        "10000",
        "On SIGINT/SIGTERM, how long connections get to flush before the process exits.",
    ),
    live(
        "lame-duck-ms",
        ValueKind::Int,
        "3000",
        "On shutdown, connections are sent away one by one over this window (within the \
         drain timeout), so a cluster's clients reconnect elsewhere gradually.",
    ),
    restart(
        "log-format",
        ValueKind::Str,
        r#""human""#,
        "Log format: human or json.",
    ),
    restart(
        "log-level",
        ValueKind::Str,
        r#""info""#,
        "Log filter when RUST_LOG is not set (tracing-subscriber EnvFilter syntax).",
    ),
    restart(
        "node-id",
        ValueKind::Str,
        r#""""#,
        "This broker's id in message ids and logs; empty picks a random one at start.",
    ),
];

/// The option called `name`, for file keys and reload decisions.
pub fn find(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keep: impl Fn(&OptionSpec) -> bool) -> Vec<&'static str> {
        OPTIONS
            .iter()
            .filter(|spec| keep(spec))
            .map(|spec| spec.name)
            .collect()
    }

    /// Spelled out so that a change to either set shows up in review: a live option
    /// must be read per connection, and a secret one must never reach a log.
    #[test]
    fn the_reloadable_and_secret_sets() {
        assert_eq!(
            names(|spec| spec.reload == Reload::Live),
            [
                "allow-anonymous",
                "users-file",
                "jwt-secret",
                "jwt-public-keys",
                "jwt-jwks-file",
                "jwt-issuers",
                "jwt-audiences",
                "jwt-leeway-s",
                "jwt-require-exp",
                "jwt-user-claim",
                "jwt-roles-claim",
                "jwt-permissions-claim",
                "acl",
                "user-header",
                "max-connections",
                "max-frame-size",
                "max-body-size",
                "max-headers",
                "max-header-length",
                "max-subscriptions",
                "max-temp-queues",
                "max-transactions",
                "max-transaction-frames",
                "max-transaction-bytes",
                "max-staged-bytes",
                "connect-timeout-ms",
                "auth-timeout-ms",
                "max-login-failures",
                "outbound-buffer",
                "tcp-keepalive-s",
                "outbound-stall-ms",
                "memory-high-watermark",
                "heartbeat-send-ms",
                "heartbeat-receive-ms",
                "heartbeat-grace",
                "drain-timeout-ms",
                "lame-duck-ms",
            ]
        );
        assert_eq!(
            names(OptionSpec::is_secret),
            ["admin-token", "jwt-secret", "cluster", "cluster-password"]
        );
        assert_eq!(names(|spec| spec.secrecy == Secrecy::Url), ["cluster"]);
    }
}
