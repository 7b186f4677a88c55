//! Conformance of proxy-wasm gRPC calls and streams with Envoy 1.40: the scenario files under
//! tests/scenarios/conformance/grpc/, each run through the harness AND a real Envoy with the Rust
//! SDK test module `sdk-grpc`, against the real gRPC server `tests/peers/grpc_echo.py` (started
//! here; its ports reach the files as `${MESHWARD_GRPC_ECHO}` and, for the listener that never
//! answers, `${MESHWARD_GRPC_SILENT}`). A case fails if either run misses its expectation or the
//! two differ in anything it checks. Envoy, the venv or grpcio missing ⇒ failure, never a skip.
//!
//! The expectations are what Envoy 1.40 did (a case that differs prints both worlds' values). Two
//! facts no scenario can hold are pinned in Envoy alone below: the exact headers of Envoy's gRPC
//! requests (from its router's debug log) and the abort on a cluster name that parses as a
//! protobuf `GrpcService`.

use std::sync::OnceLock;

use meshward_rig::default_wasm_dir;
use meshward_tests::grpc::{GrpcEcho, PORT_VARIABLE, SILENT_VARIABLE};
use meshward_tests::{assert_every_file_has_its_test, parity_file, repo};

/// One server for the whole test binary (the tests run in parallel; its calls are independent),
/// its port in `MESHWARD_GRPC_ECHO` before any scenario file is loaded.
fn server() -> &'static GrpcEcho {
    static SERVER: OnceLock<GrpcEcho> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = GrpcEcho::start();
        std::env::set_var(PORT_VARIABLE, server.port().to_string());
        std::env::set_var(SILENT_VARIABLE, server.silent_addr().port().to_string());
        server
    })
}

fn scenario(name: &str) {
    server();
    parity_file("conformance/grpc", name);
}

#[test]
fn grpc_calls_agree_in_harness_and_envoy() {
    scenario("calls");
}

#[test]
fn grpc_streams_agree_in_harness_and_envoy() {
    scenario("streams");
}

#[test]
fn grpc_tokens_agree_in_harness_and_envoy() {
    scenario("tokens");
}

/// Every scenario file of the folder is run by one of the tests above.
#[test]
fn every_grpc_scenario_file_has_its_test() {
    assert_every_file_has_its_test("conformance/grpc", include_str!("conformance_grpc.rs"));
}

/// Envoy with the `sdk-grpc` module, the test server as cluster `echo` and as `name`, and the
/// router's debug log on (and the echo upstream its route goes to: drop it after Envoy).
fn envoy_with(name: &str) -> (meshward_rig::Envoy, meshward_rig::EchoUpstream) {
    use meshward_rig::{EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
    let server = server();
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr())
        .grpc_cluster("echo", server.addr())
        .grpc_cluster(name, server.addr())
        .filter(
            WasmFilter::new("grpc", meshward_tests::wasm("meshward_test_sdk_grpc"), "")
                .vm_id("grpc"),
        )
        .component_log_levels("wasm:trace,router:debug,grpc:debug,http:debug");
    (Envoy::start(&config).unwrap(), upstream)
}

/// A request carrying these headers (`name=value`, `&`-separated).
fn request(headers: &str) -> meshward_rig::Request {
    let mut request = meshward_rig::Request::get("/");
    for h in headers.split('&') {
        let (k, v) = h.split_once('=').unwrap();
        request = request.header(k, v);
    }
    request
}

/// The header blocks Envoy's router logged for requests it sent with `:method POST` (the gRPC
/// client's): `name: value` lines.
fn grpc_request_blocks(log: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut lines = log.lines();
    while let Some(line) = lines.next() {
        if !line.ends_with("router decoding headers:") {
            continue;
        }
        let block: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once("', '").unwrap_or((l, ""));
                format!(
                    "{}: {}",
                    k.trim_start_matches('\''),
                    v.trim_end_matches('\'')
                )
            })
            .collect();
        if block.first().map(String::as_str) == Some(":method: POST") {
            blocks.push(block);
        }
    }
    blocks
}

