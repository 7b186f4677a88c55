//! Scenario files: a filter chain and cases, run on a [`Target`] — the harness
//! ([`HarnessTarget`]) or a real Envoy 1.40 ([`EnvoyTarget`]) — and checked the same way.

pub mod bundle;
pub mod check;
pub mod envoy;
pub mod harness;
pub mod mesh;
pub mod model;
pub mod native;
pub mod oci;
pub mod suite;
pub mod target;
pub mod tcp;

pub use check::{check, parity, render, Mismatch, Observed};
pub use envoy::EnvoyTarget;
pub use harness::HarnessTarget;
pub use meshward_rig::{default_wasm_dir, wasm_dir};
pub use model::{Case, Scenario};
pub use target::{run_cases, Target};
