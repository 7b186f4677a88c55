//! Pure decision core of the header-limits filter: Envoy's HTTP connection manager header limits
//! (`max_request_headers_kb`, `max_headers_count`, `headers_with_underscores_action`), plus
//! per-value and path limits and a control-character check, applied to the request header map a
//! proxy-wasm filter sees. No proxy-wasm types: the adapter hands in plain byte pairs.
//!
//! What is counted, exactly (see docs/header-limits.md for how this differs from Envoy's codecs):
//! - size: Σ (len(name) + len(value)) over every entry of the map, pseudo-headers (`:path`,
//!   `:authority`, …) included, no separators; rejected when `size > maxRequestHeadersKb * 1024`.
//! - count: the number of entries, pseudo-headers included; rejected when `count > maxHeadersCount`.

mod config;
mod verdict;

pub use config::{
    Config, UnderscoreAction, DEFAULT_MAX_HEADERS_COUNT, DEFAULT_MAX_REQUEST_HEADERS_KB,
    MAX_REQUEST_HEADERS_KB_LIMIT,
};
pub use verdict::{
    decide, request_path, Reason, Rejection, RequestFacts, Verdict, BAD_REQUEST_BODY,
    DROPPED_UNDERSCORE_METRIC, TOO_LARGE_BODY,
};
