#!/usr/bin/env bash
# The main job: build the filters, then run every example scenario (tests/scenarios/**.yaml and
# the Istio mesh examples/mesh/*.yaml) through the harness and through a real Envoy 1.40, with
# the same files, and report any difference; then the mesh files once more against what istiod
# itself would render (`meshward test --native`), reporting where native Istio answers otherwise.
# Extra arguments go to `meshward test` (e.g. --verbose, or scenario files: then only those, and
# only the first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-wasm.sh
cargo build --quiet -p meshward-cli --bin meshward
files=()
if [ $# -eq 0 ] || [[ "${1:-}" == -* ]]; then
  while IFS= read -r f; do files+=("$f"); done < <(find tests/scenarios -name '*.yaml' | sort)
  # Only the scenario files: examples/mesh/resources/ holds the Istio YAML they load.
  while IFS= read -r f; do files+=("$f"); done < <(find examples/mesh -maxdepth 1 -name '*.yaml' | sort)
fi
bin="${CARGO_TARGET_DIR:-target}/debug/meshward"
# The gRPC conformance files (tests/scenarios/conformance/grpc) call a real gRPC server: start the
# test one (it stops with this script) and hand its ports to the files' `${MESHWARD_GRPC_*}`.
coproc GRPC_ECHO { exec .venv/bin/python tests/peers/grpc_echo.py; }
trap 'kill "$GRPC_ECHO_PID" 2>/dev/null || true' EXIT
read -r _ MESHWARD_GRPC_ECHO <&"${GRPC_ECHO[0]}"
read -r _ MESHWARD_GRPC_SILENT <&"${GRPC_ECHO[0]}"
export MESHWARD_GRPC_ECHO MESHWARD_GRPC_SILENT
status=0
"$bin" test --envoy "$@" "${files[@]}" || status=$?
if [ $# -eq 0 ] || [[ "${1:-}" == -* ]]; then
  native=()
  while IFS= read -r f; do native+=("$f"); done < <(
    { find examples/mesh -maxdepth 1 -name '*.yaml'; find tests/scenarios/mesh-native tests/scenarios/mesh-tcp -name '*.yaml'; } | sort)
  "$bin" test --native "$@" "${native[@]}" || status=$?
fi
exit "$status"
