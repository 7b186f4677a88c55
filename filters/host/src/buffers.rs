//! Byte buffers: configuration, bodies, the HTTP call response body.

use crate::abi::{self, returned_buffer, BufferType};
use crate::Status;

/// Up to `max_size` bytes from `start` of a buffer; `Ok(None)` when the host has no such buffer
/// here (NOT_FOUND).
pub fn get_buffer(
    buffer: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-params are returned_buffer's live locals.
    returned_buffer(|data, size| unsafe {
        abi::proxy_get_buffer_bytes(buffer as u32, start, max_size, data, size)
    })
}

/// Replace `size` bytes at `start` of a buffer with `value` (`start` = 0, `size` = 0 prepends;
/// `start` ≥ the buffer's length appends; see the spec's `proxy_set_buffer_bytes`).
pub fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    Status::check(unsafe {
        abi::proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len())
    })
}

/// The plugin configuration; `size` is what `on_configure` was given. Empty when none is set.
///
/// The host announced `size` bytes: a read that gives anything else (NOT_FOUND, nothing, fewer
/// or more bytes) is a failed read, `Err(RESULT_MISMATCH)` — never an empty or truncated
/// configuration, which a filter would parse as "no policies" or "default limits" and then allow
/// what the real configuration denies (found by the host-fault sweep, tests/tests/host_faults.rs).
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
    exactly(size, get_buffer(BufferType::PluginConfiguration, 0, size)?)
}

/// The VM configuration; `size` is what `on_vm_start` was given. Empty when none is set.
/// Checked like [`plugin_configuration`].
pub fn vm_configuration(size: usize) -> Result<Vec<u8>, Status> {
    exactly(size, get_buffer(BufferType::VmConfiguration, 0, size)?)
}

/// `bytes` if it holds exactly the `size` bytes the host announced (none for `size` 0).
fn exactly(size: usize, bytes: Option<Vec<u8>>) -> Result<Vec<u8>, Status> {
    let bytes = bytes.unwrap_or_default();
    if bytes.len() == size {
        Ok(bytes)
    } else {
        Err(Status::RESULT_MISMATCH)
    }
}

/// Up to `max_size` bytes of the request body seen so far (from `on_http_request_body`).
pub fn request_body(start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    get_buffer(BufferType::HttpRequestBody, start, max_size)
}

/// Replace `size` bytes at `start` of the buffered request body with `value`.
pub fn set_request_body(start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    set_buffer(BufferType::HttpRequestBody, start, size, value)
}

/// Up to `max_size` bytes of the response body seen so far (from `on_http_response_body`).
pub fn response_body(start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    get_buffer(BufferType::HttpResponseBody, start, max_size)
}

/// Replace `size` bytes at `start` of the buffered response body with `value`.
pub fn set_response_body(start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    set_buffer(BufferType::HttpResponseBody, start, size, value)
}
