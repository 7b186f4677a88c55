//! Host-fault sweep (issue 12): every hostcall each filter makes while it handles a request it
//! denies, answered with every status Envoy can return there and with malformed `Ok` results
//! (empty, short, garbled bytes, lying sizes, a missing property), one call site at a time and
//! every call at once. The filter must not trap and must not let the request through: the verdict
//! stays a deny (its fail-closed status), a reset, or a held request (it paused and nothing
//! resumes it: Envoy's stream idle timeout answers 408), never the upstream.
//!
//! The calls are not listed here: each probe is first run with the hostcall trace on and the
//! sweep faults exactly the calls the trace shows (filter, hostcall, n-th occurrence), so a filter
//! that starts calling something new is swept without editing this file. Configure-time calls
//! are swept the same way: a fault there must make the filter refuse its configuration, or the
//! filter must still deny the probes.
//!
//! The matrix (suite × call site × fault ⇒ verdicts) prints with `--nocapture`.
//!
//! Needs the release wasm (`scripts/build-wasm.sh`); a missing module fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use meshward_harness::{
    CalloutResponse, Cluster, FilterSpec, Host, HostBuilder, ListenerSettings, Outcome, Request,
    Status, Tls, Verdict,
};
use meshward_tests::{jwt_fixture as fixture, jwt_token as token, wasm};

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const INTRUDER: &str = "spiffe://cluster.local/ns/evil/sa/intruder";

