//! `meshward bench envoy`: meshward's filters in a real Envoy 1.40 against Envoy's native
//! filters, measured side by side in one run.
//!
//! One Envoy (`--concurrency N`) gets one mTLS listener per filter chain (router only, a no-op
//! wasm filter, each meshward filter with a realistic policy and its native counterpart, both full
//! chains), all routing to the rig's upstream answering a fixed `200 ok` on loopback. A closed-loop [`load`] generator (Rust,
//! rustls client certificate with a SPIFFE ID, keep-alive connections) drives the configurations
//! in interleaved rounds (A B C … A B C …) after a warm-up, so that machine drift hits all alike.
//! Each round records requests/s, p50/p99 latency and Envoy's CPU time per request (utime + stime
//! of the Envoy process from `/proc/<pid>/stat` over the round, divided by the requests); the
//! report gives the median over rounds. Before anything is measured every listener must show that
//! it applies its filters (a violating request gets the expected status, the measured one 200).

pub mod abi;
mod hostcalls;
pub(crate) mod load;
pub(crate) mod markdown;
mod memory;
mod native;
mod setups;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub use load::{Load, LoadResult};
pub use markdown::{render, update_file, BEGIN_MARKER, END_MARKER};
pub use memory::{Memory, CONCURRENCY as MEMORY_CONCURRENCY};
pub use setups::{CLIENT_SPIFFE_ID, PATH};
pub use tokens::Alg;

use meshward_rig::{
    envoy_binary, repo_root, Certs, Client, EchoUpstream, Envoy, EnvoyConfig, Response,
};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Envoy worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Keep-alive connections of the load generator (one thread each).
    pub connections: usize,
    /// Interleaved rounds over every configuration.
    pub rounds: usize,
    /// Length of one configuration's turn in a round.
    pub round: Duration,
    /// Warm-up per configuration before the rounds.
    pub warmup: Duration,
    /// Distinct tokens per algorithm in the cold JWT configurations (above 256, the size of both
    /// verified-token caches, so that every request pays a signature check).
    pub jwt_pool: usize,
    /// The filters' release `.wasm` files and `meshward_test_noop.wasm`.
    pub wasm_dir: PathBuf,
    /// The repository (policies/, tests/fixtures/jwt/keys/).
    pub repo: PathBuf,
    /// The command line to print in the report.
    pub command: String,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let repo = repo_root();
        Self {
            concurrency: 1,
            connections: 8,
            rounds: 5,
            round: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            jwt_pool: 1024,
            wasm_dir: meshward_rig::default_wasm_dir(&repo),
            repo,
            command: "meshward bench envoy".into(),
        }
    }
}

/// One round's (or the median's) figures for a configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Envoy's CPU time (all threads, user + system) per request; zero when not measured.
    pub cpu_per_request: Duration,
}

/// A measured configuration.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub listener: String,
    /// `floor`, `meshward` or `native`.
    pub side: String,
    pub rounds: Vec<Figures>,
    /// Each figure's median over the rounds (requests: the total).
    pub median: Figures,
    /// Host calls per request of each wasm filter (counted in the harness; empty for native).
    pub hostcalls: Vec<(String, u64)>,
    /// Wasm instructions per request of each wasm filter (metered in the harness; empty for
    /// native, and when the process compiled a module before metering could be turned on).
    pub fuel: Vec<(String, u64)>,
}

/// A sanity check that passed before the measurement.
#[derive(Debug, Clone)]
pub struct SanityCheck {
    pub configuration: String,
    pub listener: String,
    pub what: String,
    pub status: u16,
}

/// Where and when a benchmark ran, and on which Envoy: the head of every generated section.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    /// `/proc/loadavg` before the run (other work on the machine).
    pub load_before: String,
    pub envoy_version: String,
}

