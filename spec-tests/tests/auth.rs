//! Postbox's authentication and authorization at the protocol level: tokens signed in
//! the test, checked at CONNECT and during the session, and per-destination access.
//! These rules are Postbox's own, so against another broker the tests do nothing.

use std::path::PathBuf;
use std::process::Command as Process;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use postbox_spec_tests::*;
use postbox_testkit::certs::{TempDir, temp_dir};
use postbox_testkit::client::Received;
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const ISSUER: &str = "https://auth.test";
const AUDIENCE: &str = "postbox";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 600,
        "roles": ["chat"],
        "scope": "read:/queue/alice",
    });
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An RSA key pair made with openssl for this test: (private PEM, public key file, the
/// directory holding it, removed when dropped).
fn rsa_keys() -> (Vec<u8>, PathBuf, TempDir) {
    let dir = temp_dir("postbox-spec-rsa");
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let ok = Process::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .expect("openssl is installed")
        .status
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Process::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout failed");
    (std::fs::read(private).unwrap(), public, dir)
}

struct Secured {
    target: Target,
    /// The RSA key pair, for the tests that ask for one (generating it is slow).
    rsa: Option<(Vec<u8>, PathBuf, TempDir)>,
}

/// Postbox with JWT authentication (HS256, and RS256 with `rsa`); `None` against
/// another broker.
fn secured_with(extra: &[&str], rsa: bool) -> Option<Secured> {
    if std::env::var("POSTBOX_SPEC_ADDR").is_ok_and(|a| !a.is_empty()) {
        return None;
    }
    let rsa = rsa.then(rsa_keys);
    let public = rsa
        .as_ref()
        .map(|(_, public, _)| public.to_str().unwrap().to_owned());
    let acl = r#"[{role = "chat", read = ["/topic/chat.#"], write = ["/topic/chat.#"]}]"#;
    let mut args = vec!["--jwt-secret", SECRET];
    if let Some(public) = &public {
        args.extend_from_slice(&["--jwt-public-keys", public]);
    }
    args.extend_from_slice(&[
        "--jwt-issuers",
        ISSUER,
        "--jwt-audiences",
        AUDIENCE,
        "--acl",
        acl,
    ]);
    args.extend_from_slice(extra);
    let target = Target::with_postbox_args(&args);
    Some(Secured { target, rsa })
}

fn secured(extra: &[&str]) -> Option<Secured> {
    secured_with(extra, false)
}

/// Opens a connection and sends CONNECT with `headers`; returns the client and the reply.
async fn attempt(target: &Target, headers: &[(&str, &str)]) -> (Client, Frame) {
    let mut client = Client::open(target.addr).await;
    let mut frame = Frame::new(Command::Connect).header("accept-version", "1.2");
    for (name, value) in headers {
        frame = frame.header(*name, *value);
    }
    client.send(&frame).await;
    let reply = client
        .next_frame(DEFAULT_TIMEOUT)
        .await
        .expect("a reply to CONNECT");
    (client, reply)
}

async fn connect_with_token(target: &Target, token: &str) -> Client {
    let (client, reply) = attempt(target, &[("login", "alice"), ("passcode", token)]).await;
    assert_eq!(reply.command, Command::Connected, "{reply:?}");
    client
}

async fn assert_refused(target: &Target, headers: &[(&str, &str)]) {
    let (mut client, reply) = attempt(target, headers).await;
    assert_eq!(reply.command, Command::Error, "{reply:?}");
    // One generic message: nothing that tells an attacker what to change.
    assert_eq!(reply.get("message"), Some("authentication failed"));
    client.expect_closed().await;
}

#[tokio::test]
async fn a_valid_token_connects_from_passcode_or_authorization_header() {
    let Some(s) = secured(&[]) else { return };
    let token = hs256(&claims(json!({})));
    connect_with_token(&s.target, &token)
        .await
        .disconnect()
        .await;
    let bearer = format!("Bearer {token}");
    let (client, reply) = attempt(&s.target, &[("Authorization", &bearer)]).await;
    assert_eq!(reply.command, Command::Connected);
    client.disconnect().await;
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_configured_public_key() {
    let Some(s) = secured_with(&[], true) else {
        return;
    };
    let (private, _, _) = s.rsa.as_ref().unwrap();
    let key = EncodingKey::from_rsa_pem(private).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &claims(json!({})), &key).unwrap();
    connect_with_token(&s.target, &token)
        .await
        .disconnect()
        .await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let Some(s) = secured(&[]) else { return };
    let expired = hs256(&claims(json!({"exp": now() - 3600})));
    assert_refused(&s.target, &[("passcode", &expired)]).await;
    let early = hs256(&claims(json!({"nbf": now() + 3600})));
    assert_refused(&s.target, &[("passcode", &early)]).await;
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let Some(s) = secured(&[]) else { return };
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
    )
    .unwrap();
    assert_refused(&s.target, &[("passcode", &forged)]).await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused() {
    let Some(s) = secured(&[]) else { return };
    let issuer = hs256(&claims(json!({"iss": "https://elsewhere.test"})));
    assert_refused(&s.target, &[("passcode", &issuer)]).await;
    let audience = hs256(&claims(json!({"aud": "billing"})));
    assert_refused(&s.target, &[("passcode", &audience)]).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let Some(s) = secured(&[]) else { return };
    // {"alg":"none","typ":"JWT"} . claims . (no signature)
    let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let payload = hs256(&claims(json!({})))
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let token = format!("{header}.{payload}.");
    assert_refused(&s.target, &[("passcode", &token)]).await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let Some(s) = secured_with(&[], true) else {
        return;
    };
    let public_pem = std::fs::read(&s.rsa.as_ref().unwrap().1).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_refused(&s.target, &[("passcode", &confused)]).await;
}

#[tokio::test]
async fn no_credentials_are_refused_unless_anonymous_access_is_on() {
    let Some(s) = secured(&[]) else { return };
    assert_refused(&s.target, &[]).await;
    assert_refused(
        &s.target,
        &[("login", "alice"), ("passcode", "not a token")],
    )
    .await;
}

#[tokio::test]
async fn reading_and_writing_are_checked_per_destination() {
    let Some(s) = secured(&[]) else { return };
    let token = hs256(&claims(json!({})));
    let mut client = connect_with_token(&s.target, &token).await;
    // Granted by the acl rule for role chat, and by the token's scope.
    client.subscribe("chat", "/topic/chat.lobby", &[]).await;
    client.subscribe("own", "/queue/alice", &[]).await;
    client.publish("/topic/chat.lobby", "hello").await;
    client.expect(Command::Message).await;

    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/topic/admin")
                .header("receipt", "r1"),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'alice' may not read from '/topic/admin'")
    );
    assert_eq!(error.get("receipt-id"), Some("r1"));
    client.expect_closed().await;

    let mut client = connect_with_token(&s.target, &token).await;
    client.publish("/queue/alice", "not writable").await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'alice' may not write to '/queue/alice'")
    );
}

