//! Clock, timer and context bookkeeping.

use std::time::Duration;

use crate::abi;
use crate::Status;

/// The host's current time, in nanoseconds since the Unix epoch (possibly frozen for the duration
/// of a callback).
pub fn current_time_nanos() -> Result<u64, Status> {
    let mut now = 0;
    // SAFETY: the out-param is a live local.
    Status::check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut now) })?;
    Ok(now)
}

/// Call `on_tick` every `period` (rounded down to whole milliseconds, capped at `u32::MAX` ms).
/// A zero period stops the timer. In Envoy the timer fires on the main thread's root context and
/// on every worker's.
pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain value.
    Status::check(unsafe { abi::proxy_set_tick_period_milliseconds(ms) })
}

/// Make `context_id` the context later host calls act on (e.g. an HTTP context, from a root
/// context's `on_http_call_response`, before resuming its request).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: plain value.
    Status::check(unsafe { abi::proxy_set_effective_context(context_id) })
}

/// Tell the host that the context which returned `false` from `on_done` is now done.
pub fn done() -> Result<(), Status> {
    // SAFETY: no arguments.
    Status::check(unsafe { abi::proxy_done() })
}
