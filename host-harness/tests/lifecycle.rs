//! Loading, lifecycle order, chains, traps and fail strategies, with generated WAT modules.

mod common;

use common::{data_offset, events, log_call, Wat};
use meshward_harness::{
    FailStrategy, FilterSpec, Host, HostError, ListenerSettings, Request, Verdict,
};

#[test]
fn root_and_request_lifecycle_order() {
    let host = Host::builder()
        .filter(Wat::default().spec("a"))
        .build()
        .unwrap();
    let startup = events(&host.logs(), "a");
    // the configuration canary, the main thread, one worker: each root runs create, vm_start,
    // configure.
    assert_eq!(
        startup,
        [
            "context_create",
            "vm_start",
            "configure",
            "context_create",
            "vm_start",
            "configure",
            "context_create",
            "vm_start",
            "configure"
        ]
    );
    let out = host.send(&Request::get("/"));
    assert_eq!(out.status(), 200);
    assert!(matches!(out.verdict, Verdict::Upstream { status: 200 }));
    assert_eq!(
        events(&out.logs, "a"),
        [
            "context_create",
            "request_headers",
            "response_headers",
            // Envoy's HTTP/1 codec: the body, then an empty chunk with end_of_stream.
            "response_body",
            "response_body",
            "log",
            "done",
            "delete"
        ]
    );
}

/// Bodies arrive as Envoy's HTTP/1 codec dispatches them (the data, then an empty chunk with
/// end_of_stream), and request trailers are dropped by the codec (`enable_trailers` is off by
/// default): pinned in Envoy by tests/scenarios/conformance/http/bodies.yaml.
#[test]
fn body_callbacks_come_in_http1_chunks_and_trailers_are_dropped() {
    let host = Host::builder()
        .filter(Wat::default().spec("a"))
        .build()
        .unwrap();
    let out = host.send(&Request::post("/").body("hello").trailer("x-t", "1"));
    assert_eq!(
        events(&out.logs, "a"),
        [
            "context_create",
            "request_headers",
            "request_body",
            "request_body",
            "response_headers",
            "response_body",
            "response_body",
            "log",
            "done",
            "delete"
        ]
    );
    let up = out.upstream_request.unwrap();
    assert_eq!(up.body, b"hello");
    let echo: serde_json::Value = serde_json::from_slice(&out.response.body).unwrap();
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["method"], "POST");
}

#[test]
fn chain_runs_requests_forward_and_responses_backward() {
    let host = Host::builder()
        .filter(Wat::default().spec("a"))
        .filter(Wat::default().spec("b"))
        .build()
        .unwrap();
    let out = host.send(&Request::get("/"));
    let order: Vec<String> = out
        .logs
        .iter()
        .filter(|l| l.message.ends_with("_headers"))
        .map(|l| format!("{}:{}", l.plugin, l.message))
        .collect();
    assert_eq!(
        order,
        [
            "a:request_headers",
            "b:request_headers",
            "b:response_headers",
            "a:response_headers"
        ]
    );
}