/// One filter (or a chain) with a policy, the requests it denies, and the plugin whose hostcalls
/// are faulted.
struct Suite {
    name: &'static str,
    /// (wasm stem, plugin name, config JSON) in chain order.
    chain: Vec<(&'static str, &'static str, String)>,
    clusters: Vec<(&'static str, Cluster)>,
    listener: ListenerSettings,
    /// The plugin whose calls are faulted.
    target: &'static str,
    /// Sent (unfaulted) before each probe: fills caches, drains buckets.
    warmup: Vec<Request>,
    probes: Vec<(&'static str, Request)>,
}

impl Suite {
    fn builder(&self) -> HostBuilder {
        let mut b = Host::builder().listener(self.listener.clone());
        for (stem, name, config) in &self.chain {
            b = b.filter(
                FilterSpec::from_file(wasm(stem))
                    .expect("module")
                    .name(name)
                    .config_json(config),
            );
        }
        for (name, c) in &self.clusters {
            b = b.cluster(name, c.clone());
        }
        b
    }

    fn warm(&self, host: &Host) {
        for r in &self.warmup {
            host.send(r);
        }
    }
}

fn suites() -> Vec<Suite> {
    let jwks = fixture("jwks.json");
    let inline_jwt = serde_json::json!({
        "jwtRules": [{"issuer": "https://idp.example.com", "audiences": ["orders"],
                      "jwks": jwks, "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}],
        "requireToken": true
    })
    .to_string();
    let remote_jwt = serde_json::json!({
        "jwtRules": [{"issuer": "https://idp.example.com", "audiences": ["orders"],
                      "jwksUri": "http://jwks.example.com/jwks.json", "jwksCluster": "jwks",
                      "timeout": "1s", "jwksCacheDuration": "60s"}],
        "requireToken": true
    })
    .to_string();
    let jwks_cluster = Cluster::respond(
        CalloutResponse::new(200, jwks.clone()).header("content-type", "application/json"),
    );
    let bearer = |t: &str| format!("Bearer {}", token(t));
    let mtls = |path: &str, peer: &str| Request::get(path).tls(Tls::peer(peer));
    let spiffe = serde_json::json!({
        "policies": [
            {"name": "deny-admin", "action": "DENY",
             "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]},
                       {"when": [{"key": "request.headers[x-evil]", "values": ["1"]}]}]},
            {"name": "frontend-public",
             "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/frontend"]}}],
                        "to": [{"operation": {"methods": ["GET"], "paths": ["/public/*"]}}]}]}
        ]
    })
    .to_string();
    let rl = serde_json::json!({
        "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "1h"},
        "descriptors": [
            {"key": "request.headers[x-api-key]"},
            {"key": "source.principal"}
        ],
        "rateLimitHeaders": "DRAFT_VERSION_03"
    })
    .to_string();
    let chain_jwt = serde_json::json!({
        "jwtRules": [{"issuer": "https://idp.example.com", "audiences": ["orders"], "jwks": jwks}],
        "requireToken": false
    })
    .to_string();
    let chain_spiffe = serde_json::json!({
        "policies": [{"name": "alice-orders",
                      "rules": [{"from": [{"source": {"requestPrincipals": ["https://idp.example.com/alice"]}}],
                                 "to": [{"operation": {"paths": ["/orders/*"]}}]}]}]
    })
    .to_string();
    // The four checks in one module (meshward.wasm): the same sweep must hold through the bundle.
    let bundle = serde_json::json!({
        "headerLimits": {"maxHeadersCount": 50},
        "jwtAuthn": serde_json::from_str::<serde_json::Value>(&chain_jwt).unwrap(),
        "spiffeAuthz": serde_json::from_str::<serde_json::Value>(&chain_spiffe).unwrap(),
        "rateLimit": serde_json::from_str::<serde_json::Value>(&rl).unwrap(),
    })
    .to_string();
    let roomy = ListenerSettings {
        max_request_headers_kb: 96,
        max_headers_count: 200,
        ..ListenerSettings::default()
    };
    let many = (0..60).fold(Request::get("/"), |r, i| r.header(&format!("x-h{i}"), "v"));
    vec![
        Suite {
            name: "header-limits",
            chain: vec![(
                "header_limits",
                "header-limits",
                r#"{"maxRequestHeadersKb":64,"maxHeadersCount":50,"maxHeaderValueBytes":8192,
                    "maxPathBytes":2048,"headersWithUnderscoresAction":"REJECT_REQUEST"}"#
                    .to_string(),
            )],
            clusters: vec![],
            listener: roomy.clone(),
            target: "header-limits",
            warmup: vec![],
            probes: vec![
                (
                    "value>8KiB",
                    Request::get("/").header("x-big", &"a".repeat(9000)),
                ),
                ("60 headers", many),
                ("underscore", Request::get("/").header("x_user", "admin")),
                ("path>2KiB", Request::get(&format!("/{}", "p".repeat(3000)))),
                (
                    "70KiB",
                    Request::get("/").header("x-big", &"a".repeat(70 * 1024)),
                ),
            ],
        },
        Suite {
            name: "spiffe-authz",
            chain: vec![("spiffe_authz", "spiffe-authz", spiffe)],
            clusters: vec![],
            listener: ListenerSettings::default(),
            target: "spiffe-authz",
            warmup: vec![],
            probes: vec![
                ("plaintext", Request::get("/public/x")),
                ("wrong peer", mtls("/public/x", INTRUDER)),
                ("DENY path", mtls("/admin/users", FRONTEND)),
                ("no ALLOW", mtls("/private", FRONTEND)),
                (
                    "DENY header",
                    mtls("/public/x", FRONTEND).header("x-evil", "1"),
                ),
                (
                    "bad SAN",
                    mtls("/public/x", "spiffe://cluster.local/ns//sa/x"),
                ),
            ],
        },
        Suite {
            name: "jwt-authn inline",
            chain: vec![("jwt_authn", "jwt-authn", inline_jwt)],
            clusters: vec![],
            listener: ListenerSettings::default(),
            target: "jwt-authn",
            warmup: vec![],
            probes: vec![
                ("no token", Request::get("/")),
                (
                    "expired",
                    Request::get("/").header("authorization", &bearer("expired")),
                ),
                (
                    "bad sig",
                    Request::get("/").header("authorization", &bearer("bad_signature")),
                ),
                (
                    "wrong aud",
                    Request::get("/").header("authorization", &bearer("wrong_aud")),
                ),
                (
                    "alg none",
                    Request::get("/").header("authorization", &bearer("alg_none")),
                ),
                (
                    "spoofed sub",
                    Request::get("/")
                        .header("x-jwt-sub", "admin")
                        .header("authorization", &bearer("wrong_kid")),
                ),
            ],
        },
        Suite {
            name: "jwt-authn remote cold",
            chain: vec![("jwt_authn", "jwt-authn", remote_jwt.clone())],
            clusters: vec![("jwks", jwks_cluster.clone())],
            listener: ListenerSettings::default(),
            target: "jwt-authn",
            warmup: vec![],
            probes: vec![
                (
                    "bad sig",
                    Request::get("/").header("authorization", &bearer("bad_signature")),
                ),
                (
                    "expired",
                    Request::get("/").header("authorization", &bearer("expired")),
                ),
                ("no token", Request::get("/")),
            ],
        },
        Suite {
            name: "jwt-authn remote warm",
            chain: vec![("jwt_authn", "jwt-authn", remote_jwt)],
            clusters: vec![("jwks", jwks_cluster)],
            listener: ListenerSettings::default(),
            target: "jwt-authn",
            warmup: vec![Request::get("/").header("authorization", &bearer("rs256_alice"))],
            probes: vec![
                (
                    "bad sig",
                    Request::get("/").header("authorization", &bearer("bad_signature")),
                ),
                (
                    "wrong kid",
                    Request::get("/").header("authorization", &bearer("wrong_kid")),
                ),
            ],
        },
        Suite {
            name: "rate-limit",
            chain: vec![("rate_limit", "rate-limit", rl)],
            clusters: vec![],
            listener: ListenerSettings::default(),
            target: "rate-limit",
            // Drains the default bucket, key k1's and the frontend's.
            warmup: vec![
                Request::get("/"),
                Request::get("/").header("x-api-key", "k1"),
                mtls("/", FRONTEND),
            ],
            probes: vec![
                ("default", Request::get("/")),
                ("api key", Request::get("/").header("x-api-key", "k1")),
                ("principal", mtls("/", FRONTEND)),
            ],
        },
        Suite {
            name: "bundle (meshward.wasm)",
            chain: vec![("meshward", "meshward", bundle)],
            clusters: vec![],
            listener: roomy.clone(),
            target: "meshward",
            // Alice passes every check once: the rate limiter's buckets (one token each) are empty.
            warmup: vec![
                mtls("/orders/1", FRONTEND).header("authorization", &bearer("rs256_alice"))
            ],
            probes: vec![
                (
                    "rate-limited alice",
                    mtls("/orders/1", FRONTEND).header("authorization", &bearer("rs256_alice")),
                ),
                (
                    "bob",
                    mtls("/orders/1", FRONTEND).header("authorization", &bearer("rs256_bob")),
                ),
                (
                    "bad sig",
                    mtls("/orders/1", FRONTEND).header("authorization", &bearer("bad_signature")),
                ),
                ("anonymous", mtls("/orders/1", FRONTEND)),
                (
                    "60 headers",
                    (0..60).fold(mtls("/orders/1", FRONTEND), |r, i| {
                        r.header(&format!("x-h{i}"), "v")
                    }),
                ),
            ],
        },
        Suite {
            name: "jwt-authn→spiffe-authz",
            chain: vec![
                ("jwt_authn", "jwt-authn", chain_jwt),
                ("spiffe_authz", "spiffe-authz", chain_spiffe),
            ],
            clusters: vec![],
            listener: ListenerSettings::default(),
            // The reader of the published identity.
            target: "spiffe-authz",
            warmup: vec![],
            probes: vec![
                (
                    "bob",
                    mtls("/orders/1", FRONTEND).header("authorization", &bearer("rs256_bob")),
                ),
                ("anonymous", mtls("/orders/1", FRONTEND)),
            ],
        },
    ]
}

