//! [`Host::connect`]: a TCP connection through the chain as network filters in front of
//! `tcp_proxy` and an echo upstream (`crate::connection` drives it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use super::Host;
use crate::connection::{ConnectionOutcome, ConnectionSpec, Flow};
use crate::envoy_model::Connection;
use crate::error::HostError;
use crate::runtime::lock;

/// An open connection of [`Host::connect`]: write with [`TcpConnection::send`], end with
/// [`TcpConnection::close`] (the client closes; the outcome says whether the proxy did first).
pub struct TcpConnection<'h> {
    host: &'h Host,
    key: u64,
    worker: usize,
}

impl Host {
    /// Opens a connection: each filter's context is created and `proxy_on_new_connection` runs,
    /// in chain order, then `tcp_proxy` connects the echo upstream. The upstream echoes every
    /// byte it gets, and closes its side 50 ms after echoing bytes containing `QUIT` (as the rig's
    /// `TcpEchoUpstream`). The listener's TLS mode is not applied to connections.
    pub fn connect(&self, spec: &ConnectionSpec) -> Result<TcpConnection<'_>, HostError> {
        let worker = self.pick_worker(spec.worker);
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let id = self.shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let listener = &self.shared.listener;
        let source = spec.source.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + (id % 20000) as u16)
        });
        let conn = Connection {
            id,
            source,
            destination: SocketAddr::new(listener.address, listener.port),
            tls: spec.tls.clone(),
        };
        let logs_before = lock(&self.shared.logs).len();
        let flow = Flow::new(
            self.names.len(),
            conn,
            self.shared.clock.realtime_ns(),
            logs_before,
        );
        let opened = self.worker(worker).open_flow(key, flow);
        let connection = TcpConnection {
            host: self,
            key,
            worker,
        };
        opened.map(|()| connection)
    }
}

impl TcpConnection<'_> {
    /// The client writes `bytes` (one read in Envoy). Nothing happens once the connection is
    /// closed.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.host.worker(self.worker).flow_send(self.key, bytes)
    }

    /// Whether the client saw the proxy end the connection (a close or an end of stream).
    pub fn is_closed(&self) -> bool {
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
        })
    }
}
