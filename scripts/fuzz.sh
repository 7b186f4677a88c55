#!/usr/bin/env bash
# Build and run every coverage-guided fuzz target (fuzz/, docs/fuzzing.md) for SECONDS each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default 30 s, every target
#
# Stable Rust only: libfuzzer-sys (libFuzzer, compiled from its bundled C++ by `cc`) plus LLVM's
# SanitizerCoverage passes switched on through -C flags (what cargo-fuzz does, minus the nightly
# -Z sanitizer). No ASan: the code under test is safe Rust, and a panic or overflow is the
# finding. The build lives in fuzz/target (its own workspace), so the main workspace's target/ is
# never touched or rebuilt. Each target starts from a copy of fuzz/corpus/<target> (checked in)
# plus what earlier runs found (fuzz/target/corpus/<target>); a crash is written to
# fuzz/target/artifacts/<target>/ and makes the script exit 1 after the remaining targets ran.
set -euo pipefail

SECONDS_PER_TARGET="${1:-30}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"

# Idempotent install: a C++ compiler for libFuzzer's sources (cargo and rustc are the project's).
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz.sh: installing g++ (libFuzzer is C++)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq g++ >/dev/null; fi
fi

HOST="$(rustc -vV | sed -n 's/^host: //p')"
# Instrument only the fuzz binaries and their crates (with --target, RUSTFLAGS skip build
# scripts and proc-macros, which must not need the libFuzzer runtime to link).
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing"
# Keep CARGO_TARGET_DIR from the environment from redirecting the build into the main target/.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

BUILD_START=$(date +%s)
# Not --locked: fuzz/Cargo.lock pins what it can, but a filter crate that gains a dependency
# must not break the fuzz build until someone refreshes the fuzz lock file.
(cd "$FUZZ" && cargo build --release --target "$HOST" --bins)
echo "fuzz.sh: build took $(( $(date +%s) - BUILD_START )) s"

BIN="$FUZZ/target/$HOST/release"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cd "$FUZZ/fuzz_targets" && ls -1 *.rs | sed 's/\.rs$//' | sort)
fi

# One target per core at a time (MESHWARD_FUZZ_JOBS overrides): each libFuzzer run is one
# process on one core, so a sequential loop left the other core idle for the whole step.
JOBS="${MESHWARD_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"

# Runs one target; its summary line goes to fuzz/target/fuzz-<target>.summary.
run_target() {
    local t="$1"
    local work="$FUZZ/target/corpus/$t" artifacts="$FUZZ/target/artifacts/$t"
    local log="$FUZZ/target/fuzz-$t.log" summary="$FUZZ/target/fuzz-$t.summary"
    mkdir -p "$work" "$artifacts"
    local start rc execs cov crash
    start=$(date +%s)
    set +e
    "$BIN/$t" "$work" "$FUZZ/corpus/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1) || true
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1) || true
    crash=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1) || true
    if [ "$rc" -ne 0 ]; then
        printf '%-15s FAILED after %ss: crashes 1, executions %s, reproducer %s\n' \
            "$t" "$(( $(date +%s) - start ))" "${execs:-?}" "${crash:-none (see $log)}" >"$summary"
        echo "fuzz.sh: $t failed (exit $rc); last lines of $log:"
        grep -E "panicked|assert|ERROR|SUMMARY" "$log" | head -8 || true
        if [ -n "$crash" ]; then echo "fuzz.sh: reproduce with: $BIN/$t $crash"; fi
    else
        printf '%-15s ok %ss: crashes 0, executions %s, %s\n' \
            "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "${cov:-}" >"$summary"
    fi
}

for t in "${TARGETS[@]}"; do
    rm -f "$FUZZ/target/fuzz-$t.summary"
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    run_target "$t" &
done
wait

FAILED=0
echo "fuzz.sh: summary (${SECONDS_PER_TARGET} s per target, ${JOBS} at a time)"
for t in "${TARGETS[@]}"; do
    summary="$FUZZ/target/fuzz-$t.summary"
    if [ -s "$summary" ]; then
        line=$(cat "$summary")
    else
        line="$(printf '%-15s FAILED: the run left no summary' "$t")"
    fi
    case "$line" in *FAILED*) FAILED=1 ;; esac
    printf '  %s\n' "$line"
done
exit "$FAILED"
