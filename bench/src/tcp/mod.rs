//! `meshward bench tcp`: spiffe-authz-tcp (meshward's network filter) against Envoy's native
//! network RBAC in one real Envoy 1.40, side by side, per connection.
//!
//! One Envoy (`--concurrency N`) gets one TLS `tcp_proxy` listener per configuration ([`setups`]:
//! `tcp_proxy` only, a no-op wasm network filter, spiffe-authz-tcp with `tcp-10.json`, the network
//! RBAC filters istiod would render for the same policies), all to one echo upstream on loopback
//! ([`echo`]). `--clients` closed-loop threads ([`client`]) each open a connection, complete a full
//! mTLS handshake (rustls, a client certificate whose URI SAN is the benchmark's SPIFFE ID, no
//! session resumption), write 64 bytes, read the echo, close, and start over. The configurations
//! take turns in interleaved rounds after a warm-up, as in `meshward bench envoy` (whose closed
//! loop, CPU sampling, medians and Markdown helpers this reuses): per turn, connections/s, p50/p99
//! connection time and Envoy's CPU per connection (utime + stime of the Envoy process from
//! `/proc/<pid>/stat` over the turn ÷ completed connections); the report gives medians over the
//! rounds. Before anything is measured, each listener must echo the benchmark client, and the
//! meshward and native listeners must close a client that `tcp-10.json` denies without echoing a
//! byte (and meshward one without a client certificate: `requireMtls`).
//!
//! In [`Figures`], reused from `meshward bench envoy`, a "request" is a whole connection.

mod client;
mod echo;
mod markdown;
pub mod setups;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::envoy::load::closed_loop;
use crate::envoy::{
    clock_ticks_per_second, cpu_ticks, figures, listener_addresses, median, nothing, rss_kib,
    Figures, RunInfo, CLIENT_SPIFFE_ID,
};
use client::{tls_config, TcpBenchClient};
use echo::EchoServer;
use meshward_rig::{repo_root, Certs, Envoy, EnvoyConfig};
use setups::TcpSetup;

pub use markdown::{render, update_file, BEGIN_MARKER, END_MARKER, HEADING};
pub use setups::{DENIED_SPIFFE_ID, POLICY};

/// Bytes each connection writes (and reads back).
pub const PAYLOAD_BYTES: usize = 64;

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct TcpBenchOptions {
    /// Envoy worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Closed-loop client threads, one connection at a time each.
    pub clients: usize,
    /// Interleaved rounds over every configuration.
    pub rounds: usize,
    /// Length of one configuration's turn in a round.
    pub round: Duration,
    /// Warm-up per configuration before the rounds.
    pub warmup: Duration,
    /// `spiffe_authz_tcp.wasm` and `meshward_test_sdk_network.wasm`.
    pub wasm_dir: PathBuf,
    /// The repository (policies/).
    pub repo: PathBuf,
    /// The command line to print in the report.
    pub command: String,
}

impl Default for TcpBenchOptions {
    fn default() -> Self {
        let repo = repo_root();
        Self {
            concurrency: 1,
            clients: 4,
            rounds: 5,
            round: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            wasm_dir: meshward_rig::default_wasm_dir(&repo),
            repo,
            command: "meshward bench tcp".into(),
        }
    }
}

/// A measured configuration.
#[derive(Debug, Clone)]
pub struct TcpRow {
    pub name: String,
    pub listener: String,
    /// `floor`, `meshward` or `native`.
    pub side: String,
    /// Per round; `requests` are connections.
    pub rounds: Vec<Figures>,
    /// Each figure's median over the rounds (connections: the total).
    pub median: Figures,
}

/// A sanity check run before the measurement.
#[derive(Debug, Clone)]
pub struct TcpCheck {
    pub listener: String,
    pub what: String,
    /// What the client saw.
    pub outcome: String,
    /// Whether the run requires the expected outcome (else only reported).
    pub enforced: bool,
}

