#!/usr/bin/env bash
# Runs every meshward test, installing what is missing first (rust targets, Debian packages,
# the Envoy 1.40 venv). This is the README's test command and what CI runs.
#
#   1. setup (idempotent)              4. shared crate tests on wasm32 (wasm-bindgen-test)
#   2. wasm32-wasip1 release builds    5. every fuzz target for a short, bounded run
#   3. fmt + clippy -D warnings        6. native tests: cores, harness, OCI, real-Envoy suites,
#                                         the host-fault sweep and a one-minute soak
#
# MESHWARD_FUZZ_SECONDS sets step 5's seconds per target (default 20; 0 skips the step, for a
# quick local run — CI always runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "setup"
bash scripts/setup.sh

step "build filters and test modules (wasm32-wasip1, release)"
bash scripts/build-wasm.sh

step "cargo fmt --check / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The installed binary's build (scripts/install.sh: the filters embedded), from the modules above.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
MESHWARD_EMBED_WASM_DIR="$target/wasm32-wasip1/release" cargo clippy -p meshward-rig -p meshward-cli \
  --all-targets --features meshward-rig/embedded-filters,meshward-cli/embedded-filters --quiet -- -D warnings

step "meshward-common on wasm32 (wasm-bindgen-test)"
bash scripts/test-wasm-common.sh

fuzz_seconds="${MESHWARD_FUZZ_SECONDS:-20}"
if [ -n "${CI:-}" ] && [ "$fuzz_seconds" -lt 20 ]; then fuzz_seconds=20; fi
if [ "$fuzz_seconds" -gt 0 ]; then
  step "fuzz targets, ${fuzz_seconds} s each (scripts/fuzz.sh; own target dir fuzz/target)"
  bash scripts/fuzz.sh "$fuzz_seconds"
fi

step "native tests (cores, harness, OCI, real Envoy)"
# Last, so that the run closes with the runner's summary of the whole workspace.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  cargo test --workspace --no-fail-fast
fi
