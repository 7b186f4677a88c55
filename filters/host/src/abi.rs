//! The raw ABI 0.2.1 imports (module `env`) and the enumerations passed to them.
//!
//! Every import returns its status as a plain `u32`. The SDK declares the same imports with its
//! `Status` enum as the return type; both lower to wasm `i32`, so the linker merges them, and a
//! `u32` cannot hold an out-of-range enum value.
//!
//! Native builds (used for `cargo test` and clippy) have no host: the same functions exist as
//! stubs that return [`Status::UNIMPLEMENTED`], so adapters compile, lint and even run their
//! failure paths natively without unresolved symbols.

#[cfg(not(target_arch = "wasm32"))]
use crate::Status;

/// Declares each import once: an `extern "C"` import on wasm32, a stub elsewhere.
macro_rules! imports {
    ($( fn $name:ident ( $( $arg:ident : $ty:ty ),* $(,)? ); )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        extern "C" {
            $( pub fn $name( $( $arg: $ty ),* ) -> u32; )*
        }

        $(
            /// Native stub: there is no host.
            ///
            /// # Safety
            /// Always safe; `unsafe` only to match the wasm32 import.
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables, clippy::too_many_arguments)]
            pub unsafe fn $name( $( $arg: $ty ),* ) -> u32 {
                Status::UNIMPLEMENTED.0
            }
        )*
    };
}

imports! {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize);
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64);
    fn proxy_set_tick_period_milliseconds(period: u32);
    fn proxy_set_effective_context(context_id: u32);
    fn proxy_done();

    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    );
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        value_data: *const u8,
        value_size: usize,
    );

    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize);
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize);
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    );
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    );
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize);

    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    );

    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    );
    fn proxy_continue_stream(stream_type: u32);
    fn proxy_close_stream(stream_type: u32);

    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    );
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    );
    fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32);
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    );
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize);
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    );

    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    );
    fn proxy_increment_metric(metric_id: u32, offset: i64);
    fn proxy_record_metric(metric_id: u32, value: u64);
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64);
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcCallInitialMetadata = 4,
    GrpcCallTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
    ForeignFunctionArguments = 8,
}

/// `proxy_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Take ownership of a buffer the host wrote into guest memory.
///
/// # Safety
/// `data`/`size` must come from a host call that returned OK and allocated them through the
/// module's `proxy_on_memory_allocate` export (the SDK's: a boxed `[u8]` of exactly `size` bytes,
/// alignment 1), as ABI 0.2.1 prescribes. Each such buffer must be taken at most once.
pub(crate) unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        // The host passes a null pointer for an empty value (it allocates nothing for 0 bytes).
        Vec::new()
    } else {
        // SAFETY: see the function contract; capacity == length == the allocated size.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// Run a host call that hands back a buffer; `Ok(None)` for NOT_FOUND.
pub(crate) fn returned_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, crate::Status> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    match call(&mut data, &mut size) {
        // SAFETY: the host returned OK, so it allocated `data` for us (see `take`).
        0 => Ok(Some(unsafe { take(data, size) })),
        1 => Ok(None),
        other => Err(crate::Status(other)),
    }
}

/// A pointer to pass for an optional byte string: null when empty, like the SDK does (a host may
/// not accept a dangling pointer to nothing).
pub(crate) fn ptr_or_null(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}
