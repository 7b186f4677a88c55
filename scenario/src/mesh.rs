//! Istio-native scenario files: a `mesh` (Istio YAML), a `workload`, and cases that say who calls
//! (`from`) and what must happen, including which resource decides (`decidedBy`).
//!
//! A mesh file becomes ordinary chain scenarios: [`meshward_mesh`] selects the resources that
//! apply to the workload as istiod would and compiles them to jwt-authn and spiffe-authz configs;
//! each port's PeerAuthentication mode becomes the listener's `mtls`. Those run on the very
//! `.wasm` filters, in the harness and optionally in Envoy, and the deciding policy is read from
//! what the filters counted (`spiffe_authz.policy.<ns>.<name>.matched`), in both.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use meshward_mesh::{
    compile, select, Compiled, CustomAnswer, Loaded, MeshSettings, MtlsMode, Selection, Workload,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::check::{check, parity, render, Mismatch, Observed};
use crate::model::{BodyExpect, HeaderExpect, HeaderSpec, Scenario};
use crate::suite::{FileReport, Targets};
use crate::tcp::{TcpObserved, TcpScenario};
use crate::{run_cases, EnvoyTarget, HarnessTarget};

/// A mesh scenario file (see docs/scenarios.md, "Istio resources").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshScenario {
    #[serde(default)]
    pub description: Option<String>,
    pub mesh: MeshSpec,
    pub workload: WorkloadSpec,
    pub cases: Vec<MeshCase>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSpec {
    /// Files and directories of Istio YAML, relative to the scenario file.
    pub resources: Vec<PathBuf>,
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// What each `jwksUri` answers (the cases run offline).
    #[serde(default)]
    pub jwks: BTreeMap<String, JwksAnswer>,
}

fn default_root_namespace() -> String {
    "istio-system".into()
}
fn default_trust_domain() -> String {
    "cluster.local".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwksAnswer {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<String>,
    /// Relative to the scenario file.
    #[serde(default)]
    pub body_file: Option<PathBuf>,
    /// Nothing answers: the fetch fails.
    #[serde(default)]
    pub down: bool,
    #[serde(default)]
    pub latency: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub port: u16,
    /// Ports the workload's Service declares TCP (a port name `tcp-…`, `appProtocol: tcp`, or a
    /// protocol Istio does not treat as HTTP). On them AuthorizationPolicy applies as Istio's
    /// network RBAC does, through spiffe-authz-tcp; RequestAuthentication does not apply.
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshCase {
    pub name: String,
    pub request: MeshRequest,
    pub expect: MeshExpect,
    /// The external authorizer's answer when a CUSTOM policy's rules match the request.
    #[serde(default)]
    pub custom_authz: Option<CustomAuthz>,
    /// For `meshward test --native`: why meshward refuses on purpose what native Istio lets
    /// through (path tricks, invalid SPIFFE IDs). The native differential checks that it does.
    #[serde(default)]
    pub stricter_than_istio: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomAuthz {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshRequest {
    /// `plaintext`, `{namespace, serviceAccount}` or `{spiffe: URI}`.
    pub from: serde_yaml_ng::Value,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "crate::model::default_method")]
    pub method: String,
    #[serde(default = "crate::model::default_path")]
    pub path: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// On a TCP port: what the caller writes, chunk by chunk (default one chunk `hello`: on a
    /// STRICT or PERMISSIVE port Envoy's tls_inspector waits for 5 bytes before anything happens).
    #[serde(default)]
    pub send: Option<Vec<String>>,
    /// On a TCP port: the SNI a TLS caller sends (default `localhost`).
    #[serde(default)]
    pub sni: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshExpect {
    #[serde(default)]
    pub status: Option<u16>,
    /// The connection is refused (no HTTP response): STRICT and a plaintext caller.
    #[serde(default)]
    pub refused: bool,
    /// On a TCP port: whether the connection goes through (what the caller sent reaches the
    /// upstream and comes back) or is closed before any byte reaches it.
    #[serde(default)]
    pub allowed: Option<bool>,
    /// `namespace/name` of the deciding resource, optionally with ` rules[i]`; `none` when no
    /// resource decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub upstream: Option<bool>,
    #[serde(default)]
    pub body: Option<BodyExpect>,
    #[serde(default)]
    pub upstream_headers: Option<HeaderExpect>,
    #[serde(default)]
    pub response_headers: Option<HeaderExpect>,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Plaintext,
    /// mTLS with this URI SAN.
    Peer(String),
}

impl Caller {
    fn parse(value: &serde_yaml_ng::Value, trust_domain: &str) -> Result<Self> {
        if value.as_str() == Some("plaintext") {
            return Ok(Caller::Plaintext);
        }
        let map = value.as_mapping().ok_or_else(|| {
            anyhow!("`from`: `plaintext`, `{{namespace, serviceAccount}}` or `{{spiffe: URI}}`")
        })?;
        let get = |k: &str| map.get(k).and_then(|v| v.as_str());
        for key in map.keys() {
            let k = key.as_str().unwrap_or("");
            if !["namespace", "serviceAccount", "spiffe"].contains(&k) {
                bail!("`from`: unknown field `{k}` (namespace, serviceAccount or spiffe)");
            }
        }
        match (get("spiffe"), get("namespace"), get("serviceAccount")) {
            (Some(uri), None, None) => Ok(Caller::Peer(uri.to_string())),
            (None, Some(ns), Some(sa)) => Ok(Caller::Peer(format!(
                "spiffe://{trust_domain}/ns/{ns}/sa/{sa}"
            ))),
            _ => bail!("`from`: give `{{namespace, serviceAccount}}` or `{{spiffe: URI}}`"),
        }
    }
}

impl MeshScenario {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::from_text(path, &text)
    }

    pub fn from_text(path: &Path, text: &str) -> Result<Self> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut s: MeshScenario = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow!("{}: field `{}`: {}", path.display(), e.path(), e.inner()))?;
        s.path = path.to_path_buf();
        for case in &s.cases {
            let at = || format!("{}: case `{}`", path.display(), case.name);
            Caller::parse(&case.request.from, &s.mesh.trust_domain).with_context(at)?;
            let port = case.request.port.unwrap_or(s.workload.port);
            if s.workload.tcp_ports.contains(&port) {
                match (case.expect.allowed, case.expect.refused, case.expect.status) {
                    (_, _, Some(_)) => bail!("{}: port {port} is TCP: no HTTP `status`", at()),
                    (Some(_), true, _) => {
                        bail!("{}: give `allowed` or `refused: true`, not both", at())
                    }
                    (None, false, None) => bail!(
                        "{}: port {port} is TCP: `expect` needs `allowed` or `refused: true`",
                        at()
                    ),
                    _ => {}
                }
                continue;
            }
            if case.expect.allowed.is_some()
                || case.request.send.is_some()
                || case.request.sni.is_some()
            {
                bail!(
                    "{}: `allowed`, `send` and `sni` are for TCP ports (workload.tcpPorts)",
                    at()
                );
            }
            match (case.expect.status, case.expect.refused) {
                (Some(_), true) => bail!("{}: give `status` or `refused: true`, not both", at()),
                (None, false) => bail!("{}: `expect` needs `status` or `refused: true`", at()),
                _ => {}
            }
        }
        Ok(s)
    }

    fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub fn settings(&self) -> MeshSettings {
        MeshSettings {
            root_namespace: self.mesh.root_namespace.clone(),
            trust_domain: self.mesh.trust_domain.clone(),
        }
    }

    pub fn workload(&self) -> Workload {
        Workload {
            namespace: self.workload.namespace.clone(),
            service_account: self.workload.service_account.clone(),
            labels: self.workload.labels.clone(),
            port: self.workload.port,
        }
    }

    /// The resources the file names.
    pub fn resources(&self) -> Result<Loaded> {
        let base = self.base_dir();
        let paths: Vec<PathBuf> = self.mesh.resources.iter().map(|p| base.join(p)).collect();
        meshward_mesh::load(&paths)
    }
}

