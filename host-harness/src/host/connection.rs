//! [`Host::connect`]: a TCP connection through the chain as network filters in front of
//! `tcp_proxy` and an echo upstream (`crate::connection` drives it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use super::Host;
use crate::connection::{ClosedBy, ConnectionOutcome, ConnectionSpec, Flow};
use crate::envoy_model::Connection;
use crate::envoy_model::{check_transport, DownstreamTransport};
use crate::error::HostError;
use crate::runtime::lock;

/// An open connection of [`Host::connect`]: write with [`TcpConnection::send`], end with
/// [`TcpConnection::close`] (the client closes; the outcome says whether the proxy did first).
pub struct TcpConnection<'h> {
    host: &'h Host,
    key: u64,
    worker: usize,
    spec: ConnectionSpec,
    gate: Gate,
}

/// Where a connection stands with the listener's `tls_inspector` (the STRICT and PERMISSIVE
/// listeners have one, as an Istio sidecar's inbound listener does).
enum Gate {
    /// The filter chain exists: the flow carries the connection.
    Open,
    /// A plaintext caller has sent fewer than [`INSPECTOR_BYTES`]: the inspector is still
    /// peeking, no filter chain exists yet. Envoy 1.40 was seen to wait with 4 bytes (in one
    /// read or two) and decide with 5 or more.
    Inspecting(Vec<u8>),
    /// The transport failed (no TLS where STRICT wants it, no client certificate): the filters
    /// saw the connection open and close, nothing else.
    Refused(String),
}

/// How many bytes the `tls_inspector` needs before it tells plaintext from TLS.
const INSPECTOR_BYTES: usize = 5;

/// The TLS alert Envoy's TLS socket answers plaintext with (fatal, protocol_version), which a
/// plaintext client reads before the close.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

impl Host {
    /// Opens a connection: each filter's context is created and `proxy_on_new_connection` runs,
    /// in chain order, then `tcp_proxy` connects the echo upstream. The upstream echoes every
    /// byte it gets, and closes its side 50 ms after echoing bytes containing `QUIT` (as the rig's
    /// `TcpEchoUpstream`).
    ///
    /// The listener's TLS mode ([`crate::ListenerSettings::transport`]) applies as Envoy 1.40
    /// applies Istio's (a `tls_inspector` in front of the filter chains):
    /// - STRICT or PERMISSIVE, TLS without a client certificate: the chain is created
    ///   (`proxy_on_new_connection`), the handshake fails, the filters see the connection close
    ///   (`proxy_on_downstream_connection_close(Remote)`, done); no data callback;
    /// - STRICT or PERMISSIVE, plaintext: nothing happens until the client has sent
    ///   [`INSPECTOR_BYTES`]; then PERMISSIVE opens the chain and delivers them as one read, and
    ///   STRICT opens it and fails as above, the client reading a TLS alert;
    /// - DISABLE, a TLS caller: refused by name ([`HostError::NotModelled`]): Envoy's `tcp_proxy`
    ///   would forward its TLS records as bytes.
    pub fn connect(&self, spec: &ConnectionSpec) -> Result<TcpConnection<'_>, HostError> {
        let worker = self.pick_worker(spec.worker);
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let transport = self.shared.listener.transport;
        let mut connection = TcpConnection {
            host: self,
            key,
            worker,
            spec: spec.clone(),
            gate: Gate::Open,
        };
        match (transport, spec.tls.is_some()) {
            (DownstreamTransport::Any, _) | (DownstreamTransport::Plaintext, false) => {
                connection.open()?;
            }
            (DownstreamTransport::Plaintext, true) => {
                return Err(HostError::NotModelled(
                    "a TLS caller on a plaintext-only (DISABLE) TCP listener: Envoy's tcp_proxy \
                     forwards its TLS records as opaque bytes"
                        .to_string(),
                ));
            }
            (_, false) => connection.gate = Gate::Inspecting(Vec::new()),
            (_, true) => {
                connection.open()?;
                if let Err(reason) = check_transport(transport, spec.tls.as_ref()) {
                    connection.refuse(reason, &[]);
                }
            }
        }
        Ok(connection)
    }
}