impl RunInfo {
    /// Gathered before a run starts (the load average is the machine's before the benchmark).
    pub(crate) fn gather() -> Result<Self> {
        Ok(Self {
            load_before: load_average(),
            envoy_version: envoy_version()?,
            date: today(),
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(),
        })
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub options: BenchOptions,
    pub rows: Vec<Row>,
    pub checks: Vec<SanityCheck>,
    /// The upstream alone (plaintext, same connections and request, no Envoy).
    pub upstream_direct: Figures,
    /// Where and when it ran, and on which Envoy.
    pub run: RunInfo,
    /// Envoy's VmRSS after the warm-up, KiB.
    pub envoy_rss_kib: u64,
    /// Envoy's VmRSS per chain, one Envoy each, at `--concurrency 2` ([`memory`]).
    pub memory: Vec<Memory>,
    /// The wasm modules measured and their sizes in bytes.
    pub modules: Vec<(String, u64)>,
}

impl BenchReport {
    /// The row of the configuration named `name` (e.g. `router only`, `no-op wasm`).
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// Runs the whole benchmark: sanity checks, upstream check, warm-up, rounds.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if options.jwt_pool <= 256 {
        bail!("--jwt-pool must exceed 256 (the verified-token caches hold 256 tokens)");
    }
    let run = RunInfo::gather()?;
    let rig = Rig::new(options)?;
    let plan = setups::plan(&rig.inputs, options.jwt_pool)?;
    let mut modules: Vec<(String, u64)> = Vec::new();
    for w in plan.listeners.iter().flat_map(|l| &l.wasm) {
        let file = w
            .module
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !modules.iter().any(|(f, _)| *f == file) {
            let size = std::fs::metadata(&w.module)
                .with_context(|| format!("{}", w.module.display()))?
                .len();
            modules.push((file, size));
        }
    }
    let measured = measure(&plan, options, &rig)?;

    // 5. Memory: one Envoy per chain, at `--concurrency 2`.
    let memory = memory::measure(
        &plan,
        &[
            ("router only", "router"),
            ("meshward chain (four modules)", "meshward-chain"),
            ("meshward bundle (meshward.wasm)", "meshward-bundle"),
            ("native chain", "native-chain"),
        ],
        rig.upstream.addr(),
        &rig.certs,
        &rig.client_cert,
        options,
    )?;
    Ok(BenchReport {
        options: options.clone(),
        rows: measured.rows,
        checks: measured.checks,
        upstream_direct: measured.upstream_direct,
        run,
        envoy_rss_kib: measured.envoy_rss_kib,
        memory,
        modules,
    })
}

/// What every run of the benchmark stands on: certificates (the client's with the benchmark's
/// SPIFFE ID), the fixed-response upstream, and a scratch directory for modules derived at run
/// time (trimmed copies), removed when the rig is dropped.
pub(crate) struct Rig {
    pub certs: Certs,
    pub client_cert: meshward_rig::ClientCert,
    pub upstream: EchoUpstream,
    pub inputs: setups::Inputs,
    _scratch: tempfile::TempDir,
}

impl Rig {
    pub(crate) fn new(options: &BenchOptions) -> Result<Self> {
        let certs = Certs::generate()?;
        let client_cert = certs.client_cert(&[CLIENT_SPIFFE_ID], "frontend")?;
        let upstream = EchoUpstream::fixed(Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"ok".to_vec(),
        })?;
        let scratch = tempfile::Builder::new()
            .prefix("meshward-bench-")
            .tempdir()
            .context("creating a directory for the trimmed modules")?;
        let inputs = setups::Inputs {
            wasm_dir: options.wasm_dir.clone(),
            repo: options.repo.clone(),
            scratch: scratch.path().to_path_buf(),
        };
        Ok(Self {
            certs,
            client_cert,
            upstream,
            inputs,
            _scratch: scratch,
        })
    }
}

/// What [`measure`] found.
pub(crate) struct Measured {
    pub rows: Vec<Row>,
    pub checks: Vec<SanityCheck>,
    pub upstream_direct: Figures,
    pub envoy_rss_kib: u64,
}

