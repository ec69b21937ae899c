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
# The fuzz crate (its own workspace; fuzz/Cargo.lock is the root lock plus
# its fuzzing crates: after a dependency change, `cp Cargo.lock fuzz/` and
# `cargo metadata --manifest-path fuzz/Cargo.toml`): every committed corpus
# input through its target, on stable.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --lib --tests --locked --target-dir target -- -D warnings
cargo test --manifest-path fuzz/Cargo.toml --lib --locked --target-dir target
