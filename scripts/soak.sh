#!/usr/bin/env bash
# Soak: the four filters in one real Envoy 1.40 chain under mixed valid and hostile mTLS traffic,
# with the JWKS server flapping (up, down, garbage, slow) and rate-limit keys churning, for
# MINUTES minutes (default 1). Prints Envoy's RSS over time, the status counts per request kind,
# unexpected statuses and client errors; exits non-zero on any unexpected status (every 5xx is
# one), client error, critical Envoy log line, or RSS growth after warm-up above the bound
# (5% for runs of 10 minutes or more, 10% below; MESHWARD_SOAK_RSS_PCT overrides).
# The test is tests/tests/soak.rs; CI runs it for one minute as part of the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-1}"
case "$minutes" in
  ''|*[!0-9]*) echo "usage: scripts/soak.sh [MINUTES]" >&2; exit 2 ;;
esac
scripts/build-wasm.sh
MESHWARD_SOAK_SECS=$((minutes * 60)) exec cargo test -p meshward-tests --test soak -- --nocapture
