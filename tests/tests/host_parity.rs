//! Host behaviour the filters rely on, checked in the harness AND in real Envoy 1.40 with the same
//! probe module (tests/modules/probe): shared-data CAS across two workers, ticks on every root
//! context, and the callback of a callout to a dead cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshward_harness::{Cluster, FilterSpec, Host, Request};
use meshward_rig::default_wasm_dir;
use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};

fn probe() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let p = default_wasm_dir(&root).join("meshward_test_probe.wasm");
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        p.display()
    );
    p
}

fn dead_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

const THREADS: usize = 4;
const PER_THREAD: usize = 50;

/// Every request increments one shared counter with a CAS loop; with two workers the values
/// written must be exactly 2..=N+1 (no lost update, no duplicate): one request creates the key
/// first because, as in Envoy, writing a key that does not exist ignores `cas`, so two workers
/// racing to create it can both write 1 (the harness reproduces that; this test once caught it).
fn assert_exact(values: Vec<u64>) {
    let n = (THREADS * PER_THREAD) as u64;
    let set: BTreeSet<u64> = values.iter().copied().collect();
    assert_eq!(values.len() as u64, n);
    assert_eq!(
        set,
        (2..=n + 1).collect::<BTreeSet<u64>>(),
        "lost or duplicated CAS updates"
    );
}

#[test]
fn cas_counter_is_exact_across_two_workers_in_the_harness() {
    let host = Host::builder()
        .workers(2)
        .filter(FilterSpec::from_file(probe()).unwrap().name("probe"))
        .build()
        .unwrap();
    let first = host.send(&Request::get("/").header("x-probe-count", "k"));
    let created = first
        .upstream_request
        .as_ref()
        .and_then(|h| h.header("x-probe-count-value"));
    assert_eq!(created, Some("1"));
    let reqs: Vec<Request> = (0..THREADS * PER_THREAD)
        .map(|_| Request::get("/").header("x-probe-count", "k"))
        .collect();
    let values = host
        .send_parallel(&reqs, THREADS)
        .iter()
        .map(|o| {
            let head = o.upstream_request.as_ref().expect("reached upstream");
            head.header("x-probe-count-value")
                .expect("value header")
                .parse::<u64>()
                .unwrap()
        })
        .collect();
    assert_exact(values);
}

