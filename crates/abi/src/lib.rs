//! meshward-abi: proxy-wasm ABI 0.2.1 as both sides of meshward speak it — the filters (guest,
//! wasm32) through `meshward-host`, and the harness (host, native).
//!
//! - [`Status`]: `proxy_status_t`, kept as the raw `u32` (a value outside the enumeration must
//!   stay representable on the guest side).
//! - The enumerations passed to host calls ([`MapType`], [`BufferType`], [`StreamType`],
//!   [`MetricType`], [`LogLevel`]) and the [`Action`] a stream callback returns.
//! - [`host_functions!`]: the one table of the `env.proxy_*` host functions — name, parameters and
//!   what each hands back — from which the guest declares its imports and the harness registers
//!   its implementations and lists what it supports.
//! - [`encoding`]: the header-pairs format and property paths.
//!
//! Values are those of proxy-wasm-cpp-host (Envoy's host), which defines a few statuses the spec
//! does not.

pub mod encoding;
mod status;

pub use status::Status;

/// Declares a `#[repr(u32)]` enumeration of the ABI with its `TryFrom<u32>` (a host reads the raw
/// number a guest passed; an unknown one is the guest's error, not a panic).
macro_rules! abi_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $value:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $($variant = $value),*
        }

        impl TryFrom<u32> for $name {
            type Error = u32;
            fn try_from(raw: u32) -> Result<Self, u32> {
                match raw {
                    $($value => Ok($name::$variant),)*
                    other => Err(other),
                }
            }
        }
    };
}

abi_enum! {
    /// `proxy_map_type_t`.
    MapType {
        HttpRequestHeaders = 0,
        HttpRequestTrailers = 1,
        HttpResponseHeaders = 2,
        HttpResponseTrailers = 3,
        GrpcCallInitialMetadata = 4,
        GrpcCallTrailingMetadata = 5,
        HttpCallResponseHeaders = 6,
        HttpCallResponseTrailers = 7,
    }
}

abi_enum! {
    /// `proxy_buffer_type_t`.
    BufferType {
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
}

abi_enum! {
    /// `proxy_stream_type_t`.
    StreamType {
        HttpRequest = 0,
        HttpResponse = 1,
        Downstream = 2,
        Upstream = 3,
    }
}

abi_enum! {
    /// `proxy_metric_type_t`.
    MetricType {
        Counter = 0,
        Gauge = 1,
        Histogram = 2,
    }
}

abi_enum! {
    /// `proxy_log_level_t`.
    LogLevel {
        Trace = 0,
        Debug = 1,
        Info = 2,
        Warn = 3,
        Error = 4,
        Critical = 5,
    }
}

abi_enum! {
    /// `proxy_action_t`: what a stream callback returns.
    Action {
        Continue = 0,
        Pause = 1,
    }
}

/// The ABI versions of a module's `proxy_abi_version_*` export that Envoy 1.40 loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    V0_2_0,
    V0_2_1,
}

/// The parameter types of [`host_functions!`], one token each, as the guest declares them. The
/// host lowers them to wasm values: every pointer, size and 32-bit number is an `i32`, `I64` and
/// `U64` an `i64`.
pub mod types {
    /// Pointer to bytes the guest passes in.
    pub type Ptr = *const u8;
    /// Where the host writes the pointer of a buffer it allocated in guest memory.
    pub type OutPtr = *mut *mut u8;
    /// Where the host writes that buffer's size.
    pub type OutSize = *mut usize;
    pub type OutU32 = *mut u32;
    pub type OutU64 = *mut u64;
    pub type Size = usize;
    pub type U32 = u32;
    pub type I32 = i32;
    pub type I64 = i64;
    pub type U64 = u64;
}

