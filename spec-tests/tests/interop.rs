//! Interoperability with real client libraries, run against the broker under test.
//!
//! Needs `python3` with `stomp.py` installed (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::Command as Process;

use postbox_spec_tests::*;

/// Runs `interop/<script>` against the target and fails with its output if it fails.
fn run_python(target: &Target, script: &str) {
    let has_stomp = Process::new("python3")
        .args(["-c", "import stomp"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_stomp,
        "python3 with stomp.py is needed: run scripts/test.sh, or pip install stomp.py==8.2.0"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(script);
    let mut command = Process::new("timeout");
    command
        .arg("60")
        .arg("python3")
        .arg(path)
        .arg(target.addr.ip().to_string())
        .arg(target.addr.port().to_string());
    let connect = target.connect_frame();
    for name in ["login", "passcode", "host"] {
        command.arg(connect.get(name).unwrap_or_default());
    }
    let output = command.output().expect("run python3");
    assert!(
        output.status.success(),
        "{script} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn stomp_py_connect_subscribe_send_receive_disconnect() {
    let target = Target::new();
    run_python(&target, "stomp_py_basic.py");
}

#[test]
fn stomp_py_acks_nack_and_transactions() {
    let target = Target::new();
    run_python(&target, "stomp_py_acks.py");
}
