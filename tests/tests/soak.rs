//! Soak (issue 12): all four filters in one real Envoy 1.40 chain (header-limits → jwt-authn with a
//! REMOTE JWKS → spiffe-authz → rate-limit), under mixed valid and hostile traffic over mTLS, while
//! the JWKS server flaps (up, down, garbage, slow) and the rate-limit keys churn.
//!
//! Duration: `MESHWARD_SOAK_SECS` (default 60; `scripts/soak.sh MINUTES` sets it). Reports Envoy's
//! RSS over time (VmRSS from /proc/<pid>/status), the count of every status, and every response
//! whose status is not one its request kind may get (see `Kind::expected`). Fails on any
//! unexpected status (5xx included: no kind may get a 5xx — the JWKS-fetch failure is jwt-authn's
//! 401 "Jwks remote fetch is failed", never a 5xx), on any client error (reset, timeout), and on
//! RSS growth between the end of warm-up and the end of the run above the bound:
//! `MESHWARD_SOAK_RSS_PCT`, default 5% for runs of 10 minutes or more (the bound) and 10%
//! for shorter runs (a 1-minute run is mostly V8 and allocator warm-up noise: the bound still
//! catches a per-request leak, which grows linearly with the ~tens of thousands of requests).
//!
//! Loopback only; every loop is bounded by the deadline; Envoy and the servers stop on drop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshward_rig::{self as envoy, Certs, Client, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use meshward_tests::{jwt_fixture as fixture, jwt_token as token, wasm};
use serde_json::json;

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const INTRUDER: &str = "spiffe://cluster.local/ns/evil/sa/intruder";

/// What the JWKS server does right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Jwks {
    Up = 0,
    /// 503.
    Down = 1,
    /// 200 with a body that is no JWKS.
    Garbage = 2,
    /// Answers after 1.5 s: past the rule's 1 s fetch timeout.
    Slow = 3,
}

/// The flapping schedule, one step per `STEP`; starts up so that warm-up has keys.
const SCHEDULE: [Jwks; 8] = [
    Jwks::Up,
    Jwks::Down,
    Jwks::Up,
    Jwks::Garbage,
    Jwks::Up,
    Jwks::Slow,
    Jwks::Down,
    Jwks::Garbage,
];
const STEP: Duration = Duration::from_secs(5);

/// Request kinds, each with the statuses it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// mTLS frontend, alice's valid token, GET /public/..., a churning x-api-key.
    Valid,
    /// Like Valid, on one hot key, sent faster than its 3 per second.
    HotKey,
    /// alice's token with one signature character changed.
    Forged,
    /// A correctly signed token that expired.
    Expired,
    /// No token (requireToken).
    NoToken,
    /// A 9 KiB header value (header-limits' maxHeaderValueBytes is 8 KiB).
    Oversize,
    /// A header name with `_` (REJECT_REQUEST).
    Underscore,
    /// /public/../admin, //admin, /%61dmin/x, /public/./../admin: normalized to the DENY'd /admin.
    PathTrick,
    /// mTLS with another SPIFFE ID.
    WrongPeer,
    /// mTLS with a certificate whose URI SAN is not a valid SPIFFE ID.
    BadSan,
    /// No TLS at all (requireMtls).
    Plaintext,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Valid,
        Kind::HotKey,
        Kind::Forged,
        Kind::Expired,
        Kind::NoToken,
        Kind::Oversize,
        Kind::Underscore,
        Kind::PathTrick,
        Kind::WrongPeer,
        Kind::BadSan,
        Kind::Plaintext,
    ];

    /// The statuses this kind may get, and whether a 401 must say the JWKS fetch failed.
    fn expected(self, status: u16, body: &[u8]) -> bool {
        let fetch_failed = || String::from_utf8_lossy(body).contains("Jwks remote fetch is failed");
        match self {
            // A valid token is refused only when no keys could be had (the IdP has been
            // flapping since before the cached keys expired); a drained key is 429.
            Kind::Valid => status == 200 || status == 429 || (status == 401 && fetch_failed()),
            // 200 while its 3 tokens of the second last.
            Kind::HotKey => status == 200 || status == 429 || (status == 401 && fetch_failed()),
            // jwt-authn runs before spiffe-authz: a bad token is 401 whatever the peer.
            Kind::Forged | Kind::Expired | Kind::NoToken => status == 401,
            // header-limits runs first.
            Kind::Oversize => status == 431,
            Kind::Underscore => status == 400,
            Kind::PathTrick | Kind::WrongPeer | Kind::BadSan | Kind::Plaintext => {
                status == 403 || status == 400 || (status == 401 && fetch_failed())
            }
        }
    }
}

