//! What every VM set of one `Host` shares: the runtime (clock, timers, shared data, queues,
//! metrics, faults, the gate), the host's log, and the Envoy model around the chain (listener
//! settings, clusters).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::envoy_model::grpc::GrpcClient;
use crate::envoy_model::{Clusters, ListenerSettings};
use crate::outcome::LogLine;
use crate::runtime::{Clock, Event, Faults, Gate, Metrics, SharedData, SharedQueues, Timers};

/// State every VM set of one host shares.
pub(crate) struct HostShared {
    pub clock: Clock,
    pub timers: Timers,
    pub shared_data: SharedData,
    pub queues: SharedQueues,
    pub metrics: Metrics,
    pub faults: Faults,
    pub clusters: Clusters,
    /// gRPC calls and streams to the clusters' real servers.
    pub grpc: GrpcClient,
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
