//! Shared by the broker's integration tests: starting this package's `postbox` binary.
#![allow(dead_code)]

use std::path::Path;

use postbox_testkit::Broker;

/// This package's freshly built binary.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_postbox"))
}

/// Starts `postbox` with `args` on a free loopback port.
pub fn start(args: &[&str]) -> Broker {
    Broker::start_binary(binary(), args)
}
