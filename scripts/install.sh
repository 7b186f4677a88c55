#!/usr/bin/env bash
# Installs a `meshward` that carries its filters, so that `meshward test` runs in any repository
# with no meshward build beside it:
#   1. the wasm32-wasip1 Rust target, if missing (nothing else: no Debian packages, no Envoy);
#   2. scripts/build-wasm.sh: the filters, the bundle and spiffe-authz-tcp (release);
#   3. cargo install --path cli --locked --features embedded-filters: the binary, with the shipped
#      modules inside it (MESHWARD_EMBED_WASM_DIR names the directory they are taken from).
#
#   scripts/install.sh [--root DIR] [--debug]
#
# --root DIR   install into DIR/bin (cargo install --root; default $CARGO_INSTALL_ROOT or ~/.cargo)
# --debug      a debug build of the binary (cargo install --debug; the filters stay release builds),
#              quicker to build: cli/tests/install.rs uses it
#
# Build artifacts go to $CARGO_TARGET_DIR, default target/ (the binary under target/host-release:
# the CLI's profile, which runs the harness at full speed without the filters' LTO build time).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install] %s\n' "$*" >&2; }
usage() { sed -n '9,13p' "$0" | sed 's/^# \{0,1\}//' >&2; }

install_args=()
profile=(--profile host-release)
while [ $# -gt 0 ]; do
  case "$1" in
    --root)
      [ $# -ge 2 ] || { usage; exit 2; }
      install_args+=(--root "$2")
      shift 2
      ;;
    --root=*)
      install_args+=(--root "${1#--root=}")
      shift
      ;;
    --debug)
      profile=(--debug)
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      log "unknown argument: $1"
      usage
      exit 2
      ;;
  esac
done

# The filters need the wasm32-wasip1 target; rustup installs it. Without rustup (a distribution's
# Rust) the target is assumed present and cargo says otherwise.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip1; then
  log "rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

log "building the filters (scripts/build-wasm.sh)"
bash scripts/build-wasm.sh

# Absolute: the path is read by meshward-rig's build script, whose working directory is rig/.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$PWD/$target" ;;
esac
export MESHWARD_EMBED_WASM_DIR="$target/wasm32-wasip1/release"

log "cargo install --path cli ${profile[*]} ${install_args[*]}"
cargo install --path cli --locked --features embedded-filters --force "${profile[@]}" "${install_args[@]}"
