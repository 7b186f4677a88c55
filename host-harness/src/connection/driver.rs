//! The connection driver: Envoy's network filter manager around wasm network filters and
//! `tcp_proxy` (calibrated against Envoy 1.40 by tests/scenarios/conformance/network/):
//!
//! - a new connection creates each filter's context (`proxy_on_context_create`) and calls
//!   `proxy_on_new_connection`, in chain order; then `tcp_proxy` connects the upstream;
//! - each read appends to the connection's read buffer and runs `proxy_on_downstream_data` on
//!   every filter in chain order with the whole buffer (its length, `end_of_stream`); a filter
//!   returning anything but Continue stops iteration and the bytes stay buffered, to be seen again
//!   (with the next read) from the first filter; when all continue, `tcp_proxy` takes the buffer;
//! - what the upstream sends back runs `proxy_on_upstream_data` in reverse chain order (the
//!   write filters) before it reaches the client;
//! - `proxy_close_stream(Downstream | Upstream)` closes the client's connection once the callback
//!   returns (Envoy's `close(FlushWrite)`): every filter gets
//!   `proxy_on_downstream_connection_close(Local)`; the client closing gets `(Remote)`; the
//!   upstream closing ends the write side with `end_of_stream` (`proxy_on_upstream_data(0, true)`
//!   then `proxy_on_upstream_connection_close(Unknown)`) and `tcp_proxy` closes the client's
//!   connection (`Local`);
//! - a trap (or a VM failed earlier): `fail_open` skips the filter, otherwise the connection is
//!   closed.

use super::flow::Direction;
use super::{ClosedBy, Flow};
use crate::error::HostError;
use crate::vm::{call, FailStrategy, VmSet};

/// The echo upstream (the rig's `TcpEchoUpstream`) closes its connection 50 ms after echoing a
/// read that contains this word.
const UPSTREAM_QUIT: &[u8] = b"QUIT";

/// proxy-wasm `CloseType` (the SDK's `PeerType`).
const CLOSE_UNKNOWN: i32 = 0;
const CLOSE_LOCAL: i32 = 1;
const CLOSE_REMOTE: i32 = 2;

/// What one filter's data callback left the iteration to do.
enum Next {
    Continue,
    Stop,
    /// The connection was closed (by the filter or for a failed VM).
    Closed,
    /// The filter asked for what the harness does not model.
    NotModelled(&'static str),
}

impl VmSet {
    fn flow(&mut self, key: u64) -> Option<&mut Flow> {
        self.store.data_mut().flows.get_mut(&key)
    }

    pub fn take_flow(&mut self, key: u64) -> Option<Flow> {
        self.store.data_mut().flows.remove(&key)
    }

    pub fn flow_ref(&self, key: u64) -> Option<&Flow> {
        self.store.data().flows.get(&key)
    }

