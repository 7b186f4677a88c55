//! meshward harness: a wasmtime host of the proxy-wasm ABI 0.2.1 that behaves like Envoy 1.40.
//!
//! Build a [`Host`] from one or more [`FilterSpec`]s (a chain), send [`Request`]s, read the
//! [`Outcome`] (verdict, what the upstream saw, what the client got, logs), metrics, shared data
//! and logs. See `docs/design.md` ("Harness API").
//!
//! Modelled Envoy behaviour: module loading and the exact import set Envoy satisfies
//! ([`module`](crate::supported_imports)), the WASI subset of proxy-wasm-cpp-host, the request
//! lifecycle across a chain (local replies, pause/continue, traps and `fail_open`), the HCM and
//! codec ([`ListenerSettings`]), properties with Envoy's encodings, shared data/queues, metrics,
//! ticks on every root context, HTTP callouts to test-defined clusters, and a virtual clock.

mod abi;
mod callout;
mod check;
mod clock;
mod error;
mod hcm;
mod headers;
mod host;
mod hostcalls;
mod interleave;
mod module;
mod properties;
mod shared;
mod types;
mod upstream;
mod wasi;
mod worker;

pub use abi::Status;
pub use callout::{CalloutRequest, CalloutResponse, Cluster};
pub use check::{check, CheckReport};
pub use clock::ClockMode;
pub use error::HostError;
pub use hcm::ListenerSettings;
pub use host::{FilterSpec, Host, HostBuilder, Started};
pub use module::{supported_imports, AbiVersion, ModuleReport};
pub use shared::{HostcallRecord, MetricKind, MetricValue};
pub use types::{LogLevel, LogLine, Outcome, Phase, Request, RequestHead, Response, Tls, Verdict};
pub use worker::FailStrategy;
