//! What every VM set of one `Host` shares, as Envoy's process does across its threads: the clock
//! and its timers, shared data and queues, metrics, the log, injected faults and the interleaving
//! gate. Each part keeps proxy-wasm-cpp-host's semantics; none knows about VMs or streams.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

mod clock;
mod faults;
mod interleave;
mod metrics;
mod queues;
mod shared_data;

pub use clock::ClockMode;
pub(crate) use clock::{Clock, Event, Timers};
pub use faults::HostcallRecord;
pub(crate) use faults::{Fault, FaultAction, Faults};
pub(crate) use interleave::Gate;
pub(crate) use metrics::Metrics;
pub use metrics::{MetricKind, MetricValue};
pub(crate) use queues::{QueueOwner, SharedQueues};
pub(crate) use shared_data::SharedData;

use crate::envoy_model::{Clusters, ListenerSettings};
use crate::outcome::LogLine;

/// State every VM set of one host shares.
pub(crate) struct HostShared {
    pub clock: Clock,
    pub timers: Timers,
    pub shared_data: SharedData,
    pub queues: SharedQueues,
    pub metrics: Metrics,
    pub faults: Faults,
    pub clusters: Clusters,
    pub logs: Mutex<Vec<LogLine>>,
    pub listener: ListenerSettings,
    pub connection_ids: AtomicU64,
    pub gate: Gate,
}

impl HostShared {
    /// Schedules `event` `delay_ns` after now on the host clock.
    pub fn schedule(&self, delay_ns: u64, event: Event) {
        let due = self.clock.monotonic_ns().saturating_add(delay_ns);
        self.timers.schedule(due, event);
    }
}

/// Locks, recovering from poisoning (a panicking test thread must not wedge the others).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
