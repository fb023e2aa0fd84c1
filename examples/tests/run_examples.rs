//! Runs each example client against a fresh broker, so the examples keep working.

use std::process::Command;

use postbox_testkit::Broker;

fn run(binary: &str, expected: &[&str]) {
    let broker = Broker::start(&[]);
    let output = Command::new(binary)
        .arg(broker.addr.to_string())
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{binary} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in expected {
        assert!(
            stdout.contains(line),
            "{binary} printed {stdout:?}, missing {line:?}"
        );
    }
}

#[test]
fn pubsub() {
    run(
        env!("CARGO_BIN_EXE_pubsub"),
        &["/topic/prices.ACME = 12.50", "/topic/prices.INITECH = 3.10"],
    );
}

#[test]
fn request_reply() {
    run(
        env!("CARGO_BIN_EXE_request_reply"),
        &["reply: HELLO, POSTBOX"],
    );
}
