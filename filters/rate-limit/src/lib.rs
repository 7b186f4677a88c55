//! meshward rate-limit: a thin proxy-wasm adapter over `rate_limit_core`.
