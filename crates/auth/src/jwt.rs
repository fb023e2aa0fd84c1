//! JSON Web Tokens: HMAC secrets, RSA/EC/Ed25519 public keys in PEM, and JWKS files.
//!
//! Signatures are checked with jsonwebtoken; the time claims (`exp`, `nbf`), issuer and
//! audience are checked here against a clock given by the caller, so the rules can be
//! tested without waiting. A key only accepts the algorithms of its own family, which
//! is what refuses algorithm confusion (an `HS256` token "signed" with an RSA public
//! key); `alg: none` is not an algorithm jsonwebtoken knows, so such tokens never parse.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::permissions::Permissions;

/// Why a token was refused. Logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its header or claims do not parse (this includes `alg: none`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names a key id no configured key has.
    #[error("no key with kid '{0}'")]
    UnknownKey(String),
    /// No configured key accepts the header's algorithm.
    #[error("algorithm {0} is not accepted by any configured key")]
    AlgorithmNotAllowed(String),
    /// No key verifies the signature.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` has passed (leeway included).
    #[error("token expired at {expired_at} (now {now})")]
    Expired {
        /// The `exp` claim.
        expired_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// `nbf` is still ahead (leeway included).
    #[error("token not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The `nbf` claim.
        not_before: u64,
        /// The time of the check.
        now: u64,
    },
    /// `iss` is not an accepted issuer.
    #[error("issuer {0:?} is not accepted")]
    WrongIssuer(Option<String>),
    /// `aud` names no accepted audience.
    #[error("audience does not include an accepted one")]
    WrongAudience,
    /// A claim that is needed is absent or has the wrong type.
    #[error("claim '{0}' is missing or not usable")]
    MissingClaim(String),
    /// A time claim (`exp`, `nbf`, `iat`) is a number but no date a clock will show:
    /// negative, or past [`MAX_NUMERIC_DATE`].
    #[error("claim '{claim}' is {value}, outside the dates accepted (0 to {MAX_NUMERIC_DATE})")]
    OutOfRange {
        /// The claim.
        claim: String,
        /// Its value as the token gives it.
        value: String,
    },
}

/// The latest time claim accepted, 9999-12-31T23:59:59Z in seconds since the epoch.
///
/// NumericDate (RFC 7519 section 2) may be any JSON number, so a validly signed token can
/// carry `exp: 18446744073709551615` or `exp: 1e300`. Refusing dates past this one keeps
/// every deadline derived from a claim (`Instant` and `Duration` arithmetic in the broker)
/// far from overflow, and costs nothing: no issuer means a token to outlive year 9999.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// One verification key.
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why verification keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM holds no RSA, EC or Ed25519 public key.
    #[error("not an RSA, EC or Ed25519 public key in PEM: {0}")]
    Pem(jsonwebtoken::errors::Error),
    /// The text is not a JWKS document.
    #[error("not a JWKS document: {0}")]
    NotJwks(serde_json::Error),
    /// A key of the JWKS document cannot be used.
    #[error("unusable JWK: {0}")]
    Jwk(jsonwebtoken::errors::Error),
    /// Every key of the JWKS document names an algorithm that cannot sign tokens.
    #[error("the JWKS document has no usable signing keys")]
    NoUsableJwk,
    /// A verifier was asked for with no keys at all.
    #[error("no JWT verification keys configured")]
    NoKeys,
}

impl JwtKey {
    /// A shared secret for HS256, HS384 and HS512.
    pub fn hmac(secret: &[u8]) -> JwtKey {
        JwtKey {
            kid: None,
            key: DecodingKey::from_secret(secret),
            algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        }
    }

    /// A public key in PEM: RSA (RS*/PS*), EC (ES256/ES384) or Ed25519 (EdDSA).
    pub fn from_pem(pem: &[u8]) -> Result<JwtKey, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(KeyError::Pem)?;
        Ok(JwtKey {
            kid: None,
            algorithms: key.family().algorithms().to_vec(),
            key,
        })
    }

    /// Every key of a JWKS document, selected later by `kid`.
    pub fn from_jwks(json: &str) -> Result<Vec<JwtKey>, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(KeyError::NotJwks)?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(KeyError::Jwk)?;
            let algorithms = match jwk.common.key_algorithm.map(Algorithm::try_from) {
                Some(Ok(algorithm)) => vec![algorithm],
                Some(Err(_)) => continue,
                None => key.family().algorithms().to_vec(),
            };
            keys.push(JwtKey {
                kid: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableJwk);
        }
        Ok(keys)
    }

    /// The same key, only for tokens whose header names `kid`.
    pub fn with_kid(mut self, kid: &str) -> JwtKey {
        self.kid = Some(kid.to_owned());
        self
    }
}

