//! Every authentication rule: JWT algorithms and claims, key selection, token sources,
//! passwords, anonymous access, refresh and permissions.

use base64_free::encode_url;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use postbox_auth::{
    AuthError, Authenticator, Credentials, JwtKey, JwtSettings, JwtVerifier, Method, Operation,
    RuleSpec, Rules, TokenError, Users, hash_password,
};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"a shared secret of reasonable length";

/// Minimal base64url without padding, so the test can forge headers by hand.
mod base64_free {
    pub fn encode_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

fn claims(extra: Value) -> Value {
    let mut base = json!({"sub": "alice", "exp": NOW + 600, "roles": ["chat"], "scope": "read:/topic/chat.* write:/topic/chat.lobby"});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn verifier(keys: Vec<JwtKey>, settings: JwtSettings) -> JwtVerifier {
    JwtVerifier::new(keys, settings).unwrap()
}

fn hs_verifier() -> JwtVerifier {
    verifier(vec![JwtKey::hmac(SECRET)], JwtSettings::default())
}

struct KeyPair {
    private_pem: String,
    public_pem: String,
}

fn generate(algorithm: &'static rcgen::SignatureAlgorithm) -> KeyPair {
    let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
    KeyPair {
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
    }
}

#[test]
fn a_valid_hs256_token_names_user_roles_scopes_and_expiry() {
    let token = hs(&claims(json!({})));
    let verified = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(verified.user, "alice");
    assert_eq!(verified.roles, ["chat"]);
    assert_eq!(verified.expires_at, Some(NOW + 600));
    assert!(
        verified
            .permissions
            .allows(Operation::Read, "/topic/chat.room1")
    );
    assert!(
        verified
            .permissions
            .allows(Operation::Write, "/topic/chat.lobby")
    );
    assert!(
        !verified
            .permissions
            .allows(Operation::Write, "/topic/chat.room1")
    );
}

#[test]
fn hs384_and_hs512_work_with_the_same_secret() {
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        let token = encode(
            &Header::new(algorithm),
            &claims(json!({})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(hs_verifier().verify(&token, NOW).is_ok(), "{algorithm:?}");
    }
}

#[test]
fn expiry_honours_the_leeway() {
    let token = hs(&claims(json!({"exp": NOW - 10})));
    assert!(
        hs_verifier().verify(&token, NOW).is_ok(),
        "within the 30 s leeway"
    );
    let token = hs(&claims(json!({"exp": NOW - 31})));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::Expired {
            expired_at: NOW - 31,
            now: NOW
        })
    );
}

#[test]
fn a_token_without_exp_is_refused_unless_allowed() {
    let mut no_exp = claims(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = hs(&no_exp);
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::MissingClaim("exp".into()))
    );
    let lenient = verifier(
        vec![JwtKey::hmac(SECRET)],
        JwtSettings {
            require_exp: false,
            ..JwtSettings::default()
        },
    );
    assert_eq!(lenient.verify(&token, NOW).unwrap().expires_at, None);
}

#[test]
fn not_yet_valid_tokens_are_refused() {
    let token = hs(&claims(json!({"nbf": NOW + 100})));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::NotYetValid {
            not_before: NOW + 100,
            now: NOW
        })
    );
    let token = hs(&claims(json!({"nbf": NOW + 20})));
    assert!(
        hs_verifier().verify(&token, NOW).is_ok(),
        "within the leeway"
    );
}

