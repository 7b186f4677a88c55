//! The real-Envoy rig: run a filter chain in Envoy 1.40 and see what happened.
//!
//! The pieces a test needs to run a filter chain in Envoy 1.40 and see what happened:
//!
//! - [`Certs`]: a throw-away CA, a server certificate for the TLS listener and client certificates
//!   with arbitrary URI SANs (SPIFFE IDs, valid or not);
//! - [`EchoUpstream`]: the loopback HTTP/1.1 upstream, answering every request with a JSON echo of
//!   what it received (the same shape as the harness's modelled upstream; parse it with
//!   [`RequestHead`]), a handler's response, or one fixed response (benchmarks);
//! - [`EnvoyConfig`]: a bootstrap generator (plaintext + optional TLS listener, an optional
//!   listener of an Istio mTLS mode ([`MtlsMode`]), the wasm filters, raw native filters, the
//!   router, the `upstream` cluster and extra clusters);
//! - [`Envoy`]: starts Envoy in its own process group, waits until it is ready, reads the bound
//!   ports from the admin endpoint, exposes the log and the stats, and stops it by PID on drop;
//! - [`Client`]: a raw HTTP/1.1 client (plaintext or rustls, optional client certificate, optional
//!   source IP) that sends the request-target and headers byte for byte ([`Request`]), and reads
//!   the [`Response`] with the rig's one HTTP/1 reader (shared with the upstream), or tells a
//!   listener's refusal ([`Refused`]) apart;
//! - TCP ([`tcp_listener`], [`TcpEchoUpstream`], [`TcpClient`]): wasm network filters in front of
//!   `tcp_proxy` on a raw listener (plaintext, TLS or mTLS), a TCP echo upstream that records what
//!   it received, and a client that writes chunks and tells whether the proxy closed first.
//!
//! Envoy is found through `MESHWARD_ENVOY` or the project's `.venv` (see [`envoy_binary`]). When it
//! is missing every entry point returns an error telling to run `scripts/setup.sh`: tests that need
//! Envoy fail, they never skip.
//!
//! Every file the rig writes lives in a temporary directory under `<repo>/.work/` (the system's
//! temporary directory for an installed `meshward`) that is removed when its owner is dropped.
//!
//! The filters' .wasm files are found by [`wasm_dir`], the one lookup every command uses; a binary
//! built with the `embedded-filters` feature carries the shipped filters ([`embedded_filters`]).

mod certs;
mod client;
mod config;
mod http1;
mod message;
mod process;
mod tcp;
mod upstream;
mod wasm_dir;
mod workdir;

pub use certs::{Certs, ClientCert};
pub use client::{client_tls_config, Client, Connection, Refused};
pub use config::{EnvoyConfig, HttpFilter, MtlsMode, WasmFilter};
pub use message::{Request, RequestHead, Response};
pub use process::{envoy_binary, Envoy, StartupFailure, WASM_METRIC_PREFIX};
pub use tcp::{
    tcp_listener, tcp_listener_with, TcpClient, TcpEchoUpstream, TcpExchange, TcpTransport,
    UpstreamConnection, UPSTREAM_QUIT,
};
pub use upstream::EchoUpstream;
pub use wasm_dir::{default_wasm_dir, embedded_filters, wasm_dir, EmbeddedFilters};
pub use workdir::{repo_root, WorkDir};
