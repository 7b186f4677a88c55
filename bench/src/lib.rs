//! How fast is a filter chain?
//!
//! - [`bench`] (`meshward bench SCENARIO`): requests per second, latency and CPU per request of
//!   requests through a chain in the harness;
//! - [`envoy`] (`meshward bench envoy`): meshward's filters against Envoy's native filters in one
//!   real Envoy 1.40, side by side.

pub mod envoy;
mod harness;

pub use harness::{bench, BenchOptions, BenchReport};
