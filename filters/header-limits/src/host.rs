//! The few ABI 0.2.1 host calls this filter makes, called directly rather than through the
//! proxy-wasm SDK wrappers: the SDK `panic!`s on any status it does not expect (and its header-map
//! decoder `unwrap`s non-UTF-8 names), and a panic in a filter turns every later request on that
//! worker into a 503. Here every status comes back as a value, so the filter can fail closed on
//! purpose. Statuses are declared as plain `u32` so that a value outside the SDK's `Status` enum is
//! not undefined behaviour.

use std::ptr::{null, null_mut};

/// `proxy_status_t` values we act on (ABI 0.2.1).
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;

/// A non-OK host status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const METRIC_COUNTER: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Take ownership of a buffer the host wrote into guest memory.
///
/// # Safety
/// `data`/`size` must come from a host call that allocated them with `proxy_on_memory_allocate`
/// (the SDK's allocator: exactly `size` bytes, alignment 1), as the ABI requires.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: see the function contract; this is what the SDK does with the same buffers.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// The pluginConfiguration bytes (empty when none is set).
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
    let mut data = null_mut();
    let mut len = 0;
    // SAFETY: the out-params point to live locals; the host fills them per the ABI.
    match unsafe {
        proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len)
    } {
        // SAFETY: the host allocated `data` for us on OK.
        OK => Ok(unsafe { take(data, len) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// The serialized request header map (decode with [`crate::wire::parse_pairs`]).
pub fn request_header_pairs() -> Result<Vec<u8>, Status> {
    let mut data = null_mut();
    let mut len = 0;
    // SAFETY: as above.
    match unsafe { proxy_get_header_map_pairs(MAP_HTTP_REQUEST_HEADERS, &mut data, &mut len) } {
        // SAFETY: as above.
        OK => Ok(unsafe { take(data, len) }),
        other => Err(Status(other)),
    }
}

/// Remove every value of request header `name`. A name that is already gone is not an error.
pub fn remove_request_header(name: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    match unsafe {
        proxy_remove_header_map_value(MAP_HTTP_REQUEST_HEADERS, name.as_ptr(), name.len())
    } {
        OK | NOT_FOUND => Ok(()),
        other => Err(Status(other)),
    }
}

/// Send a local reply with `body` and no extra headers (the host adds `content-type: text/plain`
/// to a local reply with a body, like Envoy's own 431). `details` becomes the response code
/// details in Envoy's access log; it must not contain whitespace.
pub fn send_local_response(status: u32, details: &str, body: &str) -> Result<(), Status> {
    // An empty header map: a zero pair count.
    let no_headers = 0u32.to_le_bytes();
    // SAFETY: pointers and lengths of live slices.
    let rc = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            no_headers.as_ptr(),
            no_headers.len(),
            -1,
        )
    };
    match rc {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Define (or look up) a counter.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length of a live str; the out-param is a live local.
    match unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) } {
        OK => Ok(id),
        other => Err(Status(other)),
    }
}

/// Add `by` to a counter.
pub fn increment(id: u32, by: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    match unsafe { proxy_increment_metric(id, by) } {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}
