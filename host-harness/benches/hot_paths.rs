//! Criterion benches of the harness's hot paths:
//! - `host_call`: the cost of one proxy-wasm host call from wasm (a request whose filter makes
//!   100 `proxy_get_header_map_value` calls, against the same request making none);
//! - `request`: one request through the harness with each filter (realistic policies), against
//!   the no-op module (the floor: context lifecycle and ABI crossings with no work).
//!
//! Run: `scripts/build-wasm.sh && cargo bench --profile host-release -p meshward-harness --bench hot_paths`
//! (the `host-release` profile shares the `meshward` binary's build; see BENCHMARKS.md).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use meshward_harness::{FilterSpec, Host, Request, Tls};
use meshward_rig::default_wasm_dir;

/// The `meshward` binary's allocator, so that these figures and `meshward bench`'s agree.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Host calls each request of the `host_call/100` bench makes.
const CALLS: usize = 100;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn filter(stem: &str) -> FilterSpec {
    let path = default_wasm_dir(&repo()).join(format!("{stem}.wasm"));
    FilterSpec::from_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-wasm.sh)", path.display()))
}

fn policy(rel: &str) -> Vec<u8> {
    let path = repo().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn host(spec: FilterSpec) -> Host {
    Host::builder()
        .filter(spec)
        .build()
        .unwrap_or_else(|e| panic!("host: {e}"))
}

/// A minimal proxy-wasm module whose `proxy_on_request_headers` calls
/// `proxy_get_header_map_value(request headers, "x-a")` `calls` times. Its allocator is a bump
/// pointer reset on every request, so the work per call is the host call itself.
fn host_call_module(calls: usize) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 1024))
  (data (i32.const 0) "x-a")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
    (global.set $bump (i32.const 1024))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const {calls})))
        (drop (call $get (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 20)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad WAT: {e}"))
}

fn host_calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_call");
    let req = Request::get("/").header("x-a", "value-of-x-a");
    for calls in [0, CALLS] {
        let h = host(FilterSpec::from_bytes(host_call_module(calls)).name("calls"));
        assert_eq!(h.send(&req).status(), 200, "the module must pass requests");
        group.bench_function(
            format!("request making {calls} get_header_map_value"),
            |b| b.iter(|| black_box(h.send(black_box(&req)))),
        );
    }
    group.finish();
}

/// Twenty headers, as `benches/scenarios/header-limits-20.yaml` sends.
fn typical_request() -> Request {
    [
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) meshward-bench/1.0",
        ),
        ("cookie", "session=abc123; theme=dark; consent=yes"),
        ("x-request-start", "t=1732300000000"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        (
            "traceparent",
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
        ),
        ("x-tenant", "acme"),
        ("x-client-version", "4.12.0"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("origin", "https://shop.example.com"),
        ("referer", "https://shop.example.com/cart"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-site"),
        ("x-api-key", "k-3f9a0c7e"),
    ]
    .into_iter()
    .fold(
        Request::get("/api/v1/products/42?view=full"),
        |r, (n, v)| r.header(n, v),
    )
}

fn fixture_token(name: &str) -> String {
    let tokens: serde_json::Value =
        serde_json::from_slice(&policy("tests/fixtures/jwt/tokens.json")).unwrap_or_default();
    let token = &tokens["tokens"][name];
    token
        .as_str()
        .or_else(|| token["token"].as_str())
        .unwrap_or_else(|| panic!("no fixture token {name}"))
        .to_string()
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    let peer = Tls::peer("spiffe://cluster.local/ns/default/sa/frontend");
    let bearer = format!("Bearer {}", fixture_token("rs256_alice"));
    let unlimited = r#"{"tokenBucket": {"maxTokens": 1000000000, "tokensPerFill": 1000000000, "fillInterval": "1s"},
        "descriptors": [{"key": "source.principal"}]}"#;
    let cases: Vec<(&str, FilterSpec, Request, u16)> = vec![
        ("noop", filter("meshward_test_noop"), typical_request(), 200),
        (
            "header-limits strict, 20 headers",
            filter("header_limits").config(policy("policies/header-limits/strict.json")),
            typical_request(),
            200,
        ),
        (
            "spiffe-authz mesh-10, allowed through the trusted proxy",
            filter("spiffe_authz").config(policy("policies/spiffe-authz/mesh-10.json")),
            typical_request()
                .header("x-forwarded-for", "10.1.2.3")
                .tls(peer.clone()),
            200,
        ),
        (
            "jwt-authn RS256, verified-token cache hit",
            filter("jwt_authn").config(policy("policies/jwt-authn/inline-fixture-keys.json")),
            typical_request().header("authorization", &bearer),
            200,
        ),
        (
            "rate-limit per source.principal, allowed",
            filter("rate_limit").config(unlimited),
            typical_request().tls(peer),
            200,
        ),
    ];
    for (name, spec, req, status) in cases {
        let h = host(spec);
        let got = h.send(&req).status();
        assert_eq!(got, status, "{name}: the policy must decide as intended");
        group.bench_function(name, |b| b.iter(|| black_box(h.send(black_box(&req)))));
    }
    group.finish();
}

criterion_group!(benches, host_calls, requests);
criterion_main!(benches);