    /// A new connection: contexts and `proxy_on_new_connection` in chain order.
    pub fn open_flow(&mut self, key: u64, flow: Flow) -> Result<(), HostError> {
        self.store.data_mut().flows.insert(key, flow);
        for filter in 0..self.names.len() {
            if self.flow_closed(key) {
                return Ok(());
            }
            if self.store.data().vms[filter].failed() {
                self.flow_failed_filter(key, filter);
                continue;
            }
            let Some(ctx) = self.create_flow_context(key, filter) else {
                self.flow_failed_filter(key, filter);
                continue;
            };
            let f = self.store.data().vms[filter]
                .cb
                .network
                .new_connection
                .clone();
            let Some(f) = f else { continue };
            match call(
                &mut self.store,
                filter,
                ctx,
                Some(key),
                "proxy_on_new_connection",
                |s| f.call(s, ctx as i32),
            ) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(HostError::NotModelled(
                        "a network filter pausing proxy_on_new_connection".to_string(),
                    ))
                }
                Err(_) => self.flow_failed_filter(key, filter),
            }
            self.carry_out_close(key);
        }
        Ok(())
    }

    fn flow_closed(&self, key: u64) -> bool {
        self.flow_ref(key).is_none_or(Flow::is_closed)
    }

    fn create_flow_context(&mut self, key: u64, filter: usize) -> Option<u32> {
        let (ctx, root, f) = self.store.data_mut().vms[filter].new_context(key);
        if let Some(slot) = self.flow(key).and_then(|fl| fl.ctx.get_mut(filter)) {
            *slot = Some(ctx);
        }
        if let Some(f) = f {
            call(
                &mut self.store,
                filter,
                ctx,
                Some(key),
                "proxy_on_context_create",
                |s| f.call(s, (ctx as i32, root as i32)),
            )
            .ok()?;
        }
        Some(ctx)
    }

    /// CHECK_FAIL for a network filter: fail open skips it, fail closed closes the connection.
    fn flow_failed_filter(&mut self, key: u64, filter: usize) {
        if matches!(
            self.store.data().vms[filter].info.fail,
            FailStrategy::FailOpen | FailStrategy::FailOpenAfterTrap
        ) {
            if let Some(slot) = self.flow(key).and_then(|fl| fl.ctx.get_mut(filter)) {
                *slot = None;
            }
            return;
        }
        self.close_flow(key, ClosedBy::FailedVm, CLOSE_LOCAL);
    }

    /// The client wrote `bytes` (ignored once it saw the connection end: it stops writing).
    pub fn flow_send(&mut self, key: u64, bytes: &[u8]) -> Result<(), HostError> {
        if self.flow_ref(key).is_none_or(Flow::client_saw_end) {
            return Ok(());
        }
        if let Some(fl) = self.flow(key) {
            fl.read_buffer.extend_from_slice(bytes);
        }
        self.read_pass(key, false)
    }

    /// Runs the read filters over the read buffer (`end_of_stream`: the client half-closed);
    /// when all continue, `tcp_proxy` sends it upstream and the echo comes back through the
    /// write filters. Envoy closes the connection once both directions have ended: `Local` when
    /// its own end of stream to the client came last, `Remote` when the client's did.
    fn read_pass(&mut self, key: u64, end_of_stream: bool) -> Result<(), HostError> {
        for filter in 0..self.names.len() {
            match self.data_callback(key, filter, Direction::Downstream, end_of_stream) {
                Next::Continue => {}
                Next::Stop | Next::Closed => return Ok(()),
                Next::NotModelled(what) => return Err(HostError::NotModelled(what.to_string())),
            }
        }
        let Some(fl) = self.flow(key) else {
            return Ok(());
        };
        let data = std::mem::take(&mut fl.read_buffer);
        if fl.upstream_closed {
            // Nothing left upstream to take it; the client's end of stream ends the connection.
            if end_of_stream {
                self.close_flow(key, ClosedBy::Upstream, CLOSE_REMOTE);
            }
            return Ok(());
        }
        fl.upstream_received.extend_from_slice(&data);
        if end_of_stream {
            // The echo upstream echoes what it got and answers the end of stream with its own.
            fl.upstream_closed = true;
            self.write_pass(key, data, true)?;
            self.close_flow(key, ClosedBy::Client, CLOSE_LOCAL);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        // The rig's upstream closes 50 ms after echoing QUIT: Envoy reads the echo, then the end
        // of stream (`proxy_on_upstream_data(0, true)`).
        let quit = data
            .windows(UPSTREAM_QUIT.len())
            .any(|w| w == UPSTREAM_QUIT);
        self.write_pass(key, data, false)?;
        if quit {
            if let Some(fl) = self.flow(key) {
                fl.upstream_closed = true;
            }
            self.write_pass(key, Vec::new(), true)?;
        }
        Ok(())
    }

    /// Upstream bytes through the write filters (reverse chain order) to the client; with
    /// `end_of_stream` then `proxy_on_upstream_connection_close(Unknown)` (Envoy reports the
    /// upstream's end of stream, not a connection event) and the client sees the end.
    fn write_pass(
        &mut self,
        key: u64,
        data: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<(), HostError> {
        if self.flow_closed(key) {
            return Ok(());
        }
        if let Some(fl) = self.flow(key) {
            fl.write_buffer = data;
        }
        for filter in (0..self.names.len()).rev() {
            match self.data_callback(key, filter, Direction::Upstream, end_of_stream) {
                Next::Continue => {}
                Next::Closed => return Ok(()),
                Next::NotModelled(what) => return Err(HostError::NotModelled(what.to_string())),
                Next::Stop => {
                    return Err(HostError::NotModelled(
                        "a network filter stopping iteration in proxy_on_upstream_data".to_string(),
                    ))
                }
            }
            if end_of_stream {
                self.close_callback(key, filter, false, CLOSE_UNKNOWN);
            }
        }
        if let Some(fl) = self.flow(key) {
            let data = std::mem::take(&mut fl.write_buffer);
            // A client that closed its socket reads nothing more.
            if !fl.client_closed {
                fl.client_received.extend_from_slice(&data);
            }
            if end_of_stream {
                fl.client_got_end = true;
            }
        }
        Ok(())
    }

    /// The client closes the connection: Envoy reads its end of stream
    /// (`proxy_on_downstream_data(len, true)`) and carries on as in [`VmSet::read_pass`]. A
    /// filter that stops iteration then leaves the connection half open (no close callbacks).
    pub fn flow_client_close(&mut self, key: u64) -> Result<(), HostError> {
        if self.flow_closed(key) {
            return Ok(());
        }
        if let Some(fl) = self.flow(key) {
            fl.client_closed = true;
        }
        self.read_pass(key, true)
    }

    /// The listener's transport fails on an open connection (a TLS handshake without the client
    /// certificate the listener requires, plaintext where STRICT wants TLS): the client reads
    /// `alert`, every filter sees `proxy_on_downstream_connection_close(Remote)`, then done. No
    /// data callback: the filters never see a byte.
    pub fn flow_transport_failed(&mut self, key: u64, alert: &[u8]) {
        if let Some(fl) = self.flow(key) {
            fl.client_received.extend_from_slice(alert);
        }
        self.close_flow(key, ClosedBy::Listener, CLOSE_REMOTE);
    }

    /// One data callback of `filter`; `None` context (not created, failed open) continues.
    fn data_callback(&mut self, key: u64, filter: usize, dir: Direction, eos: bool) -> Next {
        if self.flow_closed(key) {
            return Next::Closed;
        }
        let Some(ctx) = self
            .flow_ref(key)
            .and_then(|fl| fl.ctx.get(filter).copied().flatten())
        else {
            return Next::Continue;
        };
        if self.store.data().vms[filter].failed() {
            self.flow_failed_filter(key, filter);
            return if self.flow_closed(key) {
                Next::Closed
            } else {
                Next::Continue
            };
        }
        let net = self.store.data().vms[filter].cb.network.clone();
        let (f, name) = match dir {
            Direction::Downstream => (net.downstream_data, "proxy_on_downstream_data"),
            Direction::Upstream => (net.upstream_data, "proxy_on_upstream_data"),
        };
        let Some(f) = f else {
            return Next::Continue;
        };
        let len = match self.flow(key) {
            Some(fl) => {
                fl.current = Some(dir);
                fl.buffer(dir).map(Vec::len).unwrap_or(0)
            }
            None => return Next::Closed,
        };
        let result = call(&mut self.store, filter, ctx, Some(key), name, |s| {
            f.call(s, (ctx as i32, len as i32, eos as i32))
        });
        let resumed = match self.flow(key) {
            Some(fl) => {
                fl.current = None;
                std::mem::take(&mut fl.continue_requested)
            }
            None => false,
        };
        if resumed {
            // Envoy's continueReading() re-runs the read filters on what is buffered, from
            // inside the callback: not reproduced.
            return Next::NotModelled("proxy_continue_stream on a connection");
        }
        let next = match result {
            Ok(0) => Next::Continue,
            Ok(_) => Next::Stop,
            Err(_) => {
                self.flow_failed_filter(key, filter);
                Next::Continue
            }
        };
        if self.carry_out_close(key) || self.flow_closed(key) {
            return Next::Closed;
        }
        next
    }

    /// A close a filter asked for, carried out after its callback: `true` if it closed.
    fn carry_out_close(&mut self, key: u64) -> bool {
        let asked = self
            .flow(key)
            .map(|fl| std::mem::take(&mut fl.close_requested))
            .unwrap_or(false);
        if asked {
            self.close_flow(key, ClosedBy::Filter, CLOSE_LOCAL);
        }
        asked
    }

    /// `proxy_on_{downstream,upstream}_connection_close` of `filter`, if it has a live context.
    fn close_callback(&mut self, key: u64, filter: usize, downstream: bool, close_type: i32) {
        let Some(ctx) = self
            .flow_ref(key)
            .and_then(|fl| fl.ctx.get(filter).copied().flatten())
        else {
            return;
        };
        let Some(cb) = self.store.data().vms[filter].live() else {
            return;
        };
        let (f, name) = if downstream {
            (
                cb.network.downstream_close.clone(),
                "proxy_on_downstream_connection_close",
            )
        } else {
            (
                cb.network.upstream_close.clone(),
                "proxy_on_upstream_connection_close",
            )
        };
        if let Some(f) = f {
            let _ = call(&mut self.store, filter, ctx, Some(key), name, |s| {
                f.call(s, (ctx as i32, close_type))
            });
        }
    }

    /// The connection closes (`by`, with the close type each filter is told); then every
    /// context is done and deleted.
    fn close_flow(&mut self, key: u64, by: ClosedBy, close_type: i32) {
        match self.flow(key) {
            Some(fl) if fl.closed_by.is_none() => fl.closed_by = Some(by),
            _ => return,
        }
        for filter in 0..self.names.len() {
            self.close_callback(key, filter, true, close_type);
        }
        let ctxs: Vec<(usize, u32)> = self
            .flow_ref(key)
            .map(|fl| {
                fl.ctx
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.map(|c| (i, c)))
                    .collect()
            })
            .unwrap_or_default();
        for &(i, c) in &ctxs {
            if let Some(f) = self.store.data().vms[i]
                .live()
                .and_then(|cb| cb.done.clone())
            {
                let _ = call(&mut self.store, i, c, Some(key), "proxy_on_done", |s| {
                    f.call(s, c as i32)
                });
            }
        }
        for &(i, c) in &ctxs {
            if let Some(f) = self.store.data().vms[i]
                .live()
                .and_then(|cb| cb.delete.clone())
            {
                let _ = call(&mut self.store, i, c, Some(key), "proxy_on_delete", |s| {
                    f.call(s, c as i32)
                });
            }
            self.store.data_mut().vms[i].contexts.remove(&c);
        }
    }
}
