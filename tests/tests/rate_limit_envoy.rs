//! rate-limit in a real Envoy 1.40 with `--concurrency 2`, driven at full speed by a load
//! generator (threads × keep-alive connections) that sends far more requests than the bucket
//! holds within one fill interval (1 h): the number allowed equals the bucket exactly, counted
//! from the responses and from Envoy's `wasmcustom.rate_limit.*` counters; per-SPIFFE-ID buckets
//! isolate two mTLS clients; per-JWT-subject buckets (jwt-authn in front) isolate two users.
//! Each test also checks from Envoy's per-worker listener stats that both workers accepted
//! connections, so the exactness is about two worker VMs sharing one bucket.
//!
//! Needs Envoy (`scripts/setup.sh`) and the release wasm (`scripts/build-wasm.sh`); either missing
//! fails the tests.

use std::collections::BTreeMap;
use std::time::Instant;

use meshward_rig::{self as envoy, Certs, Client, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use meshward_tests::{jwt_token as token, repo, wasm};

fn rate_limit(config: &str) -> WasmFilter {
    WasmFilter::new("rl", wasm("rate_limit"), config)
}

fn start(config: EnvoyConfig) -> Envoy {
    // Filter logs at info: a debug line per request would slow Envoy down for nothing.
    Envoy::start(&config.concurrency(2).component_log_levels("wasm:info"))
        .expect("Envoy starts (run scripts/setup.sh if it is missing)")
}

/// One load source: a client (plaintext or mTLS) and the request it sends.
struct Load {
    client: Client,
    request: envoy::Request,
}

/// Per load source: status → count, and the `x-ratelimit-limit` values seen on 200s.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    limits: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// Every source at once: `conns` keep-alive connections each (one thread per connection), each
/// sending `per_conn` requests back to back. Returns one tally per source and the request rate.
fn hammer(loads: &[Load], conns: usize, per_conn: usize) -> (Vec<Tally>, f64) {
    let started = Instant::now();
    let tallies = std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = loads
            .iter()
            .map(|load| {
                (0..conns)
                    .map(|_| {
                        s.spawn(move || {
                            let mut tally = Tally::default();
                            let mut conn = load.client.connect().expect("connect to Envoy");
                            for _ in 0..per_conn {
                                let r = conn.send(&load.request).expect("a response");
                                *tally.statuses.entry(r.status).or_default() += 1;
                                if r.status == 429 {
                                    assert_eq!(r.body_text(), "local_rate_limited");
                                    assert!(r.header("retry-after").is_some(), "{r:?}");
                                }
                                if let Some(limit) = r.header("x-ratelimit-limit") {
                                    *tally.limits.entry(limit.to_string()).or_default() += 1;
                                }
                            }
                            tally
                        })
                    })
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|hs| {
                let mut total = Tally::default();
                for h in hs {
                    let t = h.join().expect("load thread");
                    for (k, v) in t.statuses {
                        *total.statuses.entry(k).or_default() += v;
                    }
                    for (k, v) in t.limits {
                        *total.limits.entry(k).or_default() += v;
                    }
                }
                total
            })
            .collect::<Vec<_>>()
    });
    let sent = (loads.len() * conns * per_conn) as f64;
    (tallies, sent / started.elapsed().as_secs_f64())
}

/// Keep-alive requests (the rig's default is `connection: close`).
fn get(path: &str) -> envoy::Request {
    envoy::Request::get(path).close(false)
}

/// `listener.<name>.worker_<n>.downstream_cx_total` for both workers: each must have accepted
/// connections (and so its worker VM decided those connections' requests).
fn assert_both_workers_served(envoy: &Envoy, listener: &str) {
    let stats = envoy.stats().expect("admin stats");
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            let name = format!("listener.{listener}.worker_{w}.downstream_cx_total");
            *stats
                .get(&name)
                .unwrap_or_else(|| panic!("no {name} in Envoy's stats: not 2 workers?"))
        })
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "connections per worker {per_worker:?}: one worker did all the work"
    );
    assert!(
        !stats.contains_key(&format!("listener.{listener}.worker_2.downstream_cx_total")),
        "more than 2 workers"
    );
    println!("{listener}: connections per worker {per_worker:?}");
}

