//! Smoke tests of the rig against the real Envoy 1.40, and the Envoy behaviours meshward's harness
//! models, pinned as assertions: when an Envoy upgrade changes one of them, a test here fails.
//!
//! Every test starts its own Envoy (~0.2–0.5 s) so that each is stopped by its own drop. Envoy
//! missing ⇒ `Envoy::start` errors ("run scripts/setup.sh") ⇒ the test fails; nothing is skipped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use meshward_rig::{
    Certs, Client, EchoUpstream, Envoy, EnvoyConfig, HttpFilter, Request, RequestHead, WasmFilter,
    WorkDir,
};
use serde_json::json;

/// Router only, plaintext listener, default HCM limits.
fn router_only() -> (EchoUpstream, Envoy) {
    let echo = EchoUpstream::start().unwrap();
    let envoy = Envoy::start(&EnvoyConfig::new(echo.addr())).unwrap();
    (echo, envoy)
}

fn names(head: &RequestHead) -> Vec<&str> {
    head.headers.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn plaintext_request_reaches_the_echo_upstream_with_its_headers() {
    let (echo, envoy) = router_only();
    let response = envoy
        .client()
        .send(
            &Request::get("/a/b?x=1")
                .header("X-Custom", "v1")
                .header("x-dup", "1")
                .header("x-dup", "2"),
        )
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let seen = response.echo().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/a/b?x=1");
    assert_eq!(seen.header("host"), Some("example.com"));
    // HTTP/1 header names reach the upstream lowercased, duplicates kept in order.
    assert_eq!(seen.header("x-custom"), Some("v1"));
    assert!(names(&seen).contains(&"x-custom"));
    assert_eq!(seen.header_all("x-dup"), vec!["1", "2"]);
    // Added by the HCM / router on the way.
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-request-id").map(str::len), Some(36));
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("15000"));
    // Hop-by-hop: the client's `connection: close` is not forwarded.
    assert_eq!(seen.header("connection"), None);
    assert_eq!(echo.received(), vec![seen]);
}

#[test]
fn request_bodies_and_keep_alive_pass_through() {
    let (echo, envoy) = router_only();
    let mut conn = envoy.client().connect().unwrap();
    let first = conn
        .send(&Request::new("POST", "/p").body("hello").close(false))
        .unwrap();
    assert_eq!(first.echo().unwrap().body, "hello");
    let chunked = Request::new("POST", "/c")
        .header("transfer-encoding", "chunked")
        .body("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .close(false);
    let second = conn.send(&chunked).unwrap();
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.echo().unwrap().body, "abcde");
    assert_eq!(echo.received().len(), 2);
}

#[test]
fn echo_upstream_serves_directly_and_with_a_custom_handler() {
    let echo = EchoUpstream::start().unwrap();
    let response = Client::plaintext(echo.addr())
        .send(&Request::new("PUT", "/direct").header("x-a", "1").body("b"))
        .unwrap();
    let seen = response.echo().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PUT", "/direct")
    );
    assert_eq!(seen.header("x-a"), Some("1"));
    assert_eq!(seen.body, "b");

    let jwks = EchoUpstream::start_with(|head| meshward_rig::Response {
        status: if head.path == "/jwks" { 200 } else { 404 },
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"keys":[]}"#.to_vec(),
    })
    .unwrap();
    let client = Client::plaintext(jwks.addr());
    assert_eq!(
        client.send(&Request::get("/jwks")).unwrap().body,
        br#"{"keys":[]}"#
    );
    assert_eq!(client.send(&Request::get("/other")).unwrap().status, 404);
}

#[test]
fn a_fixed_listener_port_and_extra_clusters_are_configured() {
    let echo = EchoUpstream::start().unwrap();
    let jwks = EchoUpstream::start().unwrap();
    // A port that was free a moment ago; the rig retries nothing here, so a clash fails loudly.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let envoy = Envoy::start(
        &EnvoyConfig::new(echo.addr())
            .plaintext_port(port)
            .cluster("jwks", jwks.addr()),
    )
    .unwrap();
    assert_eq!(
        envoy.plaintext_addr(),
        SocketAddr::from(([127, 0, 0, 1], port))
    );
    assert_eq!(envoy.client().send(&Request::get("/")).unwrap().status, 200);
    let (status, clusters) = envoy.admin_get("/clusters").unwrap();
    assert_eq!(status, 200);
    assert!(
        clusters.contains(&format!("jwks::{}", jwks.addr())),
        "{clusters}"
    );
}

