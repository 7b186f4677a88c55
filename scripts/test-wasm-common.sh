#!/usr/bin/env bash
# Runs meshward-common's unit tests on wasm32-unknown-unknown under node with wasm-bindgen-test,
# the same tests `cargo test -p meshward-common` runs natively (each is
# `#[wasm_bindgen_test(unsupported = test)]`).
#
# - Installs wasm-bindgen-cli (which provides wasm-bindgen-test-runner) at exactly the version of
#   the `wasm-bindgen` crate in Cargo.lock if it is missing or different (`cargo install`, ~3 min;
#   `--locked` fails for it here, so it is not used).
# - Refuses plain `#[test]` in the crate: wasm-bindgen-test silently skips those on wasm32.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test-wasm-common] %s\n' "$*" >&2; }

if grep -rn '#\[test\]' filters/common/src; then
  log "plain #[test] above would be skipped on wasm32: use #[wasm_bindgen_test(unsupported = test)]"
  exit 1
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# Make sure Cargo.lock pins wasm-bindgen (it is a dev-dependency of meshward-common).
cargo metadata --format-version 1 >/dev/null
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
  log "no wasm-bindgen in Cargo.lock"
  exit 1
fi
installed=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$version" ]; then
  log "cargo install wasm-bindgen-cli --version $version (installed: ${installed:-none})"
  cargo install wasm-bindgen-cli --version "$version"
fi

command -v node >/dev/null || { log "node is required"; exit 1; }

CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p meshward-common --lib --target wasm32-unknown-unknown "$@"