/// What Envoy's gRPC client sends, from its router's debug log: the test server cannot show
/// `:authority`, `te`, `content-type` or `grpc-timeout` (gRPC keeps them from the application),
/// so the harness's requests are pinned against this list. Envoy only (the harness has no router
/// log); what the server does see is pinned in calls.yaml in both.
#[test]
fn envoy_sends_these_headers_on_grpc_calls_and_streams() {
    let (envoy, _upstream) = envoy_with("other");
    for headers in [
        "x-grpc-call=echo;Unary;hello;5000&x-grpc-meta=x-a=1,X-B-bin=AAEC,x-c=2",
        "x-grpc-call=echo;Unary;hello;0",
        "x-grpc-call=echo;Unary;hello;5000&x-grpc-meta=:authority=other",
        "x-grpc-stream=echo;Bidi;a;close&x-grpc-meta=x-a=1",
    ] {
        let response = envoy.client().send(&request(headers)).unwrap();
        assert_eq!(response.status, 200, "{headers}");
    }
    let blocks = grpc_request_blocks(&envoy.log_contents());
    let lines = |text: &str| -> Vec<String> { text.lines().map(str::to_string).collect() };
    let call = |authority: &str, timeout: &str, metadata: &str| {
        lines(&format!(
            ":method: POST\n:path: /meshward.test.Echo/Unary\n:authority: {authority}\n\
             :scheme: http\nte: trailers\ngrpc-timeout: {timeout}m\n\
             content-type: application/grpc\n{metadata}x-envoy-internal: true\n{}",
            if timeout == "0" {
                String::new()
            } else {
                format!("x-envoy-expected-rq-timeout-ms: {timeout}")
            }
        ))
    };
    assert_eq!(
        blocks,
        vec![
            // Module metadata after content-type, names lower-cased, `-bin` values base64
            // (and moved behind the others).
            call("echo", "5000", "x-a: 1\nx-c: 2\nx-b-bin: QUFFQw==\n"),
            // Timeout 0: `grpc-timeout: 0m` and no router timeout.
            call("echo", "0", ""),
            // A `:authority` in the metadata is appended to the cluster name.
            call("echo,other", "5000", ""),
            // A stream: no grpc-timeout, no x-envoy-expected-rq-timeout-ms.
            lines(
                ":method: POST\n:path: /meshward.test.Echo/Bidi\n:authority: echo\n\
                 :scheme: http\nte: trailers\ncontent-type: application/grpc\nx-a: 1\n\
                 x-envoy-internal: true"
            ),
        ]
    );
    // Every gRPC callback is delivered on the root context (id 1), not the request's.
    let log = envoy.log_contents();
    let callbacks: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("[host->vm] ").nth(1))
        .filter(|c| c.starts_with("proxy_on_grpc_"))
        .collect();
    assert!(!callbacks.is_empty(), "no gRPC callback in the log");
    for c in &callbacks {
        assert!(c.contains("(1, "), "not on the root context: {c}");
    }
}

/// A cluster named `h2` (bytes that parse as a protobuf `GrpcService`: field 13, varint 50)
/// reaches Envoy's gRPC client as a GrpcService without a target, and Envoy 1.40 aborts
/// (`panic: unset oneof`): the whole proxy dies, so no scenario can hold it. The same goes for
/// `x1`, `p1`, `echo1` or the empty name. The harness must refuse such a name loudly.
#[test]
fn a_cluster_name_that_parses_as_a_grpc_service_aborts_envoy() {
    let (envoy, _upstream) = envoy_with("h2");
    let answer = envoy
        .client()
        .send_or_refused(&request("x-grpc-call=h2;Unary;hello;5000"));
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "Envoy answered a call to the cluster `h2`: {answer:?}"
    );
    envoy
        .wait_for_log("panic: unset oneof", std::time::Duration::from_secs(10))
        .unwrap();
}

/// The harness with the `sdk-grpc` module and the test server as cluster `echo`.
fn harness() -> meshward_harness::Host {
    let wasm = default_wasm_dir(&repo()).join("meshward_test_sdk_grpc.wasm");
    assert!(
        wasm.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        wasm.display()
    );
    meshward_harness::Host::builder()
        .filter(
            meshward_harness::FilterSpec::from_file(&wasm)
                .unwrap()
                .name("grpc"),
        )
        .cluster("echo", meshward_harness::Cluster::grpc(server().addr()))
        .cluster("echo1", meshward_harness::Cluster::grpc(server().addr()))
        .build()
        .unwrap()
}

fn send(host: &meshward_harness::Host, headers: &[(&str, &str)]) -> String {
    let mut request = meshward_harness::Request::get("/");
    for (n, v) in headers {
        request = request.header(n, v);
    }
    format!("{:?}", host.send(&request))
}

/// Where Envoy aborts (a_cluster_name_that_parses_as_a_grpc_service_aborts_envoy), the harness
/// refuses the call by name instead of answering.
#[test]
fn the_harness_refuses_a_cluster_name_that_parses_as_a_grpc_service() {
    let out = send(&harness(), &[("x-grpc-call", "echo1;Unary;hi;1000")]);
    assert!(
        out.contains("parses as a serialized GrpcService naming no client; Envoy 1.40 aborts"),
        "{out}"
    );
    assert!(out.contains("status: 503"), "{out}");
}

/// A stream the module half-closed with `end_stream` on a message keeps its token after the
/// server closed it; in Envoy 1.40 a send, close or cancel on it then acts on a deleted stream.
/// The harness refuses such calls by name (the module's bad-token report sends first); with
/// `close_grpc_stream` the token is gone (NotFound, pinned in both worlds by streams.yaml).
#[test]
fn the_harness_refuses_calls_on_a_stream_the_server_closed() {
    let host = harness();
    let first = send(&host, &[("x-grpc-stream", "echo;Bidi;a;close")]);
    assert!(
        first.contains("\"x-grpc-close\", \"0:via_upstream\""),
        "{first}"
    );
    assert!(
        first.contains("(\"x-grpc-stream-token\", \"6\")"),
        "{first}"
    );
    let out = send(&host, &[("x-grpc-bad-token", "6")]);
    assert!(
        out.contains(
            "harness: proxy_grpc_send on the gRPC stream 6 after the server closed it is not modelled"
        ),
        "{out}"
    );
}