#[test]
fn mtls_listener_accepts_a_spiffe_client_cert_and_no_cert_and_rejects_a_foreign_ca() {
    let echo = EchoUpstream::start().unwrap();
    let certs = Certs::generate().unwrap();
    let envoy = Envoy::start(&EnvoyConfig::new(echo.addr()).tls(&certs, 0)).unwrap();
    let ssl_stat = |name: &str| envoy.stats().unwrap()[&format!("listener.tls.ssl.{name}")];

    let spiffe = certs
        .client_cert(&["spiffe://cluster.local/ns/a/sa/b"], "workload-b")
        .unwrap();
    let response = envoy
        .tls_client(&certs, Some(&spiffe))
        .unwrap()
        .send(&Request::get("/mtls"))
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.echo().unwrap().header("x-forwarded-proto"),
        Some("https")
    );
    assert_eq!(ssl_stat("handshake"), 1);
    assert_eq!(ssl_stat("no_certificate"), 0);

    // TLS without a client certificate still reaches the filters (require_client_certificate: false).
    let response = envoy
        .tls_client(&certs, None)
        .unwrap()
        .send(&Request::get("/tls"))
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(ssl_stat("no_certificate"), 1);

    // Invalid SPIFFE IDs are still certificates the CA signed: Envoy accepts the connection (the
    // filters are the ones to judge the ID).
    for san in ["spiffe://Bad.Domain/x", "https://x"] {
        let odd = certs.client_cert(&[san], "odd").unwrap();
        let client = envoy.tls_client(&certs, Some(&odd)).unwrap();
        assert_eq!(
            client.send(&Request::get("/odd")).unwrap().status,
            200,
            "{san}"
        );
    }

    // A certificate from another CA fails verification: no response at all.
    let other = Certs::generate().unwrap();
    let foreign = other
        .client_cert(&["spiffe://cluster.local/ns/a/sa/b"], "x")
        .unwrap();
    let result = envoy
        .tls_client(&certs, Some(&foreign))
        .unwrap()
        .send(&Request::get("/foreign"));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(ssl_stat("fail_verify_error"), 1);
    assert_eq!(echo.received().len(), 4);
}

#[test]
fn the_client_source_ip_is_what_envoy_sees() {
    let echo = EchoUpstream::start().unwrap();
    let envoy =
        Envoy::start(&EnvoyConfig::new(echo.addr()).hcm_field("use_remote_address", json!(true)))
            .unwrap();
    let response = envoy
        .client()
        .source_ip("127.0.0.2".parse().unwrap())
        .send(&Request::get("/"))
        .unwrap();
    let seen = response.echo().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2"));
    assert_eq!(seen.header("x-envoy-external-address"), Some("127.0.0.2"));
}

#[test]
fn a_raw_native_filter_runs_before_the_router() {
    let echo = EchoUpstream::start().unwrap();
    let rbac = HttpFilter::raw_yaml(
        r#"
name: envoy.filters.http.rbac
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
  rules:
    action: DENY
    policies:
      deny-admin:
        permissions: [{url_path: {path: {prefix: /admin}}}]
        principals: [{any: true}]
"#,
    )
    .unwrap();
    let envoy = Envoy::start(&EnvoyConfig::new(echo.addr()).filter(rbac)).unwrap();
    let denied = envoy.client().send(&Request::get("/admin")).unwrap();
    assert_eq!(
        (denied.status, denied.body_text().as_str()),
        (403, "RBAC: access denied")
    );
    assert_eq!(
        envoy.client().send(&Request::get("/ok")).unwrap().status,
        200
    );
    assert_eq!(echo.received().len(), 1);
}

#[test]
fn a_wasm_plugin_that_fails_to_load_stops_envoy_with_exit_code_1() {
    let echo = EchoUpstream::start().unwrap();
    let dir = WorkDir::new("bad-wasm-").unwrap();
    let garbage = dir.write("garbage.wasm", b"\0asm not really").unwrap();
    let config = EnvoyConfig::new(echo.addr()).filter(WasmFilter::new("garbage", &garbage, "{}"));
    let failure = Envoy::validate_or_start_expect_failure(&config).unwrap();
    assert_eq!(failure.status.code(), Some(1), "{}", failure.log);
    assert!(
        failure.log.contains("Unable to create Wasm plugin garbage"),
        "{}",
        failure.log
    );
    // And a working configuration is reported as "not a failure".
    let ok = Envoy::validate_or_start_expect_failure(&EnvoyConfig::new(echo.addr()));
    assert!(ok.is_err());
}