/// Envoy's resident memory with one configuration's listener only.
#[derive(Debug, Clone)]
pub struct TcpMemory {
    pub name: String,
    pub rss_kib: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct TcpBenchReport {
    pub options: TcpBenchOptions,
    pub rows: Vec<TcpRow>,
    pub checks: Vec<TcpCheck>,
    /// The echo upstream alone (plaintext, same clients and payload, no Envoy).
    pub upstream_direct: Figures,
    /// Where and when it ran, and on which Envoy.
    pub run: RunInfo,
    /// Envoy's VmRSS after the warm-up (all listeners), KiB.
    pub envoy_rss_kib: u64,
    /// One Envoy per configuration at `--concurrency 2`, after traffic.
    pub memory: Vec<TcpMemory>,
    /// The wasm modules measured and their sizes in bytes.
    pub modules: Vec<(String, u64)>,
}

impl TcpBenchReport {
    /// The row on listener `listener` (`tcp-proxy`, `noop`, `spiffe-authz-tcp`, `network-rbac`).
    pub fn row(&self, listener: &str) -> Option<&TcpRow> {
        self.rows.iter().find(|r| r.listener == listener)
    }
}

/// The clients of the run: the measured one, a denied one, one without a certificate.
struct Clients {
    measured: Arc<rustls::ClientConfig>,
    denied: Arc<rustls::ClientConfig>,
    anonymous: Arc<rustls::ClientConfig>,
    payload: Arc<Vec<u8>>,
}

impl Clients {
    fn new(certs: &Certs) -> Result<Self> {
        let measured = certs.client_cert(&[CLIENT_SPIFFE_ID], "frontend")?;
        let denied = certs.client_cert(&[DENIED_SPIFFE_ID], "batch-exporter")?;
        // 64 printable bytes, the same on every connection.
        let payload: Vec<u8> = b"meshward bench tcp "
            .iter()
            .copied()
            .cycle()
            .take(PAYLOAD_BYTES)
            .collect();
        Ok(Self {
            measured: tls_config(certs, Some(&measured))?,
            denied: tls_config(certs, Some(&denied))?,
            anonymous: tls_config(certs, None)?,
            payload: Arc::new(payload),
        })
    }

    fn measured(&self, addr: std::net::SocketAddr) -> TcpBenchClient {
        TcpBenchClient::new(
            addr,
            Some(Arc::clone(&self.measured)),
            Arc::clone(&self.payload),
        )
    }
}

/// `clients` threads in a closed loop of whole connections for `duration`.
fn drive(
    client: &TcpBenchClient,
    clients: usize,
    duration: Duration,
    at_start: &mut dyn FnMut() -> Result<()>,
    at_end: &mut dyn FnMut() -> Result<()>,
) -> Result<crate::envoy::LoadResult> {
    closed_loop(
        clients,
        duration,
        |_| {
            let client = client.clone();
            Ok(move || client.connection())
        },
        at_start,
        at_end,
    )
}

/// Runs the whole benchmark: sanity checks, warm-up, upstream alone, rounds, memory.
pub fn run(options: &TcpBenchOptions) -> Result<TcpBenchReport> {
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let run = RunInfo::gather()?;
    let certs = Certs::generate()?;
    let clients = Clients::new(&certs)?;
    // Enough echo threads for every open connection (each client's, plus the upstream side of
    // connections Envoy has not closed yet).
    let upstream = EchoServer::start((options.clients * 4).max(32))?;
    let plan = setups::plan(&options.wasm_dir, &options.repo)?;
    let mut modules: Vec<(String, u64)> = Vec::new();
    for path in plan.iter().flat_map(|s| &s.modules) {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        modules.push((file, size));
    }

    let mut config = EnvoyConfig::new(upstream.addr())
        .concurrency(options.concurrency)
        // spiffe-authz-tcp logs refusals at info: keep Envoy from formatting them.
        .component_log_levels("wasm:warn");
    for setup in &plan {
        config = config.raw_listener(setup.listener_json(&certs)?);
    }
    let envoy = Envoy::start(&config)?;
    let addresses = listener_addresses(&envoy, plan.len())?;
    let addr_of = |setup: &TcpSetup| {
        let name = format!("bench-{}", setup.listener);
        addresses
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, addr)| *addr)
            .ok_or_else(|| anyhow!("listener {name} not found in Envoy"))
    };

    // 1. Every listener echoes the measured client; the filters close the clients they refuse.
    let mut checks = Vec::new();
    for setup in &plan {
        let addr = addr_of(setup)?;
        for check in sanity_checks(setup) {
            let tls = match check.client {
                Who::Measured => &clients.measured,
                Who::Denied => &clients.denied,
                Who::Anonymous => &clients.anonymous,
            };
            let probe =
                TcpBenchClient::new(addr, Some(Arc::clone(tls)), Arc::clone(&clients.payload))
                    .timeout(Duration::from_secs(3))
                    .probe()
                    .with_context(|| {
                        format!("sanity check {:?} on {}", check.what, setup.listener)
                    })?;
            let passed = match check.expect {
                Expect::Echo => probe.echoed(&clients.payload),
                Expect::ClosedWithoutEcho => probe.closed_without_echo(),
            };
            let outcome = probe.describe(PAYLOAD_BYTES);
            if check.enforced && !passed {
                bail!(
                    "sanity check failed on listener bench-{} ({}): {}: expected {}, got: {outcome}",
                    setup.listener,
                    setup.name,
                    check.what,
                    match check.expect {
                        Expect::Echo => "the payload echoed",
                        Expect::ClosedWithoutEcho => "a close with no byte echoed",
                    }
                );
            }
            checks.push(TcpCheck {
                listener: setup.listener.to_string(),
                what: check.what,
                outcome,
                enforced: check.enforced,
            });
        }
    }

    // 2. Warm-up.
    for setup in &plan {
        drive(
            &clients.measured(addr_of(setup)?),
            options.clients,
            options.warmup,
            &mut nothing,
            &mut nothing,
        )
        .with_context(|| format!("warm-up of {}", setup.name))?;
    }
    let pid = envoy.pid();
    let envoy_rss_kib = rss_kib(pid)?;

    // 3. The upstream alone, to show it is not the bottleneck.
    let direct = drive(
        &TcpBenchClient::new(upstream.addr(), None, Arc::clone(&clients.payload)),
        options.clients,
        options.round,
        &mut nothing,
        &mut nothing,
    )
    .context("measuring the upstream alone")?;
    let upstream_direct = figures(&direct, Duration::ZERO);

    // 4. Interleaved rounds.
    let ticks = clock_ticks_per_second();
    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); plan.len()];
    for _ in 0..options.rounds {
        for (i, setup) in plan.iter().enumerate() {
            let mut cpu_start = 0u64;
            let mut cpu_end = 0u64;
            let result = drive(
                &clients.measured(addr_of(setup)?),
                options.clients,
                options.round,
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
            let per_connection = crate::envoy::cpu_per(cpu_start, cpu_end, ticks, result.requests);
            if let Some(r) = rounds.get_mut(i) {
                r.push(figures(&result, per_connection));
            }
        }
    }
    drop(envoy);
    let rows = plan
        .iter()
        .zip(rounds)
        .map(|(setup, rounds)| TcpRow {
            name: setup.name.to_string(),
            listener: setup.listener.to_string(),
            side: setup.side.to_string(),
            median: median(&rounds),
            rounds,
        })
        .collect();

    // 5. Memory: one Envoy per configuration (the floor and the two policies' filters).
    let mut memory = Vec::new();
    for setup in plan.iter().filter(|s| s.listener != "noop") {
        memory.push(TcpMemory {
            name: setup.name.to_string(),
            rss_kib: rss_alone(setup, &certs, &clients, upstream.addr(), options)?,
        });
    }

    Ok(TcpBenchReport {
        options: options.clone(),
        rows,
        checks,
        upstream_direct,
        run,
        envoy_rss_kib,
        memory,
        modules,
    })
}