/// Whether a YAML file is a mesh scenario (it has a top-level `mesh`).
pub fn is_mesh_file(text: &str) -> bool {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        .ok()
        .is_some_and(|v| v.get("mesh").is_some())
}

/// Who decided a request, in the terms of `decidedBy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `namespace/name` of the deciding resource; `None` when none decided.
    pub by: Option<String>,
    /// The deciding rule of an AuthorizationPolicy.
    pub rule: Option<usize>,
    /// One line for people: what happened and why.
    pub account: String,
    /// The CUSTOM policies whose rules matched the request.
    pub custom_matched: Vec<String>,
}

impl Decision {
    fn text(&self) -> String {
        match (&self.by, self.rule) {
            (Some(by), Some(rule)) => format!("{by} rules[{rule}]"),
            (Some(by), None) => by.clone(),
            (None, _) => "none".into(),
        }
    }

    /// Whether `decidedBy` (`ns/name`, `ns/name rules[i]` or `none`) holds.
    fn satisfies(&self, expected: &str) -> bool {
        let expected = expected.trim();
        if expected == "none" {
            return self.by.is_none();
        }
        match expected.split_once(' ') {
            Some((by, rule)) => {
                self.by.as_deref() == Some(by)
                    && self
                        .rule
                        .is_some_and(|r| rule.trim() == format!("rules[{r}]"))
            }
            None => self.by.as_deref() == Some(expected),
        }
    }
}

/// One port and one CUSTOM answer: one listener, one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    custom: CustomAnswer,
    port: u16,
}

/// Everything a mesh file runs: the selection and a chain scenario per group.
struct Plan<'a> {
    scenario: &'a MeshScenario,
    selection: Selection<'a>,
    compiled: BTreeMap<CustomAnswer, Compiled>,
    /// Per group: the chain scenario and the mesh case index of each of its cases.
    groups: BTreeMap<GroupKey, (Scenario, Vec<usize>)>,
    /// The same for the TCP ports (`workload.tcpPorts`): a TCP scenario of spiffe-authz-tcp.
    tcp_groups: BTreeMap<GroupKey, (TcpScenario, Vec<usize>)>,
    /// What the reader should know about how the file runs (an unanswered JWKS…).
    notes: Vec<String>,
}

fn plan<'a>(scenario: &'a MeshScenario, loaded: &'a Loaded) -> Result<Plan<'a>> {
    let workload = scenario.workload();
    workload.check()?;
    let selection = select(&loaded.resources, &scenario.settings(), &workload);
    let mut compiled = BTreeMap::new();
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, case) in scenario.cases.iter().enumerate() {
        let custom = match case.custom_authz {
            Some(CustomAuthz::Deny) => CustomAnswer::Denies,
            _ => CustomAnswer::Allows,
        };
        let port = case.request.port.unwrap_or(scenario.workload.port);
        groups.entry(GroupKey { custom, port }).or_default().push(i);
    }
    for key in groups.keys() {
        if let std::collections::btree_map::Entry::Vacant(e) = compiled.entry(key.custom) {
            e.insert(compile(&selection, key.custom)?);
        }
    }
    let mut out = BTreeMap::new();
    let mut tcp_groups = BTreeMap::new();
    let mut notes = Vec::new();
    for (key, cases) in groups {
        let chain = compiled
            .get(&key.custom)
            .ok_or_else(|| anyhow!("no chain compiled"))?;
        let mode = selection.peer.mode(key.port).mode;
        if scenario.workload.tcp_ports.contains(&key.port) {
            let s = tcp_scenario(scenario, chain, key.port, mode, &cases)?;
            tcp_groups.insert(key, (s, cases));
            continue;
        }
        let s = chain_scenario(scenario, chain, key.port, mode, &cases, &mut notes)?;
        out.insert(key, (s, cases));
    }
    notes.sort();
    notes.dedup();
    Ok(Plan {
        scenario,
        selection,
        compiled,
        groups: out,
        tcp_groups,
        notes,
    })
}