/// The `env.proxy_*` host functions of ABI 0.2.x that Envoy 1.40 (cpp-host
/// `FOR_ALL_HOST_FUNCTIONS`, plus `proxy_continue_stream` / `proxy_close_stream` and 0.2.1's
/// `proxy_get_log_level`) provides, each written once: `$callback!` receives the whole table.
///
/// Each entry: `fn name(param: Type, …) => output [since];` where `Type` is a [`types`] name,
/// every function returns a `proxy_status_t`, `output` says what the call hands back on success —
/// `nothing`, `number(out_param)`, `buffer(data_out, size_out)`, or `buffer_cas(data_out,
/// size_out, cas_out)` — and `since` is the first [`AbiVersion`] that has it.
///
/// Note: for ABI 0.2.x cpp-host does *not* provide `proxy_continue_request`,
/// `proxy_continue_response`, `proxy_clear_route_cache` or `proxy_get_configuration` (0.1.0 only),
/// so a 0.2.1 module importing them fails to load in Envoy.
#[macro_export]
macro_rules! host_functions {
    ($callback:ident) => {
        $callback! {
            // Logging and the VM.
            fn proxy_log(level: U32, message_data: Ptr, message_size: Size) => nothing V0_2_0;
            fn proxy_get_log_level(return_level: OutU32) => number(return_level) V0_2_1;
            fn proxy_get_status(return_code: OutU32, return_message_data: OutPtr,
                return_message_size: OutSize) => nothing V0_2_0;
            fn proxy_set_effective_context(context_id: U32) => nothing V0_2_0;
            fn proxy_done() => nothing V0_2_0;
            fn proxy_call_foreign_function(name_data: Ptr, name_size: Size, arguments_data: Ptr,
                arguments_size: Size, return_results_data: OutPtr, return_results_size: OutSize)
                => nothing V0_2_0;

            // Time.
            fn proxy_get_current_time_nanoseconds(return_time: OutU64) => number(return_time) V0_2_0;
            fn proxy_set_tick_period_milliseconds(period: U32) => nothing V0_2_0;

            // Buffers.
            fn proxy_get_buffer_bytes(buffer_type: U32, start: Size, max_size: Size,
                return_data: OutPtr, return_size: OutSize) => buffer(return_data, return_size) V0_2_0;
            fn proxy_get_buffer_status(buffer_type: U32, return_length: OutSize,
                return_flags: OutU32) => number(return_length) V0_2_0;
            fn proxy_set_buffer_bytes(buffer_type: U32, start: Size, size: Size, value_data: Ptr,
                value_size: Size) => nothing V0_2_0;

            // Header maps.
            fn proxy_get_header_map_pairs(map_type: U32, return_data: OutPtr,
                return_size: OutSize) => buffer(return_data, return_size) V0_2_0;
            fn proxy_set_header_map_pairs(map_type: U32, map_data: Ptr, map_size: Size)
                => nothing V0_2_0;
            fn proxy_get_header_map_value(map_type: U32, key_data: Ptr, key_size: Size,
                return_value_data: OutPtr, return_value_size: OutSize)
                => buffer(return_value_data, return_value_size) V0_2_0;
            fn proxy_add_header_map_value(map_type: U32, key_data: Ptr, key_size: Size,
                value_data: Ptr, value_size: Size) => nothing V0_2_0;
            fn proxy_replace_header_map_value(map_type: U32, key_data: Ptr, key_size: Size,
                value_data: Ptr, value_size: Size) => nothing V0_2_0;
            fn proxy_remove_header_map_value(map_type: U32, key_data: Ptr, key_size: Size)
                => nothing V0_2_0;
            fn proxy_get_header_map_size(map_type: U32, return_size: OutSize)
                => number(return_size) V0_2_0;

            // Stream control.
            fn proxy_continue_stream(stream_type: U32) => nothing V0_2_0;
            fn proxy_close_stream(stream_type: U32) => nothing V0_2_0;
            fn proxy_send_local_response(status_code: U32, details_data: Ptr, details_size: Size,
                body_data: Ptr, body_size: Size, headers_data: Ptr, headers_size: Size,
                grpc_status: I32) => nothing V0_2_0;

            // Properties.
            fn proxy_get_property(path_data: Ptr, path_size: Size, return_value_data: OutPtr,
                return_value_size: OutSize) => buffer(return_value_data, return_value_size) V0_2_0;
            fn proxy_set_property(path_data: Ptr, path_size: Size, value_data: Ptr,
                value_size: Size) => nothing V0_2_0;

            // Shared data and queues.
            fn proxy_get_shared_data(key_data: Ptr, key_size: Size, return_value_data: OutPtr,
                return_value_size: OutSize, return_cas: OutU32)
                => buffer_cas(return_value_data, return_value_size, return_cas) V0_2_0;
            fn proxy_set_shared_data(key_data: Ptr, key_size: Size, value_data: Ptr,
                value_size: Size, cas: U32) => nothing V0_2_0;
            fn proxy_register_shared_queue(name_data: Ptr, name_size: Size, return_id: OutU32)
                => number(return_id) V0_2_0;
            fn proxy_resolve_shared_queue(vm_id_data: Ptr, vm_id_size: Size, name_data: Ptr,
                name_size: Size, return_id: OutU32) => number(return_id) V0_2_0;
            fn proxy_enqueue_shared_queue(queue_id: U32, value_data: Ptr, value_size: Size)
                => nothing V0_2_0;
            fn proxy_dequeue_shared_queue(queue_id: U32, return_value_data: OutPtr,
                return_value_size: OutSize) => buffer(return_value_data, return_value_size) V0_2_0;

            // Metrics.
            fn proxy_define_metric(metric_type: U32, name_data: Ptr, name_size: Size,
                return_id: OutU32) => number(return_id) V0_2_0;
            fn proxy_increment_metric(metric_id: U32, offset: I64) => nothing V0_2_0;
            fn proxy_record_metric(metric_id: U32, value: U64) => nothing V0_2_0;
            fn proxy_get_metric(metric_id: U32, return_value: OutU64) => number(return_value) V0_2_0;

            // HTTP and gRPC callouts.
            fn proxy_http_call(upstream_data: Ptr, upstream_size: Size, headers_data: Ptr,
                headers_size: Size, body_data: Ptr, body_size: Size, trailers_data: Ptr,
                trailers_size: Size, timeout_milliseconds: U32, return_token: OutU32)
                => number(return_token) V0_2_0;
            fn proxy_grpc_call(service_data: Ptr, service_size: Size, service_name_data: Ptr,
                service_name_size: Size, method_name_data: Ptr, method_name_size: Size,
                initial_metadata_data: Ptr, initial_metadata_size: Size, request_data: Ptr,
                request_size: Size, timeout_milliseconds: U32, return_token: OutU32)
                => nothing V0_2_0;
            fn proxy_grpc_stream(service_data: Ptr, service_size: Size, service_name_data: Ptr,
                service_name_size: Size, method_name_data: Ptr, method_name_size: Size,
                initial_metadata_data: Ptr, initial_metadata_size: Size, return_token: OutU32)
                => nothing V0_2_0;
            fn proxy_grpc_send(token: U32, message_data: Ptr, message_size: Size,
                end_stream: U32) => nothing V0_2_0;
            fn proxy_grpc_cancel(token: U32) => nothing V0_2_0;
            fn proxy_grpc_close(token: U32) => nothing V0_2_0;
        }
    };
}

