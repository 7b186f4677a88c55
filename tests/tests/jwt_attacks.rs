//! jwt-authn in a real Envoy 1.40 where a scenario file cannot say it (issue 12, finding 8): the
//! first request of a cold worker needs the JWKS, and its client gives up (closes the connection,
//! so Envoy resets the stream) while the fetch is in flight. The fetch belongs to the filter's
//! root context, so it completes and the next request is served from it at once. (A fetch started
//! from the request's own context is cancelled by Envoy with that stream: the next request then
//! found a lease held by a fetch that would never answer, waited `timeout + 1 s` and got 401.)
//!
//! Needs Envoy (`scripts/setup.sh`) and the release wasm (`scripts/build-wasm.sh`); either missing
//! fails the test.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use meshward_tests::{jwt_token as token, repo, wasm};

/// How long the JWKS server takes to answer.
const JWKS_LATENCY: Duration = Duration::from_millis(1_500);

fn wasm_metric(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .wasm_metrics()
        .expect("admin stats")
        .get(name)
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_client_reset_during_the_first_fetch_does_not_cancel_it() {
    let jwks = std::fs::read(repo().join("tests/fixtures/jwt/jwks.json")).expect("jwks.json");
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let jwks_server = EchoUpstream::start_with(move |_| {
        std::thread::sleep(JWKS_LATENCY);
        counter.fetch_add(1, Ordering::SeqCst);
        envoy::Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: jwks.clone(),
        }
    })
    .expect("JWKS server");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let config = serde_json::json!({"jwtRules": [{
        "issuer": "https://idp.example.com",
        "audiences": ["orders"],
        "jwksUri": "http://jwks.example.com/jwks.json",
        "jwksCluster": "jwks",
        "timeout": "5s",
        "jwksCacheDuration": "300s",
    }]})
    .to_string();
    // One worker: both requests meet the same VM, the one whose first fetch is in question.
    let envoy = Envoy::start(
        &EnvoyConfig::new(upstream.addr())
            .filter(WasmFilter::new("jwt", wasm("jwt_authn"), &config))
            .cluster("jwks", jwks_server.addr())
            .concurrency(1)
            .component_log_levels("wasm:info"),
    )
    .expect("Envoy starts (run scripts/setup.sh if it is missing)");

    // The impatient client: sends its request, then closes the connection mid-fetch.
    let mut impatient = TcpStream::connect(envoy.plaintext_addr()).expect("connect");
    write!(
        impatient,
        "GET /orders HTTP/1.1\r\nhost: shop.example.com\r\nauthorization: Bearer {}\r\n\r\n",
        token("rs256_alice")
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    drop(impatient);

    // The fetch still lands and installs the keys.
    let deadline = Instant::now() + JWKS_LATENCY + Duration::from_secs(3);
    while wasm_metric(&envoy, "jwt_authn.jwks_fetch_success") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        wasm_metric(&envoy, "jwt_authn.jwks_fetch_success"),
        1,
        "the fetch survived the reset of the stream that needed it; metrics: {:?}",
        envoy.wasm_metrics()
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // The next request is served from those keys at once, without a fetch of its own.
    let started = Instant::now();
    let next = envoy
        .client()
        .send(
            &envoy::Request::get("/orders")
                .authority(Some("shop.example.com"))
                .header("authorization", format!("Bearer {}", token("rs256_bob"))),
        )
        .expect("second request");
    assert_eq!(next.status, 200, "{}", next.body_text());
    assert!(
        started.elapsed() < JWKS_LATENCY,
        "served from the first fetch, not a new one ({:?})",
        started.elapsed()
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1, "no second fetch");
    assert_eq!(wasm_metric(&envoy, "jwt_authn.jwks_fetch_failed"), 0);
}
