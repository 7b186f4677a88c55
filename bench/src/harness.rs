//! `bench`: how fast is a chain in the harness (requests/s, latency, CPU per request)?

use std::time::{Duration, Instant};

use meshward_harness::Host;
use meshward_harness::Request;

/// How long and how hard to bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Requests sent in turn (cycled).
    pub requests: Vec<Request>,
    /// Stop after this many requests in total (across threads)…
    pub count: Option<u64>,
    /// …or after this long (whichever comes first; neither: 10,000 requests).
    pub duration: Option<Duration>,
    /// Threads sending concurrently; thread t uses worker t % workers (give the host as many
    /// workers as threads).
    pub threads: usize,
}

/// Bench results.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub requests: u64,
    pub elapsed: Duration,
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// Mean time per request spent in each filter's callbacks (chain order).
    pub per_filter_mean: Vec<(String, Duration)>,
    /// Mean `env.proxy_*` host calls per request made by each filter (chain order).
    pub per_filter_hostcalls: Vec<(String, f64)>,
    /// Mean wasm instructions per request executed by each filter (chain order); 0 unless
    /// instructions are metered (`meshward_harness::meter_guest_instructions`).
    pub per_filter_fuel: Vec<(String, f64)>,
    /// Requests whose status differed from the first request's status (a sanity check).
    pub status_changes: u64,
    /// CPU time the sending threads used (their own clocks, summed): on a shared machine,
    /// requests per CPU-second says what one core can do even when the wall clock is stolen.
    pub cpu: Duration,
}

impl BenchReport {
    /// Mean CPU time one request cost the sending thread.
    pub fn cpu_per_request(&self) -> Duration {
        Duration::from_nanos((self.cpu.as_nanos() / u128::from(self.requests.max(1))) as u64)
    }

    /// Requests per second of CPU time: the throughput of one fully available core.
    pub fn requests_per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// This thread's CPU time (user + system), from `CLOCK_THREAD_CPUTIME_ID`.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Latencies (ns), per-filter totals (ns), status changes, CPU time, per-filter host calls and
/// per-filter wasm instructions of one bench thread.
#[derive(Default)]
struct ThreadResult(Vec<u64>, Vec<u64>, u64, Duration, Vec<u64>, Vec<u64>);

/// Runs the requests through `host` as fast as possible.
pub fn bench(host: &Host, opts: &BenchOptions) -> BenchReport {
    let threads = opts.threads.max(1);
    let limit = match (opts.count, opts.duration) {
        (None, None) => Some(10_000),
        (c, _) => c,
    };
    let per_thread = limit.map(|c| c.div_ceil(threads as u64));
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let started = Instant::now();
    let names = host.filter_names().to_vec();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let names = &names;
                scope.spawn(move || {
                    let mut lat = Vec::new();
                    let mut filt = vec![0u64; names.len()];
                    let mut calls = vec![0u64; names.len()];
                    let mut fuel = vec![0u64; names.len()];
                    let mut first = None;
                    let mut changes = 0;
                    let mut i = 0usize;
                    let cpu_start = thread_cpu_time();
                    loop {
                        if per_thread.is_some_and(|n| lat.len() as u64 >= n)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                            || opts.requests.is_empty()
                        {
                            break;
                        }
                        let req = &opts.requests[i % opts.requests.len()];
                        i += 1;
                        let t0 = Instant::now();
                        let out = host.send_to(req, Some(t));
                        lat.push(t0.elapsed().as_nanos() as u64);
                        for (slot, (_, ns)) in filt.iter_mut().zip(out.filter_nanos.iter()) {
                            *slot += ns;
                        }
                        for (slot, (_, c)) in calls.iter_mut().zip(out.filter_hostcalls.iter()) {
                            *slot += c;
                        }
                        for (slot, (_, f)) in fuel.iter_mut().zip(out.filter_fuel.iter()) {
                            *slot += f;
                        }
                        match first {
                            None => first = Some(out.status()),
                            Some(s) if s != out.status() => changes += 1,
                            _ => {}
                        }
                    }
                    let cpu = thread_cpu_time().saturating_sub(cpu_start);
                    ThreadResult(lat, filt, changes, cpu, calls, fuel)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed();
    let mut lat: Vec<u64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    lat.sort_unstable();
    let n = lat.len() as u64;
    let pct = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        Duration::from_nanos(lat[idx])
    };
    let per_filter_mean = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let total: u64 = results
                .iter()
                .map(|r| r.1.get(i).copied().unwrap_or(0))
                .sum();
            (
                name.clone(),
                Duration::from_nanos(total.checked_div(n).unwrap_or(0)),
            )
        })
        .collect();
    let per_request = |column: fn(&ThreadResult) -> &Vec<u64>| -> Vec<(String, f64)> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let total: u64 = results
                    .iter()
                    .map(|r| column(r).get(i).copied().unwrap_or(0))
                    .sum();
                (name.clone(), total as f64 / n.max(1) as f64)
            })
            .collect()
    };
    let per_filter_hostcalls = per_request(|r| &r.4);
    let per_filter_fuel = per_request(|r| &r.5);
    BenchReport {
        requests: n,
        elapsed,
        requests_per_second: n as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        per_filter_mean,
        per_filter_hostcalls,
        per_filter_fuel,
        status_changes: results.iter().map(|r| r.2).sum(),
        cpu: results.iter().map(|r| r.3).sum(),
    }
}
