//! Real JavaScript clients: @stomp/stompjs under Node over ws and wss, and in headless
//! Chromium over ws. Needs Node with this directory's npm packages and Debian's
//! chromium; `scripts/test.sh` installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use postbox_testkit::Broker;
use postbox_testkit::certs::{self, TestCa};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn node(script: &str, url: &str, env: &[(&str, &Path)]) {
    assert!(
        js_dir().join("node_modules/@stomp/stompjs").exists(),
        "the JavaScript test packages are missing: run scripts/test.sh, or npm ci in {}",
        js_dir().display()
    );
    let output = Command::new("timeout")
        .arg("60")
        .arg("node")
        .arg(js_dir().join(script))
        .arg(url)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(js_dir())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{script} {url} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Secure {
    broker: Broker,
    ca_file: PathBuf,
    /// Holds the certificates; removed when the test ends.
    _dir: certs::TempDir,
}

fn start_secure() -> Secure {
    let ca = TestCa::new("js clients CA");
    let dir = certs::temp_dir("postbox-js");
    let (cert, key) = certs::write_server_files(&dir, &ca.server());
    let ca_file = ca.write_ca(&dir);
    let broker = common::start(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    Secure {
        broker,
        ca_file,
        _dir: dir,
    }
}

#[test]
fn stompjs_under_node_over_ws() {
    let secure = start_secure();
    let url = format!("ws://{}/ws", secure.broker.listener("ws"));
    node("stompjs_node.mjs", &url, &[]);
}

#[test]
fn stompjs_under_node_over_wss_with_the_test_ca_trusted() {
    let secure = start_secure();
    let url = format!(
        "wss://localhost:{}/ws",
        secure.broker.listener("wss").port()
    );
    node(
        "stompjs_node.mjs",
        &url,
        &[("NODE_EXTRA_CA_CERTS", secure.ca_file.as_path())],
    );
}

#[test]
fn stompjs_in_headless_chromium_over_ws() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: run scripts/test.sh, or apt-get install -y chromium"
    );
    let secure = start_secure();
    let url = format!("ws://{}/ws", secure.broker.listener("ws"));
    node("stompjs_browser.mjs", &url, &[]);
}
