#!/usr/bin/env bash
# Builds every filter, the bundle and the test modules for wasm32-wasip1 (release profile: lto,
# one codegen unit, panic=abort, stripped, opt-level 3), then drops the callback exports the
# shipped filters do not handle. Output: target/wasm32-wasip1/release/*.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-wasip1 --quiet \
  -p header-limits -p spiffe-authz -p jwt-authn -p rate-limit \
  -p meshward-test-noop -p meshward-test-probe -p meshward-test-verify \
  -p meshward-test-sdk-properties -p meshward-test-sdk-runtime -p meshward-test-sdk-http \
  -p meshward-test-sdk-network -p meshward-test-sdk-grpc -p meshward-test-hostcall-cost
# The bundle in an invocation of its own: cargo unifies features across the packages it builds,
# and the bundle needs the adapters without their `standalone` entry points (filters/bundle);
# so does spiffe-authz-tcp (spiffe-authz's connection stage, without its HTTP entry point).
cargo build --release --target wasm32-wasip1 --quiet -p meshward-bundle -p spiffe-authz-tcp
dir="${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release"
# The shipped modules keep only the callback exports they handle (their `meshward.callbacks`
# section, meshward_host::callbacks!): Envoy skips a callback a module does not export, and the
# SDK exports them all. The test modules stay as the SDK builds them.
cargo run --quiet -p meshward-trim-callbacks -- \
  "$dir/header_limits.wasm" "$dir/spiffe_authz.wasm" "$dir/spiffe_authz_tcp.wasm" \
  "$dir/jwt_authn.wasm" "$dir/rate_limit.wasm" "$dir/meshward.wasm"
for f in header_limits spiffe_authz spiffe_authz_tcp jwt_authn rate_limit meshward meshward_test_noop meshward_test_probe meshward_test_verify meshward_test_sdk_properties meshward_test_sdk_runtime meshward_test_sdk_http meshward_test_sdk_network meshward_test_sdk_grpc meshward_test_hostcall_cost; do
  printf '%-24s %8d bytes\n' "$f.wasm" "$(stat -c %s "$dir/$f.wasm")" >&2
done
