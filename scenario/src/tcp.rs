//! TCP scenario files (`network: true`): a chain of wasm network filters in front of `tcp_proxy`
//! and an echo upstream, and cases that open a connection, write chunks, and check what the
//! client and the upstream received, whether the proxy closed the connection, and metrics. Run in
//! the harness ([`meshward_harness::Host::connect`]) and in real Envoy (a `tcp_proxy` listener of
//! the rig). See docs/scenarios.md ("TCP scenarios").

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_harness::{ConnectionSpec, Host, Tls};
use meshward_rig::{
    tcp_listener_with, Certs, ClientCert, EchoUpstream, Envoy, EnvoyConfig, TcpClient,
    TcpEchoUpstream, TcpTransport,
};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{ChainEntry, MtlsMode, TlsSpec};
use crate::suite::{FileReport, Targets, FILE_LEVEL};

/// A TCP scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpScenario {
    /// Must be `true`: marks the file as a TCP scenario.
    pub network: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// Network filters in read order (the write path runs them in reverse).
    pub chain: Vec<ChainEntry>,
    /// The listener: its port and its mTLS mode.
    #[serde(default)]
    pub listener: TcpListenerSpec,
    pub cases: Vec<TcpCase>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpListenerSpec {
    /// A fixed port for the listener the cases use (the TLS one when any case uses TLS and no
    /// `mtls` is set), for policies on `destination.port`. Default: ephemeral in Envoy, 10000 in
    /// the harness.
    #[serde(default)]
    pub port: Option<u16>,
    /// Istio PeerAuthentication's mode for the port. Absent: plaintext, TLS and mTLS callers are
    /// all taken (in Envoy: a plaintext listener, plus a TLS one asking for a client certificate
    /// when a case uses TLS). Set: one listener in that mode takes every case; a caller it
    /// refuses is closed before any filter sees it.
    #[serde(default)]
    pub mtls: Option<MtlsMode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpCase {
    pub name: String,
    #[serde(default)]
    pub connection: ConnectionSpecYaml,
    /// Where meshward refuses on purpose what istiod's native RBAC lets through, why (the
    /// native differential, [`crate::native`], checks that it does: native allows, meshward
    /// refuses). Ignored by the harness and Envoy runs.
    #[serde(default)]
    pub stricter_than_istio: Option<String>,
    /// Chunks the client writes, one after the other (each answered before the next).
    #[serde(default)]
    pub send: Vec<String>,
    pub expect: TcpExpect,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSpecYaml {
    /// As a request's `tls`: absent plaintext, `{}` TLS, `{peer: URI}` mTLS.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    /// Client address (loopback).
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// The SNI the TLS client sends (default `localhost`); needs `tls`.
    #[serde(default)]
    pub sni: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpExpect {
    /// Exactly what the client received (the echo, through the filters both ways).
    #[serde(default, alias = "echoed")]
    pub received: Option<String>,
    /// Whether any byte reached the upstream.
    #[serde(default)]
    pub upstream: Option<bool>,
    /// Exactly what the upstream received.
    #[serde(default)]
    pub upstream_received: Option<String>,
    /// Whether the proxy closed the connection before the client did.
    #[serde(default)]
    pub closed: Option<bool>,
    /// Metric values (cumulative since the chain started) after the case.
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
}

/// What one connection produced, wherever it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TcpObserved {
    pub received: Vec<u8>,
    pub upstream_received: Vec<u8>,
    pub closed: bool,
    pub metrics: BTreeMap<String, i64>,
}

/// Whether a scenario file's text is a TCP scenario (`network: true` at the top level).
pub fn is_tcp_file(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == "network: true")
}

impl TcpScenario {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let mut s: TcpScenario = serde_path_to_error::deserialize(de)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !s.network {
            bail!("{}: a TCP scenario says `network: true`", path.display());
        }
        if s.chain.is_empty() || s.cases.is_empty() {
            bail!("{}: a TCP scenario needs a chain and cases", path.display());
        }
        if let Some(case) = s
            .cases
            .iter()
            .find(|c| c.connection.sni.is_some() && c.connection.tls.is_none())
        {
            bail!(
                "{}: case `{}`: `connection.sni` needs `connection.tls`",
                path.display(),
                case.name
            );
        }
        s.path = path.to_path_buf();
        Ok(s)
    }

    fn base(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn uses_tls(&self) -> bool {
        self.cases.iter().any(|c| c.connection.tls.is_some())
    }
}

/// Compare an observation with the expectation: one line per difference.
pub fn check(expect: &TcpExpect, seen: &TcpObserved) -> Vec<String> {
    let mut out = Vec::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(r) = &expect.received {
        if r.as_bytes() != seen.received {
            out.push(format!(
                "received: expected {r:?}, got {:?}",
                text(&seen.received)
            ));
        }
    }
    if let Some(u) = &expect.upstream_received {
        if u.as_bytes() != seen.upstream_received {
            out.push(format!(
                "upstreamReceived: expected {u:?}, got {:?}",
                text(&seen.upstream_received)
            ));
        }
    }
    if let Some(u) = expect.upstream {
        if u == seen.upstream_received.is_empty() {
            out.push(format!(
                "upstream: expected {u}, got {}",
                !seen.upstream_received.is_empty()
            ));
        }
    }
    if let Some(c) = expect.closed {
        if c != seen.closed {
            out.push(format!("closed: expected {c}, got {}", seen.closed));
        }
    }
    for (name, want) in &expect.metrics {
        let got = seen.metrics.get(name).copied().unwrap_or(0);
        if got != *want {
            out.push(format!("metric {name}: expected {want}, got {got}"));
        }
    }
    out
}

/// Parity: the two runs must agree on everything the case checks.
pub(crate) fn parity(expect: &TcpExpect, a: &TcpObserved, b: &TcpObserved) -> Vec<String> {
    let mut out = Vec::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if a.received != b.received {
        out.push(format!(
            "received: harness {:?}, Envoy {:?}",
            text(&a.received),
            text(&b.received)
        ));
    }
    if a.upstream_received != b.upstream_received {
        out.push(format!(
            "upstream received: harness {:?}, Envoy {:?}",
            text(&a.upstream_received),
            text(&b.upstream_received)
        ));
    }
    if a.closed != b.closed {
        out.push(format!("closed: harness {}, Envoy {}", a.closed, b.closed));
    }
    for name in expect.metrics.keys() {
        let (x, y) = (a.metrics.get(name), b.metrics.get(name));
        if x.unwrap_or(&0) != y.unwrap_or(&0) {
            out.push(format!("metric {name}: harness {x:?}, Envoy {y:?}"));
        }
    }
    out
}

/// Run a TCP scenario file (the `network: true` branch of [`crate::suite::run_file`]).
pub fn run_file(file: &Path, wasm_dir: &Path, targets: Targets, verbose: bool) -> FileReport {
    let mut report = FileReport::default();
    let _ = writeln!(report.text, "{}", file.display());
    let scenario = match TcpScenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            report.fail(FILE_LEVEL, &format!("  FAIL  {e:#}"), "");
            return report;
        }
    };
    let harness = match run_harness(&scenario, wasm_dir) {
        Ok(o) => o,
        Err(e) => {
            fail_every_case(&mut report, &scenario, "harness", &e);
            return report;
        }
    };
    let envoy = match targets {
        Targets::Harness => None,
        Targets::HarnessAndEnvoy => match run_envoy(&scenario, wasm_dir) {
            Ok(o) => Some(o),
            Err(e) => {
                fail_every_case(&mut report, &scenario, "envoy", &e);
                return report;
            }
        },
    };
    for (i, case) in scenario.cases.iter().enumerate() {
        let mut diff = String::new();
        if let Some(seen) = harness.get(i) {
            for m in check(&case.expect, seen) {
                let _ = writeln!(diff, "   in the harness: {m}");
            }
            if let Some(e) = envoy.as_ref().and_then(|e| e.get(i)) {
                for m in check(&case.expect, e) {
                    let _ = writeln!(diff, "   in Envoy: {m}");
                }
                for m in parity(&case.expect, seen, e) {
                    let _ = writeln!(diff, "   harness ≠ Envoy: {m}");
                }
            }
        }
        if diff.is_empty() {
            report.pass(&case.name, verbose, || format!("  ok    {}", case.name));
        } else {
            report.fail(
                &case.name,
                &format!("  FAIL  {}", case.name),
                diff.trim_end(),
            );
        }
    }
    report
}

