//! jwt-authn's remote JWKS across two workers on the virtual clock (the harness only: Envoy's
//! clock cannot be moved). What docs/jwt-authn.md ("Remote JWKS") promises:
//! - one fetch per refresh period for all workers (the CAS lease in shared data), also when the
//!   first requests of both workers arrive while the first fetch is in flight;
//! - a rotated key is picked up by at most one rate-limited refetch; unknown `kid`s never storm;
//! - a failed refresh (5xx, garbage, dead, reset, timeout) keeps the last good keys; with no keys
//!   ever fetched the answer is 401 `Jwks remote fetch is failed`;
//! - a request paused for keys is answered within its bound on the virtual clock.
//!
//! Fetches are counted twice: the callouts the `jwks` cluster received and the filter's
//! `jwt_authn.jwks_fetch_*` counters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshward_harness::{CalloutResponse, Cluster, FilterSpec, Host, Outcome, Request, Started};
use meshward_rig::default_wasm_dir;

const CLUSTER: &str = "jwks";
/// `jwksCacheDuration` of most tests: refresh at 60 s − min(60 s / 5, 60 s) = 48 s after a fetch.
const CACHE_S: u64 = 60;
const REFRESH_S: u64 = 48;
/// `timeout` of the fetch; a paused request waits at most this + 1 s.
const TIMEOUT_MS: u64 = 2_000;
const NO_KEY: &str = "Jwks doesn't have key to match kid or alg from Jwt";
const FETCH_FAILED: &str = "Jwks remote fetch is failed";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasm() -> PathBuf {
    let p = default_wasm_dir(&root()).join("jwt_authn.wasm");
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        p.display()
    );
    p
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/jwt").join(name)).unwrap()
}

/// Token fixtures by name (tests/fixtures/jwt/tokens.json, signed by Python `cryptography`).
fn tokens() -> HashMap<String, String> {
    let doc: serde_json::Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    doc["tokens"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["token"].as_str().unwrap().to_string()))
        .collect()
}

fn config(cache_s: u64) -> String {
    serde_json::json!({
        "jwtRules": [{
            "issuer": "https://idp.example.com",
            "audiences": ["orders"],
            "jwksUri": "http://jwks.example.com/jwks.json",
            "jwksCluster": CLUSTER,
            "timeout": format!("{TIMEOUT_MS}ms"),
            "jwksCacheDuration": format!("{cache_s}s"),
        }]
    })
    .to_string()
}

fn host(cluster: Cluster, cache_s: u64) -> Host {
    Host::builder()
        .workers(2)
        .filter(
            FilterSpec::from_file(wasm())
                .unwrap()
                .name("jwt-authn")
                .config_json(&config(cache_s)),
        )
        .cluster(CLUSTER, cluster)
        .build()
        .unwrap()
}

/// A JWKS server whose answer the test changes while the host runs.
#[derive(Clone)]
struct Server(Arc<Mutex<CalloutResponse>>);

impl Server {
    fn new(body: &str) -> Self {
        Server(Arc::new(Mutex::new(CalloutResponse::new(200, body))))
    }
    fn serve(&self, response: CalloutResponse) {
        *self.0.lock().unwrap() = response;
    }
    fn cluster(&self) -> Cluster {
        let this = self.clone();
        Cluster::handler(move |_| this.0.lock().unwrap().clone())
    }
}

fn req(token: &str, worker: usize) -> Request {
    Request::get("/orders")
        .authority("shop.example.com")
        .header("authorization", &format!("Bearer {token}"))
        .worker(worker)
}

/// Callouts the JWKS cluster received.
fn fetches(host: &Host) -> usize {
    host.callouts()
        .iter()
        .filter(|c| c.cluster == CLUSTER)
        .count()
}

fn metric(host: &Host, name: &str) -> i64 {
    host.metric(name).unwrap_or(0)
}

fn successes(host: &Host) -> i64 {
    metric(host, "jwt_authn.jwks_fetch_success")
}

fn failures(host: &Host) -> i64 {
    metric(host, "jwt_authn.jwks_fetch_failed")
}

/// Virtual ms since the host was built.
fn elapsed_ms(host: &Host, start_ns: u64) -> u64 {
    (host.now_ns() - start_ns) / 1_000_000
}