/// What the verifier checks and where it finds identity in the claims.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Accepted `iss` values; empty accepts any.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// The claim naming the user (`sub`, or e.g. `preferred_username`).
    pub user_claim: String,
    /// The claim listing roles, matched by configured rules.
    pub roles_claim: String,
    /// The claim listing `read:`/`write:` scopes.
    pub permissions_claim: String,
}

impl Default for JwtSettings {
    fn default() -> JwtSettings {
        JwtSettings {
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_s: 30,
            require_exp: true,
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            permissions_claim: "scope".into(),
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The user.
    pub user: String,
    /// Roles from the roles claim.
    pub roles: Vec<String>,
    /// Permissions from the permissions claim.
    pub permissions: Permissions,
    /// `exp`, if any.
    pub expires_at: Option<u64>,
}

/// Verifies tokens against configured keys.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<JwtKey>,
    settings: JwtSettings,
}

impl JwtVerifier {
    /// A verifier; at least one key is needed.
    pub fn new(keys: Vec<JwtKey>, settings: JwtSettings) -> Result<JwtVerifier, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(JwtVerifier { keys, settings })
    }

    /// Checks `token` at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let by_kid: Vec<&JwtKey> = match &header.kid {
            Some(kid) => {
                let named: Vec<&JwtKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    let unnamed: Vec<&JwtKey> =
                        self.keys.iter().filter(|k| k.kid.is_none()).collect();
                    if unnamed.is_empty() {
                        return Err(TokenError::UnknownKey(kid.clone()));
                    }
                    unnamed
                } else {
                    named
                }
            }
            None => self.keys.iter().collect(),
        };
        let candidates: Vec<&JwtKey> = by_kid
            .into_iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        // Signature and algorithm only; time, issuer and audience are checked below.
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let mut claims = None;
        for key in candidates {
            match decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(error) => match error.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => continue,
                    _ => return Err(TokenError::Malformed(error.to_string())),
                },
            }
        }
        let claims = claims.ok_or(TokenError::BadSignature)?;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &Value, now: u64) -> Result<VerifiedToken, TokenError> {
        let settings = &self.settings;
        let expires_at = numeric_date(claims, "exp")?;
        match expires_at {
            Some(exp) if now > exp.saturating_add(settings.leeway_s) => {
                return Err(TokenError::Expired {
                    expired_at: exp,
                    now,
                });
            }
            None if settings.require_exp => return Err(TokenError::MissingClaim("exp".into())),
            _ => {}
        }
        // Not compared with the clock (issuers' clocks drift), but still a date.
        numeric_date(claims, "iat")?;
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(settings.leeway_s) < nbf
        {
            return Err(TokenError::NotYetValid {
                not_before: nbf,
                now,
            });
        }
        if !settings.issuers.is_empty() {
            let issuer = claims.get("iss").and_then(Value::as_str);
            if !issuer.is_some_and(|iss| settings.issuers.iter().any(|i| i == iss)) {
                return Err(TokenError::WrongIssuer(issuer.map(str::to_owned)));
            }
        }
        if !settings.audiences.is_empty() {
            let audiences = strings(claims.get("aud"));
            if !audiences.iter().any(|a| settings.audiences.contains(a)) {
                return Err(TokenError::WrongAudience);
            }
        }
        let user = claims
            .get(&settings.user_claim)
            .and_then(Value::as_str)
            .filter(|user| !user.is_empty())
            .ok_or_else(|| TokenError::MissingClaim(settings.user_claim.clone()))?
            .to_owned();
        let scopes = strings(claims.get(&settings.permissions_claim));
        Ok(VerifiedToken {
            user,
            roles: strings(claims.get(&settings.roles_claim)),
            permissions: Permissions::from_scopes(scopes.iter().map(String::as_str)),
            expires_at,
        })
    }
}