/// Every case of a file fails with the same reason (its chain did not start, say).
pub(crate) fn fail_every_case(
    report: &mut FileReport,
    scenario: &TcpScenario,
    world: &str,
    e: &anyhow::Error,
) {
    let _ = writeln!(report.text, "  FAIL  (every case, {world}) {e:#}");
    for case in &scenario.cases {
        report.cases.push(crate::suite::CaseReport {
            name: case.name.clone(),
            failure: Some(format!("{world}: {e:#}")),
        });
        report.failed += 1;
    }
}

/// The harness's TLS facts for a case: the client certificate's URI SAN, and the SNI the rig's
/// client sends (`localhost` unless the case says), which the rig's TLS listener records (it has
/// a `tls_inspector`, as an Istio sidecar's inbound listener does).
fn harness_tls(spec: &TlsSpec, sni: Option<&str>) -> Tls {
    let mut tls = match &spec.peer {
        Some(p) => Tls::peer(p),
        None => Tls::server_only(),
    };
    // As Envoy reports it: lower case (the rig's rustls client sends DNS names lower-cased).
    tls.sni = Some(sni.unwrap_or("localhost").to_ascii_lowercase());
    tls
}

/// Every case through the harness, in order.
pub fn run_harness(scenario: &TcpScenario, wasm_dir: &Path) -> Result<Vec<TcpObserved>> {
    let base = scenario.base();
    let mut listener = meshward_harness::ListenerSettings {
        transport: crate::harness::transport(scenario.listener.mtls),
        ..Default::default()
    };
    if let Some(port) = scenario.listener.port {
        listener.port = port;
    }
    let mut builder = Host::builder().listener(listener);
    for entry in &scenario.chain {
        let spec = crate::harness::filter_spec(entry, &base, wasm_dir)?;
        builder = builder.filter(spec);
    }
    let host = builder.build()?;
    let mut out = Vec::new();
    for case in &scenario.cases {
        out.push(harness_case(&host, case)?);
    }
    Ok(out)
}

