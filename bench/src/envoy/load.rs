//! The closed-loop load generator: `connections` keep-alive connections (one thread each, the
//! rig's [`Client`], plaintext or mTLS), each sending the next request of a shared cycle as soon
//! as the previous response is complete, for a fixed time. Every response's status is checked and
//! every request's latency recorded (nanoseconds, exact percentiles from the sorted samples).
//! The loop itself ([`closed_loop`]) is shared with `meshward bench tcp`, whose step is a whole
//! connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use meshward_rig::Client;

/// What to send, where, for how long.
pub struct Load {
    /// Where and how to connect (plaintext, or TLS with the bench's client certificate).
    pub client: Client,
    /// Serialized keep-alive requests, sent in turn (a shared cursor over all connections, so a
    /// pool of N distinct requests repeats each one only every N requests).
    pub requests: Arc<Vec<Vec<u8>>>,
    pub connections: usize,
    pub duration: Duration,
    /// The status every response must have.
    pub expect_status: u16,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub elapsed: Duration,
    /// Sorted latencies, nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q`-quantile latency (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies_ns.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies_ns.len() - 1;
        let index = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Duration::from_nanos(self.latencies_ns.get(index).copied().unwrap_or_default())
    }
}

/// Runs `load`: connects every connection (TLS handshakes included) first, then calls `at_start`
/// (e.g. to read Envoy's CPU counters), runs for `load.duration`, joins, and calls `at_end`
/// before the connections close. Any connection error or unexpected status fails the run.
pub fn run(
    load: &Load,
    at_start: &mut dyn FnMut() -> Result<()>,
    at_end: &mut dyn FnMut() -> Result<()>,
) -> Result<LoadResult> {
    if load.requests.is_empty() {
        bail!("no request to send");
    }
    let cursor = Arc::new(AtomicUsize::new(0));
    closed_loop(
        load.connections,
        load.duration,
        |_| {
            let mut conn = load.client.connect()?;
            let requests = Arc::clone(&load.requests);
            let cursor = Arc::clone(&cursor);
            let expect = load.expect_status;
            Ok(move || -> Result<()> {
                let index = cursor.fetch_add(1, Ordering::Relaxed) % requests.len();
                let request = requests.get(index).map(Vec::as_slice).unwrap_or_default();
                let status = conn.send_raw(request, false)?.status;
                if status != expect {
                    bail!("got status {status}, expected {expect}");
                }
                Ok(())
            })
        },
        at_start,
        at_end,
    )
}

/// The closed loop under [`run`] (and `meshward bench tcp`): `threads` threads, each first
/// prepared by `prepare(i)` (e.g. connected; every thread is ready before the clock starts), then
/// calling its step as soon as the previous one returns, for `duration`; every step's wall time
/// is a sample. `at_start` runs when all are prepared, just before they start; `at_end` when all
/// have stopped, before the steps (and what they own, such as connections) are dropped. A failed
/// preparation or step fails the run (after the other threads finish their turn).
pub(crate) fn closed_loop<P, S>(
    threads: usize,
    duration: Duration,
    prepare: P,
    at_start: &mut dyn FnMut() -> Result<()>,
    at_end: &mut dyn FnMut() -> Result<()>,
) -> Result<LoadResult>
where
    P: Fn(usize) -> Result<S> + Sync,
    S: FnMut() -> Result<()>,
{
    let threads = threads.max(1);
    // The workers and this thread meet at each step: all prepared (connected, handshakes done),
    // go, all done, counters read (then the workers drop their steps).
    let barrier = || Barrier::new(threads + 1);
    let (prepared, go, done, read) = (barrier(), barrier(), barrier(), barrier());
    let prepare = &prepare;
    let (prepared, go, done, read) = (&prepared, &go, &done, &read);
    std::thread::scope(|scope| -> Result<LoadResult> {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let handle = std::thread::Builder::new()
                .name(format!("bench-load-{i}"))
                .spawn_scoped(scope, move || -> Result<Vec<u64>> {
                    let step = prepare(i);
                    prepared.wait();
                    go.wait();
                    let (result, step) = match step {
                        Ok(mut step) => (drive(&mut step, duration), Some(step)),
                        Err(e) => (Err(e), None),
                    };
                    done.wait();
                    read.wait();
                    drop(step);
                    result
                })
                // As `scope.spawn` would: the threads already started wait for this one at the
                // barriers, so there is no returning an error from here.
                .unwrap_or_else(|e| panic!("starting a load thread: {e}"));
            handles.push(handle);
        }
        prepared.wait();
        let start_result = at_start();
        let started = Instant::now();
        go.wait();
        done.wait();
        let elapsed = started.elapsed();
        let end_result = if start_result.is_ok() {
            at_end()
        } else {
            Ok(())
        };
        read.wait();
        let mut latencies = Vec::new();
        let mut first_error = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(samples)) => latencies.extend(samples),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow!("a load thread panicked"));
                }
            }
        }
        start_result?;
        end_result?;
        if let Some(e) = first_error {
            return Err(e);
        }
        latencies.sort_unstable();
        Ok(LoadResult {
            requests: latencies.len() as u64,
            elapsed,
            latencies_ns: latencies,
        })
    })
}

fn drive(step: &mut impl FnMut() -> Result<()>, duration: Duration) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(1 << 16);
    let deadline = Instant::now() + duration;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(samples);
        }
        let result = step();
        samples.push(u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX));
        result?;
    }
}