/// The bytes a TCP case writes.
fn tcp_send(r: &MeshRequest) -> Vec<String> {
    r.send.clone().unwrap_or_else(|| vec!["hello".to_string()])
}

/// The TCP scenario for one TCP port: spiffe-authz-tcp with the same compiled policies (only
/// what a connection has is read; HTTP-only fields behave as istiod's TCP builder makes them),
/// the port's PeerAuthentication mode as the listener's. RequestAuthentication does not apply to
/// TCP, so jwt-authn is not in the chain.
fn tcp_scenario(
    mesh: &MeshScenario,
    chain: &Compiled,
    port: u16,
    mode: MtlsMode,
    cases: &[usize],
) -> Result<TcpScenario> {
    let mut out_cases = Vec::new();
    for &i in cases {
        let case = mesh.cases.get(i).ok_or_else(|| anyhow!("case index {i}"))?;
        let r = &case.request;
        let send = tcp_send(r);
        let mut connection = json!({});
        if let Caller::Peer(uri) = Caller::parse(&r.from, &mesh.mesh.trust_domain)? {
            connection["tls"] = json!({"peer": uri});
            if let Some(sni) = &r.sni {
                connection["sni"] = json!(sni);
            }
        }
        if let Some(s) = r.source {
            connection["source"] = json!(s.to_string());
        }
        let expect = match (case.expect.allowed, case.expect.refused) {
            (Some(true), _) => {
                json!({"received": send.concat(), "upstream": true, "closed": false})
            }
            _ => json!({"upstream": false, "closed": true}),
        };
        let mut c = json!({
            "name": case.name,
            "connection": connection,
            "send": send,
            "expect": expect,
        });
        if let Some(why) = &case.stricter_than_istio {
            c["stricterThanIstio"] = json!(why);
        }
        out_cases.push(c);
    }
    let doc = json!({
        "network": true,
        "description": format!("{} (TCP port {port}, {})", mesh.path.display(), mtls_text(mode)),
        "listener": {"port": port, "mtls": mtls_text(mode)},
        "chain": [{"filter": "spiffe-authz-tcp", "config": chain.spiffe_authz}],
        "cases": out_cases,
    });
    let mut scenario: TcpScenario = serde_json::from_value(doc)
        .context("building the TCP scenario (a meshward bug: please report it)")?;
    scenario.path = mesh.path.clone();
    Ok(scenario)
}

fn mtls_text(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Disable => "DISABLE",
        // PeerSelection never answers UNSET; PERMISSIVE is the default.
        MtlsMode::Permissive | MtlsMode::Unset => "PERMISSIVE",
    }
}

/// The chain scenario for one group, written as the chain format's own fields.
fn chain_scenario(
    mesh: &MeshScenario,
    chain: &Compiled,
    port: u16,
    mode: MtlsMode,
    cases: &[usize],
    notes: &mut Vec<String>,
) -> Result<Scenario> {
    let mut filters = Vec::new();
    if let Some(jwt) = &chain.jwt_authn {
        filters.push(json!({"filter": "jwt-authn", "config": jwt}));
    }
    filters.push(json!({"filter": "spiffe-authz", "config": chain.spiffe_authz}));
    let mut clusters = Vec::new();
    for source in &chain.jwks {
        if clusters
            .iter()
            .any(|c: &Value| c["name"] == json!(source.cluster))
        {
            continue;
        }
        let mut c = json!({"name": source.cluster});
        let Some(answer) = mesh.mesh.jwks.get(&source.uri) else {
            // Offline, an unanswered JWKS is a dead one: requests without a token still run,
            // a token gets jwt-authn's 401 for a failed fetch.
            notes.push(format!(
                "jwksUri `{}` has no answer under mesh.jwks: its fetch fails (tokens of that issuer get 401)",
                source.uri
            ));
            c["down"] = json!(true);
            clusters.push(c);
            continue;
        };
        if answer.down {
            c["down"] = json!(true);
        } else {
            let mut response = json!({"status": answer.status.unwrap_or(200)});
            if let Some(b) = &answer.body {
                response["body"] = json!(b);
            }
            if let Some(f) = &answer.body_file {
                response["bodyFile"] = json!(f);
            }
            c["response"] = response;
        }
        if let Some(l) = &answer.latency {
            c["latency"] = json!(l);
        }
        clusters.push(c);
    }
    let mut out_cases = Vec::new();
    for &i in cases {
        let case = mesh.cases.get(i).ok_or_else(|| anyhow!("case index {i}"))?;
        let r = &case.request;
        let mut request = json!({
            "method": r.method,
            "path": r.path,
            "headers": r.headers.iter().map(|h| {
                let mut v = json!({"name": h.name});
                if let Some(x) = &h.value { v["value"] = json!(x); }
                if let Some(x) = &h.repeat { v["repeat"] = json!(x); }
                if let Some(x) = h.times { v["times"] = json!(x); }
                v
            }).collect::<Vec<_>>(),
        });
        if let Some(a) = &r.authority {
            request["authority"] = json!(a);
        }
        if let Some(b) = &r.body {
            request["body"] = json!(b);
        }
        if let Some(s) = r.source {
            request["source"] = json!(s.to_string());
        }
        if let Caller::Peer(uri) = Caller::parse(&r.from, &mesh.mesh.trust_domain)? {
            request["tls"] = json!({"peer": uri});
        }
        let e = &case.expect;
        let mut expect = json!({});
        match e.status {
            Some(s) => expect["status"] = json!(s),
            None => expect["refused"] = json!(true),
        }
        if let Some(u) = e.upstream {
            expect["upstream"] = json!(u);
        }
        if let Some(b) = &e.body {
            expect["body"] = json!({"contains": b.contains, "equals": b.equals});
        }
        for (key, h) in [
            ("upstreamHeaders", &e.upstream_headers),
            ("responseHeaders", &e.response_headers),
        ] {
            if let Some(h) = h {
                expect[key] = json!({"present": h.present, "absent": h.absent, "equal": h.equal});
            }
        }
        out_cases.push(json!({"name": case.name, "request": request, "expect": expect}));
    }
    let doc = json!({
        "description": format!("{} (port {port}, {})", mesh.path.display(), mtls_text(mode)),
        "listener": {"port": port, "mtls": mtls_text(mode)},
        "clusters": clusters,
        "chain": filters,
        "cases": out_cases,
    });
    let mut scenario: Scenario = serde_json::from_value(doc)
        .context("building the chain scenario (a meshward bug: please report it)")?;
    scenario.path = mesh.path.clone();
    Ok(scenario)
}

