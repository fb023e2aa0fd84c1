//! Shared by the broker's integration tests: starting this package's `postbox` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use postbox_testkit::Broker;

/// This package's freshly built binary.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_postbox"))
}

/// Starts `postbox` with `args` on a free loopback port.
pub fn start(args: &[&str]) -> Broker {
    Broker::start_binary(binary(), args)
}

/// HS256 by hand (base64url + HMAC-SHA256 from openssl), to keep this crate free of
/// a JWT library: the spec-tests sign with jsonwebtoken.
pub fn hs256(secret: &str, claims: &str) -> String {
    let b64 = |bytes: &[u8]| {
        let mut child = Process::new("openssl")
            .args(["base64", "-A"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        out.trim()
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    let signing_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.as_bytes())
    );
    let mut child = Process::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = child.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", b64(&signature))
}

/// The value of the metric line that starts with `series` (name and labels) in an
/// OpenMetrics scrape.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
