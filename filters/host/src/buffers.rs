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
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
    Ok(get_buffer(BufferType::PluginConfiguration, 0, size)?.unwrap_or_default())
}

/// The VM configuration; `size` is what `on_vm_start` was given. Empty when none is set.
pub fn vm_configuration(size: usize) -> Result<Vec<u8>, Status> {
    Ok(get_buffer(BufferType::VmConfiguration, 0, size)?.unwrap_or_default())
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
