//! Shared building blocks of the meshward filter cores. Nothing here knows about proxy-wasm: the
//! cores and this crate are plain Rust, unit-tested natively (and on wasm32, see the tests).
//!
//! - [`config`]: the config error type every filter reports, and strict JSON parsing.
//! - [`identity`]: the verified end-user identity jwt-authn publishes for the other filters.
//! - [`matchers`]: Istio's string forms (`abc`, `abc*`, `*abc`, `*`), compiled from config.
//! - [`path`]: request-path normalization for matching (and forwarding) that cannot be bypassed.
//! - [`shared_store`]: Envoy's shared data as a core sees it (the one [`shared_store::SharedStore`]
//!   trait), with an in-memory model for native tests.
//! - [`spiffe`]: SPIFFE IDs parsed with go-spiffe's strict rules.

pub mod config;
pub mod duration;
pub mod header_name;
pub mod identity;
pub mod logtext;
pub mod matchers;
pub mod path;
pub mod shared_store;
pub mod spiffe;

pub use config::{parse_json, ConfigError};
