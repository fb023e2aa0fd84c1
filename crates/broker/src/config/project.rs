//! Projections: the settings that other parts of the broker (listeners, TLS, the
//! router, the cluster relay, shutdown) take from a [`Config`], so those parts never
//! read option fields themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postbox_router::{Budget, Overflow, PresenceConfig, QueueSettings, RouterConfig};

use super::Config;
use crate::transport::Transport;
use crate::transport::tls::TlsFiles;

impl Config {
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

    /// The router settings for one virtual host. Every host's router gets the same
    /// `budget`, so `max-queued-bytes` bounds the queues of all hosts together.
    pub fn router_config(&self, vhost: &str, node_id: &str, budget: Arc<Budget>) -> RouterConfig {
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
            budget,
            presence: PresenceConfig {
                destinations: self.presence.clone(),
                companion_suffix: self.presence_companion_suffix.clone(),
            },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_gets_the_budget_it_is_given() {
        let budget = Arc::new(Budget::new(1234));
        let settings = Config::defaults().router_config("/", "n1", budget.clone());
        assert!(Arc::ptr_eq(&settings.budget, &budget));
        assert_eq!(
            (settings.vhost.as_str(), settings.node_id.as_str()),
            ("/", "n1")
        );
    }
}