/// Counts each configuration's host calls in the harness, starts one Envoy with every listener
/// of `plan`, runs the sanity checks, warms every configuration up, measures the upstream alone,
/// then the interleaved rounds.
pub(crate) fn measure(plan: &setups::Plan, options: &BenchOptions, rig: &Rig) -> Result<Measured> {
    let (upstream, certs, client_cert) = (&rig.upstream, &rig.certs, &rig.client_cert);
    // Metering changes no outcome; it only has to come before the harness compiles a module.
    let metered = meshward_harness::meter_guest_instructions();
    let mut hostcalls = Vec::new();
    for setup in &plan.setups {
        let chain = plan
            .listeners
            .iter()
            .find(|l| l.name == setup.listener)
            .map(|l| l.wasm.as_slice())
            .unwrap_or_default();
        hostcalls.push(
            hostcalls::count(chain, &setup.sample, metered)
                .with_context(|| format!("host calls of {}", setup.name))?,
        );
    }

    let mut config = EnvoyConfig::new(upstream.addr())
        .concurrency(options.concurrency)
        // Filters log per request at debug at most: keep Envoy from formatting those lines.
        .component_log_levels("wasm:warn");
    for listener in &plan.listeners {
        config = config.raw_listener(setups::listener_json(listener, certs));
    }
    let envoy = Envoy::start(&config)?;
    let addresses = listener_addresses(&envoy, plan.listeners.len())?;
    let addr_of = |listener: &str| {
        addresses
            .iter()
            .find(|(name, _)| name == &format!("bench-{listener}"))
            .map(|(_, addr)| *addr)
            .ok_or_else(|| anyhow!("listener bench-{listener} not found in Envoy"))
    };

    // 1. Every configuration applies its filters.
    let mut checks = Vec::new();
    for setup in &plan.setups {
        let addr = addr_of(setup.listener)?;
        let client = Client::tls(addr, certs, Some(client_cert))?;
        for check in &setup.checks {
            let response = client
                .send(&check.request)
                .with_context(|| format!("sanity check {:?} on {}", check.what, setup.listener))?;
            let header_ok = check.header.is_none_or(|h| response.header(h).is_some());
            if response.status != check.status || !header_ok {
                bail!(
                    "sanity check failed on listener {} ({}): {}: expected status {}{}, got {:?}",
                    setup.listener,
                    setup.name,
                    check.what,
                    check.status,
                    check
                        .header
                        .map(|h| format!(" with header {h}"))
                        .unwrap_or_default(),
                    response
                );
            }
            checks.push(SanityCheck {
                configuration: setup.name.clone(),
                listener: setup.listener.to_string(),
                what: check.what.clone(),
                status: response.status,
            });
        }
    }

    let pid = envoy.pid();
    let load_for = |setup: &setups::Setup, duration: Duration| -> Result<Load> {
        Ok(Load {
            client: Client::tls(addr_of(setup.listener)?, certs, Some(client_cert))?,
            requests: Arc::new(setup.requests.clone()),
            connections: options.connections,
            duration,
            expect_status: 200,
        })
    };

    // 2. Warm-up (every configuration, every token pool once through at least).
    for setup in &plan.setups {
        load::run(
            &load_for(setup, options.warmup)?,
            &mut nothing,
            &mut nothing,
        )
        .with_context(|| format!("warm-up of {}", setup.name))?;
    }
    let envoy_rss_kib = rss_kib(pid)?;

    // 3. The upstream alone, to show it is not the bottleneck.
    let first = plan
        .setups
        .first()
        .ok_or_else(|| anyhow!("no configuration"))?;
    let direct = load::run(
        &Load {
            client: Client::plaintext(upstream.addr()),
            requests: Arc::new(first.requests.clone()),
            connections: options.connections,
            duration: options.round,
            expect_status: 200,
        },
        &mut nothing,
        &mut nothing,
    )
    .context("measuring the upstream alone")?;
    let upstream_direct = figures(&direct, Duration::ZERO);

    // 4. Interleaved rounds.
    let ticks = clock_ticks_per_second();
    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); plan.setups.len()];
    for _ in 0..options.rounds {
        for (i, setup) in plan.setups.iter().enumerate() {
            let mut cpu_start = 0u64;
            let mut cpu_end = 0u64;
            let result = load::run(
                &load_for(setup, options.round)?,
                &mut || -> Result<()> {
                    cpu_start = cpu_ticks(pid)?;
                    Ok(())
                },
                &mut || -> Result<()> {
                    cpu_end = cpu_ticks(pid)?;
                    Ok(())
                },
            )
            .with_context(|| format!("measuring {}", setup.name))?;
            let per_request = cpu_per(cpu_start, cpu_end, ticks, result.requests);
            if let Some(r) = rounds.get_mut(i) {
                r.push(figures(&result, per_request));
            }
        }
    }
    let rows = plan
        .setups
        .iter()
        .zip(rounds)
        .zip(hostcalls)
        .map(|((setup, rounds), counted)| Row {
            name: setup.name.clone(),
            listener: setup.listener.to_string(),
            side: setup.side.to_string(),
            median: median(&rounds),
            rounds,
            hostcalls: counted.hostcalls,
            fuel: counted.fuel,
        })
        .collect();
    drop(envoy);
    Ok(Measured {
        rows,
        checks,
        upstream_direct,
        envoy_rss_kib,
    })
}