#[test]
fn unknown_import_fails_with_its_name() {
    let wat = Wat {
        extra_imports: r#"(import "env" "proxy_not_a_thing" (func (param i32) (result i32)))"#
            .to_string(),
        ..Wat::default()
    };
    match Host::builder().filter(wat.spec("a")).build() {
        Err(HostError::UnknownImport { module, name }) => {
            assert_eq!(
                (module.as_str(), name.as_str()),
                ("env", "proxy_not_a_thing")
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("module with an unknown import loaded"),
    }
}

#[test]
fn abi_0_1_only_imports_are_refused_under_0_2_1() {
    let wat = Wat {
        extra_imports: r#"(import "env" "proxy_continue_request" (func (result i32)))"#.to_string(),
        ..Wat::default()
    };
    let err = Host::builder()
        .filter(wat.spec("a"))
        .build()
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("env.proxy_continue_request"),
        "{err}"
    );
}

#[test]
fn wasi_beyond_envoys_set_is_refused() {
    let wat = Wat {
        extra_imports: r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#.to_string(),
        ..Wat::default()
    };
    let err = Host::builder()
        .filter(wat.spec("a"))
        .build()
        .err()
        .expect("must fail");
    assert!(
        matches!(err, HostError::UnknownImport { ref name, .. } if name == "sock_open"),
        "{err}"
    );
}

#[test]
fn missing_abi_export_is_refused() {
    let bytes = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#).unwrap();
    let err = Host::builder()
        .filter(FilterSpec::from_bytes(bytes))
        .build()
        .err()
        .expect("must fail");
    assert!(matches!(err, HostError::UnsupportedAbi), "{err}");
}

#[test]
fn configure_false_is_a_rejection_with_the_module_logs() {
    let wat = Wat {
        configure_ok: false,
        ..Wat::default()
    };
    match Host::builder().filter(wat.spec("strict")).build() {
        Err(HostError::ConfigRejected { plugin, logs }) => {
            assert_eq!(plugin, "strict");
            assert!(
                logs.iter().any(|l| l.message == "configure rejected"),
                "{logs:?}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("configuration accepted"),
    }
}

#[test]
fn trap_gives_503_and_fails_the_vm_closed() {
    let wat = Wat {
        trap_on_request: true,
        ..Wat::default()
    };
    let host = Host::builder()
        .filter(Wat::default().spec("outer"))
        .filter(wat.spec("crashy"))
        .build()
        .unwrap();
    let first = host.send(&Request::get("/"));
    assert_eq!(first.status(), 503);
    assert!(!first.reached_upstream());
    assert!(
        matches!(&first.verdict, Verdict::LocalReply { details, by: Some(by), .. } if details == "wasm_fail_stream" && by == "crashy")
    );
    assert!(host.vm_failed("crashy", Some(0)));
    assert!(
        !host.vm_failed("crashy", None),
        "the main-thread VM is a separate instance"
    );
    // The outer filter's response callback still ran on the 503.
    assert!(events(&first.logs, "outer").contains(&"response_headers".to_string()));
    assert!(first
        .logs
        .iter()
        .any(|l| l.plugin == "crashy" && l.message.contains("proxy_on_request_headers failed")));
    let second = host.send(&Request::get("/"));
    assert_eq!(second.status(), 503);
    assert!(
        events(&second.logs, "crashy").is_empty(),
        "a failed VM gets no callbacks"
    );
}

#[test]
fn trap_with_fail_open_skips_the_filter() {
    let wat = Wat {
        trap_on_request: true,
        ..Wat::default()
    };
    let host = Host::builder()
        .filter(wat.spec("crashy").fail_strategy(FailStrategy::FailOpen))
        .build()
        .unwrap();
    let first = host.send(&Request::get("/"));
    assert_eq!(
        first.status(),
        200,
        "fail_open: the trapping request continues"
    );
    let second = host.send(&Request::get("/"));
    assert_eq!(second.status(), 200);
    assert!(second.reached_upstream());
}

#[test]
fn codec_431_happens_before_any_filter() {
    let host = Host::builder()
        .listener(ListenerSettings {
            max_request_headers_kb: 1,
            ..ListenerSettings::default()
        })
        .filter(Wat::default().spec("a"))
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").header("x-big", &"a".repeat(1100)));
    assert_eq!(out.status(), 431);
    assert_eq!(out.response.body_text(), "Request Header Fields Too Large");
    assert!(out.logs.is_empty());
    let ok = host.send(&Request::get("/").header("x-small", "a"));
    assert_eq!(ok.status(), 200);
}

#[test]
fn too_many_headers_is_431() {
    let host = Host::builder()
        .listener(ListenerSettings {
            max_headers_count: 3,
            ..ListenerSettings::default()
        })
        .filter(Wat::default().spec("a"))
        .build()
        .unwrap();
    // The codec counts the raw HTTP/1 header lines: host, a, connection (see hcm.rs).
    let one = Request::get("/").header("a", "1");
    assert_eq!(host.send(&one).status(), 200);
    let out = host.send(&one.clone().header("b", "2"));
    assert_eq!(out.status(), 431);
    assert!(out.logs.is_empty(), "refused before any filter");
}

#[test]
fn pause_without_anything_to_resume_is_stalled() {
    let wat = Wat {
        request_headers_action: 1,
        ..Wat::default()
    };
    let host = Host::builder().filter(wat.spec("a")).build().unwrap();
    let out = host.send(&Request::get("/"));
    assert!(
        matches!(out.verdict, Verdict::Stalled { ref filter, .. } if filter == "a"),
        "{:?}",
        out.verdict
    );
    assert!(!out.reached_upstream());
}

#[test]
fn hcm_headers_reach_the_upstream() {
    let host = Host::builder()
        .filter(Wat::default().spec("a"))
        .build()
        .unwrap();
    let out = host.send(
        &Request::get("/p?q=1")
            .authority("svc.local")
            .header("X-Mixed", "v"),
    );
    let up = out.upstream_request.unwrap();
    assert_eq!(up.header(":authority"), Some("svc.local"));
    assert_eq!(up.header(":scheme"), Some("http"));
    assert_eq!(up.header("x-forwarded-proto"), Some("http"));
    assert_eq!(up.header("x-mixed"), Some("v"));
    assert_eq!(up.header("x-request-id").map(str::len), Some(36));
    assert_eq!(
        out.response.header("content-type"),
        Some("application/json")
    );
    assert_eq!(out.response.header("server"), Some("envoy"));
}

#[test]
fn bad_guest_pointers_are_invalid_memory_access_not_traps() {
    let invalid = log_call("invalid memory access");
    let wat = Wat {
        on_request: format!(
            "(if (i32.eq (call $log (i32.const 2) (i32.const -16) (i32.const 100)) (i32.const 6)) (then {invalid}))
             (if (i32.eq (call $get_property (i32.const {pn}) (i32.const 11) (i32.const -4) (i32.const -4)) (i32.const 6)) (then {invalid}))
             (if (i32.eq (call $get_header (i32.const 0) (i32.const -8) (i32.const 64) (i32.const 0) (i32.const 0)) (i32.const 6)) (then {invalid}))",
            pn = data_offset("plugin_name"),
        ),
        ..Wat::default()
    };
    let host = Host::builder().filter(wat.spec("a")).build().unwrap();
    let out = host.send(&Request::get("/"));
    assert_eq!(out.status(), 200);
    assert_eq!(
        events(&out.logs, "a")
            .iter()
            .filter(|m| *m == "invalid memory access")
            .count(),
        3
    );
    assert!(!host.vm_failed("a", Some(0)));
}

#[test]
fn wasi_clock_reads_the_virtual_clock() {
    // clock_time_get(realtime) into memory at 1024, then compare with proxy_get_current_time.
    let wat = Wat {
        extra_imports: r#"(import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))"#.to_string(),
        on_request: format!(
            "(drop (call $clock (i32.const 0) (i64.const 1) (i32.const 1024)))
             (drop (call $now (i32.const 1032)))
             (if (i64.eq (i64.load (i32.const 1024)) (i64.load (i32.const 1032))) (then {}))",
            log_call("tick")
        ),
        ..Wat::default()
    };
    let host = Host::builder().filter(wat.spec("a")).build().unwrap();
    let out = host.send(&Request::get("/"));
    assert!(
        events(&out.logs, "a").contains(&"tick".to_string()),
        "WASI realtime == proxy time under the virtual clock"
    );
}
