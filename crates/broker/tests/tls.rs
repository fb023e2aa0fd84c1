//! STOMP over TLS: certificates in certbot's layout, hot reload, client certificates.

mod common;

use std::time::Duration;

use postbox_testkit::certs::{self, Leaf, TestCa};
use postbox_testkit::client::{self, Received};
use postbox_testkit::{Broker, Client, Command, eventually};
use rustls_pki_types::CertificateDer;

struct Setup {
    ca: TestCa,
    dir: certs::TempDir,
    broker: Broker,
    first: Leaf,
}

fn setup(extra: &[&str]) -> Setup {
    let ca = TestCa::new("postbox test CA");
    let dir = certs::temp_dir("postbox-tls");
    let first = ca.server();
    let (cert, key) = certs::write_server_files(&dir, &first);
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let broker = common::start(&args);
    Setup {
        ca,
        dir,
        broker,
        first,
    }
}

/// The certificate the server presents to a new handshake.
async fn presented(setup: &Setup) -> CertificateDer<'static> {
    let stream = client::tcp(setup.broker.listener("stomp-tls")).await;
    let connector = setup.ca.connector(None);
    let tls = connector
        .connect(certs::localhost(), stream)
        .await
        .expect("TLS handshake");
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().expect("server certificate")[0].clone()
}

async fn wait_for_certificate(setup: &Setup, expected: &Leaf) {
    eventually(
        Duration::from_secs(10),
        "the new certificate to be presented",
        async || presented(setup).await == expected.der(),
    )
    .await;
}

/// How long to leave a refused certificate in place: five polls at `--tls-reload-ms 100`.
/// A refusal changes nothing that can be observed (only a log line), so proving that
/// the old certificate stays takes a real wait; the test's last step, where a good
/// certificate is taken, shows that the watcher was running all along.
const REFUSAL_WINDOW: Duration = Duration::from_millis(500);

#[tokio::test]
async fn stomp_over_tls_round_trip() {
    let setup = setup(&[]);
    let addr = setup.broker.listener("stomp-tls");
    let mut client = Client::open_tls(addr, &setup.ca.connector(None)).await;
    client.stomp_connect(&[]).await;
    client.subscribe("0", "/topic/secure", &[]).await;
    client.publish("/topic/secure", "encrypted").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"encrypted");
    client.disconnect().await;
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_and_spares_open_connections() {
    let setup = setup(&["--tls-reload-ms", "100"]);
    let addr = setup.broker.listener("stomp-tls");
    assert_eq!(presented(&setup).await, setup.first.der());
    let mut established = Client::open_tls(addr, &setup.ca.connector(None)).await;
    established.stomp_connect(&[]).await;
    established.subscribe("0", "/topic/renewal", &[]).await;

    let renewed = setup.ca.server();
    certs::write_server_files(&setup.dir, &renewed);
    wait_for_certificate(&setup, &renewed).await;

    // The connection made with the old certificate still works both ways.
    established.publish("/topic/renewal", "still here").await;
    let message = established.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"still here");
}

#[tokio::test]
async fn a_bad_new_certificate_is_refused_and_the_old_one_stays() {
    let setup = setup(&["--tls-reload-ms", "100"]);
    std::fs::write(setup.dir.join("fullchain.pem"), "not a certificate").unwrap();
    tokio::time::sleep(REFUSAL_WINDOW).await;
    assert_eq!(presented(&setup).await, setup.first.der());
    // A certificate whose key does not match is refused too.
    let other = setup.ca.server();
    std::fs::write(setup.dir.join("fullchain.pem"), &other.cert_pem).unwrap();
    tokio::time::sleep(REFUSAL_WINDOW).await;
    assert_eq!(presented(&setup).await, setup.first.der());
    // Once a matching key is in place the new one is taken.
    certs::write_server_files(&setup.dir, &other);
    wait_for_certificate(&setup, &other).await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let setup = setup(&["--tls-reload-ms", "0"]);
    let renewed = setup.ca.server();
    certs::write_server_files(&setup.dir, &renewed);
    // Proving that nothing reloads on its own takes a real wait: with polling on, the
    // other tests see a change within 100 ms, so 300 ms would catch a stray watcher.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        presented(&setup).await,
        setup.first.der(),
        "reloaded without SIGHUP"
    );
    setup.broker.signal("HUP");
    wait_for_certificate(&setup, &renewed).await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let clients = TestCa::new("client CA");
    let dir = certs::temp_dir("postbox-mtls");
    let ca_path = clients.write_ca(&dir);
    let setup = setup(&["--tls-client-ca", ca_path.to_str().unwrap()]);
    let addr = setup.broker.listener("stomp-tls");

    // Without a certificate the handshake (or the first read) fails.
    let refused = match client::tls(addr, &setup.ca.connector(None)).await {
        Err(_) => true,
        Ok(stream) => {
            let mut client = Client::over(stream);
            client
                .try_send_raw(b"CONNECT\naccept-version:1.2\n\n\0")
                .await
                .ok();
            matches!(
                client.receive(Duration::from_secs(5)).await,
                Received::Closed
            )
        }
    };
    assert!(refused, "a client without a certificate got in");

    // A certificate from another CA is refused as well.
    let stranger = TestCa::new("stranger").client("mallory");
    let connector = setup.ca.connector(Some(&stranger));
    let stranger_in = match client::tls(addr, &connector).await {
        Err(_) => false,
        Ok(stream) => {
            let mut client = Client::over(stream);
            client
                .try_send_raw(b"CONNECT\naccept-version:1.2\n\n\0")
                .await
                .ok();
            matches!(
                client.receive(Duration::from_secs(5)).await,
                Received::Frame(_)
            )
        }
    };
    assert!(!stranger_in, "a certificate from an unknown CA got in");

    let alice = clients.client("alice");
    let mut client = Client::open_tls(addr, &setup.ca.connector(Some(&alice))).await;
    client.stomp_connect(&[]).await;
    client.disconnect().await;
}

#[test]
fn tls_listeners_need_a_certificate() {
    let output = std::process::Command::new(common::binary())
        .args(["--tls-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("need tls-cert and tls-key"), "{stderr}");
}

#[test]
fn an_unreadable_certificate_stops_the_start() {
    let dir = certs::temp_dir("postbox-tls-bad");
    std::fs::write(dir.join("fullchain.pem"), "garbage").unwrap();
    std::fs::write(dir.join("privkey.pem"), "garbage").unwrap();
    let output = std::process::Command::new(common::binary())
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("fullchain.pem"))
        .arg("--tls-key")
        .arg(dir.join("privkey.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no CERTIFICATE found"), "{stderr}");
}

#[test]
fn old_tls_versions_are_refused() {
    let setup = setup(&[]);
    let addr = setup.broker.listener("stomp-tls");
    let handshake = |version: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), version, "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl is installed")
    };
    assert!(handshake("-tls1_2").status.success(), "TLS 1.2 must work");
    assert!(handshake("-tls1_3").status.success(), "TLS 1.3 must work");
    assert!(
        !handshake("-tls1_1").status.success(),
        "TLS 1.1 must be refused"
    );
}
