#!/usr/bin/env bash
# Long local fuzzing (nightly + cargo-fuzz; CI replays the committed corpora
# on stable instead, see docs/fuzzing.md).
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all of fuzz/fuzz_targets/) for SECONDS
# (default 600), two at a time, at low priority. New inputs go to
# fuzz/work/<target>/ (git-ignored), seeded from the committed
# fuzz/corpus/<target>/; crashes to fuzz/artifacts/<target>/; libFuzzer's
# output to fuzz/logs/<target>.log, whose last `#N DONE cov: .. ft: ..
# corp: ..` line is the run's summary. Installs cargo-fuzz if it is missing.
#
# With FUZZ_FOLD=1, what the runs found is then folded into the committed
# corpora, kept small (scripts/fuzz-fold.py: the named seeds and crashes,
# then greedily the inputs that add the most edges, 45 files at most).
#
# Environment: FUZZ_JOBS (targets at a time, default 2), FUZZ_TIMEOUT (seconds
# one input may take before it counts as a hang, default 10), FUZZ_RSS_MB
# (memory limit, default 2048).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=()
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
jobs="${FUZZ_JOBS:-2}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rustup run nightly rustc --version >/dev/null 2>&1 \
    || { echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }

# Memory-safe Rust: no sanitizer (twice the speed); debug assertions on, so
# overflows panic.
flags=(--sanitizer none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"

mkdir -p logs
stamp="logs/.started"
touch "$stamp"
run_one() {
    local t="$1"
    mkdir -p "work/$t" "artifacts/$t"
    local rc=0
    nice -n 10 cargo +nightly fuzz run "${flags[@]}" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -print_final_stats=1 >"logs/$t.log" 2>&1 || rc=$?
    printf '%-8s exit %s  %s\n' "$t" "$rc" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" | tail -1)"
}

running=0
status=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
fold() {
    local t="$1" min
    min="$(mktemp -d)"
    "target/x86_64-unknown-linux-gnu/release/$t" -merge=1 -use_counters=0 \
        -merge_control_file="$min.ctl" "$min" "corpus/$t" "work/$t" >"logs/$t.merge.log" 2>&1
    python3 ../scripts/fuzz-fold.py "$min.ctl" "corpus/$t" 45
    rm -rf "$min" "$min.ctl"
}
if [ "${FUZZ_FOLD:-0}" = 1 ]; then
    for t in "${targets[@]}"; do fold "$t"; done
fi

crashes="$(find artifacts -type f -newer "$stamp" 2>/dev/null)"
if [ -n "$crashes" ]; then
    printf '%s\n' "$crashes"
    echo "fuzz.sh: crashes above (see docs/fuzzing.md)" >&2
    status=1
fi
exit "$status"
