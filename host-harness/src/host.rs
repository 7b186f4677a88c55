//! `Host`: a filter chain on N worker VM sets plus the main-thread VM set, fed requests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Linker;

use crate::abi::Status;
use crate::callout::{CalloutRequest, Cluster, Clusters};
use crate::clock::{Clock, ClockMode, Event, Timers};
use crate::error::HostError;
use crate::hcm::{self, ListenerSettings};
use crate::headers::HeaderMap;
use crate::interleave::Gate;
use crate::module::{self, AbiVersion};
use crate::shared::{
    lock, Fault, FaultAction, Faults, HostcallRecord, MetricValue, Metrics, SharedData,
    SharedQueues,
};
use crate::types::{LogLevel, LogLine, Outcome, Request, Response, Verdict};
use crate::worker::{
    self, Connection, FailStrategy, FilterInfo, HostShared, Stream, Worker, WorkerState,
};

/// One filter of the chain: a module plus its plugin settings.
#[derive(Clone)]
pub struct FilterSpec {
    bytes: Arc<Vec<u8>>,
    stem: String,
    name: Option<String>,
    root_id: Option<String>,
    vm_id: String,
    config: Vec<u8>,
    vm_config: Vec<u8>,
    fail: FailStrategy,
    log_level: LogLevel,
}

impl FilterSpec {
    /// A module file; the plugin name defaults to the file stem.
    pub fn from_file(path: impl AsRef<Path>) -> Result<FilterSpec, HostError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| HostError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".to_string());
        Ok(FilterSpec::from_bytes(bytes).with_stem(stem))
    }

    /// Module bytes (binary wasm); the plugin name defaults to `module`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> FilterSpec {
        FilterSpec {
            bytes: Arc::new(bytes.into()),
            stem: "module".to_string(),
            name: None,
            root_id: None,
            vm_id: String::new(),
            config: Vec::new(),
            vm_config: Vec::new(),
            fail: FailStrategy::FailClosed,
            log_level: LogLevel::Info,
        }
    }

    fn with_stem(mut self, stem: String) -> Self {
        self.stem = stem;
        self
    }

    /// Plugin name (`plugin_name`) and, unless set separately, root id.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = Some(root_id.to_string());
        self
    }
    /// VM id (`plugin_vm_id`; scopes shared data and queues). Envoy's default is empty.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_string();
        self
    }
    /// Plugin configuration bytes.
    pub fn config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.config = config.into();
        self
    }
    pub fn config_json(self, json: &str) -> Self {
        self.config(json.as_bytes().to_vec())
    }
    /// VM configuration bytes (`proxy_on_vm_start`).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = config.into();
        self
    }
    /// Envoy's `fail_open` as a bool (`true` = `FailStrategy::FailOpen`).
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.fail_strategy(if fail_open {
            FailStrategy::FailOpen
        } else {
            FailStrategy::FailClosed
        })
    }
    /// Envoy's `fail_open`.
    pub fn fail_strategy(mut self, fail: FailStrategy) -> Self {
        self.fail = fail;
        self
    }
    /// Envoy's wasm log level for this plugin (lines below it are dropped). Default `Info`.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }
    /// The module bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn plugin_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.stem.clone())
    }
}

/// Builds a `Host`.
pub struct HostBuilder {
    listener: ListenerSettings,
    filters: Vec<FilterSpec>,
    workers: usize,
    clock: ClockMode,
    clusters: Vec<(String, Cluster)>,
    /// Faults armed (and tracing started) before any VM starts, so configure-time hostcalls
    /// can be faulted and traced too.
    faults: Vec<Fault>,
    trace: bool,
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
            let module = module::compile(&spec.bytes)?;
            let shape = module::shape(&module)?;
            if shape.abi == AbiVersion::V0_2_0 {
                abi = AbiVersion::V0_2_0;
            }
            let name = spec.plugin_name();
            infos.push(Arc::new(FilterInfo {
                root_id: spec.root_id.clone().unwrap_or_else(|| name.clone()),
                name,
                vm_id: spec.vm_id.clone(),
                vm_config: spec.vm_config.clone(),
                plugin_config: spec.config.clone(),
                fail: spec.fail,
                module,
                shape,
                log_level: spec.log_level,
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
            logs: Mutex::new(Vec::new()),
            listener: self.listener,
            connection_ids: AtomicU64::new(0),
            gate: Gate::default(),
        });
        shared.faults.set_tracing(self.trace);
        for f in self.faults {
            shared.faults.arm(f);
        }
        let mut slots = Vec::new();
        for slot in 0..=self.workers {
            slots.push(Mutex::new(Worker::new(
                slot,
                &infos,
                &linker,
                shared.clone(),
            )?));
        }
        Ok(Host {
            names: infos.iter().map(|i| i.name.clone()).collect(),
            shared,
            slots,
            rr: AtomicUsize::new(0),
            next_stream: AtomicU64::new(1),
        })
    }
}

