//! How fast is a filter chain?
//!
//! - [`bench`] (`meshward bench SCENARIO`): requests per second, latency and CPU per request of
//!   requests through a chain in the harness;
//! - [`envoy`] (`meshward bench envoy`): meshward's filters against Envoy's native filters in one
//!   real Envoy 1.40, side by side;
//! - [`tcp`] (`meshward bench tcp`): spiffe-authz-tcp against Envoy's native network RBAC in one
//!   real Envoy 1.40, per connection.

pub mod envoy;
mod harness;
pub mod tcp;

pub use harness::{bench, BenchOptions, BenchReport};
