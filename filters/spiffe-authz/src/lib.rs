//! meshward spiffe-authz: a thin proxy-wasm adapter over `spiffe_authz_core`.
