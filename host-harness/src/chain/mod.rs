//! The filter chain at work on one VM set: the request driver (`driver`: a stream through the
//! request callbacks, the router and upstream, the response callbacks and the access log, with
//! local replies, resets and failed VMs) and the events root contexts receive (`events`: ticks,
//! queue notifications, HTTP call responses), after which resumed streams are driven on. Both are
//! methods of `vm::VmSet`.

mod driver;
mod events;