/// Moves the clock to `ms` after `start_ns`.
fn advance_to(host: &Host, start_ns: u64, ms: u64) {
    let now = elapsed_ms(host, start_ns);
    assert!(ms >= now, "clock at {now} ms, asked for {ms} ms");
    host.advance(Duration::from_millis(ms - now));
}

#[track_caller]
fn assert_allowed(out: &Outcome, what: &str) {
    assert_eq!(
        out.status(),
        200,
        "{what}: {:?} {}",
        out.verdict,
        out.response.body_text()
    );
    assert!(out.reached_upstream(), "{what}");
}

#[track_caller]
fn assert_denied(out: &Outcome, body: &str, what: &str) {
    assert_eq!(out.status(), 401, "{what}: {:?}", out.verdict);
    assert_eq!(out.response.body_text(), body, "{what}");
    assert_eq!(
        out.response.header("www-authenticate"),
        Some("Bearer realm=\"http://shop.example.com/orders\", error=\"invalid_token\""),
        "{what}"
    );
    assert!(!out.reached_upstream(), "{what}");
}

/// Runs the clock in `step_ms` steps (firing ticks and callouts) until `started` finishes;
/// returns the outcome and the virtual ms since `start_ns` at which it was seen finished.
fn finish_within(
    host: &Host,
    mut started: Started,
    start_ns: u64,
    limit_ms: u64,
    step_ms: u64,
) -> (Outcome, u64) {
    loop {
        match host.finish(started) {
            Ok(out) => return (out, elapsed_ms(host, start_ns)),
            Err(s) => started = s,
        }
        let now = elapsed_ms(host, start_ns);
        assert!(
            now < limit_ms,
            "request on worker {} still paused at {now} ms",
            started.worker()
        );
        host.advance(Duration::from_millis(step_ms));
    }
}

/// Sends `req` and lets the clock run (ticks included, which `Host::send` does not wait for)
/// until it is answered, at most `limit_ms` of virtual time.
fn send_ticking(host: &Host, req: &Request, limit_ms: u64) -> Outcome {
    let start = host.now_ns();
    finish_within(host, host.start(req), start, limit_ms, 100).0
}

#[test]
fn one_fetch_per_refresh_period_across_both_workers() {
    let t = tokens();
    let host = host(Server::new(&fixture("jwks.json")).cluster(), CACHE_S);
    let t0 = host.now_ns();

    // The first request fetches; the other worker's first request adopts those keys from
    // shared data at once (no second fetch, no wait).
    assert_allowed(&host.send(&req(&t["rs256_alice"], 0)), "first request");
    assert_eq!(fetches(&host), 1);
    let second = host.send(&req(&t["rs256_bob"], 1));
    assert_allowed(&second, "worker 1's first request");
    assert_eq!(second.worker, 1);
    assert_eq!(elapsed_ms(&host, t0), 0, "nobody waited");
    assert_eq!(fetches(&host), 1, "worker 1 used worker 0's fetch");

    let call = &host.callouts()[0];
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header(":path"), Some("/jwks.json"));
    assert_eq!(call.header(":authority"), Some("jwks.example.com"));
    assert_eq!(call.timeout, Duration::from_millis(TIMEOUT_MS));

    // Five refresh periods, requests on both workers in each: exactly one fetch per period.
    let names = ["rs256_alice", "rs256_bob", "es256_bob", "eddsa_carol"];
    for period in 1..=5u64 {
        let due = period * REFRESH_S * 1000;
        advance_to(&host, t0, due - 1_000);
        for (i, name) in names.iter().enumerate() {
            assert_allowed(&host.send(&req(&t[*name], i % 2)), name);
        }
        assert_eq!(
            fetches(&host) as u64,
            period,
            "before refresh {period} (at {due} ms)"
        );
        advance_to(&host, t0, due + 1_000);
        for (i, name) in names.iter().enumerate() {
            assert_allowed(&host.send(&req(&t[*name], (i + 1) % 2)), name);
        }
        assert_eq!(
            fetches(&host) as u64,
            period + 1,
            "after refresh {period} (at {due} ms)"
        );
    }
    assert_eq!(successes(&host), 6, "the counter agrees with the cluster");
    assert_eq!(failures(&host), 0);
    assert!(!host.vm_failed("jwt-authn", Some(0)) && !host.vm_failed("jwt-authn", Some(1)));
}