/// Envoy's VmRSS with only `setup`'s listener, at `meshward bench envoy`'s memory concurrency (a
/// wasm VM on the main thread and on each worker), after traffic.
fn rss_alone(
    setup: &TcpSetup,
    certs: &Certs,
    clients: &Clients,
    upstream: std::net::SocketAddr,
    options: &TcpBenchOptions,
) -> Result<u64> {
    let config = EnvoyConfig::new(upstream)
        .concurrency(crate::envoy::MEMORY_CONCURRENCY)
        .component_log_levels("wasm:warn")
        .raw_listener(setup.listener_json(certs)?);
    let envoy = Envoy::start(&config).with_context(|| format!("Envoy for {}", setup.name))?;
    let addr = listener_addresses(&envoy, 1)?
        .first()
        .map(|(_, a)| *a)
        .ok_or_else(|| anyhow!("listener of {} not bound", setup.name))?;
    // Enough clients that both workers serve some.
    drive(
        &clients.measured(addr),
        options.clients.max(4),
        options.warmup.max(Duration::from_millis(500)),
        &mut nothing,
        &mut nothing,
    )
    .with_context(|| format!("traffic for the memory of {}", setup.name))?;
    rss_kib(envoy.pid())
}

/// Which client a sanity check uses.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// The benchmark's client certificate (`CLIENT_SPIFFE_ID`).
    Measured,
    /// [`DENIED_SPIFFE_ID`].
    Denied,
    /// TLS without a client certificate.
    Anonymous,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Echo,
    ClosedWithoutEcho,
}

struct SanityCheck {
    what: String,
    client: Who,
    expect: Expect,
    enforced: bool,
}

