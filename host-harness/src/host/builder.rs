//! Building a [`Host`]: compile the chain's modules, link the host functions, start the main
//! thread's VM set and each worker's.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use wasmtime::Linker;

use super::{FilterSpec, Host};
use crate::envoy_model::{Cluster, Clusters, ListenerSettings};
use crate::error::HostError;
use crate::hostcalls::add_to_linker;
use crate::loader::shape;
use crate::runtime::{
    Clock, ClockMode, Fault, FaultAction, Faults, Gate, Metrics, SharedData, SharedQueues, Thread,
    Timers,
};
use crate::vm::{compile, shared_engine, FilterInfo, HostShared, VmSet, VmState};
use crate::Status;
use meshward_abi::AbiVersion;

/// Builds a `Host`.
pub struct HostBuilder {
    pub(super) listener: ListenerSettings,
    pub(super) filters: Vec<FilterSpec>,
    pub(super) workers: usize,
    pub(super) clock: ClockMode,
    pub(super) clusters: Vec<(String, Cluster)>,
    /// Faults armed (and tracing started) before any VM starts, so configure-time hostcalls
    /// can be faulted and traced too.
    pub(super) faults: Vec<Fault>,
    pub(super) trace: bool,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            listener: ListenerSettings::default(),
            filters: Vec::new(),
            workers: 1,
            clock: ClockMode::Virtual,
            clusters: Vec::new(),
            faults: Vec::new(),
            trace: false,
        }
    }
}

impl HostBuilder {
    /// [`Host::inject_fault`], armed before the VMs start (`_initialize`, `on_vm_start`,
    /// `on_configure` see it).
    pub fn inject_fault(
        mut self,
        hostcall: &str,
        action: Result<Vec<u8>, Status>,
        filter: Option<&str>,
        nth: Option<u32>,
    ) -> Self {
        self.faults.push(fault_of(hostcall, action, filter, nth));
        self
    }
    /// Starts the hostcall trace before the VMs start ([`Host::hostcall_trace`]).
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    pub fn listener(mut self, settings: ListenerSettings) -> Self {
        self.listener = settings;
        self
    }
    /// Appends a filter (chain order = request order).
    pub fn filter(mut self, spec: FilterSpec) -> Self {
        self.filters.push(spec);
        self
    }
    /// Number of worker VM sets (Envoy `--concurrency`); default 1. A main-thread VM set is
    /// always created besides them.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
    pub fn clock(mut self, mode: ClockMode) -> Self {
        self.clock = mode;
        self
    }
    /// Defines an upstream cluster for `proxy_http_call`.
    pub fn cluster(mut self, name: &str, cluster: Cluster) -> Self {
        self.clusters.push((name.to_string(), cluster));
        self
    }

    /// Loads every module, then starts the main-thread VM set and each worker's (each runs
    /// `_initialize`, `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`).
    pub fn build(self) -> Result<Host, HostError> {
        let mut infos = Vec::new();
        let mut abi = AbiVersion::V0_2_1;
        for spec in &self.filters {
            let module = compile(&spec.bytes)?;
            let shape = shape(&module)?;
            if shape.abi == AbiVersion::V0_2_0 {
                abi = AbiVersion::V0_2_0;
            }
            let name = spec.plugin_name();
            infos.push(Arc::new(FilterInfo {
                root_id: spec.root_id.clone().unwrap_or_else(|| name.clone()),
                name,
                vm_id: spec.vm_id.clone(),
                vm_config: spec.vm_config.clone(),
                env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                plugin_config: spec.config.clone(),
                fail: spec.fail,
                module,
                shape,
                log_level: spec.log_level,
                vm_key: vm_key(spec),
            }));
        }
        if infos.iter().any(|i| i.shape.abi != abi) {
            return Err(HostError::Setup(
                "all modules of a chain must use the same proxy-wasm ABI version".to_string(),
            ));
        }
        let linker = make_linker(abi)?;
        let clusters = Clusters::default();
        for (name, c) in self.clusters {
            clusters.insert(&name, c);
        }
        let shared = Arc::new(HostShared {
            clock: Clock::new(self.clock),
            timers: Timers::default(),
            shared_data: SharedData::default(),
            queues: SharedQueues::default(),
            metrics: Metrics::default(),
            faults: Faults::default(),
            clusters,
            grpc: Default::default(),
            logs: Mutex::new(Vec::new()),
            listener: self.listener,
            connection_ids: AtomicU64::new(0),
            gate: Gate::default(),
        });
        shared.faults.set_tracing(self.trace);
        for f in self.faults {
            shared.faults.arm(f);
        }
        // Envoy validates each plugin's configuration first in a canary: a fresh VM of its own
        // that starts, creates the root context, runs `on_vm_start` and `on_configure`, and is
        // discarded (what it wrote to shared data, logged or defined as metrics stays).
        for info in &infos {
            drop(VmSet::new(
                Thread::Canary,
                std::slice::from_ref(info),
                &linker,
                shared.clone(),
            )?);
        }
        // Then the main thread's VMs, then each worker's, as in Envoy.
        let main = Mutex::new(VmSet::new(Thread::Main, &infos, &linker, shared.clone())?);
        let mut workers = Vec::new();
        for n in 0..self.workers {
            let set = VmSet::new(Thread::Worker(n), &infos, &linker, shared.clone())?;
            workers.push(Mutex::new(set));
        }
        Ok(Host {
            names: infos.iter().map(|i| i.name.clone()).collect(),
            shared,
            main,
            workers,
            rr: AtomicUsize::new(0),
            next_stream: AtomicU64::new(1),
        })
    }
}

fn make_linker(abi: AbiVersion) -> Result<Linker<VmState>, HostError> {
    let mut linker = Linker::new(shared_engine());
    add_to_linker(&mut linker, abi).map_err(|e| HostError::Setup(format!("{e:#}")))?;
    Ok(linker)
}

pub(super) fn fault_of(
    hostcall: &str,
    action: Result<Vec<u8>, Status>,
    filter: Option<&str>,
    nth: Option<u32>,
) -> Fault {
    let action = match action {
        Ok(bytes) => FaultAction::Bytes(bytes),
        Err(status) => FaultAction::Status(status),
    };
    let mut fault = Fault::new(hostcall, action);
    if let Some(name) = filter {
        fault = fault.filter(name);
    }
    if let Some(n) = nth {
        fault = fault.nth(n);
    }
    fault
}

/// Envoy's VM key for a filter (`makeVmKey`): its vm_id, its VM configuration and a digest of
/// its code — plugins with equal keys share a VM (plugin name and configuration do not count).
fn vm_key(spec: &FilterSpec) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [spec.vm_id.as_bytes(), &spec.vm_config, &spec.bytes[..]] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}
