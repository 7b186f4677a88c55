//! meshward-host: the host calls of proxy-wasm ABI 0.2.1 that meshward filter adapters make, as
//! plain functions returning `Result<T, Status>` — never a panic.
//!
//! # Why not the SDK's calls
//!
//! The proxy-wasm Rust SDK (0.2.5) `panic!`s on host statuses it does not expect (`get_map` on
//! anything but OK, `get_property` on BAD_ARGUMENT, …), `unwrap`s non-UTF-8 header names while
//! decoding a map, `unwrap`s the status of every log call, and declares the imports with a
//! `Status` enum, so a status value outside it is undefined behaviour. A panic in a filter turns
//! every later request on that Envoy worker into a 503 (or, with `fail_open`, skips the filter —
//! a bypass for an authorization filter). Here the imports are declared with `u32` statuses
//! , every status comes back as a [`Status`] value, header names and values stay bytes,
//! and every length the host sends is bounds-checked ([`wire`]). The adapter decides what a
//! failure means; meshward filters fail closed.
//!
//! # What adapters still take from the SDK
//!
//! - the `RootContext` / `HttpContext` / `Context` traits: the callbacks (`on_configure`,
//!   `on_http_request_headers`, `on_http_call_response`, `on_tick`, …) and their dispatcher;
//! - `proxy_wasm::main!` (gated by `#[cfg(target_arch = "wasm32")]`), `set_root_context` /
//!   `set_http_context`, and the `types::Action` / `ContextType` values;
//! - the allocator export `proxy_on_memory_allocate`, which this crate relies on: buffers the host
//!   returns are allocated through it, and taken over here as `Vec<u8>`.
//! - its dispatcher's bookkeeping of HTTP calls: the dispatcher delivers `on_http_call_response`
//!   only for tokens the SDK's own `dispatch_http_call` registered (an unknown token panics), so
//!   [`dispatch_http_call`] makes that one call through the SDK on wasm32, after refusing what
//!   could reach the SDK's panic (see its docs).
//!
//! # What adapters must not use (a test of this crate checks the adapters' sources)
//!
//! - `proxy_wasm::hostcalls::*`;
//! - the traits' convenience methods that call the host: `self.get_http_request_header(..)`,
//!   `self.set_http_request_header(..)`, `self.get_property(..)`, `self.dispatch_http_call(..)`,
//!   `self.get_plugin_configuration()`, `self.send_http_response(..)`, `self.get_shared_data(..)`,
//!   `self.resume_http_request()`, … — use the functions here instead;
//! - `proxy_wasm::set_log_level`: call [`init_logger`] instead (the SDK's logger `unwrap`s);
//! - their own `extern "C"` host imports: add what is missing here.
//!
//! # What every adapter shares
//!
//! - [`configure`]: `on_configure`'s preamble — read the plugin configuration, parse it with the
//!   filter's `Config::parse`, log either failure as `<filter>: …` — as
//!   `meshward_host::configure("<filter>", size, Config::parse)`, which returns `Option<Config>`.
//! - [`Counters`]: a filter's counters, defined at configure time, counted best effort.
//! - [`HostStore`]: `meshward_common::shared_store::SharedStore` over the host's shared data.
//! - [`RequestView`] and [`StageResult`]: every adapter is a stage (`<filter>::stage`) that decides
//!   on a view of the request (headers read once, each property at most once, header edits and
//!   set properties applied to the view as the host applies them), so that the standalone filter
//!   and the bundle (`meshward.wasm`, all four stages in one context) run the same code.
//!
//! # Native builds
//!
//! Off wasm32 there is no host: every call returns [`Status::UNIMPLEMENTED`], so adapters
//! compile, lint and run their failure paths in native tests.

mod abi;
mod buffers;
mod callbacks;
mod configure;
mod context;
mod foreign;
mod headers;
mod host_store;
mod http;
mod logger;
mod metrics;
pub mod property;
mod shared;
mod view;

pub use buffers::{
    get_buffer, plugin_configuration, request_body, response_body, set_buffer, set_request_body,
    set_response_body, vm_configuration,
};
#[doc(hidden)]
pub use callbacks::section_bytes;
pub use configure::configure;
pub use context::{current_time_nanos, done, set_effective_context, set_tick_period};
pub use foreign::call_foreign_function;
pub use headers::{
    add_map_value, get_map, get_map_raw, get_map_value, remove_map_value, replace_map_value,
    set_map, HeaderPairs,
};
pub use host_store::HostStore;
pub use http::{
    close_stream, continue_stream, dispatch_http_call, http_call_response_body,
    http_call_response_header, http_call_response_headers, resume_http_request,
    resume_http_response, send_local_response,
};
pub use logger::{host_level, init_logger};
pub use meshward_abi::encoding as wire;
pub use meshward_abi::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};
pub use metrics::{define_metric, get_metric, increment_metric, record_metric, Counters};
pub use property::{get_property, set_property};
pub use shared::{
    dequeue_shared_queue, enqueue_shared_queue, get_shared_data, register_shared_queue,
    resolve_shared_queue, set_shared_data,
};
pub use view::{HeaderSnapshot, RequestView, StageResult};