/// Sends `req` and, while it is paused, moves the virtual clock a second at a time (ticks fire:
/// a filter's own bounded wait can answer) for up to two minutes. Still paused then: `None`
/// (held; Envoy's stream idle timeout would answer 408 after 5 minutes).
fn drive(host: &Host, req: &Request) -> Option<Outcome> {
    let mut started = host.start(req);
    for _ in 0..120 {
        match host.finish(started) {
            Ok(o) => return Some(o),
            Err(s) => started = s,
        }
        host.advance(std::time::Duration::from_secs(1));
    }
    host.finish(started).ok()
}

/// The response and what the upstream saw, for a failure message.
fn describe(o: &Option<Outcome>) -> String {
    match o {
        None => "held".to_string(),
        Some(o) => format!(
            "response {} {:?}, upstream saw {:?}",
            o.status(),
            o.response.body_text(),
            o.upstream_request.as_ref().map(|u| &u.headers)
        ),
    }
}

/// What happened to a probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// A local reply with this status (0: the stream was reset).
    Deny(u16),
    /// Paused with nothing left to resume it (Envoy: 408 at the stream idle timeout).
    Held,
    /// The configuration was refused: the filter never runs (Envoy rejects the listener).
    Refused,
    /// A VM failed (trap, or wasm_fail_stream).
    Trap(String),
    /// Reached the upstream, or answered 2xx/3xx.
    Allow(u16),
}