#[test]
fn first_requests_on_both_workers_share_the_fetch_in_flight() {
    let t = tokens();
    let latency = 300;
    let host = host(
        Server::new(&fixture("jwks.json"))
            .cluster()
            .latency(Duration::from_millis(latency)),
        CACHE_S,
    );
    let t0 = host.now_ns();
    let a = host.start(&req(&t["rs256_alice"], 0));
    let b = host.start(&req(&t["es256_bob"], 1));
    let a = host
        .finish(a)
        .expect_err("worker 0's request waits for keys");
    let b = host
        .finish(b)
        .expect_err("worker 1's request waits for keys");
    // The fetch is dispatched by worker 0's root context, on the queue wake-up its request
    // posted (Envoy runs it right after the request's callback): let that run, at time 0.
    host.advance(Duration::ZERO);
    assert_eq!(fetches(&host), 1, "one fetch for both");

    let (out_a, at_a) = finish_within(&host, a, t0, 5_000, 50);
    assert_allowed(&out_a, "worker 0 (the fetcher)");
    assert_eq!(at_a, latency, "resumed when the response arrived");
    // Worker 1 adopts the keys from shared data on its next tick (500 ms period).
    let (out_b, at_b) = finish_within(&host, b, t0, 5_000, 50);
    assert_allowed(&out_b, "worker 1");
    assert!(at_b <= 500, "worker 1 resumed at {at_b} ms");
    assert_eq!(out_b.worker, 1);

    host.advance(Duration::from_secs(10));
    assert_eq!(fetches(&host), 1, "still one fetch after the ticks");
    assert_eq!(successes(&host), 1);
}

#[test]
fn rotated_key_is_accepted_after_one_rate_limited_refetch() {
    let t = tokens();
    let server = Server::new(&fixture("jwks.json"));
    // A long cache so that only the unknown kid can cause a refetch.
    let host = host(server.cluster(), 3_600);
    let t0 = host.now_ns();
    assert_allowed(&host.send(&req(&t["rs256_alice"], 0)), "old key");
    assert_eq!(fetches(&host), 1);

    // The IdP rotates: rsa-1 out, rsa-2 in.
    server.serve(CalloutResponse::new(200, fixture("jwks-rotated.json")));
    advance_to(&host, t0, 10_000);
    for w in [0, 1, 0, 1] {
        assert_denied(
            &host.send(&req(&t["rotated_alice"], w)),
            NO_KEY,
            "new kid within 30 s of the last fetch",
        );
    }
    assert_eq!(fetches(&host), 1, "refetch rate-limited (30 s)");

    advance_to(&host, t0, 30_000);
    let out = host.send(&req(&t["rotated_alice"], 1));
    assert_allowed(&out, "new kid after 30 s: one refetch");
    assert_eq!(fetches(&host), 2);
    // Worker 0 has not ticked since: its copy is stale, it adopts the new keys from shared data.
    assert_allowed(
        &host.send(&req(&t["rotated_alice"], 0)),
        "worker 0, new kid",
    );
    assert_eq!(elapsed_ms(&host, t0), 30_000, "nobody waited for a tick");
    assert_eq!(fetches(&host), 2, "one refetch for both workers");
    // The removed key is gone everywhere, and asking for it does not refetch again.
    for w in [0, 1] {
        assert_denied(&host.send(&req(&t["rs256_bob"], w)), NO_KEY, "removed kid");
    }
    assert_eq!(fetches(&host), 2);
    assert_eq!(successes(&host), 2);
}

#[test]
fn unknown_kids_do_not_cause_a_fetch_storm() {
    let t = tokens();
    let host = host(Server::new(&fixture("jwks.json")).cluster(), 3_600);
    let t0 = host.now_ns();
    assert_allowed(&host.send(&req(&t["rs256_alice"], 0)), "keys");
    // Four 30 s windows, 20 requests with an unknown kid in each, on both workers.
    for window in 0..4u64 {
        advance_to(&host, t0, window * 30_000 + 5_000);
        for i in 0..20 {
            assert_denied(
                &host.send(&req(&t["wrong_kid"], i % 2)),
                NO_KEY,
                "wrong kid",
            );
        }
        let allowed = 1 + window as usize;
        assert_eq!(
            fetches(&host),
            allowed,
            "window {window}: at most one refetch per 30 s for every worker"
        );
        // A known kid is unaffected.
        assert_allowed(&host.send(&req(&t["es256_bob"], 1)), "known kid");
    }
    assert_eq!(successes(&host), 4);
}