/// Observed-behaviour answer 2: what Envoy 1.40's default HCM does with odd request-targets and
/// header names (router only: the echo shows what reaches an upstream).
#[test]
fn observed_request_target_and_header_name_handling() {
    let (_echo, envoy) = router_only();
    // (request-target, status, path the upstream saw)
    let cases: &[(&[u8], u16, Option<&str>)] = &[
        // A fragment is refused (400 with an empty body), even after a query.
        (b"/a#frag", 400, None),
        (b"/a?x=%2F#f", 400, None),
        // Without normalize_path / merge_slashes / path_with_escaped_slashes_action, nothing else
        // is touched: encoded slashes and backslashes, `//`, dot segments all pass unchanged.
        (b"/a%2Fb", 200, Some("/a%2Fb")),
        (b"/a%2fb", 200, Some("/a%2fb")),
        (b"/a%5Cb", 200, Some("/a%5Cb")),
        (b"/a\\b", 200, Some("/a\\b")),
        (b"//a//b", 200, Some("//a//b")),
        (b"/a/../b", 200, Some("/a/../b")),
        (b"/../x", 200, Some("/../x")),
        (b"/a/./b", 200, Some("/a/./b")),
        (b"/%41", 200, Some("/%41")),
        // Absolute-form: the upstream gets origin-form, the host header becomes its authority.
        (b"http://other.example/p?q", 200, Some("/p?q")),
        // The codec refuses these with 400 "Bad Request".
        (b"a/b", 400, None),
        (b"*", 400, None),
        (b"/a b", 400, None),
        (b"/a\x7f", 400, None),
        (b"/\xc3\xa9", 400, None),
    ];
    for (target, status, path) in cases {
        let shown = String::from_utf8_lossy(target);
        let response = envoy.client().send(&Request::get(target)).unwrap();
        assert_eq!(response.status, *status, "{shown}: {response:?}");
        match path {
            Some(path) => assert_eq!(response.echo().unwrap().path, *path, "{shown}"),
            None => assert!(response.echo().is_err(), "{shown} reached the upstream"),
        }
    }
    let fragment = envoy.client().send(&Request::get("/a#frag")).unwrap();
    assert_eq!(fragment.body_text(), "");
    let space = envoy.client().send(&Request::get("/a b")).unwrap();
    assert_eq!(space.body_text(), "Bad Request");
    let absolute = envoy
        .client()
        .send(&Request::get("http://other.example/p"))
        .unwrap();
    assert_eq!(
        absolute.echo().unwrap().header("host"),
        Some("other.example")
    );

    // Header names: `_` is allowed (headers_with_underscores_action defaults to ALLOW), upper
    // case is lowercased, optional whitespace around a value is trimmed; a space in a name or a
    // control character in a value is a 400 from the codec.
    let response = envoy
        .client()
        .send(
            &Request::get("/h")
                .header("x_under", "1")
                .header("X-Upper", "  padded  "),
        )
        .unwrap();
    let seen = response.echo().unwrap();
    assert_eq!(seen.header("x_under"), Some("1"));
    assert_eq!(seen.header("x-upper"), Some("padded"));
    assert!(names(&seen).contains(&"x-upper"));
    for (name, value) in [
        (&b"x a"[..], &b"1"[..]),
        (b"x-a", b"a\x01b"),
        (b"x-a", b"a\0b"),
    ] {
        let response = envoy
            .client()
            .send(&Request::get("/h").header(name, value))
            .unwrap();
        assert_eq!(response.status, 400, "{name:?}: {response:?}");
        assert_eq!(response.body_text(), "Bad Request");
    }
}