fn make_linker(abi: AbiVersion) -> Result<Linker<WorkerState>, HostError> {
    let mut linker = Linker::new(module::shared_engine());
    crate::hostcalls::add_to_linker(&mut linker, abi)
        .map_err(|e| HostError::Setup(format!("{e:#}")))?;
    crate::wasi::add_to_linker(&mut linker).map_err(|e| HostError::Setup(format!("{e:#}")))?;
    Ok(linker)
}

/// A request begun with [`Host::start`] that may still be paused.
#[derive(Debug)]
pub struct Started {
    key: u64,
    worker: usize,
}

impl Started {
    /// The worker it runs on.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

/// A proxy-wasm filter chain in a modelled Envoy: listener + HCM, the chain on the main thread
/// and N workers, an echo upstream, clusters for callouts, a clock, shared data and metrics.
/// `Host` is `Send + Sync`; it has no process-global mutable state (only the compiled-module
/// cache is shared), so tests run in parallel.
pub struct Host {
    shared: Arc<HostShared>,
    /// 0 = main thread, 1..=workers.
    slots: Vec<Mutex<Worker>>,
    names: Vec<String>,
    rr: AtomicUsize,
    next_stream: AtomicU64,
}

impl Host {
    pub fn builder() -> HostBuilder {
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

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.slots.len() - 1
    }

    /// Plugin names in chain order.
    pub fn filter_names(&self) -> &[String] {
        &self.names
    }

    /// Sends one request through the chain to completion. If a filter pauses it waiting for a
    /// callout or a queue, the host clock is moved to that event (firing due ticks on the way);
    /// with nothing left to wait for, the verdict is `Stalled`.
    pub fn send(&self, req: &Request) -> Outcome {
        self.send_to(req, req.worker)
    }

    /// [`Host::send`] on the given worker (round-robin when `None`), whatever `req.worker` says:
    /// lets a caller reuse one request on several workers without copying it.
    pub fn send_to(&self, req: &Request, worker: Option<usize>) -> Outcome {
        let worker = match worker {
            Some(w) => w % self.workers(),
            None => self.rr.fetch_add(1, Ordering::Relaxed) % self.workers(),
        };
        let slot = worker + 1;
        if let Err(reject) = hcm::check_codec(&self.shared.listener, req) {
            let mut headers = HeaderMap::from_pairs([
                ("content-length", reject.body.len().to_string()),
                ("content-type", "text/plain".to_string()),
            ]);
            hcm::finalize_response_headers(&mut headers);
            headers.add(b"connection", b"close");
            return Outcome {
                verdict: Verdict::LocalReply {
                    status: reject.status,
                    details: reject.details.to_string(),
                    by: None,
                },
                upstream_request: None,
                response: Response {
                    status: reject.status,
                    headers: headers.to_strings(),
                    body: reject.body.as_bytes().to_vec(),
                },
                logs: Vec::new(),
                filter_nanos: self.names.iter().map(|n| (n.clone(), 0)).collect(),
                worker,
            };
        }
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let stream = self.new_stream(req);
        {
            let mut w = lock(&self.slots[slot]);
            w.insert_stream(key, stream);
            w.drive(key);
        }
        loop {
            self.run_due();
            {
                let mut w = lock(&self.slots[slot]);
                if w.stream(key).map(|s| s.is_done()).unwrap_or(true) {
                    return self.outcome(&mut w, key, worker, None);
                }
            }
            let next = self
                .shared
                .timers
                .next_due(|e| matches!(e, Event::Callout { .. } | Event::QueueReady { .. }));
            match next {
                Some(due) => self.shared.clock.sleep_until(due),
                None => {
                    let mut w = lock(&self.slots[slot]);
                    let phase = w.abandon(key);
                    return self.outcome(&mut w, key, worker, phase);
                }
            }
        }
    }

    /// Starts `req` and runs it until it pauses or finishes, without moving the clock: several
    /// requests can then wait on the same callout or tick. Finish it with [`Host::finish`] after
    /// [`Host::advance`] fired what it waits on. (A request the codec refuses is never started:
    /// use `send`.)
    pub fn start(&self, req: &Request) -> Started {
        let worker = match req.worker {
            Some(w) => w % self.workers(),
            None => self.rr.fetch_add(1, Ordering::Relaxed) % self.workers(),
        };
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let stream = self.new_stream(req);
        let mut w = lock(&self.slots[worker + 1]);
        w.insert_stream(key, stream);
        w.drive(key);
        Started { key, worker }
    }