/// Counts, shared by the client threads.
#[derive(Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<(Kind, u16), u64>,
    unexpected: Vec<String>,
    unexpected_count: u64,
    errors: Vec<String>,
    error_count: u64,
}

fn record(tally: &Mutex<Tally>, kind: Kind, label: &str, r: anyhow::Result<envoy::Response>) {
    let mut t = tally.lock().unwrap();
    match r {
        Ok(resp) => {
            *t.by_status.entry(resp.status).or_default() += 1;
            *t.by_kind.entry((kind, resp.status)).or_default() += 1;
            if !kind.expected(resp.status, &resp.body) {
                t.unexpected_count += 1;
                if t.unexpected.len() < 20 {
                    let body = String::from_utf8_lossy(&resp.body);
                    let line = format!(
                        "{kind:?} {label}: {} {}",
                        resp.status,
                        body.chars().take(120).collect::<String>()
                    );
                    t.unexpected.push(line);
                }
            }
        }
        Err(e) => {
            t.error_count += 1;
            if t.errors.len() < 20 {
                t.errors.push(format!("{kind:?} {label}: {e:#}"));
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn soak_all_four_filters_in_envoy_with_a_flapping_jwks_and_hostile_traffic() {
    let secs: u64 = std::env::var("MESHWARD_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(20);
    let bound_pct: f64 = std::env::var("MESHWARD_SOAK_RSS_PCT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if secs >= 600 { 5.0 } else { 10.0 });
    let total = Duration::from_secs(secs);
    // Warm-up: V8 tiers the modules up, the allocators and the rate-limit table reach their
    // working size. A fifth of the run, at least 15 s.
    let warmup = (total / 5).max(Duration::from_secs(15));

    // The JWKS server: its mode flips on the schedule; "slow" sleeps past the fetch timeout.
    let jwks_body = fixture("jwks.json");
    let mode = Arc::new(AtomicU8::new(Jwks::Up as u8));
    let fetches = Arc::new(AtomicU64::new(0));
    let jwks_server = {
        let mode = Arc::clone(&mode);
        let fetches = Arc::clone(&fetches);
        EchoUpstream::start_with(move |_| {
            fetches.fetch_add(1, Ordering::Relaxed);
            let (status, body) = match mode.load(Ordering::SeqCst) {
                0 => (200, jwks_body.clone().into_bytes()),
                1 => (503, b"down".to_vec()),
                2 => (
                    200,
                    b"{\"keys\": [{\"kty\": \"RSA\", \"n\": \x01garbage".to_vec(),
                ),
                _ => {
                    std::thread::sleep(Duration::from_millis(1500));
                    (200, jwks_body.clone().into_bytes())
                }
            };
            envoy::Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            }
        })
        .expect("JWKS server")
    };
    let echo = EchoUpstream::start_with(|_| envoy::Response {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"ok".to_vec(),
    })
    .expect("upstream");
    let certs = Certs::generate().expect("certs");

    let header_limits = json!({"maxRequestHeadersKb": 60, "maxHeadersCount": 100,
        "maxHeaderValueBytes": 8192, "maxPathBytes": 2048,
        "headersWithUnderscoresAction": "REJECT_REQUEST"});
    // A short cache, so keys are refetched in every phase of the schedule.
    let jwt = json!({"jwtRules": [{"issuer": "https://idp.example.com", "audiences": ["orders"],
        "jwksUri": "http://jwks.example.com/jwks.json", "jwksCluster": "jwks",
        "timeout": "1s", "jwksCacheDuration": "3s"}], "requireToken": true});
    let spiffe = json!({"policies": [
        {"name": "deny-admin", "action": "DENY",
         "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]},
        {"name": "frontend",
         "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/frontend"]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["/public/*", "/admin/*", "/admin"]}}]}]}
    ]});
    // Keys churn: the table (maxKeys 500) is always full and evicting. The default bucket is
    // large, so only the per-key buckets limit: 3 per second, which the churning keys stay under
    // (so valid traffic keeps reaching the upstream all run long) and the hot key does not.
    let rate_limit = json!({
        "tokenBucket": {"maxTokens": 1000000, "tokensPerFill": 1000000, "fillInterval": "1s"},
        "descriptors": [{"key": "request.headers[x-api-key]",
                         "tokenBucket": {"maxTokens": 3, "tokensPerFill": 3, "fillInterval": "1s"}}],
        "maxKeys": 500
    });
    let config = EnvoyConfig::new(echo.addr())
        .tls(&certs, 0)
        .cluster("jwks", jwks_server.addr())
        .concurrency(2)
        .component_log_levels("wasm:warn")
        .filter(WasmFilter::new(
            "header-limits",
            wasm("header_limits"),
            &header_limits.to_string(),
        ))
        .filter(WasmFilter::new(
            "jwt-authn",
            wasm("jwt_authn"),
            &jwt.to_string(),
        ))
        .filter(WasmFilter::new(
            "spiffe-authz",
            wasm("spiffe_authz"),
            &spiffe.to_string(),
        ))
        .filter(WasmFilter::new(
            "rate-limit",
            wasm("rate_limit"),
            &rate_limit.to_string(),
        ));
    let proxy = Envoy::start(&config).expect("Envoy starts with the four filters");
    let pid = proxy.pid();
    let tls_addr = proxy.tls_addr().expect("TLS listener");
    let frontend = certs.client_cert(&[FRONTEND], "frontend").unwrap();
    let intruder = certs.client_cert(&[INTRUDER], "intruder").unwrap();
    let bad_san = certs
        .client_cert(&["spiffe://cluster.local/ns//sa/x"], "bad")
        .unwrap();
    let timeout = Duration::from_secs(10);
    let c_front = Client::tls(tls_addr, &certs, Some(&frontend))
        .unwrap()
        .timeout(timeout);
    let c_intruder = Client::tls(tls_addr, &certs, Some(&intruder))
        .unwrap()
        .timeout(timeout);
    let c_bad = Client::tls(tls_addr, &certs, Some(&bad_san))
        .unwrap()
        .timeout(timeout);
    let c_plain = proxy.client().timeout(timeout);

    let alice = format!("Bearer {}", token("rs256_alice"));
    let forged = format!("Bearer {}", token("bad_signature"));
    let expired = format!("Bearer {}", token("expired"));
    let paths = [
        "/public/../admin",
        "//admin/users",
        "/%61dmin/x",
        "/public/./../admin/x",
        "/ADMIN/../admin",
    ];

    let start = Instant::now();
    let deadline = start + total;
    let stop = AtomicBool::new(false);
    let tally = Mutex::new(Tally::default());
    let samples: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let key_counter = AtomicU64::new(0);

    std::thread::scope(|scope| {
        // The flapper and the RSS sampler.
        scope.spawn(|| {
            let mut step = 0usize;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                let m = SCHEDULE[step % SCHEDULE.len()];
                mode.store(m as u8, Ordering::SeqCst);
                let until = (Instant::now() + STEP).min(deadline);
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
                step += 1;
            }
            mode.store(Jwks::Up as u8, Ordering::SeqCst);
        });
        scope.spawn(|| {
            while Instant::now() < deadline {
                samples
                    .lock()
                    .unwrap()
                    .push((start.elapsed().as_secs(), rss_kib(pid)));
                let until = (Instant::now() + Duration::from_secs(5)).min(deadline);
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            samples
                .lock()
                .unwrap()
                .push((start.elapsed().as_secs(), rss_kib(pid)));
        });
        // Traffic: two client threads, each cycling through every kind; keep-alive connections
        // per kind are reopened whenever Envoy closes one (every local reply closes it).
        for t in 0..2u64 {
            let (c_front, c_intruder, c_bad, c_plain) = (&c_front, &c_intruder, &c_bad, &c_plain);
            let (alice, forged, expired) = (&alice, &forged, &expired);
            let (tally, key_counter, paths) = (&tally, &key_counter, &paths);
            scope.spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    let kind = Kind::ALL[(i as usize) % Kind::ALL.len()];
                    i += 1;
                    let n = key_counter.fetch_add(1, Ordering::Relaxed);
                    let base = |path: &str| envoy::Request::get(path);
                    let (client, req, label) = match kind {
                        Kind::Valid => (
                            c_front,
                            base(&format!("/public/{n}"))
                                .header("authorization", alice)
                                // A new key every second request: buckets churn.
                                .header("x-api-key", format!("k{}", n / 2)),
                            "valid".to_string(),
                        ),
                        Kind::HotKey => (
                            c_front,
                            base("/public/hot")
                                .header("authorization", alice)
                                .header("x-api-key", "hot"),
                            "hot".to_string(),
                        ),
                        Kind::Forged => (
                            c_front,
                            base("/public/x").header("authorization", forged),
                            "forged".to_string(),
                        ),
                        Kind::Expired => (
                            c_front,
                            base("/public/x").header("authorization", expired),
                            "expired".to_string(),
                        ),
                        Kind::NoToken => (c_front, base("/public/x"), "no token".to_string()),
                        Kind::Oversize => (
                            c_front,
                            base("/public/x")
                                .header("authorization", alice)
                                .header("x-big", "a".repeat(9 * 1024)),
                            "9KiB value".to_string(),
                        ),
                        Kind::Underscore => (
                            c_front,
                            base("/public/x")
                                .header("authorization", alice)
                                .header("x_user", "admin"),
                            "x_user".to_string(),
                        ),
                        Kind::PathTrick => {
                            let p = paths[(n as usize) % paths.len()];
                            (
                                c_front,
                                base(p).header("authorization", alice),
                                p.to_string(),
                            )
                        }
                        Kind::WrongPeer => (
                            c_intruder,
                            base("/public/x").header("authorization", alice),
                            "intruder".to_string(),
                        ),
                        Kind::BadSan => (
                            c_bad,
                            base("/public/x").header("authorization", alice),
                            "bad SAN".to_string(),
                        ),
                        Kind::Plaintext => (
                            c_plain,
                            base("/public/x").header("authorization", alice),
                            "plaintext".to_string(),
                        ),
                    };
                    record(tally, kind, &label, client.send(&req));
                }
            });
        }
    });
    stop.store(true, Ordering::SeqCst);

    let tally = tally.into_inner().unwrap();
    let samples = samples.into_inner().unwrap();
    let total_requests: u64 = tally.by_status.values().sum::<u64>() + tally.error_count;
    println!(
        "\nsoak: {secs} s, {total_requests} requests, {} JWKS fetches, Envoy pid {pid}",
        fetches.load(Ordering::Relaxed)
    );
    println!("Envoy RSS over time (s: KiB):");
    for (t, kib) in &samples {
        println!("  {t:>5}: {kib}");
    }
    let after_warmup = samples
        .iter()
        .find(|(t, _)| *t >= warmup.as_secs())
        .map(|(_, k)| *k)
        .unwrap_or(0);
    let end = samples.last().map(|(_, k)| *k).unwrap_or(0);
    let growth = if after_warmup > 0 {
        (end as f64 - after_warmup as f64) * 100.0 / after_warmup as f64
    } else {
        f64::INFINITY
    };
    println!(
        "RSS after warm-up ({} s): {after_warmup} KiB, at the end: {end} KiB, growth {growth:.2}% (bound {bound_pct}%)",
        warmup.as_secs()
    );
    println!("statuses: {:?}", tally.by_status);
    for s in [200u16, 400, 401, 403, 429, 431] {
        println!("  {s}: {}", tally.by_status.get(&s).copied().unwrap_or(0));
    }
    let fivexx: u64 = tally
        .by_status
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    println!("per kind:");
    for kind in Kind::ALL {
        let row: Vec<String> = tally
            .by_kind
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, s), n)| format!("{s}×{n}"))
            .collect();
        println!("  {kind:?}: {}", row.join(" "));
    }
    println!(
        "5xx: {fivexx} (all unexpected), unexpected statuses: {}, client errors: {}",
        tally.unexpected_count, tally.error_count
    );
    for u in &tally.unexpected {
        println!("  unexpected: {u}");
    }
    for e in &tally.errors {
        println!("  error: {e}");
    }
    let log = proxy.log_contents();
    let crit = log.lines().filter(|l| l.contains("[critical]")).count();
    println!("Envoy log: {} lines, {crit} critical", log.lines().count());
    drop(proxy);

    assert!(
        total_requests > secs * 20,
        "too little traffic: {total_requests}"
    );
    assert_eq!(
        tally.unexpected_count, 0,
        "unexpected statuses: {:?}",
        tally.unexpected
    );
    assert_eq!(fivexx, 0, "5xx answers");
    assert_eq!(tally.error_count, 0, "client errors: {:?}", tally.errors);
    assert_eq!(crit, 0, "critical lines in Envoy's log (a wasm VM failed?)");
    for kind in Kind::ALL {
        assert!(
            tally.by_kind.keys().any(|(k, _)| *k == kind),
            "no {kind:?} request was answered"
        );
    }
    assert!(
        growth <= bound_pct,
        "Envoy RSS grew {growth:.2}% after warm-up (bound {bound_pct}%)"
    );
}