#[test]
fn a_wrong_signature_is_refused() {
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(TokenError::BadSignature)
    );
    let mut tampered = hs(&claims(json!({})));
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(hs_verifier().verify(&tampered, NOW).is_err());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let strict = verifier(
        vec![JwtKey::hmac(SECRET)],
        JwtSettings {
            issuers: vec!["https://auth.example.com".into()],
            audiences: vec!["postbox".into()],
            ..JwtSettings::default()
        },
    );
    let good = hs(&claims(
        json!({"iss": "https://auth.example.com", "aud": ["other", "postbox"]}),
    ));
    assert!(strict.verify(&good, NOW).is_ok());
    let wrong_issuer = hs(&claims(
        json!({"iss": "https://evil.example.com", "aud": "postbox"}),
    ));
    assert_eq!(
        strict.verify(&wrong_issuer, NOW),
        Err(TokenError::WrongIssuer(Some(
            "https://evil.example.com".into()
        )))
    );
    let no_issuer = hs(&claims(json!({"aud": "postbox"})));
    assert_eq!(
        strict.verify(&no_issuer, NOW),
        Err(TokenError::WrongIssuer(None))
    );
    let wrong_audience = hs(&claims(
        json!({"iss": "https://auth.example.com", "aud": "billing"}),
    ));
    assert_eq!(
        strict.verify(&wrong_audience, NOW),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn alg_none_is_refused() {
    let header = encode_url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = encode_url(claims(json!({})).to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        assert!(
            matches!(
                hs_verifier().verify(&token, NOW),
                Err(TokenError::Malformed(_))
            ),
            "{token}"
        );
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // The attacker signs an HS256 token using the server's public key as the secret.
    let ec = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let only_ec = verifier(
        vec![JwtKey::from_pem(ec.public_pem.as_bytes()).unwrap()],
        JwtSettings::default(),
    );
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(ec.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        only_ec.verify(&forged, NOW),
        Err(TokenError::AlgorithmNotAllowed("HS256".into()))
    );
}

#[test]
fn es256_and_eddsa_public_keys() {
    for (algorithm, rcgen_algorithm) in [
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    ] {
        let keys = generate(rcgen_algorithm);
        let signing = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(keys.private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap(),
        };
        let token = encode(&Header::new(algorithm), &claims(json!({})), &signing).unwrap();
        let verifier = verifier(
            vec![JwtKey::from_pem(keys.public_pem.as_bytes()).unwrap()],
            JwtSettings::default(),
        );
        assert_eq!(
            verifier.verify(&token, NOW).unwrap().user,
            "alice",
            "{algorithm:?}"
        );
        // A key of one family never verifies a token of another.
        assert!(hs_verifier().verify(&token, NOW).is_err());
    }
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let a = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let b = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let jwk = |keys: &KeyPair, kid: &str| {
        let signing = EncodingKey::from_ec_pem(keys.private_pem.as_bytes()).unwrap();
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&signing, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).unwrap()
    };
    let jwks = json!({"keys": [jwk(&a, "key-a"), jwk(&b, "key-b")]}).to_string();
    let verifier = verifier(JwtKey::from_jwks(&jwks).unwrap(), JwtSettings::default());
    let sign = |keys: &KeyPair, kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_ec_pem(keys.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    assert!(verifier.verify(&sign(&b, "key-b"), NOW).is_ok());
    assert_eq!(
        verifier.verify(&sign(&a, "key-b"), NOW),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        verifier.verify(&sign(&a, "key-z"), NOW),
        Err(TokenError::UnknownKey("key-z".into()))
    );
}

fn rules() -> Rules {
    Rules::new(&[
        RuleSpec {
            user: Some("*".into()),
            role: None,
            read: vec!["/topic/news".into()],
            write: vec![],
        },
        RuleSpec {
            user: None,
            role: Some("ops".into()),
            read: vec!["#".into()],
            write: vec!["/queue/ops.#".into()],
        },
        RuleSpec {
            user: Some("anonymous".into()),
            role: None,
            read: vec!["/topic/public".into()],
            write: vec![],
        },
    ])
    .unwrap()
}

fn users() -> Users {
    let hash = hash_password("wonderland");
    Users::from_toml(&format!(
        "[[user]]\nname = \"carol\"\npassword = \"{hash}\"\nroles = [\"ops\"]\n"
    ))
    .unwrap()
}

#[test]
fn tokens_come_from_bearer_passcode_or_query() {
    let auth = Authenticator::new(None, Some(hs_verifier()), rules(), false);
    let token = hs(&claims(json!({})));
    for credentials in [
        Credentials {
            bearer: Some(&token),
            ..Default::default()
        },
        Credentials {
            login: Some("ignored"),
            passcode: Some(&token),
            ..Default::default()
        },
        Credentials {
            query_token: Some(&token),
            ..Default::default()
        },
    ] {
        let principal = auth.authenticate(&credentials, NOW).unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.method),
            ("alice", Method::Token)
        );
        // Scopes from the token plus the rule for every user.
        assert!(principal.may(Operation::Read, "/topic/chat.x"));
        assert!(principal.may(Operation::Read, "/topic/news"));
        assert!(!principal.may(Operation::Read, "/queue/ops.x"));
    }
}

