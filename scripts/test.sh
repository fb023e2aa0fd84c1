#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace.
# Installs what the tests need when it is missing; ends with nextest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> prerequisites"
if ! python3 -c 'import stomp' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'stomp.py==8.2.0'
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> doc tests"
cargo test --workspace --doc --locked --quiet

echo "==> build the postbox binary the suites start"
cargo build --workspace --bins --locked --quiet

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
