//! Numeric values of proxy-wasm ABI 0.2.1 (the spec's `proxy_status_t` and enums), as
//! proxy-wasm-cpp-host (Envoy's host) defines them.

/// `proxy_status_t` (cpp-host `WasmResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}

/// Header map types (`proxy_map_type_t`).
pub(crate) mod map {
    pub const REQUEST_HEADERS: u32 = 0;
    pub const REQUEST_TRAILERS: u32 = 1;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const RESPONSE_TRAILERS: u32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
    pub const MAX: u32 = 7;
}

/// Buffer types (`proxy_buffer_type_t`).
pub(crate) mod buffer {
    pub const REQUEST_BODY: u32 = 0;
    pub const RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
    pub const MAX: u32 = 8;
}

/// Stream types (`proxy_stream_type_t`); cpp-host accepts up to `Upstream`.
pub(crate) mod stream {
    pub const REQUEST: u32 = 0;
    pub const RESPONSE: u32 = 1;
    pub const MAX: u32 = 3;
}

/// Highest log level (`critical`).
pub(crate) const LOG_LEVEL_MAX: u32 = 5;

/// The wasm `Action` returned by stream callbacks.
pub(crate) const ACTION_CONTINUE: i32 = 0;