/// What the filters counted for one request: the spiffe-authz policies whose counters moved.
fn moved(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> Vec<String> {
    moved_under(before, after, "spiffe_authz.policy.")
}

/// The policies whose `<prefix><name>.matched` counters moved.
fn moved_under(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    prefix: &str,
) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k).copied().unwrap_or(0) < **v)
        .filter_map(|(k, _)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".matched"))
                .map(str::to_string)
        })
        .collect()
}

/// The CUSTOM policies among those whose counters moved.
fn custom_matched(moved: &[String], compiled: Option<&Compiled>) -> Vec<String> {
    moved
        .iter()
        .filter_map(|n| compiled.and_then(|c| c.policy(n)))
        .filter(|p| p.action == meshward_mesh::resource::Action::Custom)
        .map(|p| p.resource.short())
        .collect()
}

/// The deciding policy among those whose counters moved: never an AUDIT, a CUSTOM one only when
/// the external authorizer denies (then it is a DENY).
fn deciding_policy<'c>(
    moved: &[String],
    compiled: Option<&'c Compiled>,
    custom: CustomAnswer,
) -> Option<&'c meshward_mesh::CompiledPolicy> {
    moved.iter().find_map(|n| {
        let p = compiled.and_then(|c| c.policy(n))?;
        let decides = match p.action {
            meshward_mesh::resource::Action::Audit => false,
            meshward_mesh::resource::Action::Custom => custom == CustomAnswer::Denies,
            _ => true,
        };
        decides.then_some(p)
    })
}

/// The listener refused the caller (its mTLS mode): the PeerAuthentication that set the port's
/// mode decided. `port_kind` names the port in the account (`port`, `TCP port`).
fn refused_by_listener(
    plan: &Plan<'_>,
    key: GroupKey,
    port_kind: &str,
    custom_matched: Vec<String>,
) -> Decision {
    let mode = plan.selection.peer.mode(key.port);
    Decision {
        by: mode.decided_by.map(|r| r.id.short()),
        rule: None,
        account: format!(
            "connection refused: {port_kind} {} is {}{}",
            key.port,
            mtls_text(mode.mode),
            mode.decided_by
                .map(|r| format!(" ({})", r.id))
                .unwrap_or_default()
        ),
        custom_matched,
    }
}

/// Who decided one connection on a TCP port, from what spiffe-authz-tcp counted: nothing counted
/// means the listener refused the caller (the port's PeerAuthentication mode) before the filter
/// saw a byte.
fn decide_tcp(
    plan: &Plan<'_>,
    key: GroupKey,
    case: &MeshCase,
    seen: &TcpObserved,
    before: &BTreeMap<String, i64>,
) -> Decision {
    let compiled = plan.compiled.get(&key.custom);
    let grew = |name: &str| {
        seen.metrics.get(name).copied().unwrap_or(0) > before.get(name).copied().unwrap_or(0)
    };
    let moved = moved_under(before, &seen.metrics, "spiffe_authz_tcp.policy.");
    let custom_matched = custom_matched(&moved, compiled);
    if !grew("spiffe_authz_tcp.allowed") && !grew("spiffe_authz_tcp.denied") {
        return refused_by_listener(plan, key, "TCP port", custom_matched);
    }
    let deciding = deciding_policy(&moved, compiled, key.custom);
    let rule = deciding.and_then(|p| {
        let e = explain_connection(plan, case, compiled?, key.port).ok()?;
        let index = e.decision.matched_policy?;
        let name = e.policies.get(index).map(|t| t.name.as_str())?;
        (name == p.filter_name).then_some(e.deciding_rule).flatten()
    });
    let rule_text = rule.map(|r| format!(" rules[{r}]")).unwrap_or_default();
    let through = !seen.upstream_received.is_empty();
    let account = match (deciding, through) {
        (Some(p), true) => format!(
            "connected: allowed by {} {}{rule_text}",
            p.action, p.resource
        ),
        (Some(p), false) => format!("closed: denied by {} {}{rule_text}", p.action, p.resource),
        (None, true) => "connected: no ALLOW policy applies".to_string(),
        (None, false) => "closed: ALLOW policies apply and none matched".to_string(),
    };
    Decision {
        by: deciding.map(|p| p.resource.short()),
        rule,
        account,
        custom_matched,
    }
}

/// spiffe-authz's core on one connection (the config compiled for TCP), for the deciding rule.
fn explain_connection(
    plan: &Plan<'_>,
    case: &MeshCase,
    compiled: &Compiled,
    port: u16,
) -> Result<spiffe_authz_core::Explanation> {
    let config = spiffe_authz_core::Config::parse_explainable_for(
        compiled.spiffe_authz.to_string().as_bytes(),
        spiffe_authz_core::Protocol::Tcp,
    )
    .context("spiffe-authz config")?;
    let r = &case.request;
    let peer = match Caller::parse(&r.from, &plan.scenario.mesh.trust_domain)? {
        Caller::Plaintext => None,
        Caller::Peer(uri) => Some(uri),
    };
    let spiffe = peer
        .as_deref()
        .and_then(|p| meshward_common::spiffe::SpiffeId::parse(p).ok());
    let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let facts = spiffe_authz_core::PlainFacts {
        mtls: peer.is_some(),
        peer: spiffe,
        destination_port: Some(port),
        source_ip: Some(r.source.unwrap_or(loopback)),
        destination_ip: Some(loopback),
        // The rig's TLS client sends `localhost` unless the case says.
        sni: peer
            .as_ref()
            .map(|_| r.sni.as_deref().unwrap_or("localhost")),
        ..Default::default()
    };
    Ok(spiffe_authz_core::explain(&config, &facts))
}