/// Every host function's name and the first ABI version that has it, from [`host_functions!`].
macro_rules! name_table {
    ($(fn $name:ident ($($arg:ident : $ty:ident),* $(,)?) => $out:ident $(($($o:ident),*))? $since:ident;)*) => {
        /// The names of [`host_functions!`] with the first [`AbiVersion`] that provides each.
        pub const HOST_FUNCTION_NAMES: &[(&str, AbiVersion)] = &[
            $((stringify!($name), AbiVersion::$since)),*
        ];
    };
}
host_functions!(name_table);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerations_round_trip_and_refuse_unknown_numbers() {
        assert_eq!(MapType::try_from(6), Ok(MapType::HttpCallResponseHeaders));
        assert_eq!(MapType::try_from(8), Err(8));
        assert_eq!(
            BufferType::try_from(8),
            Ok(BufferType::ForeignFunctionArguments)
        );
        assert_eq!(
            LogLevel::try_from(LogLevel::Critical as u32),
            Ok(LogLevel::Critical)
        );
        assert_eq!(StreamType::try_from(4), Err(4));
        assert_eq!(Action::try_from(1), Ok(Action::Pause));
    }

    #[test]
    fn the_table_names_every_function_once() {
        let mut names: Vec<_> = HOST_FUNCTION_NAMES.iter().map(|(n, _)| *n).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(count, 39);
        assert!(HOST_FUNCTION_NAMES.contains(&("proxy_get_log_level", AbiVersion::V0_2_1)));
        assert!(!names.contains(&"proxy_continue_request"));
    }
}
