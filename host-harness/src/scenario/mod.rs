//! Scenario files: a filter chain and cases, run in the harness (here) or in real Envoy (the
//! `envoy` module), checked the same way.

pub mod check;
pub mod model;
pub mod run;

pub use check::{check, parity, render, Mismatch, Observed};
pub use model::{default_wasm_dir, Case, Scenario};
pub mod envoy;
pub mod suite;