fn harness_case(host: &Host, case: &TcpCase) -> Result<TcpObserved> {
    let spec = ConnectionSpec {
        tls: case
            .connection
            .tls
            .as_ref()
            .map(|t| harness_tls(t, case.connection.sni.as_deref())),
        // Envoy sees an ephemeral client port; the harness picks a fixed one.
        source: case.connection.source.map(|ip| SocketAddr::new(ip, 40000)),
        worker: None,
    };
    let mut conn = host.connect(&spec)?;
    for chunk in &case.send {
        if conn.is_closed() {
            break;
        }
        conn.send(chunk.as_bytes())?;
    }
    let outcome = conn.close()?;
    Ok(TcpObserved {
        received: outcome.client_received,
        upstream_received: outcome.upstream_received,
        closed: outcome.closed_by_proxy,
        metrics: host
            .metrics()
            .into_iter()
            .map(|m| (m.name, m.value))
            .collect(),
    })
}

/// Every case through real Envoy, in order: one Envoy per file, a plaintext `tcp_proxy` listener
/// and, when a case uses TLS, a TLS one (client certificate asked for, not required).
pub fn run_envoy(scenario: &TcpScenario, wasm_dir: &Path) -> Result<Vec<TcpObserved>> {
    let base = scenario.base();
    let mut filters = Vec::new();
    for entry in &scenario.chain {
        filters.push(crate::envoy::wasm_filter(entry, &base, wasm_dir)?.to_network_json()?);
    }
    run_envoy_with(scenario, filters)
}

