#!/usr/bin/env bash
# Runs every test of kling-audit. Installs what the tests need first:
# - the npm package kling-api@1.0.0 (the third-party Kling client the integration tests drive);
# - nothing else: Rust, Python 3 and Node.js with npm must already be on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "error: '$1' is required by the tests but is not installed; $2" >&2
    exit 2
  }
}
need cargo "install Rust from https://rustup.rs"
need python3 "install Python 3 (Debian: apt-get install python3)"
need node "install Node.js 18+ (Debian: apt-get install nodejs npm)"
need npm "install npm (Debian: apt-get install npm)"

(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

cargo test --workspace --locked "$@"
