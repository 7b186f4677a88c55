//! Shared building blocks of the meshward filter cores (no proxy-wasm types here).
