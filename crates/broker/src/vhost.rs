//! Virtual hosts: one router each, chosen by the CONNECT `host` header.

use std::collections::HashMap;

use std::sync::Arc;

use postbox_router::{Budget, NoRelay, Relay, Router};

use crate::Config;

/// The routers of all virtual hosts.
#[derive(Debug)]
pub struct Vhosts {
    by_name: HashMap<String, Router>,
    default: Router,
    strict: bool,
}

impl Vhosts {
    /// Builds the routers. With no names configured there is a single host, `/`, that
    /// every `host` value selects: clients send all sorts of values there (the server's
    /// address, `localhost`, nothing) and a one-host broker should accept them all. With
    /// names configured, `host` must be one of them; a CONNECT without `host` gets the
    /// first.
    pub fn new(config: &Config, node_id: &str) -> Vhosts {
        Vhosts::with_relay(config, node_id, Arc::new(NoRelay))
    }

    /// Like [`Vhosts::new`], with every router connected to a cluster through `relay`.
    pub fn with_relay(config: &Config, node_id: &str, relay: Arc<dyn Relay>) -> Vhosts {
        let names = &config.vhosts;
        // One budget for the queues of every host.
        let budget = Arc::new(Budget::new(crate::memory::queued_bytes_limit(
            config.max_queued_bytes,
        )));
        let router = |vhost: &str| {
            let settings = config.router_config(vhost, node_id, budget.clone());
            Router::with_relay(settings, relay.clone())
        };
        if names.is_empty() {
            return Vhosts {
                by_name: HashMap::new(),
                default: router("/"),
                strict: false,
            };
        }
        let by_name: HashMap<String, Router> = names
            .iter()
            .map(|name| (name.clone(), router(name)))
            .collect();
        Vhosts {
            default: by_name[&names[0]].clone(),
            by_name,
            strict: true,
        }
    }

    /// The router for a CONNECT `host` header; `None` for an unknown host.
    pub fn select(&self, host: Option<&str>) -> Option<Router> {
        match host {
            Some(host) if self.strict => self.by_name.get(host).cloned(),
            _ => Some(self.default.clone()),
        }
    }

    /// Every router, for metrics and shutdown.
    pub fn routers(&self) -> impl Iterator<Item = &Router> {
        std::iter::once(&self.default).chain(
            self.by_name
                .values()
                .filter(|r| r.vhost() != self.default.vhost()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_names(names: &[&str]) -> Vhosts {
        let config = Config {
            vhosts: names.iter().map(|n| n.to_string()).collect(),
            ..Config::defaults()
        };
        Vhosts::new(&config, "n")
    }

    #[test]
    fn without_names_every_host_is_accepted() {
        let vhosts = with_names(&[]);
        assert_eq!(vhosts.select(Some("localhost")).unwrap().vhost(), "/");
        assert_eq!(vhosts.select(None).unwrap().vhost(), "/");
    }

    #[test]
    fn with_names_the_host_must_match() {
        let vhosts = with_names(&["prod", "test"]);
        assert_eq!(vhosts.select(Some("test")).unwrap().vhost(), "test");
        assert_eq!(vhosts.select(None).unwrap().vhost(), "prod");
        assert!(vhosts.select(Some("other")).is_none());
        assert_eq!(vhosts.routers().count(), 2);
    }

    #[test]
    fn every_host_shares_one_queue_budget() {
        let vhosts = with_names(&["prod", "test", "dev"]);
        let budgets: Vec<_> = vhosts.routers().map(|r| r.budget().clone()).collect();
        assert_eq!(budgets.len(), 3);
        assert!(budgets.iter().all(|b| Arc::ptr_eq(b, &budgets[0])));
    }
}