fn sanity_checks(setup: &TcpSetup) -> Vec<SanityCheck> {
    let check = |what: String, client, expect, enforced| SanityCheck {
        what,
        client,
        expect,
        enforced,
    };
    let mut checks = vec![check(
        format!("the benchmark client ({CLIENT_SPIFFE_ID}) is echoed"),
        Who::Measured,
        Expect::Echo,
        true,
    )];
    match setup.side {
        "floor" if setup.listener == "tcp-proxy" => checks.push(check(
            "a client without certificate is echoed (the listener lets it reach the filters)"
                .into(),
            Who::Anonymous,
            Expect::Echo,
            true,
        )),
        "meshward" | "native" => {
            checks.push(check(
                format!("{DENIED_SPIFFE_ID} (deny-blocked-sources) is closed, nothing echoed"),
                Who::Denied,
                Expect::ClosedWithoutEcho,
                true,
            ));
            // requireMtls is meshward's; istiod would require the certificate at the listener
            // (PeerAuthentication STRICT), so native RBAC is only watched.
            checks.push(check(
                "a client without certificate is closed, nothing echoed (requireMtls)".into(),
                Who::Anonymous,
                Expect::ClosedWithoutEcho,
                setup.side == "meshward",
            ));
        }
        _ => {}
    }
    checks
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use meshward_common::spiffe::SpiffeId;
    use spiffe_authz_core::{decide, Config, DenyReason, PlainFacts, Protocol};

    use super::*;

    /// This checkout's policy (not `repo_root()`'s: a build cache shared between checkouts may
    /// hand over the rig compiled in another).
    fn policy_path() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(POLICY)
    }

    fn policy() -> Config {
        let bytes = std::fs::read(policy_path()).unwrap();
        Config::parse_for(&bytes, Protocol::Tcp).unwrap()
    }

    /// A connection as the benchmark's Envoy listener shows it to the filter.
    fn facts(peer: Option<&str>) -> PlainFacts<'static> {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        PlainFacts {
            mtls: peer.is_some(),
            peer: peer.map(|p| SpiffeId::parse(p).unwrap()),
            destination_port: Some(41234),
            source_ip: Some(loopback),
            destination_ip: Some(loopback),
            sni: Some("localhost"),
            ..PlainFacts::default()
        }
    }

    #[test]
    fn tcp_10_parses_for_tcp_and_allows_the_bench_client_by_its_last_policy() {
        let config = policy();
        assert_eq!(config.policy_count(), 10);
        assert!(config.tcp_notes().is_empty(), "{:?}", config.tcp_notes());
        let decision = decide(&config, &facts(Some(CLIENT_SPIFFE_ID)));
        assert!(decision.allowed, "{decision:?}");
        let last = config.policy_count() - 1;
        assert_eq!(decision.matched_policy, Some(last));
        assert_eq!(config.policy_name(last), "shop-frontends");
        assert!(decision.audit_matched.is_empty());
    }

    #[test]
    fn tcp_10_denies_the_sanity_check_clients() {
        let config = policy();
        let denied = decide(&config, &facts(Some(DENIED_SPIFFE_ID)));
        assert!(!denied.allowed);
        let Some(DenyReason::DenyPolicy(i)) = denied.deny else {
            panic!("{denied:?}");
        };
        assert_eq!(config.policy_name(i), "deny-blocked-sources");
        let anonymous = decide(&config, &facts(None));
        assert_eq!(anonymous.deny, Some(DenyReason::NoVerifiedPeer));
    }

    #[test]
    fn tcp_10_renders_as_log_deny_and_allow_network_rbac_with_every_policy() {
        let text = std::fs::read_to_string(policy_path()).unwrap();
        let raw: spiffe_authz_core::RawConfig = serde_json::from_str(&text).unwrap();
        let filters = meshward_mesh::network_rbac_filters(&raw).unwrap();
        let actions: Vec<&str> = filters
            .iter()
            .map(|f| f["typed_config"]["rules"]["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["LOG", "DENY", "ALLOW"]);
        let allow = filters[2]["typed_config"]["rules"]["policies"]
            .as_object()
            .unwrap();
        // Envoy evaluates a filter's policies in name order: the bench client's comes last there
        // too, after every other ALLOW policy.
        assert_eq!(allow.len(), 7);
        assert_eq!(
            allow.keys().max().map(String::as_str),
            Some("ns[meshward]-policy[shop-frontends]-rule[0]")
        );
    }

    #[test]
    fn the_no_cert_check_is_enforced_on_meshward_only() {
        let setup = |listener, side| TcpSetup {
            name: "x",
            listener,
            side,
            filters: Vec::new(),
            modules: Vec::new(),
        };
        let enforced =
            |s: &TcpSetup| -> Vec<bool> { sanity_checks(s).iter().map(|c| c.enforced).collect() };
        assert_eq!(
            enforced(&setup("spiffe-authz-tcp", "meshward")),
            [true, true, true]
        );
        assert_eq!(
            enforced(&setup("network-rbac", "native")),
            [true, true, false]
        );
        assert_eq!(enforced(&setup("tcp-proxy", "floor")), [true, true]);
        assert_eq!(enforced(&setup("noop", "floor")), [true]);
    }
}