#[test]
fn passwords_are_checked_against_the_users_file() {
    let auth = Authenticator::new(Some(users()), Some(hs_verifier()), rules(), false);
    let login = |login, passcode| {
        auth.authenticate(
            &Credentials {
                login: Some(login),
                passcode: Some(passcode),
                ..Default::default()
            },
            NOW,
        )
    };
    let carol = login("carol", "wonderland").unwrap();
    assert_eq!(carol.method, Method::Password);
    assert!(carol.may(Operation::Write, "/queue/ops.restart"));
    assert!(carol.may(Operation::Read, "/queue/anything"));
    assert_eq!(
        login("carol", "guess"),
        Err(AuthError::WrongPassword("carol".into()))
    );
    assert_eq!(
        login("mallory", "x"),
        Err(AuthError::UnknownUser("mallory".into()))
    );
    // A password shaped like a token is tried as one, then as a password.
    assert_eq!(
        login("carol", "a.b.c"),
        Err(AuthError::WrongPassword("carol".into()))
    );
}

#[test]
fn anonymous_access_only_when_enabled() {
    let closed = Authenticator::new(Some(users()), None, rules(), false);
    assert_eq!(
        closed.authenticate(&Credentials::default(), NOW),
        Err(AuthError::NoCredentials)
    );
    let open_to_anonymous = Authenticator::new(Some(users()), None, rules(), true);
    let anonymous = open_to_anonymous
        .authenticate(&Credentials::default(), NOW)
        .unwrap();
    assert_eq!(anonymous.method, Method::Anonymous);
    assert!(anonymous.may(Operation::Read, "/topic/public"));
    assert!(
        !anonymous.may(Operation::Read, "/topic/news"),
        "`*` rules are for authenticated users"
    );
    // With nothing configured at all, everyone may do everything.
    let open = Authenticator::open();
    let anyone = open.authenticate(&Credentials::default(), NOW).unwrap();
    assert_eq!(anyone.method, Method::Open);
    assert!(anyone.may(Operation::Write, "/queue/x"));
}

#[test]
fn methods_that_are_not_configured_are_refused() {
    let tokens_only = Authenticator::new(None, Some(hs_verifier()), rules(), false);
    let credentials = Credentials {
        login: Some("carol"),
        passcode: Some("wonderland"),
        ..Default::default()
    };
    assert_eq!(
        tokens_only.authenticate(&credentials, NOW),
        Err(AuthError::PasswordsNotConfigured)
    );
    let passwords_only = Authenticator::new(Some(users()), None, rules(), false);
    let token = hs(&claims(json!({})));
    let credentials = Credentials {
        bearer: Some(&token),
        ..Default::default()
    };
    assert_eq!(
        passwords_only.authenticate(&credentials, NOW),
        Err(AuthError::TokensNotConfigured)
    );
}

#[test]
fn a_refreshed_token_must_name_the_same_user() {
    let auth = Authenticator::new(None, Some(hs_verifier()), rules(), false);
    let first = auth
        .authenticate(
            &Credentials {
                bearer: Some(&hs(&claims(json!({})))),
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    let later = hs(&claims(json!({"exp": NOW + 3600})));
    assert_eq!(
        auth.refresh(&first, &later, NOW + 500).unwrap().expires_at,
        Some(NOW + 3600)
    );
    let someone_else = hs(&claims(json!({"sub": "mallory"})));
    assert_eq!(
        auth.refresh(&first, &someone_else, NOW),
        Err(AuthError::SubjectChanged {
            was: "alice".into(),
            now: "mallory".into()
        })
    );
    let expired = hs(&claims(json!({"exp": NOW - 100})));
    assert!(matches!(
        auth.refresh(&first, &expired, NOW),
        Err(AuthError::Token(TokenError::Expired { .. }))
    ));
}

#[test]
fn custom_user_and_permission_claims() {
    let settings = JwtSettings {
        user_claim: "preferred_username".into(),
        permissions_claim: "postbox".into(),
        ..JwtSettings::default()
    };
    let verifier = verifier(vec![JwtKey::hmac(SECRET)], settings);
    let token = hs(&claims(
        json!({"preferred_username": "dave", "postbox": ["read:/queue/dave", "write:/queue/work"]}),
    ));
    let verified = verifier.verify(&token, NOW).unwrap();
    assert_eq!(verified.user, "dave");
    assert!(verified.permissions.allows(Operation::Read, "/queue/dave"));
    assert!(verified.permissions.allows(Operation::Write, "/queue/work"));
    assert!(
        !verified
            .permissions
            .allows(Operation::Read, "/topic/chat.x"),
        "scope claim ignored"
    );
}