/// The time claim `name` in whole seconds since the epoch (a fraction is dropped), `None`
/// when absent or null. Anything else than a number in `0..=MAX_NUMERIC_DATE` is refused
/// with a reason that names the claim, never wrapped, saturated or cast.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, TokenError> {
    let number = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(TokenError::MissingClaim(name.to_owned())),
    };
    let seconds = match number.as_u64() {
        Some(whole) => Some(whole),
        // Negative integers and floats; NaN and infinities are not JSON numbers.
        None => number
            .as_f64()
            .map(f64::floor)
            .filter(|f| (0.0..=MAX_NUMERIC_DATE as f64).contains(f))
            .map(|f| f as u64),
    };
    seconds
        .filter(|s| *s <= MAX_NUMERIC_DATE)
        .map(Some)
        .ok_or_else(|| TokenError::OutOfRange {
            claim: name.to_owned(),
            value: number.to_string(),
        })
}

/// A claim that is a string (space-separated words) or a list of strings.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            vec![JwtKey::hmac(b"0123456789abcdef0123456789abcdef")],
            JwtSettings::default(),
        )
        .unwrap()
    }

    /// The claims of a token that passed its signature check, with `extra` set.
    fn check(extra: Value) -> Result<VerifiedToken, TokenError> {
        let mut claims = json!({"sub": "alice", "exp": NOW + 600});
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        verifier().check_claims(&claims, NOW)
    }

    fn out_of_range(claim: &str, value: &str) -> Result<VerifiedToken, TokenError> {
        Err(TokenError::OutOfRange {
            claim: claim.into(),
            value: value.into(),
        })
    }

    #[test]
    fn exp_past_any_clock_is_refused_not_saturated() {
        assert_eq!(
            check(json!({"exp": u64::MAX})),
            out_of_range("exp", "18446744073709551615")
        );
        assert_eq!(check(json!({"exp": 1e300})), out_of_range("exp", "1e+300"));
        assert_eq!(
            check(json!({"exp": MAX_NUMERIC_DATE + 1})),
            out_of_range("exp", "253402300800")
        );
        let latest = check(json!({"exp": MAX_NUMERIC_DATE})).unwrap();
        assert_eq!(latest.expires_at, Some(MAX_NUMERIC_DATE));
        let latest = check(json!({"exp": MAX_NUMERIC_DATE as f64 + 0.5})).unwrap();
        assert_eq!(latest.expires_at, Some(MAX_NUMERIC_DATE));
    }

    #[test]
    fn negative_dates_are_refused() {
        assert_eq!(check(json!({"exp": -1})), out_of_range("exp", "-1"));
        assert_eq!(check(json!({"exp": -0.5})), out_of_range("exp", "-0.5"));
        assert_eq!(
            check(json!({"nbf": -1e300})),
            out_of_range("nbf", "-1e+300")
        );
    }

    #[test]
    fn nbf_and_iat_are_dates_too() {
        assert_eq!(
            check(json!({"nbf": u64::MAX})),
            out_of_range("nbf", "18446744073709551615")
        );
        assert_eq!(check(json!({"nbf": 1e300})), out_of_range("nbf", "1e+300"));
        assert_eq!(
            check(json!({"nbf": NOW + 3600})),
            Err(TokenError::NotYetValid {
                not_before: NOW + 3600,
                now: NOW
            })
        );
        assert_eq!(check(json!({"iat": 1e300})), out_of_range("iat", "1e+300"));
        assert_eq!(
            check(json!({"iat": "yesterday"})),
            Err(TokenError::MissingClaim("iat".into()))
        );
        assert!(check(json!({"iat": 1_799_999_999.75})).is_ok());
    }

    #[test]
    fn fractional_dates_drop_the_fraction() {
        let verified = check(json!({"exp": (NOW + 600) as f64 + 0.9})).unwrap();
        assert_eq!(verified.expires_at, Some(NOW + 600));
        assert!(check(json!({"exp": NOW as f64 - 29.5})).is_ok(), "leeway");
        assert_eq!(
            check(json!({"exp": NOW as f64 - 31.5})),
            Err(TokenError::Expired {
                expired_at: NOW - 32,
                now: NOW
            })
        );
    }

    #[test]
    fn the_leeway_cannot_overflow() {
        let settings = JwtSettings {
            leeway_s: u64::MAX,
            ..JwtSettings::default()
        };
        let lenient = JwtVerifier::new(vec![JwtKey::hmac(b"k")], settings).unwrap();
        let claims = json!({"sub": "alice", "exp": MAX_NUMERIC_DATE, "nbf": MAX_NUMERIC_DATE});
        assert!(lenient.check_claims(&claims, u64::MAX).is_ok());
    }
}
