//! [`Host`]: a filter chain on the main thread's VM set and N workers' VM sets, fed requests, with
//! the clock, shared state, metrics, logs and faults a test reads and steers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod builder;
mod concurrency;
mod connection;
mod filter_spec;

pub use builder::HostBuilder;
pub use connection::TcpConnection;
pub use filter_spec::FilterSpec;

use builder::fault_of;

use crate::envoy_model::grpc::{BOUNDED_WAIT, QUIET_WAIT};
use crate::envoy_model::{
    check_codec, check_transport, finalize_response_headers, remote_address, request_body,
    request_headers, CalloutRequest, Cluster, Connection, HeaderMap,
};
use crate::outcome::{LogLine, Outcome, Phase, Response, Verdict};
use crate::request::Request;
use crate::runtime::{lock, Event, HostcallRecord, MetricValue, Thread};
use crate::stream::Stream;
use crate::vm::{HostShared, VmSet};
use crate::Status;

/// A request begun with [`Host::start`] that may still be paused.
#[derive(Debug)]
pub struct Started {
    key: u64,
    worker: usize,
    /// The listener refused the connection: this is the whole outcome, no stream was started.
    refused: Option<Box<Outcome>>,
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
    main: Mutex<VmSet>,
    workers: Vec<Mutex<VmSet>>,
    names: Vec<String>,
    rr: AtomicUsize,
    next_stream: AtomicU64,
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The VM set of `thread`.
    fn vm_set(&self, thread: Thread) -> Option<&Mutex<VmSet>> {
        match thread {
            Thread::Main => Some(&self.main),
            Thread::Worker(n) => self.workers.get(n),
            Thread::Canary => None,
        }
    }

