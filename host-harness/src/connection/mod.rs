//! A TCP connection in flight through a chain of wasm network filters in front of `tcp_proxy`
//! and an echo upstream — what Envoy's `envoy.filters.network.wasm` does (the HTTP request
//! lifecycle is `stream` + `chain`; this is its L4 counterpart):
//!
//! - `flow`: one connection as a VM set holds it (buffers, contexts, what filters asked);
//! - `driver`: runs the callbacks — new connection, downstream data in chain order, the echo
//!   upstream, upstream data in reverse order, the close events — and carries out continue,
//!   close and a failed VM's `fail_open`;
//! - the public vocabulary below, used by [`crate::Host::connect`].

mod driver;
mod flow;

pub(crate) use flow::{Direction, Flow, NetworkCallbacks};

use std::net::SocketAddr;

use crate::outcome::LogLine;
use crate::request::Tls;

/// A connection as the client opens it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSpec {
    /// `None`: plaintext.
    pub tls: Option<Tls>,
    /// Client address; default 127.0.0.1 with a per-host port.
    pub source: Option<SocketAddr>,
    /// Run on this worker instead of round-robin.
    pub worker: Option<usize>,
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client closed it ([`crate::TcpConnection::close`]).
    Client,
    /// A filter asked (`proxy_close_stream(Downstream | Upstream)`).
    Filter,
    /// The upstream closed its side (`tcp_proxy` then closes the client's).
    Upstream,
    /// A filter's VM failed with `fail_open: false`.
    FailedVm,
    /// The listener refused the connection for its TLS mode (Istio PeerAuthentication STRICT or
    /// PERMISSIVE's TLS chain, [`crate::DownstreamTransport`]) before any filter saw it.
    Listener,
}

/// What a connection produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionOutcome {
    /// Every byte the echo upstream received.
    pub upstream_received: Vec<u8>,
    /// Every byte the client received.
    pub client_received: Vec<u8>,
    /// The proxy closed the connection before the client did.
    pub closed_by_proxy: bool,
    /// Who ended it (`None`: still open — never in a finished outcome).
    pub closed_by: Option<ClosedBy>,
    /// Log lines of the filters while the connection was open.
    pub logs: Vec<LogLine>,
    /// Why the listener refused the connection (its TLS mode): no filter ran, no byte went
    /// anywhere. `None`: the listener took it.
    pub refused: Option<String>,
    pub worker: usize,
}
