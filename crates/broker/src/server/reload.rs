//! Reloading on SIGHUP: which options change in place, and which new configurations are
//! refused as a whole because they would open the broker up.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::{Listening, Running};
use crate::Config;
use crate::auth::{AuthHandle, AuthSetupError};
use crate::session::Settings;
use crate::transport::Transport;

/// Why a reload was refused. The running configuration stays in force, all of it.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration has no users and no keys where the running one had some.
    #[error(
        "removing {0} would turn authentication off and let anyone in with every right; \
         restart postbox to run without authentication"
    )]
    RemovesAuthentication(String),
    /// A public listener would be left without authentication or `allow-anonymous`.
    #[error(
        "listener {0} is not on loopback, and the new configuration has no authentication \
         and no allow-anonymous; configure authentication or set allow-anonymous"
    )]
    Insecure(SocketAddr),
    /// A users file or JWT key named by the new configuration is unusable.
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
}

/// Whether going from `old` to `new` (each a configuration and whether its
/// authenticator is open, that is has no users and no keys) must be refused.
fn reload_refusal(
    (old, old_open): (&Config, bool),
    (new, new_open): (&Config, bool),
    listening: &[Listening],
) -> Option<ReloadError> {
    if !new_open {
        return None;
    }
    if !old_open {
        let sources = [
            (
                "users-file",
                old.users_file.is_empty(),
                new.users_file.is_empty(),
            ),
            (
                "jwt-secret",
                old.jwt_secret.is_empty(),
                new.jwt_secret.is_empty(),
            ),
            (
                "jwt-public-keys",
                old.jwt_public_keys.is_empty(),
                new.jwt_public_keys.is_empty(),
            ),
            (
                "jwt-jwks-file",
                old.jwt_jwks_file.is_empty(),
                new.jwt_jwks_file.is_empty(),
            ),
        ];
        let removed: Vec<&str> = sources
            .iter()
            .filter(|(_, was_unset, unset)| !was_unset && *unset)
            .map(|(name, _, _)| *name)
            .collect();
        let removed = if removed.is_empty() {
            // Same options, but the files now hold no users or keys.
            "every user and key".to_owned()
        } else {
            removed.join(" and ")
        };
        return Some(ReloadError::RemovesAuthentication(removed));
    }
    if new.allow_anonymous {
        return None;
    }
    listening
        .iter()
        .find(|l| l.transport != Transport::Http && !l.addr.ip().is_loopback())
        .map(|l| ReloadError::Insecure(l.addr))
}

impl Running {
    /// Applies a freshly loaded configuration, as on SIGHUP: the TLS certificate, JWT
    /// keys, the users file, access rules and every limit take effect for new connections
    /// (and new handshakes); options that need a restart keep their running values and
    /// are named in the log. A configuration that would open the broker to anonymous
    /// clients is refused as a whole, and so is one whose authentication files cannot be
    /// read: then nothing changes.
    pub fn reload(&mut self, fresh: Config) -> Result<(), ReloadError> {
        let changed = self.config.differences(&fresh);
        let mut applied = fresh;
        // Keep what cannot change at runtime, so later reloads compare against what runs.
        for (name, _, _) in &changed {
            if !crate::config::reloadable(name) {
                applied.restore(name, &self.config);
            }
        }
        let authenticator = AuthHandle::prepare(&applied)?;
        if let Some(refusal) = reload_refusal(
            (&self.config, self.state.sessions.auth.current().is_open()),
            (&applied, authenticator.is_open()),
            &self.listening,
        ) {
            return Err(refusal);
        }

        // Accepted: from here on everything is applied.
        if let Some(store) = &self.state.certs {
            store.reload_logged("reload requested");
        }
        if applied.max_connections != self.config.max_connections {
            let (old, new) = (self.config.max_connections, applied.max_connections);
            if new > old {
                self.permits.add_permits(new - old);
            } else {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    // Taken as connections close; never more than the old limit was.
                    if let Ok(taken) = permits.acquire_many_owned((old - new) as u32).await {
                        taken.forget();
                    }
                });
            }
        }
        self.state
            .sessions
            .set_settings(Settings::from_config(&applied, &self.node_id));
        self.state
            .sessions
            .memory
            .set_limit(crate::memory::watermark(applied.memory_high_watermark));
        self.state.sessions.auth.install(authenticator);
        self.config = applied;
        for (name, old, new) in &changed {
            if crate::config::reloadable(name) {
                info!(option = *name, old = %old, new = %new, "reloaded");
            } else {
                warn!(
                    option = *name,
                    running = %old,
                    configured = %new,
                    "changed, but needs a restart; the running value stays"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Listening;
    use crate::transport::Transport;

    fn listening(addr: &str) -> Vec<Listening> {
        vec![
            Listening {
                transport: Transport::Stomp,
                addr: addr.parse().unwrap(),
            },
            Listening {
                transport: Transport::Http,
                addr: "0.0.0.0:8080".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn removing_every_user_and_key_is_refused_and_named() {
        let mut old = Config::defaults();
        old.users_file = "users.toml".into();
        old.jwt_public_keys = vec!["key.pem".into()];
        let new = Config {
            allow_anonymous: true,
            ..Config::defaults()
        };
        let local = listening("127.0.0.1:61613");
        let refusal = reload_refusal((&old, false), (&new, true), &local).unwrap();
        assert!(matches!(refusal, ReloadError::RemovesAuthentication(_)));
        assert!(
            refusal.to_string().starts_with(
                "removing users-file and jwt-public-keys would turn authentication off"
            ),
            "{refusal}"
        );
        // Keys that remain, or still no authentication at all, are fine.
        assert!(reload_refusal((&old, false), (&old, false), &local).is_none());
        assert!(reload_refusal((&new, true), (&new, true), &local).is_none());
    }

    #[test]
    fn a_public_listener_without_authentication_needs_allow_anonymous() {
        let open = Config {
            allow_anonymous: true,
            ..Config::defaults()
        };
        let closed = Config::defaults();
        let public = listening("0.0.0.0:61613");
        let refusal = reload_refusal((&open, true), (&closed, true), &public).unwrap();
        assert!(
            refusal
                .to_string()
                .starts_with("listener 0.0.0.0:61613 is not on loopback"),
            "{refusal}"
        );
        assert!(reload_refusal((&open, true), (&open, true), &public).is_none());
        // Only client listeners count: the HTTP one is public in both lists.
        assert!(
            reload_refusal((&open, true), (&closed, true), &listening("127.0.0.1:1")).is_none()
        );
    }
}
