//! meshward jwt-authn: a thin proxy-wasm adapter over `jwt_authn_core`.