impl TcpConnection<'_> {
    /// Creates the filter chain's contexts and runs `proxy_on_new_connection` (the flow).
    fn open(&mut self) -> Result<(), HostError> {
        let host = self.host;
        let id = host.shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let listener = &host.shared.listener;
        let source = self.spec.source.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + (id % 20000) as u16)
        });
        let conn = Connection {
            id,
            source,
            destination: SocketAddr::new(listener.address, listener.port),
            tls: self.spec.tls.clone(),
        };
        let logs_before = lock(&host.shared.logs).len();
        let flow = Flow::new(
            host.names.len(),
            conn,
            host.shared.clock.realtime_ns(),
            logs_before,
        );
        self.gate = Gate::Open;
        host.worker(self.worker).open_flow(self.key, flow)
    }

    /// The transport fails on an open chain: the client reads `alert`, the filters see the
    /// close.
    fn refuse(&mut self, reason: String, alert: &[u8]) {
        let mut w = self.host.worker(self.worker);
        w.flow_transport_failed(self.key, alert);
        self.gate = Gate::Refused(reason);
    }

    /// The client writes `bytes` (one read in Envoy). Nothing happens once the connection is
    /// closed.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        match &mut self.gate {
            Gate::Open => self.host.worker(self.worker).flow_send(self.key, bytes),
            Gate::Refused(_) => Ok(()),
            Gate::Inspecting(held) => {
                held.extend_from_slice(bytes);
                if held.len() < INSPECTOR_BYTES {
                    return Ok(());
                }
                let held = std::mem::take(held);
                self.open()?;
                match check_transport(self.host.shared.listener.transport, None) {
                    Ok(()) => self.host.worker(self.worker).flow_send(self.key, &held),
                    Err(reason) => {
                        self.refuse(reason, &PROTOCOL_VERSION_ALERT);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Whether the client saw the proxy end the connection (a close or an end of stream).
    pub fn is_closed(&self) -> bool {
        if let Gate::Inspecting(_) = self.gate {
            return false;
        }
        self.host
            .worker(self.worker)
            .flow_ref(self.key)
            .is_none_or(Flow::client_saw_end)
    }

    /// What the client has received so far.
    pub fn received(&self) -> Vec<u8> {
        self.host
            .worker(self.worker)
            .flow_ref(self.key)
            .map(|f| f.client_received.clone())
            .unwrap_or_default()
    }

    /// The client closes the connection (if the proxy has not already): the outcome.
    pub fn close(self) -> Result<ConnectionOutcome, HostError> {
        let refused = match self.gate {
            // The client left while the inspector was still waiting: no chain ever existed.
            Gate::Inspecting(_) => {
                return Ok(ConnectionOutcome {
                    closed_by: Some(ClosedBy::Client),
                    worker: self.worker,
                    ..ConnectionOutcome::default()
                })
            }
            Gate::Refused(reason) => Some(reason),
            Gate::Open => None,
        };
        let mut w = self.host.worker(self.worker);
        let closed_by_proxy = w.flow_ref(self.key).is_some_and(Flow::client_saw_end);
        w.flow_client_close(self.key)?;
        let Some(flow) = w.take_flow(self.key) else {
            return Ok(ConnectionOutcome::default());
        };
        drop(w);
        let logs = lock(&self.host.shared.logs)
            .get(flow.logs_before..)
            .unwrap_or_default()
            .to_vec();
        Ok(ConnectionOutcome {
            upstream_received: flow.upstream_received,
            client_received: flow.client_received,
            closed_by_proxy,
            closed_by: flow.closed_by,
            logs,
            worker: self.worker,
            refused,
        })
    }
}
