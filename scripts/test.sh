#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does:
#   1. installs what the tests need (scripts/install-test-deps.sh),
#   2. cargo fmt --check, 3. cargo clippy -D warnings, 4. cargo test,
#   5. the fuzz smoke: every committed fuzz corpus file through its target
#      (fuzz/ is a crate of its own; built into the same target/, on stable).
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
# Not --locked: fuzz/Cargo.lock follows the workspace crates' dependencies,
# and a dependency added to them must not fail the smoke until it is synced.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --lib --tests --target-dir target -- -D warnings
cargo test --manifest-path fuzz/Cargo.toml --lib --target-dir target