    /// Worker `n`'s VM set, locked (`n` < the number of workers: callers take it modulo).
    fn worker(&self, n: usize) -> std::sync::MutexGuard<'_, VmSet> {
        lock(&self.workers[n])
    }

    /// The worker a request goes to: the one it names, else the next in round-robin order.
    fn pick_worker(&self, requested: Option<usize>) -> usize {
        match requested {
            Some(w) => w % self.workers(),
            None => self.rr.fetch_add(1, Ordering::Relaxed) % self.workers(),
        }
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
        let worker = self.pick_worker(worker);
        // The listener's TLS mode decides before any byte reaches the codec.
        if let Some(refused) = self.refuse_connection(req, worker) {
            return refused;
        }
        if let Err(reject) = check_codec(&self.shared.listener, req) {
            let mut headers = HeaderMap::from_pairs([
                ("content-length", reject.body.len().to_string()),
                ("content-type", "text/plain".to_string()),
            ]);
            finalize_response_headers(&mut headers, reject.body.len());
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
                filter_hostcalls: self.names.iter().map(|n| (n.clone(), 0)).collect(),
                filter_fuel: self.names.iter().map(|n| (n.clone(), 0)).collect(),
                worker,
            };
        }
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let stream = self.new_stream(req);
        {
            let mut w = self.worker(worker);
            w.insert_stream(key, stream);
            w.drive(key);
        }
        loop {
            self.run_due();
            self.run_grpc(Duration::ZERO);
            {
                let mut w = self.worker(worker);
                if w.stream(key).map(|s| s.is_done()).unwrap_or(true) {
                    return self.outcome(&mut w, key, worker, None);
                }
            }
            let next = self
                .shared
                .timers
                .next_due(|e| matches!(e, Event::Callout { .. } | Event::QueueReady { .. }));
            if self.settle_grpc(next.is_some()) {
                continue;
            }
            match next {
                Some(due) => self.shared.clock.sleep_until(due),
                None => {
                    let mut w = self.worker(worker);
                    let phase = w.abandon(key);
                    return self.outcome(&mut w, key, worker, phase);
                }
            }
        }
    }

    /// Starts `req` and runs it until it pauses or finishes, without moving the clock: several
    /// requests can then wait on the same callout or tick. Finish it with [`Host::finish`] after
    /// [`Host::advance`] fired what it waits on. (A request the codec refuses is never started:
    /// use `send`. One the listener refuses finishes at once as [`Verdict::Refused`].)
    pub fn start(&self, req: &Request) -> Started {
        let worker = self.pick_worker(req.worker);
        let key = self.next_stream.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = self.refuse_connection(req, worker) {
            return Started {
                key,
                worker,
                refused: Some(Box::new(refused)),
            };
        }
        let stream = self.new_stream(req);
        let mut w = self.worker(worker);
        w.insert_stream(key, stream);
        w.drive(key);
        Started {
            key,
            worker,
            refused: None,
        }
    }

    /// The outcome of a started request if it has finished, else the request back.
    pub fn finish(&self, started: Started) -> Result<Outcome, Started> {
        if let Some(refused) = started.refused {
            return Ok(*refused);
        }
        let mut w = self.worker(started.worker);
        if w.stream(started.key).map(|s| s.is_done()).unwrap_or(true) {
            Ok(self.outcome(&mut w, started.key, started.worker, None))
        } else {
            Err(started)
        }
    }

    /// The outcome of a connection the listener refuses (its TLS mode), or `None` when it takes
    /// it: no response, no stream, no filter callback, no metric.
    fn refuse_connection(&self, req: &Request, worker: usize) -> Option<Outcome> {
        let reason = check_transport(self.shared.listener.transport, req.tls.as_ref()).err()?;
        Some(Outcome {
            verdict: Verdict::Refused { reason },
            upstream_request: None,
            response: Response::default(),
            logs: Vec::new(),
            filter_nanos: self.names.iter().map(|n| (n.clone(), 0)).collect(),
            filter_hostcalls: self.names.iter().map(|n| (n.clone(), 0)).collect(),
            filter_fuel: self.names.iter().map(|n| (n.clone(), 0)).collect(),
            worker,
        })
    }

    fn new_stream(&self, req: &Request) -> Stream {
        let id = self.shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let listener = &self.shared.listener;
        let source = req.source.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + (id % 20000) as u16)
        });
        let source = remote_address(listener, source, req);
        let conn = Connection {
            id,
            source,
            destination: SocketAddr::new(listener.address, listener.port),
            tls: req.tls.clone(),
        };
        let headers = request_headers(req, req.tls.is_some());
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
            request_body(req),
            trailers,
            self.shared.clock.realtime_ns(),
        )
    }

    fn outcome(&self, w: &mut VmSet, key: u64, worker: usize, stalled: Option<Phase>) -> Outcome {
        let Some(s) = w.take_stream(key) else {
            return Outcome {
                verdict: Verdict::Stalled {
                    filter: String::new(),
                    phase: Phase::Done,
                },
                upstream_request: None,
                response: Response::default(),
                logs: Vec::new(),
                filter_nanos: Vec::new(),
                filter_hostcalls: Vec::new(),
                filter_fuel: Vec::new(),
                worker,
            };
        };
        // The stream is ours now: move its parts into the outcome rather than copy them.
        let result = s.into_result(stalled.is_some());
        let verdict = match stalled {
            Some(phase) => {
                let filter = result.pos.min(self.names.len().saturating_sub(1));
                Verdict::Stalled {
                    filter: self.names.get(filter).cloned().unwrap_or_default(),
                    phase,
                }
            }
            None => result.verdict.unwrap_or(Verdict::Stalled {
                filter: String::new(),
                phase: Phase::Done,
            }),
        };
        let filter_nanos = self
            .names
            .iter()
            .cloned()
            .zip(result.filter_nanos)
            .collect();
        let filter_hostcalls = self
            .names
            .iter()
            .cloned()
            .zip(result.filter_hostcalls)
            .collect();
        let filter_fuel = self.names.iter().cloned().zip(result.filter_fuel).collect();
        Outcome {
            verdict,
            upstream_request: result.upstream_request,
            response: result.response,
            logs: result.logs,
            filter_nanos,
            filter_hostcalls,
            filter_fuel,
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
                thread,
                filter,
                generation,
            } => {
                let Some(m) = self.vm_set(thread) else {
                    return;
                };
                let mut w = lock(m);
                let (current, period, failed) = {
                    let vm = &w.store.data().vms[filter];
                    (vm.tick_generation, vm.tick_period_ms, vm.failed())
                };
                if current != generation || period == 0 || failed {
                    return;
                }
                // Reschedule first: a tick handler may change the period (new generation).
                let next = due + u64::from(period) * 1_000_000;
                self.shared.timers.schedule(
                    next,
                    Event::Tick {
                        thread,
                        filter,
                        generation,
                    },
                );
                w.on_tick(filter);
            }
            Event::Callout {
                thread,
                filter,
                token,
            } => {
                if let Some(m) = self.vm_set(thread) {
                    lock(m).on_callout(filter, token);
                }
            }
            Event::QueueReady {
                thread,
                filter,
                context_id,
                token,
            } => {
                if let Some(m) = self.vm_set(thread) {
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
        loop {
            // gRPC answers come before time moves: an exchange takes no virtual time.
            while self.settle_grpc(true) {}
            let Some((due, event)) = self.shared.timers.pop_due(target) else {
                break;
            };
            self.shared.clock.sleep_until(due);
            self.dispatch(due, event);
        }
        self.shared.clock.sleep_until(target);
        self.run_due();
        while self.settle_grpc(true) {}
    }

    /// Delivers the gRPC answers that have arrived, waiting at most `wait` for the first; whether
    /// any was delivered.
    fn run_grpc(&self, wait: Duration) -> bool {
        let mut delivered = false;
        let mut wait = wait;
        while let Some(event) = self.shared.grpc.next_event(wait) {
            wait = Duration::ZERO;
            delivered = true;
            if let Some(m) = self.vm_set(event.target.thread) {
                lock(m).on_grpc(event);
            }
        }
        delivered
    }

    /// Waits for the gRPC answers still to come before the host moves on: an exchange bound to
    /// end (a call, a half-closed stream) for up to `grpc::BOUNDED_WAIT`; an open stream as long
    /// when nothing else could happen (`other_work`), else for a short quiet spell if the module
    /// sent on a stream since the last wait (an idle open stream costs nothing per timer). Whether
    /// an answer was delivered.
    fn settle_grpc(&self, other_work: bool) -> bool {
        let (ending, open) = self.shared.grpc.pending();
        let active = self.shared.grpc.take_activity();
        let wait = if ending > 0 || (open > 0 && !other_work) {
            BOUNDED_WAIT
        } else if open > 0 && active {
            QUIET_WAIT
        } else {
            return self.run_grpc(Duration::ZERO);
        };
        self.run_grpc(wait)
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
        let thread = worker.map_or(Thread::Main, Thread::Worker);
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return false;
        };
        self.vm_set(thread)
            .map(|m| lock(m).store.data().vms[i].failed())
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{DownstreamTransport, ListenerSettings, Tls};

    /// The probe test module (built by scripts/build-wasm.sh) behind a listener in `transport`.
    fn probe_host(transport: DownstreamTransport) -> Host {
        let dir = meshward_rig::default_wasm_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
        let module = dir.join("meshward_test_probe.wasm");
        let spec = FilterSpec::from_file(&module)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-wasm.sh)", module.display()))
            .name("probe");
        Host::builder()
            .listener(ListenerSettings {
                transport,
                ..ListenerSettings::default()
            })
            .filter(spec)
            .build()
            .unwrap()
    }

    /// Counts a shared-data key in the probe: the value tells how many requests the filter saw.
    fn counting() -> Request {
        Request::get("/").header("x-probe-count", "seen")
    }

    fn assert_refused(out: &Outcome, why: &str) {
        match &out.verdict {
            Verdict::Refused { reason } => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected a refused connection, got {other:?}"),
        }
        assert_eq!(out.response, Response::default());
        assert_eq!(out.status(), 0);
        assert!(out.upstream_request.is_none());
        assert!(out.logs.is_empty(), "{:?}", out.logs);
    }

    #[test]
    fn a_refused_connection_reaches_neither_the_codec_nor_a_filter() {
        let host = probe_host(DownstreamTransport::MutualTls);
        let metrics = host.metrics();
        host.trace(true);
        // `#` would be the codec's 400: the listener decides first.
        let out = host.send(&counting().tls(Tls::server_only()));
        assert_refused(&out, "without a client certificate");
        let out = host.send(&Request::get("/a#b"));
        assert_refused(&out, "plaintext");
        let started = host.start(&counting());
        assert_refused(&host.finish(started).unwrap(), "plaintext");
        assert!(
            host.hostcall_trace().is_empty(),
            "{:?}",
            host.hostcall_trace()
        );
        assert_eq!(host.metrics(), metrics);
        // The mTLS caller gets through, and the probe's counter shows it is the first it saw.
        let ok = host.send(&counting().tls(Tls::peer("spiffe://cluster.local/ns/a/sa/b")));
        assert_eq!(ok.status(), 200);
        let seen = ok.upstream_request.unwrap();
        assert_eq!(seen.header("x-probe-count-value"), Some("1"));
        assert!(!host.hostcall_trace().is_empty());
    }

    #[test]
    fn each_mode_refuses_exactly_its_callers() {
        let mtls = Tls::peer("spiffe://cluster.local/ns/a/sa/b");
        let cases = [
            (DownstreamTransport::Any, [true, true, true]),
            (DownstreamTransport::MutualTls, [false, false, true]),
            (DownstreamTransport::Permissive, [true, false, true]),
            (DownstreamTransport::Plaintext, [true, false, false]),
        ];
        for (mode, expected) in cases {
            let host = probe_host(mode);
            let callers = [
                counting(),
                counting().tls(Tls::server_only()),
                counting().tls(mtls.clone()),
            ];
            let got = callers.map(|req| {
                let out = host.send(&req);
                match out.verdict {
                    Verdict::Refused { .. } => false,
                    _ => out.status() == 200,
                }
            });
            assert_eq!(got, expected, "{mode:?}: plaintext, TLS, mTLS");
        }
    }
}