#[test]
fn cas_counter_is_exact_across_two_workers_in_envoy() {
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .filter(WasmFilter::new("probe", probe(), ""))
        .concurrency(2);
    let envoy = Envoy::start(&config).unwrap();
    let client = envoy.client();
    let first = client
        .send(&envoy::Request::get("/").header("x-probe-count", "k"))
        .unwrap();
    assert_eq!(
        first.echo().unwrap().header("x-probe-count-value"),
        Some("1")
    );
    let values: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let client = client.clone();
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| {
                            let r = client
                                .send(&envoy::Request::get("/").header("x-probe-count", "k"))
                                .unwrap();
                            let head = r.echo().unwrap();
                            head.header("x-probe-count-value")
                                .unwrap()
                                .parse::<u64>()
                                .unwrap()
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_exact(values);
}

#[test]
fn ticks_fire_on_the_main_and_every_worker_root_context_in_the_harness() {
    let host = Host::builder()
        .workers(2)
        .filter(
            FilterSpec::from_file(probe())
                .unwrap()
                .name("probe")
                .config(b"tick_ms=100".to_vec()),
        )
        .build()
        .unwrap();
    host.advance(Duration::from_millis(1000));
    // main + 2 workers, 10 periods each.
    assert_eq!(host.metric("probe.ticks"), Some(30));
}

#[test]
fn ticks_fire_on_the_main_and_every_worker_root_context_in_envoy() {
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .filter(WasmFilter::new("probe", probe(), "tick_ms=100"))
        .concurrency(2);
    let envoy = Envoy::start(&config).unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let ticks = envoy
        .wasm_metrics()
        .unwrap()
        .get("probe.ticks")
        .copied()
        .unwrap_or(0);
    // One root context could tick at most ~20 times in 2 s; three (main + 2 workers) ~60.
    assert!(
        (35..=66).contains(&ticks),
        "probe.ticks = {ticks}: expected ticks on 3 root contexts"
    );
}

#[test]
fn a_callout_to_a_dead_cluster_calls_back_with_503_in_both() {
    // Harness.
    let host = Host::builder()
        .filter(FilterSpec::from_file(probe()).unwrap().name("probe"))
        .cluster("dead", Cluster::dead())
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").header("x-probe-callout", "dead"));
    let harness = out
        .upstream_request
        .as_ref()
        .and_then(|h| h.header("x-probe-callout-status"))
        .map(str::to_string);
    // Envoy.
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .filter(WasmFilter::new("probe", probe(), ""))
        .cluster("dead", dead_address());
    let envoy = Envoy::start(&config).unwrap();
    let r = envoy
        .client()
        .send(&envoy::Request::get("/").header("x-probe-callout", "dead"))
        .unwrap();
    let in_envoy = r
        .echo()
        .unwrap()
        .header("x-probe-callout-status")
        .map(str::to_string);
    assert_eq!(in_envoy.as_deref(), Some("503"), "Envoy");
    assert_eq!(harness, in_envoy, "harness vs Envoy");
}

/// A loopback server that accepts connections and never answers: it holds them (a hung JWKS
/// server, say) or closes each at once. It stops, and closes what it held, when dropped.
struct Silent {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start(close_at_once: bool) -> Silent {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) if close_at_once => drop(s),
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Silent {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_callout_that_times_out_calls_back_with_504_in_both() {
    // Harness: a cluster that never answers; the probe's callout has a 1 s timeout.
    let host = Host::builder()
        .filter(FilterSpec::from_file(probe()).unwrap().name("probe"))
        .cluster("hung", Cluster::hang())
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").header("x-probe-callout", "hung"));
    let harness = out
        .upstream_request
        .as_ref()
        .and_then(|h| h.header("x-probe-callout-status"))
        .map(str::to_string);
    // Envoy: the cluster accepts the connection and never responds.
    let silent = Silent::start(false);
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .filter(WasmFilter::new("probe", probe(), ""))
        .cluster("hung", silent.addr);
    let envoy = Envoy::start(&config).unwrap();
    let started = std::time::Instant::now();
    let r = envoy
        .client()
        .send(&envoy::Request::get("/").header("x-probe-callout", "hung"))
        .unwrap();
    let waited = started.elapsed();
    let in_envoy = r
        .echo()
        .unwrap()
        .header("x-probe-callout-status")
        .map(str::to_string);
    assert!(
        waited >= Duration::from_millis(900),
        "Envoy answered after {waited:?}: the callout did not wait for its 1 s timeout"
    );
    assert_eq!(in_envoy.as_deref(), Some("504"), "Envoy");
    assert_eq!(harness, in_envoy, "harness vs Envoy");
}

#[test]
fn a_callout_whose_upstream_closes_the_connection_calls_back_with_503_in_both() {
    // Envoy: the cluster accepts, reads nothing, and closes at once (every connection: Envoy
    // may open more than one).
    let closer = Silent::start(true);
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .filter(WasmFilter::new("probe", probe(), ""))
        .cluster("closer", closer.addr);
    let envoy = Envoy::start(&config).unwrap();
    let r = envoy
        .client()
        .send(&envoy::Request::get("/").header("x-probe-callout", "closer"))
        .unwrap();
    let head = r.echo().unwrap();
    let in_envoy = (
        head.header("x-probe-callout-status").map(str::to_string),
        head.header("x-probe-callout-body").map(str::to_string),
    );
    drop(envoy);
    drop(closer);
    // Harness.
    let host = Host::builder()
        .filter(FilterSpec::from_file(probe()).unwrap().name("probe"))
        .cluster("closer", Cluster::closes())
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").header("x-probe-callout", "closer"));
    let head = out.upstream_request.as_ref().unwrap();
    let harness = (
        head.header("x-probe-callout-status").map(str::to_string),
        head.header("x-probe-callout-body").map(str::to_string),
    );
    assert_eq!(in_envoy.0.as_deref(), Some("503"), "Envoy: {in_envoy:?}");
    assert_eq!(harness, in_envoy, "harness vs Envoy");
}
