//! The network (L4) side of the ABI: the DownstreamData / UpstreamData buffers (readable and
//! writable during the data callback of their direction, NotFound otherwise) and what
//! `proxy_continue_stream` / `proxy_close_stream` mean on a connection. The connection itself and
//! its driver are `crate::connection`.

use meshward_abi::{BufferType, StreamType};

use crate::connection::Direction;
use crate::vm::VmState;
use crate::Status;

fn direction(kind: BufferType) -> Option<Direction> {
    match kind {
        BufferType::DownstreamData => Some(Direction::Downstream),
        BufferType::UpstreamData => Some(Direction::Upstream),
        _ => None,
    }
}

/// `proxy_get_buffer_bytes` / `_status` of a network buffer.
pub(super) fn buffer(state: &VmState, kind: BufferType) -> Result<Vec<u8>, Status> {
    let dir = direction(kind).ok_or(Status::NOT_FOUND)?;
    state
        .flow()
        .and_then(|f| f.buffer(dir))
        .cloned()
        .ok_or(Status::NOT_FOUND)
}

/// The network buffer `proxy_set_buffer_bytes` changes.
pub(super) fn buffer_mut(state: &mut VmState, kind: BufferType) -> Option<&mut Vec<u8>> {
    let dir = direction(kind)?;
    state.flow_mut().and_then(|f| f.buffer_mut(dir))
}

/// `proxy_continue_stream` / `proxy_close_stream` on a connection context: `true` when `kind`
/// is a network stream type on a connection (handled here), `false` otherwise.
pub(super) fn stream_control(state: &mut VmState, kind: StreamType, close: bool) -> bool {
    if !matches!(kind, StreamType::Downstream | StreamType::Upstream) {
        return false;
    }
    // Not on a connection: an HTTP filter's Downstream/Upstream, which the HTTP rules answer.
    let Some(f) = state.flow_mut() else {
        return false;
    };
    if close {
        // Envoy closes the client's connection for either side (`close(FlushWrite)`).
        f.close_requested = true;
    } else {
        f.continue_requested = true;
    }
    true
}