/// Observed-behaviour answer 3: the codec's header limits. `max_request_headers_kb` bounds the
/// whole raw request head — request line, every `name: value\r\n` line and the final CRLF —
/// at kb × 1024 bytes (HTTP/1, Envoy 1.40's default parser); `max_headers_count` bounds the number
/// of header lines (`host` included). Over either: 431 "Request Header Fields Too Large".
#[test]
fn observed_codec_header_limits() {
    let echo = EchoUpstream::start().unwrap();
    let default_limits = Envoy::start(&EnvoyConfig::new(echo.addr())).unwrap();
    let raised = Envoy::start(&EnvoyConfig::new(echo.addr()).max_request_headers_kb(96)).unwrap();
    let big = Request::get("/").header("x-big", "a".repeat(70 * 1024));

    let refused = default_limits.client().send(&big).unwrap();
    assert_eq!(refused.status, 431);
    assert_eq!(refused.body_text(), "Request Header Fields Too Large");
    assert_eq!(refused.header("content-type"), Some("text/plain"));
    let accepted = raised.client().send(&big).unwrap();
    assert_eq!(accepted.status, 200);
    assert_eq!(
        accepted.echo().unwrap().header("x-big").map(str::len),
        Some(70 * 1024)
    );

    // The exact boundary: a head of 61440 bytes passes, 61441 does not.
    let head_of = |len: usize| {
        let fixed = Request::get("/").header("x-big", "");
        let value_len = len - fixed.to_bytes().len();
        Request::get("/").header("x-big", "a".repeat(value_len))
    };
    for (size, status) in [(61_440, 200), (61_441, 431)] {
        let request = head_of(size);
        assert_eq!(request.to_bytes().len(), size);
        let response = default_limits.client().send(&request).unwrap();
        assert_eq!(response.status, status, "head of {size} bytes");
    }

    // 100 header lines pass (host + connection + 98), 101 do not.
    for (extra, status) in [(98, 200), (99, 431)] {
        let mut request = Request::get("/many");
        for i in 0..extra {
            request = request.header(format!("x-h{i}"), "1");
        }
        let response = default_limits.client().send(&request).unwrap();
        assert_eq!(response.status, status, "{} header lines", extra + 2);
    }
}

/// The release wasm of a test module, built by
/// `cargo build --release --target wasm32-wasip1 -p meshward-test-probe -p meshward-test-noop`
/// (in `$CARGO_TARGET_DIR`, else `<repo>/target`). Missing ⇒ the test fails saying so.
fn test_module(stem: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| meshward_rig::repo_root().join("target"));
    let path = target.join(format!("wasm32-wasip1/release/{stem}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run cargo build --release --target wasm32-wasip1 -p meshward-test-probe -p meshward-test-noop",
        path.display()
    );
    path
}

fn probe(name: &str, configuration: &str) -> WasmFilter {
    WasmFilter::new(name, test_module("meshward_test_probe"), configuration)
}

/// What the probe reports for a property (`x-probe-property-value` on the upstream request).
fn probe_property(client: &Client, property: &str, request: Request) -> String {
    let response = client
        .send(&request.header("x-probe-property", property))
        .unwrap();
    assert_eq!(response.status, 200, "{property}: {response:?}");
    let seen = response.echo().unwrap();
    seen.header("x-probe-property-value").unwrap().to_string()
}

#[test]
fn the_noop_module_loads_and_passes_requests_through() {
    let echo = EchoUpstream::start().unwrap();
    let noop = WasmFilter::new("noop", test_module("meshward_test_noop"), "");
    let envoy = Envoy::start(&EnvoyConfig::new(echo.addr()).filter(noop)).unwrap();
    let response = envoy.client().send(&Request::get("/n")).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.echo().unwrap().path, "/n");
}