fn wasm_metric(envoy: &Envoy, name: &str) -> u64 {
    let metrics = envoy.wasm_metrics().expect("admin stats");
    *metrics
        .get(name)
        .unwrap_or_else(|| panic!("no wasmcustom.{name}: {metrics:?}"))
}

const CONNS: usize = 8;

#[test]
fn two_workers_allow_exactly_max_tokens_under_full_speed_load() {
    const TOKENS: u64 = 2_000;
    const PER_CONN: usize = 1_000; // 16,000 requests for 2,000 tokens
    let upstream = EchoUpstream::start().unwrap();
    let envoy = start(
        EnvoyConfig::new(upstream.addr()).filter(rate_limit(&format!(
            r#"{{"tokenBucket":{{"maxTokens":{TOKENS},"tokensPerFill":1,"fillInterval":"1h"}},
            "rateLimitHeaders":"DRAFT_VERSION_03"}}"#
        ))),
    );
    let loads = [
        Load {
            client: envoy.client(),
            request: get("/a"),
        },
        Load {
            client: envoy.client(),
            request: get("/b"),
        },
    ];
    let (tallies, rate) = hammer(&loads, CONNS, PER_CONN);
    let sent = (loads.len() * CONNS * PER_CONN) as u64;
    let ok: u64 = tallies.iter().map(|t| t.count(200)).sum();
    let rejected: u64 = tallies.iter().map(|t| t.count(429)).sum();
    println!("{sent} requests at {rate:.0}/s: {ok} allowed, {rejected} limited");
    assert_eq!(ok + rejected, sent, "only 200 and 429: {tallies:?}");
    assert_eq!(ok, TOKENS, "allowed from the responses");
    assert_eq!(wasm_metric(&envoy, "rate_limit.allowed"), TOKENS);
    let exhausted = wasm_metric(&envoy, "rate_limit.cas_retries_exhausted");
    assert_eq!(
        wasm_metric(&envoy, "rate_limit.limited") + exhausted,
        rejected
    );
    assert_eq!(wasm_metric(&envoy, "rate_limit.store_errors"), 0);
    assert_eq!(wasm_metric(&envoy, "rate_limit.late_creates"), 0);
    println!("cas_retries_exhausted: {exhausted}");
    assert_both_workers_served(&envoy, "plaintext");
}

#[test]
fn two_mtls_clients_each_get_exactly_their_own_spiffe_id_bucket() {
    const PER_ID: u64 = 300;
    // Every request is charged to the default bucket too: room for both identities and 5 more,
    // so it never refuses and is never the tightest bucket (it always has more than 5 tokens
    // left beyond what an identity's bucket has).
    const DEFAULT: u64 = 2 * PER_ID + 5;
    const PER_CONN: usize = 250; // 2,000 requests per identity for 300 tokens
    let certs = Certs::generate().unwrap();
    let frontend = certs
        .client_cert(
            &["spiffe://cluster.local/ns/default/sa/frontend"],
            "frontend",
        )
        .unwrap();
    let backend = certs
        .client_cert(&["spiffe://cluster.local/ns/default/sa/backend"], "backend")
        .unwrap();
    let upstream = EchoUpstream::start().unwrap();
    let envoy = start(
        EnvoyConfig::new(upstream.addr())
            .tls(&certs, 0)
            .filter(rate_limit(&format!(
                r#"{{"tokenBucket":{{"maxTokens":{DEFAULT},"tokensPerFill":1,"fillInterval":"1h"}},
                    "descriptors":[{{"key":"source.principal",
                        "tokenBucket":{{"maxTokens":{PER_ID},"tokensPerFill":1,"fillInterval":"1h"}}}}],
                    "rateLimitHeaders":"DRAFT_VERSION_03"}}"#
            ))),
    );
    let loads = [
        Load {
            client: envoy.tls_client(&certs, Some(&frontend)).unwrap(),
            request: get("/"),
        },
        Load {
            client: envoy.tls_client(&certs, Some(&backend)).unwrap(),
            request: get("/"),
        },
    ];
    let (tallies, rate) = hammer(&loads, CONNS, PER_CONN);
    println!("mTLS at {rate:.0}/s: {tallies:?}");
    for (who, t) in ["frontend", "backend"].iter().zip(&tallies) {
        assert_eq!(t.count(200), PER_ID, "{who}: {t:?}");
        assert_eq!(t.count(429), (CONNS * PER_CONN) as u64 - PER_ID, "{who}");
        // Every answer was about the SPIFFE ID's bucket, never the default one.
        assert_eq!(
            t.limits.keys().collect::<Vec<_>>(),
            [&PER_ID.to_string()],
            "{who}"
        );
    }
    assert_eq!(wasm_metric(&envoy, "rate_limit.allowed"), 2 * PER_ID);
    // Every allowed request was charged to the default bucket as well, and no refused one: an
    // anonymous client (no client certificate) finds exactly 5 tokens there.
    let anonymous = envoy.tls_client(&certs, None).unwrap();
    let r = anonymous.send(&envoy::Request::get("/")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some(DEFAULT.to_string().as_str())
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
    assert_both_workers_served(&envoy, "tls");
}