impl Seen {
    fn short(&self) -> String {
        match self {
            Seen::Deny(0) => "rst".to_string(),
            Seen::Deny(s) => s.to_string(),
            Seen::Held => "held".to_string(),
            Seen::Refused => "cfg✗".to_string(),
            Seen::Trap(_) => "TRAP".to_string(),
            Seen::Allow(s) => format!("ALLOW{s}"),
        }
    }
    fn bad(&self) -> bool {
        matches!(self, Seen::Trap(_) | Seen::Allow(_))
    }
}

fn classify(host: &Host, suite: &Suite, o: &Option<Outcome>) -> Seen {
    for (_, name, _) in &suite.chain {
        for w in [None, Some(0)] {
            if host.vm_failed(name, w) {
                // The trap may have happened in a root context (a callout response): the
                // host's log has it, the request's may not.
                let why: Vec<String> = host
                    .logs()
                    .into_iter()
                    .filter(|l| l.level == meshward_harness::LogLevel::Critical)
                    .map(|l| l.message)
                    .collect();
                return Seen::Trap(format!("{name} VM failed: {why:?}"));
            }
        }
    }
    let Some(o) = o else {
        return Seen::Held;
    };
    if o.reached_upstream() {
        return Seen::Allow(o.status());
    }
    match &o.verdict {
        Verdict::Upstream { status } => Seen::Allow(*status),
        Verdict::Stalled { .. } => Seen::Held,
        // The sweep's listener takes every caller; a refused connection is a reset to a client.
        Verdict::Refused { .. } => Seen::Deny(0),
        Verdict::LocalReply {
            status, details, ..
        } => {
            if details == "wasm_fail_stream" {
                Seen::Trap(details.clone())
            } else if (1..400).contains(status) {
                Seen::Allow(*status)
            } else {
                Seen::Deny(*status)
            }
        }
    }
}

/// The hostcalls that hand a buffer back, those that write a number, and those with no output:
/// the malformed `Ok` results differ.
fn buffer_call(h: &str) -> bool {
    matches!(
        h,
        "proxy_get_header_map_value"
            | "proxy_get_header_map_pairs"
            | "proxy_get_property"
            | "proxy_get_buffer_bytes"
            | "proxy_get_shared_data"
            | "proxy_dequeue_shared_queue"
    )
}

fn number_call(h: &str) -> bool {
    matches!(
        h,
        "proxy_get_header_map_size"
            | "proxy_get_buffer_status"
            | "proxy_define_metric"
            | "proxy_get_metric"
            | "proxy_http_call"
            | "proxy_register_shared_queue"
            | "proxy_resolve_shared_queue"
            | "proxy_get_log_level"
    )
}

/// Every status a hostcall can return in Envoy (cpp-host `WasmResult`), but `Ok`.
const STATUSES: [(&str, Status); 11] = [
    ("NotFound", Status::NOT_FOUND),
    ("BadArg", Status::BAD_ARGUMENT),
    ("Serial", Status::SERIALIZATION_FAILURE),
    ("Parse", Status::PARSE_FAILURE),
    ("BadExpr", Status::BAD_EXPRESSION),
    ("BadMem", Status::INVALID_MEMORY_ACCESS),
    ("Empty", Status::EMPTY),
    ("CasMis", Status::CAS_MISMATCH),
    ("Internal", Status::INTERNAL_FAILURE),
    ("Broken", Status::BROKEN_CONNECTION),
    ("Unimpl", Status::UNIMPLEMENTED),
];