/// Observed-behaviour answer 1: the request headers a wasm filter sees for a plain HTTP/1.1
/// request. Observed with a throw-away module calling `get_http_request_headers()` (the probe has
/// no header dump): `:authority`, `:path`, `:method`, `:scheme`, then the client's headers in wire
/// order (lowercased), then `x-forwarded-proto`, `x-request-id`. The pseudo-headers `:authority` (from `host`), `:path`, `:method`, `:scheme` and the
/// HCM's `x-forwarded-proto` and `x-request-id` are all in the map before the first filter runs;
/// the router's `x-envoy-expected-rq-timeout-ms` is not yet; the hop-by-hop `connection` header is
/// already gone. A header a filter adds goes after `x-request-id`.
#[test]
fn observed_request_headers_seen_by_a_wasm_filter() {
    let echo = EchoUpstream::start().unwrap();
    let envoy = Envoy::start(&EnvoyConfig::new(echo.addr()).filter(probe("probe", ""))).unwrap();
    let client = envoy.client();
    let request = || Request::get("/p/a?q=1").header("X-Up", "1");
    let seen = |property: &str| probe_property(&client, property, request());
    assert_eq!(seen("request.headers.:authority"), "example.com");
    assert_eq!(seen("request.headers.:path"), "/p/a?q=1");
    assert_eq!(seen("request.headers.:method"), "GET");
    assert_eq!(seen("request.headers.:scheme"), "http");
    assert_eq!(seen("request.headers.x-up"), "1");
    assert_eq!(seen("request.headers.x-forwarded-proto"), "http");
    assert_eq!(seen("request.headers.x-request-id").len(), 36);
    // `host` is an alias of `:authority` in Envoy's request header map (a filter asking for
    // `host` gets the authority), and it is not a separate entry.
    assert_eq!(seen("request.headers.host"), "example.com");
    assert_eq!(seen("request.headers.connection"), "<none>");
    assert_eq!(
        seen("request.headers.x-envoy-expected-rq-timeout-ms"),
        "<none>"
    );
    assert_eq!(seen("request.protocol"), "HTTP/1.1");
    assert_eq!(seen("request.url_path"), "/p/a");

    // Order: the upstream receives the header map in order (`:authority` as `host`, first).
    let response = client
        .send(&request().header("x-probe-add-header", "x-added=1"))
        .unwrap();
    let upstream = response.echo().unwrap();
    assert_eq!(
        names(&upstream),
        vec![
            "host",
            "x-up",
            "x-probe-add-header",
            "x-forwarded-proto",
            "x-request-id",
            "x-added",
            "x-envoy-expected-rq-timeout-ms",
        ]
    );
}

/// Observed-behaviour answer 4: a metric a wasm filter defines as `probe.ticks` is the Envoy stat
/// `wasmcustom.probe.ticks` (the name is kept verbatim, dots included, behind `wasmcustom.`).
#[test]
fn observed_wasm_metric_names() {
    let echo = EchoUpstream::start().unwrap();
    let envoy =
        Envoy::start(&EnvoyConfig::new(echo.addr()).filter(probe("ticker", "tick_ms=20"))).unwrap();
    let deadline = std::time::Instant::now() + LOG_WAIT;
    while !envoy
        .stats()
        .unwrap()
        .contains_key("wasmcustom.probe.ticks")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no wasmcustom.probe.ticks stat"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = envoy.stats().unwrap();
    assert!(stats["wasmcustom.probe.ticks"] >= 1);
    assert!(!stats.contains_key("probe.ticks"));
    assert!(envoy.wasm_metrics().unwrap()["probe.ticks"] >= 1);
}

#[test]
fn a_rejected_plugin_configuration_stops_envoy_with_the_filters_log_line() {
    let echo = EchoUpstream::start().unwrap();
    let picky = probe("picky", "reject")
        .root_id("picky-root")
        .vm_id("picky-vm");
    let config = EnvoyConfig::new(echo.addr()).filter(picky);
    let failure = Envoy::validate_or_start_expect_failure(&config).unwrap();
    assert_eq!(failure.status.code(), Some(1), "{}", failure.log);
    // Envoy's format for a filter's log line: `wasm log <root_id> <vm_id>: <message>` (no plugin name).
    assert!(
        failure
            .log
            .contains("wasm log picky-root picky-vm: probe: configuration rejected on request"),
        "{}",
        failure.log
    );
    assert!(
        failure.log.contains("Unable to create Wasm plugin picky"),
        "{}",
        failure.log
    );
}