/// The `iss` of the first JWT-shaped value in the request's headers or query.
fn token_issuer(request: &MeshRequest) -> Option<String> {
    let claims = meshward_mesh::explain::token_claims(&find_token(request)?)?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The first JWT-shaped value in the request's headers or query (the jwt-authn filter is the
/// judge of which token counts; this only names the issuer and the claims in explanations).
fn find_token(request: &MeshRequest) -> Option<String> {
    let query = request.path.split_once('?').map_or("", |(_, q)| q);
    let candidates = request
        .headers
        .iter()
        .filter_map(|h| h.value.clone())
        .chain(
            query
                .split('&')
                .map(|p| p.split_once('=').map_or(p, |(_, v)| v).to_string()),
        );
    for value in candidates {
        for word in value.split([' ', ',', ';', '=']) {
            let mut parts = word.split('.');
            let (Some(h), Some(p), Some(_), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !h.starts_with("eyJ") || p.is_empty() {
                continue;
            }
            return Some(word.to_string());
        }
    }
    None
}

/// The request as spiffe-authz sees it, for its explanation. The claims are the token's when
/// jwt-authn let the request through with one (it verified it).
pub fn request_facts(
    scenario: &MeshScenario,
    case: &MeshCase,
    compiled: &Compiled,
    jwt_passed: bool,
) -> Result<meshward_mesh::RequestFacts> {
    let r = &case.request;
    let peer = match Caller::parse(&r.from, &scenario.mesh.trust_domain)? {
        Caller::Plaintext => None,
        Caller::Peer(uri) => Some(uri),
    };
    let mut headers = Vec::new();
    for h in &r.headers {
        headers.push((h.name.clone(), h.value()?));
    }
    let claims = if compiled.jwt_authn.is_some() && jwt_passed {
        find_token(r).and_then(|t| meshward_mesh::explain::token_claims(&t))
    } else {
        None
    };
    Ok(meshward_mesh::RequestFacts {
        peer,
        method: r.method.clone(),
        path: r.path.clone(),
        authority: r.authority.clone().unwrap_or_else(|| "example.com".into()),
        port: r.port.unwrap_or(scenario.workload.port),
        source_ip: Some(
            r.source
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ),
        // Both worlds listen on loopback.
        destination_ip: Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        headers,
        claims,
    })
}

/// Who decided one observed request.
fn decide(
    plan: &Plan<'_>,
    key: GroupKey,
    case: &MeshCase,
    seen: &Observed,
    before: &BTreeMap<String, i64>,
    refused: bool,
) -> Decision {
    let compiled = plan.compiled.get(&key.custom);
    let moved = moved(before, &seen.metrics);
    let custom_matched = custom_matched(&moved, compiled);
    if refused {
        return refused_by_listener(plan, key, "port", custom_matched);
    }
    let body = String::from_utf8_lossy(&seen.body).to_string();
    if body.starts_with("Jwt") || body.starts_with("Audiences in Jwt") || body.starts_with("Jwks") {
        let issuer = token_issuer(&case.request);
        let by = issuer
            .as_ref()
            .and_then(|i| compiled.and_then(|c| c.issuers.get(i)))
            .map(|id| id.short());
        return Decision {
            account: format!(
                "{} {body} (jwt-authn{})",
                seen.status,
                issuer.map(|i| format!(", issuer {i}")).unwrap_or_default()
            ),
            by,
            rule: None,
            custom_matched,
        };
    }
    let deciding = deciding_policy(&moved, compiled, key.custom);
    // The deciding rule, from spiffe-authz's core on the same config and request; only when the
    // core names the same deciding policy as the filter did.
    let rule = deciding.and_then(|p| {
        let compiled = compiled?;
        let facts = request_facts(plan.scenario, case, compiled, true).ok()?;
        let e = meshward_mesh::explain_request(compiled, &facts).ok()?;
        let index = e.decision.matched_policy?;
        let name = e.policies.get(index).map(|t| t.name.as_str())?;
        (name == p.filter_name).then_some(e.deciding_rule).flatten()
    });
    let rule_text = rule.map(|r| format!(" rules[{r}]")).unwrap_or_default();
    let account = match (deciding, seen.status) {
        (Some(p), 200) => format!("allowed by {} {}{rule_text}", p.action, p.resource),
        (Some(p), s) => format!("{s}: denied by {} {}{rule_text}", p.action, p.resource),
        (None, 200) => "allowed: no ALLOW policy applies".to_string(),
        (None, 400) => "400: meshward refused the request's path or a header spelling".into(),
        (None, 403) => "403: ALLOW policies apply and none matched".into(),
        (None, s) => format!("{s}"),
    };
    Decision {
        by: deciding.map(|p| p.resource.short()),
        rule,
        account,
        custom_matched,
    }
}

/// Run a mesh scenario file: every case in the harness (and with `targets`, in Envoy too).
/// The chain scenarios a mesh file runs (one per port and CUSTOM answer, as [`run_file`] runs
/// them), for suites that run the same chains another way (tests/bundle_parity.rs: through the
/// bundle, `meshward.wasm`).
pub fn chain_scenarios(file: &Path) -> Result<Vec<Scenario>> {
    let scenario = MeshScenario::load(file)?;
    let loaded = scenario.resources()?;
    let plan = plan(&scenario, &loaded)?;
    Ok(plan.groups.into_values().map(|(chain, _)| chain).collect())
}

pub fn run_file(file: &Path, wasm_dir: &Path, targets: Targets, verbose: bool) -> FileReport {
    let mut report = FileReport::default();
    let _ = writeln!(report.text, "{}", file.display());
    match run(file, wasm_dir, targets, verbose, &mut report) {
        Ok(()) => {}
        Err(e) => {
            report.fail(crate::suite::FILE_LEVEL, &format!("  FAIL  {e:#}"), "");
        }
    }
    report
}

fn run(
    file: &Path,
    wasm_dir: &Path,
    targets: Targets,
    verbose: bool,
    report: &mut FileReport,
) -> Result<()> {
    let scenario = MeshScenario::load(file)?;
    let loaded = scenario.resources()?;
    let plan = plan(&scenario, &loaded)?;
    for note in loaded.notes.iter().chain(&plan.notes) {
        let _ = writeln!(report.text, "  note: {note}");
    }
    // Resources in scope that a reader might expect to apply (targetRefs, dry-run, a shadowed
    // PeerAuthentication); selector misses are many and expected (`explain` lists them).
    for (r, why) in &plan.selection.not_applied {
        if !why.starts_with("selector") {
            let _ = writeln!(report.text, "  not applied: {}: {why}", r.id);
        }
    }
    // Per case: (harness observation, harness decision, envoy observation and decision).
    type Row = (Observed, Decision, Option<(Observed, Decision)>);
    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    for (key, (chain, indices)) in &plan.groups {
        let harness = HarnessTarget::start(chain, wasm_dir)
            .and_then(|t| run_cases(&t, chain))
            .with_context(|| format!("harness, port {}", key.port))?;
        let envoy = match targets {
            Targets::Harness => None,
            Targets::HarnessAndEnvoy => Some(
                EnvoyTarget::start(chain, wasm_dir)
                    .map(EnvoyTarget::with_all_metrics)
                    .and_then(|t| run_cases(&t, chain))
                    .with_context(|| format!("Envoy, port {}", key.port))?,
            ),
        };
        let mut before_h = BTreeMap::new();
        let mut before_e = BTreeMap::new();
        for (n, &i) in indices.iter().enumerate() {
            let case = scenario.cases.get(i).ok_or_else(|| anyhow!("case {i}"))?;
            let seen = harness.get(n).cloned().unwrap_or_default();
            let d = decide(&plan, *key, case, &seen, &before_h, seen.refused);
            before_h = seen.metrics.clone();
            let in_envoy = envoy.as_ref().and_then(|e| e.get(n)).map(|seen_e| {
                let d = decide(&plan, *key, case, seen_e, &before_e, seen_e.refused);
                before_e = seen_e.metrics.clone();
                (seen_e.clone(), d)
            });
            rows.insert(i, (seen, d, in_envoy));
        }
    }
    let tcp_rows = run_tcp_groups(&plan, wasm_dir, targets)?;
    for (i, case) in scenario.cases.iter().enumerate() {
        if let Some(row) = tcp_rows.get(&i) {
            report_tcp_case(&plan, i, case, row, verbose, report)?;
            continue;
        }
        let Some((seen, decision, in_envoy)) = rows.get(&i) else {
            continue;
        };
        let key = plan
            .groups
            .iter()
            .find(|(_, (_, idx))| idx.contains(&i))
            .map(|(k, (s, idx))| (k, s, idx.iter().position(|x| *x == i)));
        let Some((_, chain, Some(pos))) = key else {
            continue;
        };
        let expect = &chain
            .cases
            .get(pos)
            .ok_or_else(|| anyhow!("case {pos}"))?
            .expect;
        let mut diff = String::new();
        let mut own = check(expect, seen);
        own.extend(decision_mismatches(case, decision));
        if !own.is_empty() {
            let _ = write!(diff, "   in the harness:\n{}", render(&own));
        }
        if let Some((seen_e, decision_e)) = in_envoy {
            let mut m = check(expect, seen_e);
            m.extend(decision_mismatches(case, decision_e));
            if !m.is_empty() {
                let _ = write!(diff, "   in Envoy:\n{}", render(&m));
            }
            let mut p = parity(expect, seen, seen_e);
            if decision.by != decision_e.by {
                p.push(Mismatch {
                    what: "deciding resource".into(),
                    expected: decision.text(),
                    actual: decision_e.text(),
                });
            }
            if !p.is_empty() {
                let _ = write!(diff, "   harness ≠ Envoy:\n{}", render(&p));
            }
        }
        if diff.is_empty() {
            report.pass(&case.name, verbose, || {
                format!("  ok    {} — {}", case.name, decision.account)
            });
        } else {
            report.fail(
                &case.name,
                &format!("  FAIL  {}\n   decision: {}", case.name, decision.account),
                &diff,
            );
        }
    }
    Ok(())
}

/// A TCP case's harness observation and decision, and Envoy's when it ran there.
type TcpRow = (TcpObserved, Decision, Option<(TcpObserved, Decision)>);

/// Every TCP port's cases, in the harness (and Envoy), with who decided each.
fn run_tcp_groups(
    plan: &Plan<'_>,
    wasm_dir: &Path,
    targets: Targets,
) -> Result<BTreeMap<usize, TcpRow>> {
    let mut rows = BTreeMap::new();
    for (key, (tcp, indices)) in &plan.tcp_groups {
        let harness = crate::tcp::run_harness(tcp, wasm_dir)
            .with_context(|| format!("harness, TCP port {}", key.port))?;
        let envoy = match targets {
            Targets::Harness => None,
            Targets::HarnessAndEnvoy => Some(
                crate::tcp::run_envoy(tcp, wasm_dir)
                    .with_context(|| format!("Envoy, TCP port {}", key.port))?,
            ),
        };
        let (mut before_h, mut before_e) = (BTreeMap::new(), BTreeMap::new());
        for (n, &i) in indices.iter().enumerate() {
            let case = plan
                .scenario
                .cases
                .get(i)
                .ok_or_else(|| anyhow!("case {i}"))?;
            let seen = harness.get(n).cloned().unwrap_or_default();
            let d = decide_tcp(plan, *key, case, &seen, &before_h);
            before_h = seen.metrics.clone();
            let in_envoy = envoy.as_ref().and_then(|e| e.get(n)).map(|seen_e| {
                let d = decide_tcp(plan, *key, case, seen_e, &before_e);
                before_e = seen_e.metrics.clone();
                (seen_e.clone(), d)
            });
            rows.insert(i, (seen, d, in_envoy));
        }
    }
    Ok(rows)
}

/// Check one TCP case: what the connection did, who decided, and harness = Envoy.
fn report_tcp_case(
    plan: &Plan<'_>,
    i: usize,
    case: &MeshCase,
    (seen, decision, in_envoy): &TcpRow,
    verbose: bool,
    report: &mut FileReport,
) -> Result<()> {
    let expect = plan
        .tcp_groups
        .values()
        .find_map(|(tcp, idx)| {
            let pos = idx.iter().position(|x| *x == i)?;
            tcp.cases.get(pos).map(|c| &c.expect)
        })
        .ok_or_else(|| anyhow!("TCP case {i} has no group"))?;
    let lines = |seen: &TcpObserved, d: &Decision| -> String {
        let mut out = String::new();
        for m in crate::tcp::check(expect, seen) {
            let _ = writeln!(out, "     {m}");
        }
        let by_filter = !d.account.starts_with("connection refused");
        if case.expect.refused && by_filter {
            let _ = writeln!(
                out,
                "     refused: expected the listener to refuse, got: {}",
                d.account
            );
        }
        if !case.expect.refused && !by_filter {
            let _ = writeln!(
                out,
                "     refused: the listener refused the caller ({})",
                d.account
            );
        }
        out.push_str(&render(&decision_mismatches(case, d)));
        out
    };
    let mut diff = String::new();
    let own = lines(seen, decision);
    if !own.trim().is_empty() {
        let _ = write!(diff, "   in the harness:\n{own}");
    }
    if let Some((seen_e, decision_e)) = in_envoy {
        let m = lines(seen_e, decision_e);
        if !m.trim().is_empty() {
            let _ = write!(diff, "   in Envoy:\n{m}");
        }
        let mut p: Vec<String> = crate::tcp::parity(expect, seen, seen_e);
        if decision.by != decision_e.by {
            p.push(format!(
                "deciding resource: harness {}, Envoy {}",
                decision.text(),
                decision_e.text()
            ));
        }
        if !p.is_empty() {
            let _ = writeln!(diff, "   harness ≠ Envoy:\n     {}", p.join("\n     "));
        }
    }
    if diff.is_empty() {
        report.pass(&case.name, verbose, || {
            format!("  ok    {} — {}", case.name, decision.account)
        });
    } else {
        report.fail(
            &case.name,
            &format!("  FAIL  {}\n   decision: {}", case.name, decision.account),
            diff.trim_end(),
        );
    }
    Ok(())
}

fn decision_mismatches(case: &MeshCase, d: &Decision) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let Some(expected) = &case.expect.decided_by {
        if !d.satisfies(expected) {
            out.push(Mismatch {
                what: "decidedBy".into(),
                expected: expected.clone(),
                actual: d.text(),
            });
        }
    }
    match case.custom_authz {
        None if !d.custom_matched.is_empty() => out.push(Mismatch {
            what: "customAuthz".into(),
            expected: format!(
                "the external authorizer's answer for CUSTOM {} (add customAuthz: allow|deny)",
                d.custom_matched.join(", ")
            ),
            actual: "not given".into(),
        }),
        // With `deny`, CUSTOM policies are DENY policies: one that matched decides, so it is in
        // `custom_matched` either way; none matched ⇒ nobody would have asked the authorizer.
        Some(_) if d.custom_matched.is_empty() => out.push(Mismatch {
            what: "customAuthz".into(),
            expected: "a CUSTOM policy whose rules match this request".into(),
            actual: "none matched: the external authorizer is never asked".into(),
        }),
        _ => {}
    }
    out
}

/// `meshward test --native` on a mesh file: every case through meshward's filters (the harness,
/// which the parity suites hold to Envoy) and through what istiod would render for the workload's
/// port ([`meshward_mesh::native_sidecar`]: filter chains, path handling, `jwt_authn`, RBAC) in
/// real Envoy, compared case by case ([`crate::native`]).
pub fn run_native_file(file: &Path, wasm_dir: &Path, verbose: bool) -> FileReport {
    let mut report = FileReport::default();
    let _ = writeln!(report.text, "{} (native differential)", file.display());
    if let Err(e) = run_native(file, wasm_dir, verbose, &mut report) {
        report.fail(crate::suite::FILE_LEVEL, &format!("  FAIL  {e:#}"), "");
    }
    report
}

fn run_native(file: &Path, wasm_dir: &Path, verbose: bool, report: &mut FileReport) -> Result<()> {
    let scenario = MeshScenario::load(file)?;
    let loaded = scenario.resources()?;
    let plan = plan(&scenario, &loaded)?;
    let jwks = |uri: &str| istiod_jwks_fetch(&scenario, uri);
    let mut notes = Vec::new();
    for (key, (chain, indices)) in &plan.groups {
        let native =
            meshward_mesh::native_sidecar::inbound_port(&plan.selection, key.port, false, &jwks)?;
        notes.extend(native.notes.iter().cloned());
        let cases: Vec<&MeshCase> = indices
            .iter()
            .map(|&i| scenario.cases.get(i).ok_or_else(|| anyhow!("case {i}")))
            .collect::<Result<_>>()?;
        if key.custom == CustomAnswer::Denies {
            // Natively a CUSTOM policy is ext_authz, which is not rendered: nothing to compare.
            for case in cases {
                report.pass(&case.name, verbose, || {
                    format!(
                        "  ok    {} (not compared: customAuthz deny needs Istio's ext_authz, which is not rendered)",
                        case.name
                    )
                });
            }
            continue;
        }
        let meshward = HarnessTarget::start(chain, wasm_dir)
            .and_then(|t| run_cases(&t, chain))
            .with_context(|| format!("meshward (harness), port {}", key.port))?;
        let istio = EnvoyTarget::start_native(
            chain,
            native.filters.clone(),
            meshward_mesh::native_sidecar::hcm_path_settings(),
        )
        .and_then(|t| run_cases(&t, chain))
        .with_context(|| format!("native Istio in Envoy, port {}", key.port))?;
        for ((case, m), n) in cases.iter().zip(&meshward).zip(&istio) {
            crate::native::compare_http(
                &case.name,
                case.stricter_than_istio.as_deref(),
                m,
                n,
                verbose,
                report,
            );
        }
    }
    for (key, (tcp, _)) in &plan.tcp_groups {
        let native =
            meshward_mesh::native_sidecar::inbound_port(&plan.selection, key.port, true, &jwks)?;
        notes.extend(native.notes.iter().cloned());
        let meshward = crate::tcp::run_harness(tcp, wasm_dir)
            .with_context(|| format!("meshward (harness), TCP port {}", key.port))?;
        let istio = crate::tcp::run_envoy_with(tcp, native.filters)
            .with_context(|| format!("native Istio in Envoy, TCP port {}", key.port))?;
        crate::native::compare_tcp(tcp, &meshward, &istio, "native Istio", verbose, report);
    }
    notes.sort();
    notes.dedup();
    for note in notes {
        let _ = writeln!(report.text, "  note: {note}");
    }
    Ok(())
}

/// What istiod's own fetch of `uri` gets (it inlines the keys): the scenario's 200 answer, else
/// nothing (a failed fetch).
fn istiod_jwks_fetch(scenario: &MeshScenario, uri: &str) -> Option<String> {
    let answer = scenario.mesh.jwks.get(uri)?;
    if answer.down || answer.status.is_some_and(|s| s != 200) {
        return None;
    }
    if let Some(body) = &answer.body {
        return Some(body.clone());
    }
    let file = answer.body_file.as_ref()?;
    let base = scenario.path.parent().unwrap_or(Path::new("."));
    std::fs::read_to_string(base.join(file)).ok()
}

/// `meshward render --native`: every port the scenario's cases use, as istiod would render it for
/// the workload (listener filter chains with the HTTP filters or network filters), as YAML.
pub fn render_native(scenario: &MeshScenario) -> Result<String> {
    let loaded = scenario.resources()?;
    let workload = scenario.workload();
    workload.check()?;
    let selection = select(&loaded.resources, &scenario.settings(), &workload);
    let jwks = |uri: &str| istiod_jwks_fetch(scenario, uri);
    let mut ports: Vec<u16> = scenario
        .cases
        .iter()
        .map(|c| c.request.port.unwrap_or(scenario.workload.port))
        .chain([scenario.workload.port])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let mut listeners = Vec::new();
    let mut notes = Vec::new();
    for port in ports {
        let tcp = scenario.workload.tcp_ports.contains(&port);
        let p = meshward_mesh::native_sidecar::inbound_port(&selection, port, tcp, &jwks)?;
        notes.extend(p.notes.iter().cloned());
        listeners.push(p.listener());
    }
    notes.sort();
    notes.dedup();
    let mut out = format!(
        "# The inbound listeners istiod would give the sidecar of service account {} in namespace\n\
         # {}, as `meshward test --native` runs them in Envoy (meshward_mesh::native_sidecar).\n",
        scenario.workload.service_account, scenario.workload.namespace
    );
    for n in notes {
        let _ = writeln!(out, "# note: {n}");
    }
    out.push_str(&serde_yaml_ng::to_string(&listeners)?);
    Ok(out)
}

/// `meshward explain`: the first case of `scenario` through the `.wasm` chain in the harness,
/// then every applicable policy, each rule, and the first condition that failed.
pub fn explain(scenario: &MeshScenario, wasm_dir: &Path) -> Result<String> {
    let case = scenario
        .cases
        .first()
        .ok_or_else(|| anyhow!("explain needs one request"))?;
    let loaded = scenario.resources()?;
    let plan = plan(scenario, &loaded)?;
    let (key, (chain, _)) = plan
        .groups
        .iter()
        .next()
        .ok_or_else(|| anyhow!("no chain"))?;
    let compiled = plan
        .compiled
        .get(&key.custom)
        .ok_or_else(|| anyhow!("no chain"))?;
    let seen = HarnessTarget::start(chain, wasm_dir)
        .and_then(|t| run_cases(&t, chain))?
        .into_iter()
        .next()
        .unwrap_or_default();
    let decision = decide(&plan, *key, case, &seen, &BTreeMap::new(), seen.refused);
    let mut out = String::new();
    let w = &scenario.workload;
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "workload {}/{} (labels {}), port {}",
        w.namespace,
        w.service_account,
        if labels.is_empty() {
            "none".into()
        } else {
            labels.join(",")
        },
        key.port
    );
    let caller = match Caller::parse(&case.request.from, &scenario.mesh.trust_domain)? {
        Caller::Plaintext => "plaintext (no peer identity)".to_string(),
        Caller::Peer(uri) => format!("{uri} over mTLS"),
    };
    let _ = writeln!(
        out,
        "request {} {} from {caller}",
        case.request.method, case.request.path
    );
    let mode = plan.selection.peer.mode(key.port);
    let _ = writeln!(
        out,
        "mTLS on port {}: {} ({})",
        key.port,
        mtls_text(mode.mode),
        mode.decided_by
            .map(|r| r.id.to_string())
            .unwrap_or_else(|| "no PeerAuthentication: PERMISSIVE by default".into())
    );
    let ras: Vec<String> = compiled
        .issuers
        .iter()
        .map(|(iss, id)| format!("{iss} ({id})"))
        .collect();
    let _ = writeln!(
        out,
        "JWT issuers: {}",
        if ras.is_empty() {
            "none (no RequestAuthentication applies)".into()
        } else {
            ras.join(", ")
        }
    );
    let status = if seen.refused {
        "connection refused".to_string()
    } else {
        seen.status.to_string()
    };
    let _ = writeln!(
        out,
        "result (the .wasm filters in the harness): {status} — {}",
        decision.account
    );
    let jwt_refused = decision.account.contains("(jwt-authn");
    if seen.refused || jwt_refused {
        return Ok(out);
    }
    let facts = request_facts(scenario, case, compiled, true)?;
    let explanation = meshward_mesh::explain_request(compiled, &facts)?;
    let _ = writeln!(out, "AuthorizationPolicies, in evaluation order:");
    out.push_str(&meshward_mesh::explain::render(
        &plan.selection,
        compiled,
        &explanation,
    ));
    Ok(out)
}
