#!/usr/bin/env bash
# `meshward bench` of two builds side by side in one run, rounds in alternating order:
#   old   = OLD_BIN with the filters in OLD_WASM
#   new   = NEW_BIN with the filters in NEW_WASM
#   new-h = NEW_BIN with the filters in OLD_WASM (only the host differs)
# Usage: benches/side-by-side.sh OLD_BIN OLD_WASM NEW_BIN NEW_WASM
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_BIN=$1 OLD_W=$2 NEW_BIN=$3 NEW_W=$4
run() { # binary wasm-dir scenario
  "$1" bench "benches/scenarios/$3.yaml" --count 200000 --wasm-dir "$2" 2>&1 \
    | awk '/requests\/s:/{r=$2} /cpu per request:/{c=$4} /latency/{p50=$3; p99=$5} END{printf "%s req/s, %s CPU/req, p50 %s, p99 %s\n", r, c, p50, p99}'
}
for r in 1 2 3; do
  for s in header-limits-20 spiffe-authz-mesh-10 noop-20; do
    if [ $((r % 2)) -eq 1 ]; then order="old new new-h"; else order="new-h new old"; fi
    for b in $order; do
      case $b in
        old) out=$(run "$OLD_BIN" "$OLD_W" "$s");;
        new) out=$(run "$NEW_BIN" "$NEW_W" "$s");;
        new-h) out=$(run "$NEW_BIN" "$OLD_W" "$s");;
      esac
      echo "$s round $r $b: $out"
    done
  done
done