#[test]
fn a_wasm_filter_sees_the_mtls_peer_or_no_peer() {
    let echo = EchoUpstream::start().unwrap();
    let certs = Certs::generate().unwrap();
    let envoy = Envoy::start(
        &EnvoyConfig::new(echo.addr())
            .tls(&certs, 0)
            .filter(probe("probe", "")),
    )
    .unwrap();
    let spiffe = certs
        .client_cert(
            &[
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/x/sa/y",
            ],
            "workload-b",
        )
        .unwrap();
    let mtls = envoy.tls_client(&certs, Some(&spiffe)).unwrap();
    let tls_only = envoy.tls_client(&certs, None).unwrap();
    let plain = envoy.client().source_ip("127.0.0.2".parse().unwrap());
    let san = "connection.uri_san_peer_certificate";

    // Only the first URI SAN is exposed.
    assert_eq!(
        probe_property(&mtls, san, Request::get("/")),
        "spiffe://cluster.local/ns/a/sa/b"
    );
    assert_eq!(
        probe_property(&mtls, "connection.mtls", Request::get("/")),
        "hex:01"
    );
    assert_eq!(
        probe_property(
            &mtls,
            "connection.subject_peer_certificate",
            Request::get("/")
        ),
        "CN=workload-b"
    );
    assert_eq!(probe_property(&tls_only, san, Request::get("/")), "<none>");
    assert_eq!(
        probe_property(&tls_only, "connection.mtls", Request::get("/")),
        "hex:00"
    );
    assert_eq!(probe_property(&plain, san, Request::get("/")), "<none>");
    assert!(probe_property(&plain, "source.address", Request::get("/")).starts_with("127.0.0.2:"));
}

/// How long to wait for something Envoy does asynchronously (ticks, log lines).
const LOG_WAIT: Duration = Duration::from_secs(5);

/// A client certificate without a URI SAN is mTLS without a peer identity, in Envoy and in the
/// harness alike. spiffe-authz and rate-limit read only the URI SAN, not `connection.mtls` (a SAN
/// exists only with a presented certificate: the test above): such a certificate gives no peer,
/// so a principal rule does not match it, while a rule without one still does.
#[test]
fn a_client_certificate_without_a_uri_san_is_mtls_without_a_peer_in_both_worlds() {
    use meshward_harness::{FilterSpec, Host, Request as HarnessRequest, Tls};

    let policy = r#"{"requireMtls": false, "policies": [
        {"name": "open", "rules": [{"to": [{"operation": {"paths": ["/open"]}}]}]},
        {"name": "b-only", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}],
             "to": [{"operation": {"paths": ["/b"]}}]}]}]}"#;
    let module = test_module("spiffe_authz");
    let echo = EchoUpstream::start().unwrap();
    let certs = Certs::generate().unwrap();
    let envoy = Envoy::start(
        &EnvoyConfig::new(echo.addr())
            .tls(&certs, 0)
            .filter(probe("probe", ""))
            .filter(WasmFilter::new("spiffe-authz", &module, policy)),
    )
    .unwrap();
    let no_san = certs.client_cert(&[], "no-san").unwrap();
    let spiffe_b = certs
        .client_cert(&["spiffe://cluster.local/ns/a/sa/b"], "b")
        .unwrap();
    let no_san_client = envoy.tls_client(&certs, Some(&no_san)).unwrap();
    let b_client = envoy.tls_client(&certs, Some(&spiffe_b)).unwrap();
    let tls_only = envoy.tls_client(&certs, None).unwrap();
    let open = || Request::get("/open");
    assert_eq!(
        probe_property(&no_san_client, "connection.mtls", open()),
        "hex:01"
    );
    assert_eq!(
        probe_property(
            &no_san_client,
            "connection.uri_san_peer_certificate",
            open()
        ),
        "<none>"
    );
    let status = |client: &Client, path: &str| client.send(&Request::get(path)).unwrap().status;
    let envoy_statuses = [
        status(&no_san_client, "/open"),
        status(&no_san_client, "/b"),
        status(&b_client, "/b"),
        status(&tls_only, "/open"),
    ];

    let host = Host::builder()
        .filter(
            FilterSpec::from_file(&module)
                .unwrap()
                .name("spiffe-authz")
                .config_json(policy),
        )
        .build()
        .unwrap();
    let subject_only = Tls {
        peer_subject: Some("CN=no-san".into()),
        ..Tls::default()
    };
    let harness = |tls: Tls, path: &str| host.send(&HarnessRequest::get(path).tls(tls)).status();
    let harness_statuses = [
        harness(subject_only.clone(), "/open"),
        harness(subject_only, "/b"),
        harness(Tls::peer("spiffe://cluster.local/ns/a/sa/b"), "/b"),
        harness(Tls::server_only(), "/open"),
    ];
    assert_eq!(envoy_statuses, [200, 403, 200, 200]);
    assert_eq!(harness_statuses, envoy_statuses);
}