/// The faults for one hostcall: (label, action).
fn faults_for(hostcall: &str) -> Vec<(String, Result<Vec<u8>, Status>)> {
    let mut out: Vec<(String, Result<Vec<u8>, Status>)> = STATUSES
        .iter()
        .map(|(l, s)| (l.to_string(), Err(*s)))
        .collect();
    if buffer_call(hostcall) {
        out.push(("ok:empty".into(), Ok(Vec::new())));
        out.push(("ok:1byte".into(), Ok(vec![0x01])));
        out.push((
            "ok:garbage".into(),
            Ok(b"\xff\xfe\x00{\"garbage\x7f".to_vec()),
        ));
        if hostcall == "proxy_get_header_map_pairs" {
            // Well-framed lies about the map's own framing.
            out.push(("ok:count>".into(), Ok(vec![5, 0, 0, 0])));
            let mut overrun = vec![1, 0, 0, 0, 4, 0, 0, 0, 0xe8, 0x03, 0, 0];
            overrun.extend_from_slice(b"abcd\0");
            out.push(("ok:size>".into(), Ok(overrun)));
            // One pair, a NUL missing: sizes right, terminators wrong.
            let mut noterm = vec![1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
            noterm.extend_from_slice(b"abcd");
            out.push(("ok:noNUL".into(), Ok(noterm)));
        }
    } else if number_call(hostcall) {
        out.push(("ok:short".into(), Ok(vec![0xff, 0xff])));
        out.push(("ok:zero".into(), Ok(vec![0, 0, 0, 0])));
    } else if hostcall != "proxy_get_current_time_nanoseconds" {
        // No output: `Ok` without doing anything (a reply that never goes out, a header never
        // removed, a write never made). Not for the clock: its value is trusted by design.
        out.push(("ok:noop".into(), Ok(Vec::new())));
    }
    out
}

/// A call site: hostcall, detail (key, path, cluster) and n-th occurrence among the target's
/// calls of that hostcall.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    hostcall: &'static str,
    nth: u32,
    detail: String,
}