#[tokio::test]
async fn a_wildcard_subscription_must_stay_inside_what_may_be_read() {
    let Some(s) = secured(&[]) else { return };
    let token = hs256(&claims(json!({})));
    let mut client = connect_with_token(&s.target, &token).await;
    client.subscribe("narrow", "/topic/chat.*", &[]).await;
    client.subscribe("deep", "/topic/chat.#", &[]).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "wide")
                .header("destination", "/topic/#"),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'alice' may not read from '/topic/#'")
    );
}

#[tokio::test]
async fn reply_to_must_be_writable_by_the_requester() {
    let Some(s) = secured(&[]) else { return };
    let token = hs256(&claims(json!({})));
    let mut client = connect_with_token(&s.target, &token).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.requests")
                .header("reply-to", "/temp-queue/answers")
                .header("receipt", "ok"),
        )
        .await;
    client.expect_receipt("ok").await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.requests")
                .header("reply-to", "/topic/admin.orders"),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(
        error.get("message"),
        Some("access refused: 'alice' may not write to '/topic/admin.orders'")
    );
}

#[tokio::test]
async fn the_sender_is_stamped_on_messages_and_cannot_be_spoofed() {
    let Some(s) = secured(&[]) else { return };
    let alice = connect_with_token(&s.target, &hs256(&claims(json!({})))).await;
    let mut bob = connect_with_token(&s.target, &hs256(&claims(json!({"sub": "bob"})))).await;
    bob.subscribe("0", "/topic/chat.room", &[]).await;
    let mut alice = alice;
    alice
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.room")
                .header("user-id", "mallory")
                .header("user-id", "root")
                .body("hi"),
        )
        .await;
    let message = bob.expect(Command::Message).await;
    assert_eq!(
        message.headers.get_all("user-id").collect::<Vec<_>>(),
        ["alice"]
    );
}

#[tokio::test]
async fn the_session_ends_when_its_token_expires() {
    let Some(s) = secured(&["--jwt-leeway-s", "0"]) else {
        return;
    };
    let token = hs256(&claims(json!({"exp": now() + 2})));
    let mut client = connect_with_token(&s.target, &token).await;
    let error = client
        .next_frame(Duration::from_secs(6))
        .await
        .expect("an ERROR when the token expires");
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.get("message"), Some("access token expired"));
    client.expect_closed().await;
}

#[tokio::test]
async fn a_fresh_token_for_the_same_user_extends_the_session() {
    let Some(s) = secured(&["--jwt-leeway-s", "0"]) else {
        return;
    };
    let mut client =
        connect_with_token(&s.target, &hs256(&claims(json!({"exp": now() + 2})))).await;
    client.subscribe("0", "/topic/chat.refresh", &[]).await;
    let fresh = format!("Bearer {}", hs256(&claims(json!({"exp": now() + 600}))));
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat.refresh")
                .header("Authorization", fresh.as_str())
                .body("refreshed"),
        )
        .await;
    let message = client.expect(Command::Message).await;
    assert!(
        message.get("Authorization").is_none(),
        "the token must not travel on"
    );
    // Outlive the first token (it expires 2 s after it was made, with no leeway): only
    // real time passing shows that the fresh one took its place.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client
        .send(&Frame::new(Command::Disconnect).header("receipt", "still-here"))
        .await;
    client.expect_receipt("still-here").await;
}

#[tokio::test]
async fn a_fresh_token_for_someone_else_ends_the_session() {
    let Some(s) = secured(&[]) else { return };
    let mut client = connect_with_token(&s.target, &hs256(&claims(json!({})))).await;
    let other = format!("Bearer {}", hs256(&claims(json!({"sub": "mallory"}))));
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "0")
                .header("destination", "/topic/chat.x")
                .header("Authorization", other.as_str()),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("message"), Some("authentication failed"));
    assert!(matches!(
        client.receive(DEFAULT_TIMEOUT).await,
        Received::Closed
    ));
}
