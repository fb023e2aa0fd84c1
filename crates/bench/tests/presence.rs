//! `postbox-bench presence` against the `postbox` binary: every entry and leave is one
//! event at the room's watcher, and the counts settle.

use std::process::Command as Process;

use postbox_testkit::Broker;

#[test]
fn every_transition_is_one_event_and_the_counts_settle() {
    let broker = Broker::start(&["--presence", "/topic/bench.#"]);
    let output = Process::new(env!("CARGO_BIN_EXE_postbox-bench"))
        .args(["presence", "--addr", &broker.addr.to_string()])
        .args([
            "--users",
            "20",
            "--rooms",
            "4",
            "--rate",
            "400",
            "--duration",
            "2",
            "--json",
        ])
        .output()
        .expect("run postbox-bench");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    let expected = report["events_expected"].as_u64().unwrap();
    assert!(expected > 100, "{report}");
    assert_eq!(report["settled"], true, "{report}");
    assert!(report.get("missing").is_none(), "{report}");
    assert!(report.get("duplicates").is_none(), "{report}");
}

#[test]
fn without_presence_on_the_broker_the_run_reports_every_event_missing() {
    let broker = Broker::start(&[]);
    let output = Process::new(env!("CARGO_BIN_EXE_postbox-bench"))
        .args(["presence", "--addr", &broker.addr.to_string()])
        .args([
            "--users",
            "4",
            "--rooms",
            "2",
            "--rate",
            "100",
            "--duration",
            "1",
        ])
        .args(["--settle-within", "0.5", "--json"])
        .output()
        .expect("run postbox-bench");
    let report: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&output.stdout)).expect("a JSON report");
    assert_eq!(report["missing"], report["events_expected"], "{report}");
    assert_eq!(report["settled"], false, "{report}");
}
