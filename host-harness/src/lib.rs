//! meshward harness: a wasmtime host of the proxy-wasm ABI 0.2.1 that behaves like Envoy 1.40.
//!
//! Build a [`Host`] from one or more [`FilterSpec`]s (a chain), send [`Request`]s, read the
//! [`Outcome`] (verdict, what the upstream saw, what the client got, logs), metrics, shared data
//! and logs. See `docs/design.md` ("Harness API").
//!
//! Modelled Envoy behaviour: module loading and the exact import set Envoy satisfies
//! ([`supported_imports`]), the WASI subset of proxy-wasm-cpp-host, the request lifecycle across a
//! chain (local replies, pause/continue, traps and `fail_open`), the HCM and codec
//! ([`ListenerSettings`]), properties with Envoy's encodings, shared data/queues, metrics, ticks
//! on every root context, HTTP callouts to test-defined clusters, and a virtual clock.
//!
//! Inside, one job per module, each depending only on those listed before it:
//! - `outcome`, `request`: the public vocabulary;
//! - `runtime`: what Envoy's threads share (clock and timers, shared data, queues, metrics,
//!   faults, the interleaving gate) and their names ([`Thread`]);
//! - `envoy_model`: Envoy around the filters (the listener's transport modes, HCM and codec,
//!   header maps, router and echo upstream, clusters, attributes);
//! - `stream`: a request in flight and what filters ask of it;
//! - `vm`: a VM set per thread, module compilation, guest memory, calls into the guest;
//! - `hostcalls`: the functions a module imports, one file per ABI area, WASI included;
//! - `loader`: Envoy's load-time checks (imports, exports, ABI version);
//! - `chain`: the request driver and root-context events;
//! - `connection`: a TCP connection through network filters and its driver;
//! - `host`: the public [`Host`] and its builder; `check` on top.

mod chain;
mod check;
mod connection;
mod envoy_model;
mod error;
mod host;
mod hostcalls;
mod loader;
mod outcome;
mod request;
mod runtime;
mod stream;
mod vm;

pub use check::{check, CheckReport};
pub use connection::{ClosedBy, ConnectionOutcome, ConnectionSpec};
pub use envoy_model::{
    CalloutRequest, CalloutResponse, Cluster, DownstreamTransport, ListenerSettings,
};
pub use error::HostError;
pub use host::{FilterSpec, Host, HostBuilder, Started, TcpConnection};
pub use hostcalls::foreign_function;
pub use loader::{supported_imports, ModuleReport};
pub use meshward_abi::{AbiVersion, Status};
pub use outcome::{LogLevel, LogLine, Outcome, Phase, RequestHead, Response, Verdict};
pub use request::{Request, Tls};
pub use runtime::{ClockMode, HostcallRecord, MetricKind, MetricValue, Thread};
pub use vm::{meter_guest_instructions, FailStrategy};
