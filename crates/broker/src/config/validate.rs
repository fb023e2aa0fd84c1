//! Checks on a [`Config`] whose values all have the right type: listener addresses,
//! limits that must be positive, timings that must fit together, names that must be
//! printable. Run by [`load`](super::load) before anything is bound.

use std::net::SocketAddr;

use postbox_router::{Destination, DestinationKind, MAX_PREFETCH, Overflow};
use postbox_stomp::ByteString;

use super::{Config, ConfigError};

/// The largest `heartbeat-grace`: with heart-beats capped at a day, a silence limit of
/// at most a hundred days stays far from overflowing `Instant` arithmetic.
pub const MAX_HEARTBEAT_GRACE: f64 = 100.0;

impl Config {
    /// Checks values that have the right type but may still be unusable, so that a bad
    /// configuration is refused (by `load`, hence by `check-config` and reloads) before
    /// anything is bound. The error names the first offending option.
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
        for destination in &self.presence {
            let parsed = Destination::parse(&ByteString::from(destination.as_str()));
            if !parsed
                .is_ok_and(|d| matches!(d.kind(), DestinationKind::Topic | DestinationKind::Queue))
            {
                return invalid(
                    "presence",
                    format!("'{destination}' is not a /topic/ or /queue/ destination or pattern"),
                );
            }
        }
        if self.presence_companion_suffix.chars().any(char::is_control)
            || self.presence_companion_suffix.contains(['*', '#'])
        {
            return invalid(
                "presence-companion-suffix",
                "must be printable text without * or #".into(),
            );
        }
        if self.presence_companion_suffix.is_empty()
            && let Some(queue) = self.presence.iter().find(|d| d.starts_with("/queue/"))
        {
            return invalid(
                "presence",
                format!(
                    "'{queue}' is a queue: its events would go to one competing consumer; \
                     set presence-companion-suffix so they go to a topic"
                ),
            );
        }
        if !self.presence.is_empty() && !self.cluster.is_empty() {
            return invalid(
                "presence",
                "presence is not cluster-wide yet: each node would count only its own \
                 members; run presence on a single node, or leave it off in a cluster"
                    .into(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_grace_must_be_from_one_to_a_hundred() {
        for bad in [0.5, 100.5, 1e300, f64::INFINITY, f64::NAN] {
            let config = Config {
                heartbeat_grace: bad,
                ..Config::defaults()
            };
            let error = config.validate().unwrap_err();
            assert!(
                error.to_string().contains("heartbeat-grace"),
                "{bad}: {error}"
            );
        }
    }
}