    /// The outcome of a started request if it has finished, else the request back.
    pub fn finish(&self, started: Started) -> Result<Outcome, Started> {
        let mut w = lock(&self.slots[started.worker + 1]);
        if w.stream(started.key).map(|s| s.is_done()).unwrap_or(true) {
            Ok(self.outcome(&mut w, started.key, started.worker, None))
        } else {
            Err(started)
        }
    }

    fn new_stream(&self, req: &Request) -> Stream {
        let id = self.shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let listener = &self.shared.listener;
        let source = req.source.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + (id % 20000) as u16)
        });
        let source = hcm::remote_address(listener, source, req);
        let conn = Connection {
            id,
            source,
            destination: SocketAddr::new(listener.address, listener.port),
            tls: req.tls.clone(),
        };
        let headers = hcm::request_headers(req, req.tls.is_some());
        let trailers = if req.trailers.is_empty() {
            None
        } else {
            Some(HeaderMap::from_pairs(
                req.trailers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            ))
        };
        Stream::new(
            self.names.len(),
            conn,
            headers,
            req.body.clone(),
            trailers,
            self.shared.clock.realtime_ns(),
        )
    }

    fn outcome(
        &self,
        w: &mut Worker,
        key: u64,
        worker: usize,
        stalled: Option<crate::types::Phase>,
    ) -> Outcome {
        let Some(s) = w.take_stream(key) else {
            return Outcome {
                verdict: Verdict::Stalled {
                    filter: String::new(),
                    phase: crate::types::Phase::Done,
                },
                upstream_request: None,
                response: Response::default(),
                logs: Vec::new(),
                filter_nanos: Vec::new(),
                worker,
            };
        };
        let verdict = match stalled {
            Some(phase) => {
                let filter = s.pos.min(self.names.len().saturating_sub(1));
                Verdict::Stalled {
                    filter: self.names.get(filter).cloned().unwrap_or_default(),
                    phase,
                }
            }
            None => s.verdict.clone().unwrap_or(Verdict::Stalled {
                filter: String::new(),
                phase: crate::types::Phase::Done,
            }),
        };
        let filter_nanos = self
            .names
            .iter()
            .cloned()
            .zip(s.filter_nanos.iter().copied())
            .collect();
        // The stream is ours now: move its parts into the outcome rather than copy them.
        let mut s = s;
        let upstream_request = s.upstream_request.take();
        let logs = std::mem::take(&mut s.logs);
        let response = if stalled.is_some() {
            Response::default()
        } else {
            worker::response_of(s)
        };
        Outcome {
            verdict,
            upstream_request,
            response,
            logs,
            filter_nanos,
            worker,
        }
    }

    /// Fires every event due now, in time order.
    fn run_due(&self) {
        let now = self.shared.clock.monotonic_ns();
        while let Some((due, event)) = self.shared.timers.pop_due(now) {
            self.dispatch(due, event);
        }
    }

    fn dispatch(&self, due: u64, event: Event) {
        match event {
            Event::Tick {
                slot,
                filter,
                generation,
            } => {
                let Some(m) = self.slots.get(slot) else {
                    return;
                };
                let mut w = lock(m);
                let (current, period, failed) = {
                    let vm = &w.store.data().vms[filter];
                    (vm.tick_generation, vm.tick_period_ms, vm.failed)
                };
                if current != generation || period == 0 || failed {
                    return;
                }
                // Reschedule first: a tick handler may change the period (new generation).
                let next = due + u64::from(period) * 1_000_000;
                self.shared.timers.schedule(
                    next,
                    Event::Tick {
                        slot,
                        filter,
                        generation,
                    },
                );
                w.on_tick(filter);
            }
            Event::Callout {
                slot,
                filter,
                token,
            } => {
                if let Some(m) = self.slots.get(slot) {
                    lock(m).on_callout(filter, token);
                }
            }
            Event::QueueReady {
                slot,
                filter,
                context_id,
                token,
            } => {
                if let Some(m) = self.slots.get(slot) {
                    lock(m).on_queue_ready(filter, context_id, token);
                }
            }
        }
    }

    /// Moves the clock forward by `d`, firing due ticks, callout completions and queue
    /// notifications in time order (real-time mode: sleeps).
    pub fn advance(&self, d: Duration) {
        let target = self
            .shared
            .clock
            .monotonic_ns()
            .saturating_add(d.as_nanos() as u64);
        while let Some((due, event)) = self.shared.timers.pop_due(target) {
            self.shared.clock.sleep_until(due);
            self.dispatch(due, event);
        }
        self.shared.clock.sleep_until(target);
        self.run_due();
    }

    /// Host wall time (ns since the epoch) as modules see it.
    pub fn now_ns(&self) -> u64 {
        self.shared.clock.realtime_ns()
    }

    pub fn metrics(&self) -> Vec<MetricValue> {
        self.shared.metrics.all()
    }

    /// Value of the metric `name` (counter/gauge value, histogram sample count).
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every log line since the host was built.
    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.shared.logs).clone()
    }

    /// Whether filter `name`'s VM has failed in `worker` (`None`: the main-thread VM).
    pub fn vm_failed(&self, name: &str, worker: Option<usize>) -> bool {
        let slot = worker.map(|w| w + 1).unwrap_or(0);
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return false;
        };
        self.slots
            .get(slot)
            .map(|m| lock(m).store.data().vms[i].failed)
            .unwrap_or(false)
    }

    /// Shared data of `vm_id` (key → (value, cas)), sorted by key.
    pub fn shared_data(&self, vm_id: &str) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
        self.shared.shared_data.snapshot(vm_id)
    }

    /// Makes hostcall `name` (e.g. `"proxy_get_shared_data"`) return `status` without running,
    /// `times` times (`None`: until cleared).
    pub fn inject_status(&self, hostcall: &str, status: Status, times: Option<u32>) {
        self.shared.faults.inject(hostcall, status, times);
    }

    /// Arms a fault on `hostcall` (e.g. `"proxy_get_property"`): `Err(status)` makes it return
    /// that status, `Ok(bytes)` makes it return `Ok` with `bytes` as its result (a buffer for the
    /// calls that hand one back, empty = nothing; raw bytes in the number out-param of the calls
    /// that write one, so a short slice is a short write; no output for the others). `filter`:
    /// only calls made by that plugin. `nth`: only the n-th matching call (0-based), once;
    /// `None`: every matching call until [`Host::clear_faults`].
    pub fn inject_fault(
        &self,
        hostcall: &str,
        action: Result<Vec<u8>, Status>,
        filter: Option<&str>,
        nth: Option<u32>,
    ) {
        self.shared
            .faults
            .arm(fault_of(hostcall, action, filter, nth));
    }

    /// Starts recording every hostcall (clearing an earlier trace) or stops; see
    /// [`Host::hostcall_trace`].
    pub fn trace(&self, on: bool) {
        self.shared.faults.set_tracing(on);
    }

    /// The hostcalls made while tracing was on, in call order.
    pub fn hostcall_trace(&self) -> Vec<HostcallRecord> {
        self.shared.faults.trace()
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Defines (or replaces) a cluster after build.
    pub fn set_cluster(&self, name: &str, cluster: Cluster) {
        self.shared.clusters.insert(name, cluster);
    }

    /// The next `times` callouts to `cluster` are reset (callback with 0 headers).
    pub fn fail_callouts(&self, cluster: &str, times: u32) {
        self.shared.clusters.fail_next(cluster, times);
    }

    /// Every callout made so far.
    pub fn callouts(&self) -> Vec<CalloutRequest> {
        self.shared.clusters.log()
    }

    /// Sends `a` on worker `wa` and `b` on worker `wb` concurrently, forcing their shared-data
    /// hostcalls to alternate strictly (a, b, a, b, …) until one of them finishes. Returns both
    /// outcomes and the order the shared-data calls ran in as (worker, hostcall).
    pub fn send_interleaved(
        &self,
        a: &Request,
        wa: usize,
        b: &Request,
        wb: usize,
    ) -> (Outcome, Outcome, Vec<(usize, &'static str)>) {
        assert_ne!(
            wa % self.workers(),
            wb % self.workers(),
            "interleaving needs two different workers"
        );
        let (sa, sb) = (wa % self.workers() + 1, wb % self.workers() + 1);
        let gate = &self.shared.gate;
        gate.arm(sa, sb);
        let (oa, ob) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| {
                let out = self.send(&a.clone().worker(wa));
                gate.finish(sa);
                out
            });
            let hb = scope.spawn(|| {
                let out = self.send(&b.clone().worker(wb));
                gate.finish(sb);
                out
            });
            (join(ha), join(hb))
        });
        let trace = gate.disarm();
        let trace = trace.into_iter().map(|(slot, op)| (slot - 1, op)).collect();
        (oa, ob, trace)
    }

    /// Sends `requests` from `threads` real threads (thread t uses worker t % workers).
    pub fn send_parallel(&self, requests: &[Request], threads: usize) -> Vec<Outcome> {
        let threads = threads.max(1);
        let workers = self.workers();
        let mut out: Vec<Option<Outcome>> = vec![None; requests.len()];
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        requests
                            .iter()
                            .enumerate()
                            .skip(t)
                            .step_by(threads)
                            .map(|(i, r)| (i, self.send(&r.clone().worker(t % workers))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, o) in join(h) {
                    out[i] = Some(o);
                }
            }
        });
        out.into_iter().flatten().collect()
    }
}

fn fault_of(
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

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}
