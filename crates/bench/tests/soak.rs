//! A short soak against the `postbox` binary: the fault-and-load mix of
//! `postbox-bench soak` for about ten seconds must see no probe stall and leave the
//! broker alive and delivering; and a broker that stops answering must fail the soak.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Output};
use std::time::Duration;

use postbox_testkit::{Broker, Client, Command, eventually};

/// Runs `postbox-bench soak` against `broker` with `extra` options.
fn soak(broker: &Broker, extra: &[&str]) -> std::process::Child {
    Process::new(env!("CARGO_BIN_EXE_postbox-bench"))
        .args(["soak", "--addr", &broker.addr.to_string()])
        .args(["--broker-pid", &broker.pid().to_string()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start postbox-bench")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_sees_no_stall_and_the_broker_delivers_after_it() {
    let broker = Broker::start(&[]);
    // A light mix (the test suite shares the machine): every kind of fault still runs.
    let child = soak(
        &broker,
        &[
            "--duration",
            "10s",
            "--report-every",
            "5s",
            "--settle",
            "2s",
            "--rate",
            "2000",
            "--cohorts",
            "2",
            "--storm-size",
            "20",
            "--storm-every",
            "3s",
        ],
    );
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("postbox-bench ran");
    let report = text(&output);
    assert!(output.status.success(), "soak failed:\n{report}");
    assert!(report.contains("stalls (> 1000 ms) 0"), "{report}");
    assert!(report.contains("OK: no stall"), "{report}");
    // Every kind of load ran.
    for line in ["consumers ", "bad frames ", "floods ", "storms "] {
        assert!(report.contains(line), "no {line:?} line:\n{report}");
    }

    // Alive after: a new client still gets a round trip through a queue and a topic.
    let mut client = Client::connect(broker.addr, &[]).await;
    for destination in ["/queue/after-soak", "/topic/after-soak"] {
        client.subscribe(destination, destination, &[]).await;
        client.publish(destination, "still here").await;
        let message = client.expect(Command::Message).await;
        assert_eq!(message.body.as_ref(), b"still here");
    }
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_fails_the_soak() {
    let broker = Broker::start(&[]);
    let mut child = soak(
        &broker,
        &[
            "--duration",
            "60s",
            "--report-every",
            "1s",
            "--rate",
            "500",
            "--storm-size",
            "0",
        ],
    );
    // Let the probe succeed a few times (two progress lines, one a second), then freeze
    // the broker.
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (lines, printed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    eventually(
        Duration::from_secs(30),
        "two soak progress lines",
        async || {
            seen.extend(printed.try_iter());
            let progress = seen.iter().filter(|l| l.contains("] delivered ")).count();
            if progress >= 2 {
                Ok(())
            } else {
                Err(seen.clone())
            }
        },
    )
    .await;
    broker.signal("STOP");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("postbox-bench ran");
    broker.signal("CONT");
    reader.join().expect("stdout reader");
    seen.extend(printed.try_iter());
    let report = format!("{}\n{}", seen.join("\n"), text(&output));
    assert!(
        !output.status.success(),
        "soak passed a frozen broker:\n{report}"
    );
    assert!(
        report.contains("FAIL: the broker stopped answering"),
        "{report}"
    );
}
