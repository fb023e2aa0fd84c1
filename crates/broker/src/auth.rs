//! Builds the authenticator from configuration (reading the key and users files) and
//! keeps it swappable, so SIGHUP can pick up rotated keys and edited users.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use postbox_auth::{Authenticator, JwtKey, JwtSettings, JwtVerifier, Rules, Users};
use tracing::info;

use crate::Config;

/// The current authenticator; cheap to read on every CONNECT.
#[derive(Debug)]
pub struct AuthHandle {
    current: RwLock<Arc<Authenticator>>,
}

impl AuthHandle {
    /// Loads everything the configuration names; fails on any unusable file.
    pub fn load(config: &Config) -> Result<Arc<AuthHandle>, String> {
        Ok(Arc::new(AuthHandle {
            current: RwLock::new(Arc::new(build(config)?)),
        }))
    }

    /// The authenticator now in force.
    pub fn current(&self) -> Arc<Authenticator> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds the authenticator `config` describes, reading its files again, without
    /// putting it in force: a reload checks it first and may still refuse it.
    pub fn prepare(config: &Config) -> Result<Authenticator, String> {
        build(config)
    }

    /// Puts an authenticator from [`AuthHandle::prepare`] in force for new CONNECTs.
    pub fn install(&self, authenticator: Authenticator) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authenticator);
        info!("authentication keys and users reloaded");
    }
}

/// Seconds since the epoch, the clock tokens are checked against.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn read(path: &str, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {path}: {e}"))
}

fn build(config: &Config) -> Result<Authenticator, String> {
    let users = match config.users_file.as_str() {
        "" => None,
        path => {
            Some(Users::from_toml(&read(path, "users-file")?).map_err(|e| format!("{path}: {e}"))?)
        }
    };
    let mut keys = Vec::new();
    let jwt_secret = config.jwt_secret.expose();
    if !jwt_secret.is_empty() {
        if jwt_secret.len() < 32 {
            return Err(
                "jwt-secret must be at least 32 bytes; shorter secrets can be brute-forced".into(),
            );
        }
        keys.push(JwtKey::hmac(jwt_secret.as_bytes()));
    }
    for path in &config.jwt_public_keys {
        let pem = read(path, "jwt-public-keys file")?;
        keys.push(JwtKey::from_pem(pem.as_bytes()).map_err(|e| format!("{path}: {e}"))?);
    }
    if !config.jwt_jwks_file.is_empty() {
        let json = read(&config.jwt_jwks_file, "jwt-jwks-file")?;
        keys.extend(
            JwtKey::from_jwks(&json).map_err(|e| format!("{}: {e}", config.jwt_jwks_file))?,
        );
    }
    let jwt = if keys.is_empty() {
        None
    } else {
        let settings = JwtSettings {
            issuers: config.jwt_issuers.clone(),
            audiences: config.jwt_audiences.clone(),
            leeway_s: config.jwt_leeway_s,
            require_exp: config.jwt_require_exp,
            user_claim: config.jwt_user_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
            permissions_claim: config.jwt_permissions_claim.clone(),
        };
        Some(JwtVerifier::new(keys, settings).map_err(|e| e.to_string())?)
    };
    if users.is_none() && jwt.is_none() {
        return Ok(Authenticator::open());
    }
    let rules = Rules::new(&config.acl).map_err(|e| e.to_string())?;
    Ok(Authenticator::new(
        users,
        jwt,
        rules,
        config.allow_anonymous,
    ))
}