#[test]
fn two_jwt_subjects_each_get_exactly_their_own_bucket_behind_jwt_authn() {
    const PER_USER: u64 = 250;
    // The default bucket is charged too; sized so it never refuses (see the mTLS test).
    const DEFAULT: u64 = 2 * PER_USER + 5;
    const PER_CONN: usize = 150; // 1,200 requests per user for 250 tokens
    let jwt_policy =
        std::fs::read_to_string(repo().join("policies/jwt-authn/inline-fixture-keys.json"))
            .expect("the inline-JWKS policy");
    let upstream = EchoUpstream::start().unwrap();
    let envoy = start(
        EnvoyConfig::new(upstream.addr())
            .filter(WasmFilter::new("jwt", wasm("jwt_authn"), &jwt_policy))
            .filter(rate_limit(&format!(
                r#"{{"tokenBucket":{{"maxTokens":{DEFAULT},"tokensPerFill":1,"fillInterval":"1h"}},
                    "descriptors":[{{"key":"request.auth.principal",
                        "tokenBucket":{{"maxTokens":{PER_USER},"tokensPerFill":1,"fillInterval":"1h"}}}}],
                    "rateLimitHeaders":"DRAFT_VERSION_03"}}"#
            ))),
    );
    let with_token = |name: &str| Load {
        client: envoy.client(),
        request: get("/orders").header("authorization", format!("Bearer {}", token(name))),
    };
    let loads = [with_token("rs256_alice"), with_token("rs256_bob")];
    let (tallies, rate) = hammer(&loads, CONNS, PER_CONN);
    println!("JWT at {rate:.0}/s: {tallies:?}");
    for (who, t) in ["alice", "bob"].iter().zip(&tallies) {
        assert_eq!(t.count(200), PER_USER, "{who}: {t:?}");
        assert_eq!(t.count(429), (CONNS * PER_CONN) as u64 - PER_USER, "{who}");
        assert_eq!(
            t.limits.keys().collect::<Vec<_>>(),
            [&PER_USER.to_string()],
            "{who}"
        );
    }
    assert_eq!(wasm_metric(&envoy, "rate_limit.allowed"), 2 * PER_USER);
    // The identity comes from the verified token only: a forged one is refused by jwt-authn
    // before it could draw from anyone's bucket.
    let forged = envoy
        .client()
        .send(&envoy::Request::get("/orders").header(
            "authorization",
            format!("Bearer {}", token("bad_signature")),
        ))
        .unwrap();
    assert_eq!(forged.status, 401);
    assert_both_workers_served(&envoy, "plaintext");
}
