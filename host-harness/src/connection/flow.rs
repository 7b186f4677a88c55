//! One connection in flight as one VM set holds it: the read buffer (downstream data not yet
//! passed on), the write buffer of the current upstream callback, each filter's context, what
//! filters asked (close, continue), and what the client and the upstream received.

use std::collections::HashMap;

use wasmtime::{Instance, Store, TypedFunc};

use super::ClosedBy;
use crate::envoy_model::{Connection, HeaderMap, StreamFacts};
use crate::error::HostError;
use crate::vm::VmState;

/// The network callbacks a module exports (absent ones are not called, as in cpp-host).
#[derive(Clone, Default)]
pub(crate) struct NetworkCallbacks {
    pub new_connection: Option<TypedFunc<i32, i32>>,
    pub downstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub upstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub downstream_close: Option<TypedFunc<(i32, i32), ()>>,
    pub upstream_close: Option<TypedFunc<(i32, i32), ()>>,
}

impl NetworkCallbacks {
    /// Looks the exports up in an instance (a bad signature is an error, as for the others).
    pub fn lookup(store: &mut Store<VmState>, inst: &Instance) -> Result<Self, HostError> {
        fn get<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
            store: &mut Store<VmState>,
            inst: &Instance,
            name: &str,
        ) -> Result<Option<TypedFunc<P, R>>, HostError> {
            match inst.get_func(&mut *store, name) {
                None => Ok(None),
                Some(f) => f.typed::<P, R>(&*store).map(Some).map_err(|e| {
                    HostError::Instantiate(format!("export {name} has a bad signature: {e}"))
                }),
            }
        }
        Ok(NetworkCallbacks {
            new_connection: get(store, inst, "proxy_on_new_connection")?,
            downstream_data: get(store, inst, "proxy_on_downstream_data")?,
            upstream_data: get(store, inst, "proxy_on_upstream_data")?,
            downstream_close: get(store, inst, "proxy_on_downstream_connection_close")?,
            upstream_close: get(store, inst, "proxy_on_upstream_connection_close")?,
        })
    }
}

/// Which data callback runs now (the buffer `proxy_get_buffer_bytes` reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Downstream,
    Upstream,
}

/// A connection in flight.
pub(crate) struct Flow {
    pub conn: Connection,
    pub start_ns: u64,
    /// Each filter's context (`None`: not created, or the filter is skipped).
    pub ctx: Vec<Option<u32>>,
    /// Downstream data read and not yet passed to `tcp_proxy` (a filter stopped iteration).
    pub read_buffer: Vec<u8>,
    /// The data of the current upstream callback.
    pub write_buffer: Vec<u8>,
    /// The data callback running now.
    pub current: Option<Direction>,
    /// A filter asked to close the connection (`proxy_close_stream`).
    pub close_requested: bool,
    /// `proxy_continue_stream(Downstream)`: continue reading.
    pub continue_requested: bool,
    pub closed_by: Option<ClosedBy>,
    pub upstream_received: Vec<u8>,
    pub client_received: Vec<u8>,
    /// The upstream ended its side (end of stream or close).
    pub upstream_closed: bool,
    /// The client closed its socket (it reads nothing more).
    pub client_closed: bool,
    /// The client read the end of the stream (Envoy half-closed or closed towards it).
    pub client_got_end: bool,
    /// Filter state set by `proxy_set_property`.
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
    pub logs_before: usize,
}

impl Flow {
    pub fn new(filters: usize, conn: Connection, start_ns: u64, logs_before: usize) -> Self {
        Flow {
            conn,
            start_ns,
            ctx: vec![None; filters],
            read_buffer: Vec::new(),
            write_buffer: Vec::new(),
            current: None,
            close_requested: false,
            continue_requested: false,
            closed_by: None,
            upstream_received: Vec::new(),
            client_received: Vec::new(),
            upstream_closed: false,
            client_got_end: false,
            client_closed: false,
            filter_state: HashMap::new(),
            logs_before,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed_by.is_some()
    }

    /// The client saw the connection end (a close, or Envoy's end of stream): it stops writing.
    pub fn client_saw_end(&self) -> bool {
        self.is_closed() || self.client_got_end
    }

    /// The buffer of the data callback running now, if it is of `dir`.
    pub fn buffer(&self, dir: Direction) -> Option<&Vec<u8>> {
        match (self.current, dir) {
            (Some(Direction::Downstream), Direction::Downstream) => Some(&self.read_buffer),
            (Some(Direction::Upstream), Direction::Upstream) => Some(&self.write_buffer),
            _ => None,
        }
    }

    pub fn buffer_mut(&mut self, dir: Direction) -> Option<&mut Vec<u8>> {
        match (self.current, dir) {
            (Some(Direction::Downstream), Direction::Downstream) => Some(&mut self.read_buffer),
            (Some(Direction::Upstream), Direction::Upstream) => Some(&mut self.write_buffer),
            _ => None,
        }
    }
}

impl StreamFacts for Flow {
    fn connection(&self) -> &Connection {
        &self.conn
    }
    /// A connection has no HTTP request: header-based `request.*` attributes are NotFound, as
    /// for an HTTP filter that no longer holds the request headers.
    fn request_headers(&self) -> Option<&HeaderMap> {
        None
    }
    fn request_body_len(&self) -> usize {
        0
    }
    fn start_ns(&self) -> u64 {
        self.start_ns
    }
    fn response_headers(&self) -> Option<&HeaderMap> {
        None
    }
    fn response_body_len(&self) -> usize {
        0
    }
    fn code_details(&self) -> Option<&str> {
        None
    }
    fn filter_state(&self, key: &[u8]) -> Option<&[u8]> {
        self.filter_state.get(key).map(Vec::as_slice)
    }
}

impl VmState {
    /// The connection of the context hostcalls act on (`None` outside a connection context).
    pub(crate) fn flow(&self) -> Option<&Flow> {
        let key = self.vm().contexts.get(&self.ctx_id())?;
        self.flows.get(key)
    }

    pub(crate) fn flow_mut(&mut self) -> Option<&mut Flow> {
        let key = *self.vm().contexts.get(&self.ctx_id())?;
        self.flows.get_mut(&key)
    }
}