pub(crate) fn nothing() -> Result<()> {
    Ok(())
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), space-separated.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn figures(result: &LoadResult, cpu_per_request: Duration) -> Figures {
    Figures {
        requests: result.requests,
        requests_per_second: result.requests_per_second(),
        p50: result.quantile(0.50),
        p99: result.quantile(0.99),
        cpu_per_request,
    }
}

pub(crate) fn median(rounds: &[Figures]) -> Figures {
    fn mid<T: PartialOrd + Copy + Default>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    Figures {
        requests: rounds.iter().map(|f| f.requests).sum(),
        requests_per_second: mid(rounds.iter().map(|f| f.requests_per_second).collect()),
        p50: mid(rounds.iter().map(|f| f.p50).collect()),
        p99: mid(rounds.iter().map(|f| f.p99).collect()),
        cpu_per_request: mid(rounds.iter().map(|f| f.cpu_per_request).collect()),
    }
}

/// `bench-*` listener names and their bound addresses, from the admin endpoint.
pub(crate) fn listener_addresses(
    envoy: &Envoy,
    expected: usize,
) -> Result<Vec<(String, std::net::SocketAddr)>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = envoy.admin_get("/listeners?format=json")?;
        let mut found = Vec::new();
        if status == 200 {
            let json: Value = serde_json::from_str(&body).context("parsing /listeners")?;
            for l in json["listener_statuses"].as_array().into_iter().flatten() {
                let (Some(name), Some(ip), Some(port)) = (
                    l["name"].as_str(),
                    l["local_address"]["socket_address"]["address"].as_str(),
                    l["local_address"]["socket_address"]["port_value"].as_u64(),
                ) else {
                    continue;
                };
                if name.starts_with("bench-") && port != 0 {
                    let ip = ip.parse().context("a listener address")?;
                    let port = u16::try_from(port).context("a listener port")?;
                    found.push((name.to_string(), std::net::SocketAddr::new(ip, port)));
                }
            }
        }
        if found.len() == expected {
            return Ok(found);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "Envoy bound {} of {expected} benchmark listeners",
                found.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of `pid` (all threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (`state`).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat field {n} missing"))
    };
    Ok(field(14)? + field(15)?)
}

/// The CPU time per unit (request, connection) of `end - start` clock ticks at `ticks_per_second`
/// over `units`; zero without units.
pub(crate) fn cpu_per(start: u64, end: u64, ticks_per_second: f64, units: u64) -> Duration {
    if units == 0 || ticks_per_second <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(end.saturating_sub(start) as f64 / ticks_per_second / units as f64)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

pub(crate) fn envoy_version() -> Result<String> {
    let binary = envoy_binary()?;
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("version:")
        .nth(1)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("unexpected `envoy --version` output: {text:?}"))
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Today's UTC date as `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_unit_divides_the_ticks_over_the_units() {
        // 150 ticks at 100 Hz = 1.5 s over 3000 connections = 500 µs each.
        assert_eq!(cpu_per(1000, 1150, 100.0, 3000), Duration::from_micros(500));
        assert_eq!(cpu_per(1000, 1150, 100.0, 0), Duration::ZERO);
        // A counter read out of order never goes negative.
        assert_eq!(cpu_per(1150, 1000, 100.0, 10), Duration::ZERO);
    }

    #[test]
    fn the_median_takes_each_figure_apart_and_sums_the_counts() {
        let f = |n: u64, rate: f64, us: u64| Figures {
            requests: n,
            requests_per_second: rate,
            p50: Duration::from_micros(us),
            p99: Duration::from_micros(10 * us),
            cpu_per_request: Duration::from_micros(us * 2),
        };
        let m = median(&[f(10, 300.0, 5), f(20, 100.0, 9), f(30, 200.0, 1)]);
        assert_eq!(m.requests, 60);
        assert_eq!(m.requests_per_second, 200.0);
        assert_eq!(m.p50, Duration::from_micros(5));
        assert_eq!(m.p99, Duration::from_micros(50));
        assert_eq!(m.cpu_per_request, Duration::from_micros(10));
    }
}