/// JWKS servers that fail, and how long (virtual ms) one attempt takes.
fn failing_servers() -> Vec<(&'static str, Cluster)> {
    vec![
        (
            "503",
            Cluster::respond(CalloutResponse::new(503, "unavailable")),
        ),
        (
            "garbage body",
            Cluster::respond(CalloutResponse::new(200, fixture("garbage.txt"))),
        ),
        (
            "JSON without keys",
            Cluster::respond(CalloutResponse::new(200, r#"{"keys":[]}"#)),
        ),
        ("dead cluster", Cluster::dead()),
        ("reset", Cluster::reset()),
        ("timeout", Cluster::hang()),
    ]
}

#[test]
fn last_good_keys_are_kept_when_a_refresh_fails() {
    let t = tokens();
    for (what, bad) in failing_servers() {
        let good = Server::new(&fixture("jwks.json"));
        let host = host(good.cluster(), CACHE_S);
        let t0 = host.now_ns();
        assert_allowed(&host.send(&req(&t["rs256_alice"], 0)), what);
        host.set_cluster(CLUSTER, bad);

        // The refresh at 48 s fails; a request during the attempt is not held up.
        advance_to(&host, t0, REFRESH_S * 1000);
        assert!(fetches(&host) >= 2, "{what}: refresh attempted");
        let before = host.now_ns();
        assert_allowed(&host.send(&req(&t["rs256_bob"], 1)), what);
        assert_eq!(host.now_ns(), before, "{what}: served without waiting");
        advance_to(&host, t0, REFRESH_S * 1000 + TIMEOUT_MS + 500);
        assert!(failures(&host) >= 1, "{what}: failure counted");
        assert_eq!(successes(&host), 1, "{what}");
        // Tokens never seen by these VMs (no cache hit): verified with the kept keys.
        assert_allowed(&host.send(&req(&t["es256_bob"], 0)), what);
        assert_allowed(&host.send(&req(&t["eddsa_carol"], 1)), what);

        // Past the cache duration, still failing: the keys stay.
        let retry_from = elapsed_ms(&host, t0);
        let calls_before = fetches(&host);
        advance_to(&host, t0, 120_000);
        assert_allowed(&host.send(&req(&t["ps256_alice"], 0)), what);
        assert_allowed(&host.send(&req(&t["no_kid"], 1)), what);
        // Retries are spaced by the 1 s failure back-off (plus the attempt's own duration),
        // for all workers together.
        let retries = (fetches(&host) - calls_before) as u64;
        let window_s = (120_000 - retry_from) / 1000;
        assert!(
            retries >= 1 && retries <= window_s + 1,
            "{what}: {retries} retries in {window_s} s"
        );
        // Every attempt but the first succeeded or is still in flight (timeout) is a failure.
        let unfinished = fetches(&host) - 1 - failures(&host) as usize;
        assert!(unfinished <= 1, "{what}: {unfinished} attempts not counted");

        // The server recovers: the next retry installs fresh keys, and retries stop.
        host.set_cluster(CLUSTER, good.cluster());
        host.advance(Duration::from_millis(TIMEOUT_MS + 2_000));
        assert_eq!(successes(&host), 2, "{what}: recovered");
        let failed_so_far = failures(&host);
        let calls_so_far = fetches(&host);
        host.advance(Duration::from_secs(REFRESH_S - 10));
        assert_eq!(failures(&host), failed_so_far, "{what}");
        assert_eq!(fetches(&host), calls_so_far, "{what}: fresh keys, no fetch");
        assert!(!host.vm_failed("jwt-authn", Some(0)) && !host.vm_failed("jwt-authn", Some(1)));
    }
}

#[test]
fn without_keys_ever_fetched_requests_fail_with_fetch_failed() {
    let t = tokens();
    for (what, bad) in failing_servers() {
        let host = host(bad, CACHE_S);
        let t0 = host.now_ns();
        let out = host.send(&req(&t["rs256_alice"], 0));
        assert_denied(&out, FETCH_FAILED, what);
        let waited = elapsed_ms(&host, t0);
        let bound = if what == "timeout" { TIMEOUT_MS } else { 0 };
        assert_eq!(waited, bound, "{what}: answered when the fetch ended");
        assert_eq!(fetches(&host), 1, "{what}");
        assert_eq!(failures(&host), 1, "{what}");
        // Right after the failure the other worker fails fast, without a fetch of its own.
        let before = host.now_ns();
        assert_denied(&host.send(&req(&t["rs256_bob"], 1)), FETCH_FAILED, what);
        assert_eq!(host.now_ns(), before, "{what}: no wait");
        assert_eq!(fetches(&host), 1, "{what}: no second fetch");
        // Later requests still never pass: there is no built-in key.
        // (They may wait for a retry in flight, up to its timeout.)
        host.advance(Duration::from_secs(30));
        let limit = TIMEOUT_MS + 1_500;
        assert_denied(
            &send_ticking(&host, &req(&t["es256_bob"], 0), limit),
            FETCH_FAILED,
            what,
        );
        assert_denied(
            &send_ticking(&host, &req(&t["eddsa_carol"], 1), limit),
            FETCH_FAILED,
            what,
        );
        assert_eq!(successes(&host), 0, "{what}");
        assert_eq!(metric(&host, "jwt_authn.allowed"), 0, "{what}");
    }
}

#[test]
fn a_request_paused_on_a_fetch_that_never_answers_is_answered_by_its_bound() {
    let t = tokens();
    let host = host(Cluster::hang(), CACHE_S);
    let t0 = host.now_ns();
    let a = host.start(&req(&t["rs256_alice"], 0));
    let b = host.start(&req(&t["es256_bob"], 1));
    host.advance(Duration::ZERO); // the root's queue wake-up dispatches the fetch
    assert_eq!(fetches(&host), 1, "one fetch for both");
    advance_to(&host, t0, TIMEOUT_MS - 100);
    let a = host
        .finish(a)
        .expect_err("still waiting before the timeout");
    let b = host
        .finish(b)
        .expect_err("still waiting before the timeout");

    // The fetcher's request ends with the fetch's timeout; the other worker's by its own bound
    // (timeout + 1 s) at the latest, on the tick that sees the shared failure.
    let (out_a, at_a) = finish_within(&host, a, t0, 10_000, 50);
    assert_denied(&out_a, FETCH_FAILED, "fetcher");
    assert_eq!(at_a, TIMEOUT_MS);
    assert_eq!(fetches(&host), 1);
    let (out_b, at_b) = finish_within(&host, b, t0, 10_000, 50);
    assert_denied(&out_b, FETCH_FAILED, "other worker");
    assert!(at_b <= TIMEOUT_MS + 1_000, "worker 1 answered at {at_b} ms");
    assert!(failures(&host) >= 1);
}

#[test]
fn a_paused_request_on_a_worker_that_cannot_fetch_is_bounded_too() {
    // Worker 1 waits on worker 0's lease; worker 0's fetch is slow but inside its timeout.
    // Worker 1 is resumed once the keys land, well within its own bound.
    let t = tokens();
    let host = host(
        Server::new(&fixture("jwks.json"))
            .cluster()
            .latency(Duration::from_millis(1_700)),
        CACHE_S,
    );
    let t0 = host.now_ns();
    let a = host.start(&req(&t["rs256_alice"], 0));
    let b = host.start(&req(&t["rs256_alice"], 1));
    let (out_a, at_a) = finish_within(&host, a, t0, 10_000, 50);
    assert_allowed(&out_a, "fetcher");
    assert_eq!(at_a, 1_700);
    let (out_b, at_b) = finish_within(&host, b, t0, 10_000, 50);
    assert_allowed(&out_b, "waiter on worker 1");
    assert!(at_b <= 2_000, "worker 1 resumed at {at_b} ms (next tick)");
    assert_eq!(fetches(&host), 1);
}

fn stale_host(server: &Server, max_stale: &str) -> Host {
    let config = serde_json::json!({
        "jwtRules": [{
            "issuer": "https://idp.example.com",
            "audiences": ["orders"],
            "jwksUri": "http://jwks.example.com/jwks.json",
            "jwksCluster": CLUSTER,
            "timeout": format!("{TIMEOUT_MS}ms"),
            "jwksCacheDuration": format!("{CACHE_S}s"),
            "jwksMaxStale": max_stale,
        }]
    })
    .to_string();
    Host::builder()
        .workers(2)
        .filter(
            FilterSpec::from_file(wasm())
                .unwrap()
                .name("jwt-authn")
                .config_json(&config),
        )
        .cluster(CLUSTER, server.cluster())
        .build()
        .unwrap()
}

#[test]
fn last_good_keys_are_dropped_after_jwks_max_stale() {
    // Issue 12, finding 9: last-good keys must not live forever while the IdP is down.
    let t = tokens();
    let server = Server::new(&fixture("jwks.json"));
    let host = stale_host(&server, "30s");
    let t0 = host.now_ns();
    assert_allowed(&host.send(&req(&t["rs256_alice"], 0)), "fresh keys");
    server.serve(CalloutResponse::new(503, "down"));
    // Expiry at 60 s; still served from the last good keys until 60 + 30 s.
    advance_to(&host, t0, (CACHE_S + 25) * 1000);
    for w in [0, 1] {
        assert_allowed(
            &host.send(&req(&t["rs256_bob"], w)),
            "stale but within jwksMaxStale",
        );
    }
    advance_to(&host, t0, (CACHE_S + 31) * 1000);
    for (w, name) in [(0, "es256_bob"), (1, "eddsa_carol"), (0, "rs256_alice")] {
        assert_denied(
            &send_ticking(&host, &req(&t[name], w), TIMEOUT_MS + 2_000),
            FETCH_FAILED,
            "past jwksMaxStale (cache hit or not, either worker)",
        );
    }
    // The IdP comes back: the next retry installs keys and requests pass again.
    server.serve(CalloutResponse::new(200, fixture("jwks.json")));
    host.advance(Duration::from_secs(2));
    assert_allowed(
        &send_ticking(&host, &req(&t["rs256_alice"], 1), TIMEOUT_MS + 2_000),
        "recovered",
    );
    assert_allowed(
        &send_ticking(&host, &req(&t["rs256_alice"], 0), TIMEOUT_MS + 2_000),
        "recovered on the other worker",
    );
}

#[test]
fn many_requests_parked_on_one_fetch_are_all_resumed_in_order_with_one_fetch() {
    // The paused-request list is a map by context id (O(1) to add, replace and remove); 2000
    // requests wait on one slow first fetch on one worker and all continue when it lands.
    let t = tokens();
    let host = host(
        Server::new(&fixture("jwks.json"))
            .cluster()
            .latency(Duration::from_millis(400)),
        CACHE_S,
    );
    let t0 = host.now_ns();
    let names = ["rs256_alice", "rs256_bob", "es256_bob", "eddsa_carol"];
    let started: Vec<Started> = (0..2000)
        .map(|i| host.start(&req(&t[names[i % names.len()]], 0)))
        .collect();
    let mut done = 0;
    for s in started {
        let (out, at) = finish_within(&host, s, t0, 5_000, 100);
        assert_allowed(&out, "parked request");
        assert!(at <= 500, "resumed at {at} ms");
        done += 1;
    }
    assert_eq!(done, 2000);
    assert_eq!(fetches(&host), 1, "one fetch for all");
    assert_eq!(metric(&host, "jwt_authn.allowed"), 2000);
}

#[test]
fn a_request_that_needs_keys_does_not_own_the_fetch() {
    // Issue 12, finding 8. The fetch is the root context's: the request that triggered it only
    // waits. Its answer then serves it and every later request, and the callout is not tied to
    // the first request's stream (in Envoy a reset stream cancels its own callouts). The harness
    // has no client reset yet, so this pins what it can see: the first request is answered and
    // gone before the next arrives, and the next one needs no fetch of its own.
    let t = tokens();
    let host = host(
        Server::new(&fixture("jwks.json"))
            .cluster()
            .latency(Duration::from_millis(300)),
        CACHE_S,
    );
    let t0 = host.now_ns();
    let first = host.start(&req(&t["rs256_alice"], 0));
    let first = host.finish(first).expect_err("waits for keys");
    assert_eq!(
        fetches(&host),
        0,
        "not dispatched from the request's callback"
    );
    host.advance(Duration::ZERO);
    assert_eq!(
        fetches(&host),
        1,
        "dispatched by the root on its queue wake-up"
    );
    let (out, at) = finish_within(&host, first, t0, 5_000, 50);
    assert_allowed(&out, "first request");
    assert_eq!(at, 300);
    assert_allowed(&host.send(&req(&t["rs256_bob"], 0)), "next request");
    assert_eq!(fetches(&host), 1);
}
