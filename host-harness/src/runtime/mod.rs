//! What Envoy's process shares across its threads, as proxy-wasm-cpp-host keeps it: the clock
//! and its timers, shared data and queues, metrics, injected faults and the interleaving gate,
//! and the names of the threads. None of it knows about VMs, streams or Envoy's HTTP model.

use std::sync::Mutex;

mod clock;
mod faults;
mod interleave;
mod metrics;
mod queues;
mod shared_data;
mod thread;

pub use clock::ClockMode;
pub(crate) use clock::{Clock, Event, Timers};
pub use faults::HostcallRecord;
pub(crate) use faults::{Fault, FaultAction, Faults};
pub(crate) use interleave::Gate;
pub(crate) use metrics::Metrics;
pub use metrics::{MetricKind, MetricValue};
pub(crate) use queues::{QueueOwner, SharedQueues};
pub(crate) use shared_data::SharedData;
pub use thread::Thread;

/// Locks, recovering from poisoning (a panicking test thread must not wedge the others).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
