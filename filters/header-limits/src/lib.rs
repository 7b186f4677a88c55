//! meshward header-limits: a thin proxy-wasm adapter over `header_limits_core`.
