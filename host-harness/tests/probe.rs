//! Behaviour pinned with the `probe` test module: local replies, header mutation, properties,
//! filter state across a chain.

mod common;

use std::net::SocketAddr;

use common::probe;
use meshward_harness::{Host, Request, Tls, Verdict};

fn one() -> Host {
    Host::builder().filter(probe("p")).build().unwrap()
}

fn property(host: &Host, req: Request, path: &str) -> String {
    let out = host.send(&req.header("x-probe-property", path));
    let up = out.upstream_request.expect("reached upstream");
    up.header("x-probe-property-value").unwrap().to_string()
}

fn hex(bytes: &[u8]) -> String {
    format!(
        "hex:{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn local_reply_ends_the_request_path_and_runs_response_callbacks() {
    let host = Host::builder()
        .filter(probe("a"))
        .filter(probe("b"))
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").header("x-probe-local-reply", "403"));
    assert_eq!(out.status(), 403);
    assert!(!out.reached_upstream());
    assert_eq!(out.response.body_text(), "probe local reply");
    assert_eq!(out.response.header("x-probe"), Some("local"));
    assert!(
        matches!(&out.verdict, Verdict::LocalReply { status: 403, by: Some(by), .. } if by == "a")
    );
    // Only the filter that saw the request runs its response callback on the local reply.
    let seen: Vec<&str> = out
        .response
        .headers
        .iter()
        .filter(|(n, _)| n == "x-probe-response-seen")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(seen, ["a"]);
}

#[test]
fn response_callbacks_run_last_to_first_on_upstream_responses() {
    let host = Host::builder()
        .filter(probe("a"))
        .filter(probe("b"))
        .build()
        .unwrap();
    let out = host.send(&Request::get("/"));
    let seen: Vec<&str> = out
        .response
        .headers
        .iter()
        .filter(|(n, _)| n == "x-probe-response-seen")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(seen, ["b", "a"]);
}

#[test]
fn added_request_header_reaches_upstream() {
    let out = one().send(&Request::get("/").header("x-probe-add-header", "x-added=yes"));
    assert_eq!(out.upstream_request.unwrap().header("x-added"), Some("yes"));
    let echo: serde_json::Value = serde_json::from_slice(&out.response.body).unwrap();
    assert!(echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "x-added" && h[1] == "yes"));
}

#[test]
fn connection_properties_follow_envoy_encodings() {
    let host = one();
    let mtls = Request::get("/").tls(Tls {
        peer_uri_sans: vec![
            "spiffe://cluster.local/ns/a/sa/first".into(),
            "spiffe://cluster.local/ns/a/sa/second".into(),
        ],
        peer_subject: Some("CN=frontend,O=Example".into()),
        ..Tls::default()
    });
    assert_eq!(
        property(&host, mtls.clone(), "connection.uri_san_peer_certificate"),
        "spiffe://cluster.local/ns/a/sa/first"
    );
    assert_eq!(property(&host, mtls.clone(), "connection.mtls"), hex(&[1]));
    assert_eq!(
        property(&host, mtls.clone(), "connection.subject_peer_certificate"),
        "CN=frontend,O=Example"
    );
    assert_eq!(
        property(
            &host,
            Request::get("/"),
            "connection.uri_san_peer_certificate"
        ),
        "<none>"
    );
    assert_eq!(
        property(&host, Request::get("/"), "connection.mtls"),
        hex(&[0])
    );
    assert_eq!(
        property(
            &host,
            Request::get("/").tls(Tls::server_only()),
            "connection.mtls"
        ),
        hex(&[0])
    );
    let src: SocketAddr = "127.0.0.7:41234".parse().unwrap();
    assert_eq!(
        property(&host, Request::get("/").source(src), "source.address"),
        "127.0.0.7:41234"
    );
    assert_eq!(
        property(&host, Request::get("/").source(src), "source.port"),
        hex(&41234u64.to_le_bytes())
    );
    assert_eq!(
        property(&host, Request::get("/"), "destination.port"),
        hex(&10000u64.to_le_bytes())
    );
    // A dotted single segment is not a path.
    assert_eq!(
        property(&host, Request::get("/"), "unknown.attribute"),
        "<none>"
    );
}

#[test]
fn request_properties() {
    let host = one();
    let req = || Request::get("/a/b?x=1").authority("svc.example");
    assert_eq!(property(&host, req(), "request.path"), "/a/b?x=1");
    assert_eq!(property(&host, req(), "request.url_path"), "/a/b");
    assert_eq!(property(&host, req(), "request.host"), "svc.example");
    assert_eq!(property(&host, req(), "request.method"), "GET");
    assert_eq!(property(&host, req(), "request.scheme"), "http");
    assert_eq!(property(&host, req(), "request.protocol"), "HTTP/1.1");
    assert_eq!(property(&host, req(), "plugin_name"), "p");
    assert_eq!(property(&host, req(), "plugin_root_id"), "p");
    let out = host.send(&req().header("x-probe-property", "request.id"));
    let up = out.upstream_request.unwrap();
    assert_eq!(
        up.header("x-probe-property-value"),
        up.header("x-request-id")
    );
    // Virtual clock: request.time is the host time at the start of the request (8-byte LE ns).
    let now = host.now_ns();
    assert_eq!(
        property(&host, req(), "request.time"),
        hex(&now.to_le_bytes())
    );
}

#[test]
fn set_property_is_visible_to_later_filters_of_the_same_request_only() {
    let host = Host::builder()
        .filter(probe("a"))
        .filter(probe("b"))
        .build()
        .unwrap();
    let req = Request::get("/")
        .header("x-probe-property", "meshward_x")
        .header("x-probe-set-property", "meshward_x=hello");
    let out = host.send(&req);
    // a reads (nothing yet) then sets; b reads a's value.
    assert_eq!(
        out.upstream_request
            .unwrap()
            .header("x-probe-property-value"),
        Some("hello")
    );
    let next = host.send(&Request::get("/").header("x-probe-property", "meshward_x"));
    assert_eq!(
        next.upstream_request
            .unwrap()
            .header("x-probe-property-value"),
        Some("<none>")
    );
}

#[test]
fn panic_is_a_trap_503_and_fails_the_worker_vm() {
    let host = one();
    let out = host.send(&Request::get("/").header("x-probe-panic", "1"));
    assert_eq!(out.status(), 503);
    assert!(host.vm_failed("p", Some(0)));
    assert_eq!(host.send(&Request::get("/")).status(), 503);
}

#[test]
fn noop_module_passes_requests() {
    let host = Host::builder()
        .filter(
            meshward_harness::FilterSpec::from_file(common::module_path("meshward_test_noop"))
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(host.filter_names(), ["meshward_test_noop"]);
    let out = host.send(&Request::get("/").header("x-a", "1"));
    assert_eq!(out.status(), 200);
    assert_eq!(out.upstream_request.unwrap().header("x-a"), Some("1"));
}

#[test]
fn probe_config_rejection_reports_the_error_log() {
    let err = Host::builder()
        .filter(probe("p").config("reject"))
        .build()
        .err()
        .expect("rejected");
    match err {
        meshward_harness::HostError::ConfigRejected { plugin, logs } => {
            assert_eq!(plugin, "p");
            assert!(
                logs.iter()
                    .any(|l| l.message.contains("configuration rejected on request")),
                "{logs:?}"
            );
        }
        e => panic!("unexpected {e}"),
    }
}
