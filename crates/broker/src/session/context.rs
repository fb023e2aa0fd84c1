//! What a session sees of the broker around it: a narrow set of shared services rather
//! than the whole broker state, so a session cannot reach the certificates, the cluster
//! handle or the admin token, and the broker state can hold sessions' services without a
//! cycle.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::auth::AuthHandle;
use crate::login::LoginGate;
use crate::memory::MemoryAlarm;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::vhost::Vhosts;

/// The broker's parts every session uses.
#[derive(Debug)]
pub struct Services {
    settings: RwLock<Arc<Settings>>,
    /// The routers of all virtual hosts.
    pub vhosts: Arc<Vhosts>,
    /// Authentication, reloadable.
    pub auth: Arc<AuthHandle>,
    /// Admits password checks a few at a time.
    pub logins: LoginGate,
    /// Open sessions, for the admin API and the scrape.
    pub registry: Arc<Registry>,
    /// Pauses publishers while resident memory is above the high-watermark.
    pub memory: Arc<MemoryAlarm>,
    /// Connection counters.
    pub metrics: Metrics,
}

impl Services {
    /// Services for sessions starting with `settings` on `vhosts`, checked by `auth`.
    pub fn new(settings: Settings, vhosts: Vhosts, auth: Arc<AuthHandle>) -> Services {
        Services {
            settings: RwLock::new(Arc::new(settings)),
            vhosts: Arc::new(vhosts),
            auth,
            logins: LoginGate::per_core(),
            registry: Arc::default(),
            memory: Arc::default(),
            metrics: Metrics::new(),
        }
    }

    /// The settings a session starting now gets.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the settings for sessions that start from now on; running sessions keep
    /// the ones they started with.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}

/// What a session needs from the server around it.
#[derive(Debug, Clone)]
pub struct Context {
    /// What all sessions share.
    pub services: Arc<Services>,
    /// Cancelled when the broker shuts down; each session watches a child of it, which
    /// lame-duck shutdown cancels one by one.
    pub shutdown: CancellationToken,
}

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address, for logs.
    pub addr: String,
    /// The remote IP address, which failed logins are counted by; `None` in process.
    pub ip: Option<std::net::IpAddr>,
    /// The transport's name, for logs.
    pub transport: &'static str,
    /// A token from the WebSocket URL's query string.
    pub query_token: Option<String>,
}
