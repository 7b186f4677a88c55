//! The few proxy-wasm host calls this filter makes, with every status handled.
//!
//! The SDK's `hostcalls` wrappers `panic!` on any status they do not expect, and a panic in an
//! authorization filter either 503s every later request or, with `fail_open`, skips the filter.
//! These wrappers call the ABI 0.2.1 imports directly and return `Err(status)` instead, so the
//! filter can fail closed deliberately. Buffers the host returns were allocated through the SDK's
//! `proxy_on_memory_allocate` (a `Vec<u8>` of exactly that capacity), so ownership is taken back
//! with `Vec::from_raw_parts(ptr, len, len)`, as the SDK itself does.
//!
//! Outside wasm32 (native builds, which exist for linting and `cargo test`) every call fails.

/// A proxy-wasm status other than Ok/NotFound.
pub type Status = u32;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// proxy-wasm `MapType::HttpRequestHeaders`.
const REQUEST_HEADERS: u32 = 0;
/// proxy-wasm `BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION: u32 = 7;
/// proxy-wasm `MetricType::Counter`.
const COUNTER: u32 = 0;

#[cfg(target_arch = "wasm32")]
mod ffi {
    // The SDK declares the same imports with its `Status`/`MapType` enums; both lower to i32.
    #[allow(clashing_extern_declarations)]
    extern "C" {
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    }
}

/// Native builds have no host: every call fails, so nothing can be mistaken for a decision.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
mod ffi {
    const NOT_ON_HOST: u32 = u32::MAX;
    pub unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        NOT_ON_HOST
    }
    pub unsafe fn proxy_get_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        NOT_ON_HOST
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        NOT_ON_HOST
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        NOT_ON_HOST
    }
    pub unsafe fn proxy_get_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        NOT_ON_HOST
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
        NOT_ON_HOST
    }
    pub unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        NOT_ON_HOST
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        NOT_ON_HOST
    }
}

/// Run a call that returns a buffer: Ok(Some) on Ok, Ok(None) on NotFound, Err otherwise.
fn buffer_call(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    match call(&mut data, &mut size) {
        OK if data.is_null() || size == 0 => Ok(Some(Vec::new())),
        // SAFETY: the host allocated exactly `size` bytes via proxy_on_memory_allocate (a Vec<u8>
        // with capacity `size`, leaked) and handed us ownership.
        OK => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
        NOT_FOUND => Ok(None),
        status => Err(status),
    }
}

fn status(code: u32) -> Result<(), Status> {
    match code {
        OK => Ok(()),
        s => Err(s),
    }
}

/// A property (`["connection", "mtls"]`); `None` if the host has none.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let serialized = path.join("\0");
    // SAFETY: pointers to a live buffer and to buffer_call's out-params.
    buffer_call(|d, s| unsafe {
        ffi::proxy_get_property(serialized.as_ptr(), serialized.len(), d, s)
    })
}

/// The plugin configuration bytes (empty if none).
pub fn plugin_configuration() -> Result<Vec<u8>, Status> {
    // SAFETY: out-params are buffer_call's.
    let bytes = buffer_call(|d, s| unsafe {
        ffi::proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, d, s)
    })?;
    Ok(bytes.unwrap_or_default())
}

/// One request header (the first value), as bytes; `None` if absent.
pub fn request_header(name: &str) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: pointers to a live buffer and to buffer_call's out-params.
    buffer_call(|d, s| unsafe {
        ffi::proxy_get_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len(), d, s)
    })
}

/// All request header lines, in order: (name, value bytes).
pub fn request_headers() -> Result<Vec<(String, Vec<u8>)>, Status> {
    // SAFETY: out-params are buffer_call's.
    let bytes =
        buffer_call(|d, s| unsafe { ffi::proxy_get_header_map_pairs(REQUEST_HEADERS, d, s) })?;
    // A map the host serialized wrongly is a host failure: fail closed.
    deserialize_map(&bytes.unwrap_or_default()).ok_or(SERIALIZATION_FAILURE)
}

const SERIALIZATION_FAILURE: u32 = 3;

/// Replace (or add) a request header.
pub fn replace_request_header(name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: pointers to live buffers.
    status(unsafe {
        ffi::proxy_replace_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Answer the request locally; `details` becomes Envoy's response code details.
pub fn send_local_response(
    code: u16,
    details: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<(), Status> {
    let serialized = serialize_map(headers).ok_or(SERIALIZATION_FAILURE)?;
    // SAFETY: pointers to live buffers; -1 = no gRPC status.
    status(unsafe {
        ffi::proxy_send_local_response(
            u32::from(code),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Define a counter; its id.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: pointer to a live buffer and to our out-param.
    status(unsafe { ffi::proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Add one to a counter. Failures are returned for the caller to ignore: a lost count must not
/// change a decision.
pub fn increment(id: u32) -> Result<(), Status> {
    // SAFETY: plain values.
    status(unsafe { ffi::proxy_increment_metric(id, 1) })
}

fn le_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = b.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(arr)).ok()
}

/// proxy-wasm map encoding: u32 count, then (u32 name len, u32 value len) per entry, then each
/// name and value followed by a NUL. `None` if the bytes do not follow it.
pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = le_u32(bytes, 0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for n in 0..count {
        let sizes = n.checked_mul(8)?.checked_add(4)?;
        let name_len = le_u32(bytes, sizes)?;
        let value_len = le_u32(bytes, sizes.checked_add(4)?)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        out.push((String::from_utf8(name.to_vec()).ok()?, value.to_vec()));
    }
    Some(out)
}

/// The inverse of [`deserialize_map`]; `None` if a length does not fit in u32.
pub fn serialize_map(map: &[(&str, &str)]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(map.len()).ok()?.to_le_bytes());
    for (name, value) in map {
        out.extend_from_slice(&u32::try_from(name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).ok()?.to_le_bytes());
    }
    for (name, value) in map {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_and_garbage() {
        let map = serialize_map(&[("a", "1"), (":path", "/x"), ("e", "")]).unwrap();
        let back = deserialize_map(&map).unwrap();
        assert_eq!(
            back,
            vec![
                ("a".into(), b"1".to_vec()),
                (":path".into(), b"/x".to_vec()),
                ("e".into(), Vec::new())
            ]
        );
        assert_eq!(deserialize_map(b"").unwrap(), Vec::new());
        // (The final NUL is not needed to read the last value.)
        for cut in 1..map.len() - 1 {
            assert!(deserialize_map(&map[..cut]).is_none(), "{cut}");
        }
        assert!(deserialize_map(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
