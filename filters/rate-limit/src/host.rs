//! The host calls this filter makes, with every status handled.
//!
//! The proxy-wasm 0.2.5 SDK's wrappers (and the trait methods built on them) `panic!` on any
//! status they do not expect, and its header getters `unwrap` UTF-8. A panic aborts the VM, and
//! Envoy then answers 503 on that worker until it is restarted. So the calls on the request path
//! are made here against the ABI directly, returning the status as an error instead.
//! On non-wasm targets there is no host: every call fails with `InternalFailure` (10).

use std::ptr::{null, null_mut};

/// proxy-wasm status codes (ABI 0.2.1).
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
const COUNTER: u32 = 0;

#[cfg(target_arch = "wasm32")]
mod abi {
    // The SDK declares the same imports with its `Status` enum as the return type; a `u32` is the
    // same wasm signature and cannot hold an unknown status as an invalid enum value.
    #[allow(clashing_extern_declarations)]
    extern "C" {
        pub fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments, clippy::missing_safety_doc)]
mod abi {
    //! No host natively: every call fails.
    const FAIL: u32 = 10;
    pub unsafe fn proxy_get_shared_data(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
        _: *mut u32,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_set_shared_data(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_get_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        FAIL
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        FAIL
    }
}

/// Take ownership of a buffer the host allocated through `proxy_on_memory_allocate` (the SDK's
/// allocator hands out `Vec<u8>` storage of exactly `size` bytes).
///
/// # Safety
/// `data`/`size` must come from a host call that just returned OK.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: per the ABI, the host allocated `size` bytes at `data` with the module's allocator
    // and hands them over; the SDK reclaims them the same way.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// `Ok(None)` when the key does not exist; `Ok(Some((value, cas)))` otherwise.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, u32> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: valid key buffer and out-pointers for the duration of the call.
    let status = unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    };
    match status {
        // SAFETY: OK hands over the value buffer.
        OK => Ok(Some((unsafe { take_buffer(data, size) }, cas))),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// `Err(CAS_MISMATCH)` or another status on failure.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
    // SAFETY: valid buffers for the duration of the call.
    match unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        other => Err(other),
    }
}

/// A property by path segments; `Ok(None)` when absent.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, u32> {
    let serialized = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: valid path buffer and out-pointers.
    let status = unsafe {
        abi::proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size)
    };
    match status {
        // SAFETY: OK hands over the value buffer (null for an empty value).
        OK if data.is_null() => Ok(None),
        OK => Ok(Some(unsafe { take_buffer(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// The first value of a header, as bytes.
pub fn get_header(map: u32, name: &str) -> Result<Option<Vec<u8>>, u32> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: valid name buffer and out-pointers.
    let status = unsafe {
        abi::proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match status {
        // SAFETY: OK hands over the value buffer (null for an empty value).
        OK => Ok(Some(unsafe { take_buffer(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn replace_header(map: u32, name: &str, value: &str) -> Result<(), u32> {
    // SAFETY: valid buffers.
    match unsafe {
        abi::proxy_replace_header_map_value(
            map,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    } {
        OK => Ok(()),
        other => Err(other),
    }
}

/// Answer the request locally.
pub fn send_local_response(status: u32, headers: &[(&str, String)], body: &str) -> Result<(), u32> {
    let map = serialize_map(headers);
    // SAFETY: valid buffers; null/0 details.
    let result = unsafe {
        abi::proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    };
    match result {
        OK => Ok(()),
        other => Err(other),
    }
}

/// The proxy-wasm header map encoding: count, (name len, value len)*, then `name\0value\0`*.
fn serialize_map(headers: &[(&str, String)]) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&len32(headers.len()));
    for (name, value) in headers {
        out.extend_from_slice(&len32(name.len()));
        out.extend_from_slice(&len32(value.len()));
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Host time in nanoseconds since the epoch.
pub fn now_ns() -> Result<u64, u32> {
    let mut t = 0u64;
    // SAFETY: valid out-pointer.
    match unsafe { abi::proxy_get_current_time_nanoseconds(&mut t) } {
        OK => Ok(t),
        other => Err(other),
    }
}

pub fn define_counter(name: &str) -> Result<u32, u32> {
    let mut id = 0u32;
    // SAFETY: valid name buffer and out-pointer.
    match unsafe { abi::proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) } {
        OK => Ok(id),
        other => Err(other),
    }
}

pub fn increment(id: u32) -> Result<(), u32> {
    // SAFETY: no pointers.
    match unsafe { abi::proxy_increment_metric(id, 1) } {
        OK => Ok(()),
        other => Err(other),
    }
}