/// Every case through real Envoy with `filters` (network filters as Envoy JSON: wasm ones, or
/// native ones such as the RBAC filters istiod would render) in place of the scenario's chain.
pub fn run_envoy_with(scenario: &TcpScenario, filters: Vec<Value>) -> Result<Vec<TcpObserved>> {
    let upstream = TcpEchoUpstream::start()?;
    // The HTTP side of the bootstrap is unused; its upstream only has to exist.
    let http_upstream = EchoUpstream::start()?;
    let mode = scenario.listener.mtls;
    let needs_certs =
        scenario.uses_tls() || matches!(mode, Some(MtlsMode::Strict | MtlsMode::Permissive));
    let certs = if needs_certs {
        Some(Certs::generate()?)
    } else {
        None
    };
    let port = scenario.listener.port.unwrap_or(0);
    let mut config =
        EnvoyConfig::new(http_upstream.addr()).cluster("tcp_upstream", upstream.addr());
    // Which listener takes which case: (name, transport, port) for plaintext and for TLS callers.
    let listeners: Vec<(&str, TcpTransport, u16)> = match mode {
        // One listener in the port's mode takes every case.
        Some(MtlsMode::Strict) => vec![("tcp", TcpTransport::MutualTls, port)],
        Some(MtlsMode::Permissive) => vec![("tcp", TcpTransport::Permissive, port)],
        Some(MtlsMode::Disable) => vec![("tcp", TcpTransport::Plaintext, port)],
        // A plaintext listener, plus a TLS one (asking for a client certificate) when a case
        // uses TLS; the fixed port goes to the TLS one then.
        None if certs.is_some() => vec![
            ("tcp", TcpTransport::Plaintext, 0),
            ("tcp_tls", TcpTransport::Tls, port),
        ],
        None => vec![("tcp", TcpTransport::Plaintext, port)],
    };
    for (name, transport, port) in &listeners {
        let listener_certs = (*transport != TcpTransport::Plaintext)
            .then_some(certs.as_ref())
            .flatten();
        config = config.raw_listener(tcp_listener_with(
            name,
            filters.clone(),
            "tcp_upstream",
            *transport,
            listener_certs,
            *port,
        )?);
    }
    let envoy = Envoy::start(&config)?;
    let plain = envoy.listener_addr("tcp")?;
    let tls_addr = match listeners.iter().find(|l| l.1 != TcpTransport::Plaintext) {
        Some((name, ..)) => Some(envoy.listener_addr(name)?),
        // DISABLE: TLS callers go to the plaintext listener (the harness refuses to model it).
        None if mode.is_some() => Some(plain),
        None => None,
    };
    let mut client_certs: HashMap<String, ClientCert> = HashMap::new();
    let mut out = Vec::new();
    for case in &scenario.cases {
        let mut client = match (&case.connection.tls, &certs, tls_addr) {
            (None, _, _) => TcpClient::plaintext(plain),
            (Some(tls), Some(certs), Some(addr)) => {
                let cert = match &tls.peer {
                    Some(peer) => {
                        if !client_certs.contains_key(peer) {
                            let c = certs.client_cert(&[peer.as_str()], "meshward-client")?;
                            client_certs.insert(peer.clone(), c);
                        }
                        client_certs.get(peer)
                    }
                    None => None,
                };
                TcpClient::tls(addr, certs, cert)?
            }
            _ => bail!("case `{}`: no TLS listener", case.name),
        };
        if let Some(ip) = case.connection.source {
            client = client.source_ip(ip);
        }
        if let Some(sni) = &case.connection.sni {
            client = client.sni(sni);
        }
        let before = upstream.connections().len();
        let ex = client.run(
            &case
                .send
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )?;
        let metrics = settle(&envoy, &upstream, before)?;
        let upstream_received = upstream
            .connections()
            .get(before..)
            .unwrap_or_default()
            .iter()
            .flat_map(|c| c.received.clone())
            .collect();
        out.push(TcpObserved {
            received: ex.received,
            upstream_received,
            // A failed handshake (the listener refused the caller) is the proxy ending it.
            closed: ex.closed_by_proxy || ex.refused,
            metrics,
        });
    }
    Ok(out)
}

/// Waits until the connection is over in Envoy (every upstream connection of the case saw its
/// peer close, and the wasm metrics stopped changing), then returns the wasm metrics.
fn settle(
    envoy: &Envoy,
    upstream: &TcpEchoUpstream,
    before: usize,
) -> Result<BTreeMap<String, i64>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last: Option<BTreeMap<String, u64>> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let closed = upstream
            .connections()
            .get(before..)
            .unwrap_or_default()
            .iter()
            .all(|c| c.peer_closed || c.closed_by_upstream);
        let now = envoy.wasm_metrics()?;
        if closed && last.as_ref() == Some(&now) || Instant::now() > deadline {
            return Ok(now.into_iter().map(|(k, v)| (k, v as i64)).collect());
        }
        last = Some(now);
    }
}
