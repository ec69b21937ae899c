#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does:
#   1. installs what the tests need (scripts/install-test-deps.sh),
#   2. cargo fmt --check, 3. cargo clippy -D warnings, 4. cargo test.
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