fn sites(trace: &[(String, &'static str, String)], target: &str) -> Vec<Site> {
    let mut count: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut all = Vec::new();
    for (filter, hostcall, detail) in trace {
        if filter != target {
            continue;
        }
        let n = count.entry(*hostcall).or_insert(0);
        all.push(Site {
            hostcall,
            nth: *n,
            detail: detail.clone(),
        });
        *n += 1;
    }
    // A call repeated many times (rate-limit reserves its slot table with ~2,500 shared-data
    // calls at configure time) is faulted at its first two and last occurrences and at the
    // first occurrence of each distinct key (at most 12), plus "every call" (see the callers).
    let mut details: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    all.iter()
        .filter(|s| {
            let total = count.get(s.hostcall).copied().unwrap_or(0);
            let seen = details.entry(s.hostcall).or_default();
            let new_detail = seen.len() < 12 && seen.insert(s.detail.clone());
            s.nth < 2 || s.nth + 1 == total || new_detail
        })
        .cloned()
        .collect()
}

fn every_call(sites: &[Site]) -> Vec<(Site, bool)> {
    let distinct: BTreeSet<&'static str> = sites.iter().map(|s| s.hostcall).collect();
    distinct
        .into_iter()
        .map(|h| {
            (
                Site {
                    hostcall: h,
                    nth: 0,
                    detail: String::new(),
                },
                true,
            )
        })
        .collect()
}

/// Matrix rows: (call label, fault label) → what each probe did.
type Matrix = BTreeMap<(String, String), Vec<Seen>>;

fn label(site: &Site, all: bool) -> String {
    let name = site.hostcall.trim_start_matches("proxy_");
    let detail = if site.detail.is_empty() {
        String::new()
    } else {
        format!("({})", site.detail.chars().take(40).collect::<String>())
    };
    if all {
        format!("{name} (every call)")
    } else {
        format!("{name}{detail}#{}", site.nth)
    }
}

struct Report {
    matrix: Matrix,
    failures: Vec<String>,
    runs: usize,
}

/// Request-time sweep of one suite.
fn sweep_requests(suite: &Suite) -> Report {
    let mut matrix = Matrix::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    for (probe_name, probe) in &suite.probes {
        // Baseline: the host works, the policy denies; the trace says which calls to fault.
        let host = suite.builder().build().expect("the filters start");
        suite.warm(&host);
        host.trace(true);
        let base = drive(&host, probe);
        host.trace(false);
        let seen = classify(&host, suite, &base);
        assert!(
            matches!(seen, Seen::Deny(_)),
            "{} / {probe_name}: the unfaulted probe must be denied, got {seen:?} ({:?})",
            suite.name,
            base.as_ref().map(|o| &o.response)
        );
        let trace: Vec<_> = host
            .hostcall_trace()
            .into_iter()
            .map(|r| (r.filter, r.hostcall, r.detail))
            .collect();
        let probe_sites = sites(&trace, suite.target);
        assert!(
            !probe_sites.is_empty(),
            "{} / {probe_name}: the trace shows no call of {}",
            suite.name,
            suite.target
        );
        // Each site once, then each hostcall on every call.
        let mut plans: Vec<(Site, bool)> = probe_sites.iter().map(|s| (s.clone(), false)).collect();
        plans.extend(every_call(&probe_sites));
        for (site, all) in plans {
            for (fault_label, action) in faults_for(site.hostcall) {
                let host = suite.builder().build().expect("the filters start");
                suite.warm(&host);
                let nth = if all { None } else { Some(site.nth) };
                let primary = action.clone();
                host.inject_fault(site.hostcall, action, Some(suite.target), nth);
                let second_order = fault_label == "Internal" && !all;
                host.trace(second_order);
                let o = drive(&host, probe);
                host.trace(false);
                host.clear_faults();
                let seen = classify(&host, suite, &o);
                runs += 1;
                if second_order && !seen.bad() {
                    // Error paths make calls the unfaulted probe never makes (a reset after a
                    // failed local reply, an error log): fault those too, on top of this fault.
                    let known_calls: BTreeSet<&'static str> =
                        probe_sites.iter().map(|s| s.hostcall).collect();
                    let fresh: BTreeSet<&'static str> = host
                        .hostcall_trace()
                        .into_iter()
                        .filter(|r| r.filter == suite.target && !known_calls.contains(r.hostcall))
                        .map(|r| r.hostcall)
                        .collect();
                    for h in fresh {
                        for (l2, a2) in faults_for(h) {
                            let host = suite.builder().build().expect("the filters start");
                            suite.warm(&host);
                            host.inject_fault(
                                site.hostcall,
                                primary.clone(),
                                Some(suite.target),
                                nth,
                            );
                            host.inject_fault(h, a2, Some(suite.target), None);
                            let o = drive(&host, probe);
                            host.clear_faults();
                            let seen = classify(&host, suite, &o);
                            runs += 1;
                            let row = format!(
                                "{} Internal, then {} (every call)",
                                label(&site, false),
                                h.trim_start_matches("proxy_")
                            );
                            if seen.bad() {
                                failures.push(format!(
                                    "{} | probe {probe_name} | {row} | {l2} ⇒ {seen:?} ({})",
                                    suite.name,
                                    describe(&o)
                                ));
                            }
                            matrix.entry((row, l2)).or_default().push(seen);
                        }
                    }
                }
                if seen.bad() {
                    failures.push(format!(
                        "{} | probe {probe_name} | {} | {fault_label} ⇒ {seen:?} ({})",
                        suite.name,
                        label(&site, all),
                        describe(&o),
                    ));
                }
                matrix
                    .entry((label(&site, all), fault_label))
                    .or_default()
                    .push(seen);
            }
        }
    }
    Report {
        matrix,
        failures,
        runs,
    }
}

/// Configure-time sweep: every call the target makes while the VMs start.
fn sweep_configure(suite: &Suite) -> Report {
    let mut matrix = Matrix::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    let host = suite
        .builder()
        .trace(true)
        .build()
        .expect("the filters start");
    let trace: Vec<_> = host
        .hostcall_trace()
        .into_iter()
        .map(|r| (r.filter, r.hostcall, r.detail))
        .collect();
    drop(host);
    let cfg_sites = sites(&trace, suite.target);
    let mut plans: Vec<(Site, bool)> = cfg_sites.iter().map(|s| (s.clone(), false)).collect();
    plans.extend(every_call(&cfg_sites));
    for (site, all) in plans {
        for (fault_label, action) in faults_for(site.hostcall) {
            runs += 1;
            let nth = if all { None } else { Some(site.nth) };
            let built = suite
                .builder()
                .inject_fault(site.hostcall, action, Some(suite.target), nth)
                .build();
            let seen: Vec<Seen> = match built {
                Err(meshward_harness::HostError::Trap { message, .. }) => {
                    vec![Seen::Trap(message)]
                }
                Err(_) => vec![Seen::Refused],
                Ok(host) => {
                    suite.warm(&host);
                    suite
                        .probes
                        .iter()
                        .map(|(_, p)| {
                            let o = drive(&host, p);
                            classify(&host, suite, &o)
                        })
                        .collect()
                }
            };
            for s in &seen {
                if s.bad() {
                    failures.push(format!(
                        "{} | configure | {} | {fault_label} ⇒ {s:?}",
                        suite.name,
                        label(&site, all)
                    ));
                }
            }
            matrix
                .entry((format!("cfg {}", label(&site, all)), fault_label))
                .or_default()
                .extend(seen);
        }
    }
    Report {
        matrix,
        failures,
        runs,
    }
}

fn print_matrix(suite: &Suite, matrix: &Matrix) {
    let mut faults: Vec<String> = Vec::new();
    for (_, f) in matrix.keys() {
        if !faults.contains(f) {
            faults.push(f.clone());
        }
    }
    let order = |f: &String| -> usize {
        STATUSES
            .iter()
            .position(|(l, _)| l == f)
            .unwrap_or(STATUSES.len())
    };
    faults.sort_by_key(|f| (order(f), f.clone()));
    let probes: Vec<&str> = suite.probes.iter().map(|(n, _)| *n).collect();
    println!(
        "\n== {} (faults on {}'s calls; probes: {}) ==",
        suite.name,
        suite.target,
        probes.join(", ")
    );
    let mut rows: Vec<&String> = matrix.keys().map(|(c, _)| c).collect();
    rows.dedup();
    let rows: BTreeSet<&String> = rows.into_iter().collect();
    for row in rows {
        let cells: Vec<String> = faults
            .iter()
            .filter_map(|f| {
                let seen = matrix.get(&(row.clone(), f.clone()))?;
                let set: BTreeSet<String> = seen.iter().map(Seen::short).collect();
                Some(format!(
                    "{f}⇒{}",
                    set.into_iter().collect::<Vec<_>>().join("/")
                ))
            })
            .collect();
        println!("  {row}: {}", cells.join(" "));
    }
}

fn run(suite: &Suite) -> (usize, Vec<String>) {
    let req = sweep_requests(suite);
    let cfg = sweep_configure(suite);
    let mut matrix = req.matrix;
    matrix.extend(cfg.matrix);
    print_matrix(suite, &matrix);
    let traps = matrix
        .values()
        .flatten()
        .filter(|s| matches!(s, Seen::Trap(_)))
        .count();
    let allows = matrix
        .values()
        .flatten()
        .filter(|s| matches!(s, Seen::Allow(_)))
        .count();
    let verdicts: usize = matrix.values().map(Vec::len).sum();
    println!(
        "  {}: {} faulted runs, {verdicts} verdicts, {traps} traps, {allows} allows under fault",
        suite.name,
        req.runs + cfg.runs
    );
    let mut failures = req.failures;
    failures.extend(cfg.failures);
    (req.runs + cfg.runs, failures)
}

/// Faults Envoy 1.40 cannot produce at that call, under which the proxy-wasm Rust SDK (0.2.5)
/// itself traps — not a filter's code path, and not reachable in Envoy: (suite, call-site prefix,
/// faults, why). A failure matching one is printed as BEYOND ENVOY and does not fail the test; an
/// entry that no longer matches anything fails it (so the list stays true). Every other trap or
/// allow fails the test. The sweep found four more, all filter bugs, now fixed and pinned here:
/// a configuration read that came back empty or NOT_FOUND configured a filter as for an empty
/// config (meshward_host::plugin_configuration now insists on the announced size), and
/// header-limits checked an empty request map as a request with no headers (now a 500).
const BEYOND_ENVOY: &[(&str, &str, &[&str], &str)] = &[
    (
        "jwt-authn remote cold",
        "http_call",
        &[
            "NotFound", "Serial", "Parse", "BadExpr", "BadMem", "Empty", "CasMis", "Broken",
            "Unimpl",
        ],
        "the SDK's dispatch_http_call panics on a status other than Ok, BadArgument and \
         InternalFailure; Envoy's Context::httpCall returns only those three (BadArgument: \
         unknown cluster, negative timeout, missing :path/:method/:authority; InternalFailure: \
         the async client refused the request).",
    ),
    (
        "jwt-authn remote cold",
        "set_effective_context",
        &[],
        "the SDK unwraps proxy_set_effective_context for contexts in its own registry; \
         proxy-wasm-cpp-host answers BadArgument only for a context id the VM does not have, \
         and Ok otherwise.",
    ),
];

fn known(failure: &str) -> Option<usize> {
    BEYOND_ENVOY.iter().position(|(suite, site, faults, _)| {
        let mut parts = failure.split(" | ");
        let f_suite = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let joined = rest.join(" | ");
        let site_ok = rest
            .iter()
            .enumerate()
            .any(|(i, _)| rest[i..].join(" | ").starts_with(site))
            || joined.contains(&format!("| {site}"));
        let fault_ok =
            faults.is_empty() || faults.iter().any(|f| joined.contains(&format!(" | {f} ⇒")));
        (suite.is_empty() || f_suite == *suite) && site_ok && fault_ok
    })
}

#[test]
fn no_host_fault_traps_a_filter_or_turns_a_deny_into_an_allow() {
    let suites = suites();
    // Two threads: the suites are independent hosts.
    let results = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(suite) = suites.get(i) else { break };
                let r = run(suite);
                results.lock().unwrap().push((suite.name, r));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let runs: usize = results.iter().map(|(_, (n, _))| n).sum();
    let failures: Vec<&String> = results.iter().flat_map(|(_, (_, f))| f).collect();
    let mut hits = vec![0usize; BEYOND_ENVOY.len()];
    let mut new = Vec::new();
    for f in &failures {
        match known(f) {
            Some(i) => hits[i] += 1,
            None => new.push(f.as_str()),
        }
    }
    println!(
        "\nhost-fault sweep: {} suites, {runs} faulted runs, {} traps or allows ({} beyond Envoy, {} new)",
        results.len(),
        failures.len(),
        failures.len() - new.len(),
        new.len()
    );
    for (i, (suite, site, faults, why)) in BEYOND_ENVOY.iter().enumerate() {
        println!(
            "  BEYOND ENVOY ×{}: [{suite}] {site} {faults:?}: {why}",
            hits[i]
        );
    }
    for f in &failures {
        let tag = if known(f).is_some() {
            "beyond Envoy"
        } else {
            "NEW"
        };
        println!("  {tag} {f}");
    }
    assert!(runs > 1000, "the sweep ran only {runs} faulted requests");
    let stale: Vec<&str> = BEYOND_ENVOY
        .iter()
        .zip(&hits)
        .filter(|(_, n)| **n == 0)
        .map(|((_, site, _, _), _)| *site)
        .collect();
    assert!(
        stale.is_empty(),
        "no longer seen: remove these from BEYOND_ENVOY in tests/tests/host_faults.rs: {stale:?}"
    );
    assert!(
        new.is_empty(),
        "{} faults made a filter trap or let a denied request through:\n{}",
        new.len(),
        new.join("\n")
    );
}

/// The injector itself: a fault on the n-th call hits that call only, `Ok` bytes reach the
/// filter, and the trace names the calls (so the sweep above cannot pass by faulting nothing).
#[test]
fn the_fault_injector_hits_what_it_is_told() {
    let all = suites();
    let suite = &all[1]; // spiffe-authz
    let probe = Request::get("/public/x").tls(Tls::peer(FRONTEND));
    let host = suite.builder().build().expect("starts");
    host.trace(true);
    assert_eq!(
        host.send(&probe).status(),
        200,
        "frontend may GET /public/x"
    );
    let trace = host.hostcall_trace();
    assert!(
        trace
            .iter()
            .any(|r| r.hostcall == "proxy_get_property" && r.in_stream && !r.faulted),
        "{trace:?}"
    );
    // The same allowed request with its first property read failing is no longer allowed.
    host.trace(true);
    host.inject_fault(
        "proxy_get_property",
        Err(Status::INTERNAL_FAILURE),
        Some("spiffe-authz"),
        Some(0),
    );
    let o = host.send(&probe);
    assert!(!o.reached_upstream(), "{:?}", o.response);
    let faulted: Vec<_> = host
        .hostcall_trace()
        .into_iter()
        .filter(|r| r.faulted)
        .collect();
    assert_eq!(faulted.len(), 1, "{faulted:?}");
    assert_eq!(faulted[0].hostcall, "proxy_get_property");
    // A fault for another plugin never fires.
    host.clear_faults();
    host.inject_fault(
        "proxy_get_property",
        Err(Status::INTERNAL_FAILURE),
        Some("another"),
        None,
    );
    assert_eq!(host.send(&probe).status(), 200);
}
