//! Workers, ticks, the virtual clock, callouts, shared data across workers, metrics, faults.

mod common;

use std::time::Duration;

use common::probe;
use meshward_harness::{CalloutResponse, Cluster, Host, Request, Status};

fn counter(host: &Host, key: &str) -> u64 {
    host.shared_data("")
        .into_iter()
        .find(|(k, _, _)| k == key.as_bytes())
        .map(|(_, v, _)| u64::from_le_bytes(v.try_into().unwrap()))
        .unwrap_or(0)
}

#[test]
fn ticks_fire_on_every_root_context_in_virtual_time() {
    let host = Host::builder()
        .workers(2)
        .filter(probe("p").config("tick_ms=100"))
        .build()
        .unwrap();
    assert_eq!(
        host.metric("probe.ticks"),
        None,
        "no tick before time moves"
    );
    host.advance(Duration::from_millis(99));
    assert_eq!(host.metric("probe.ticks"), None);
    host.advance(Duration::from_millis(1));
    // main thread + 2 workers.
    assert_eq!(host.metric("probe.ticks"), Some(3));
    host.advance(Duration::from_secs(1));
    assert_eq!(host.metric("probe.ticks"), Some(33));
}

#[test]
fn virtual_clock_is_what_modules_read() {
    let host = one_probe();
    let before = host.now_ns();
    host.advance(Duration::from_secs(5));
    assert_eq!(host.now_ns() - before, 5_000_000_000);
    let out = host.send(&Request::get("/").header("x-probe-property", "request.time"));
    let v = out
        .upstream_request
        .unwrap()
        .header("x-probe-property-value")
        .unwrap()
        .to_string();
    let ns = u64::from_str_radix(&v["hex:".len()..], 16)
        .unwrap()
        .swap_bytes();
    assert_eq!(ns, host.now_ns());
}

fn one_probe() -> Host {
    Host::builder().filter(probe("p")).build().unwrap()
}

/// The response reaches the root context (as in Envoy); the probe is built on the Rust SDK,
/// whose dispatcher then calls `proxy_set_effective_context(request context)` and the request
/// context resumes itself: resuming from another context is what makes this pass.
#[test]
fn callout_response_resumes_the_paused_request() {
    let host = Host::builder()
        .filter(probe("p"))
        .cluster(
            "auth",
            Cluster::respond(CalloutResponse::new(200, "granted"))
                .latency(Duration::from_millis(30)),
        )
        .build()
        .unwrap();
    let start = host.now_ns();
    let out = host.send(&Request::get("/").header("x-probe-callout", "auth"));
    assert_eq!(out.status(), 200);
    let up = out.upstream_request.unwrap();
    assert_eq!(up.header("x-probe-callout-status"), Some("200"));
    assert_eq!(up.header("x-probe-callout-body"), Some("granted"));
    assert_eq!(
        host.now_ns() - start,
        30_000_000,
        "the request waited for the callout's latency"
    );
    let calls = host.callouts();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header(":authority"), Some("auth"));
    assert_eq!(calls[0].timeout, Duration::from_secs(1));
}

#[test]
fn callout_to_unknown_cluster_is_bad_argument_synchronously() {
    let out = one_probe().send(&Request::get("/").header("x-probe-callout", "nowhere"));
    assert_eq!(out.status(), 200);
    assert_eq!(
        out.upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("error:BadArgument")
    );
}

#[test]
fn callout_timeout_and_failures_have_envoys_shapes() {
    let host = Host::builder()
        .filter(probe("p"))
        .cluster(
            "slow",
            Cluster::respond(CalloutResponse::new(200, "late")).latency(Duration::from_secs(5)),
        )
        .cluster("dead", Cluster::dead())
        .cluster("flaky", Cluster::reset())
        .build()
        .unwrap();
    let start = host.now_ns();
    let slow = host.send(&Request::get("/").header("x-probe-callout", "slow"));
    assert_eq!(
        slow.upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("504")
    );
    assert_eq!(
        host.now_ns() - start,
        1_000_000_000,
        "the 1 s timeout fired, not the 5 s latency"
    );
    let dead = host.send(&Request::get("/").header("x-probe-callout", "dead"));
    assert_eq!(
        dead.upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("503")
    );
    let reset = host.send(&Request::get("/").header("x-probe-callout", "flaky"));
    assert_eq!(
        reset
            .upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("none")
    );
}

#[test]
fn injected_callout_failure() {
    let host = Host::builder()
        .filter(probe("p"))
        .cluster("auth", Cluster::respond(CalloutResponse::new(200, "ok")))
        .build()
        .unwrap();
    host.fail_callouts("auth", 1);
    let first = host.send(&Request::get("/").header("x-probe-callout", "auth"));
    assert_eq!(
        first
            .upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("none")
    );
    let second = host.send(&Request::get("/").header("x-probe-callout", "auth"));
    assert_eq!(
        second
            .upstream_request
            .unwrap()
            .header("x-probe-callout-status"),
        Some("200")
    );
}

#[test]
fn shared_data_is_shared_across_workers() {
    let host = Host::builder()
        .workers(2)
        .filter(probe("p"))
        .build()
        .unwrap();
    for i in 0..6 {
        let out = host.send(
            &Request::get("/")
                .header("x-probe-count", "hits")
                .worker(i % 2),
        );
        assert_eq!(
            out.upstream_request.unwrap().header("x-probe-count-value"),
            Some((i + 1).to_string().as_str())
        );
    }
    assert_eq!(counter(&host, "hits"), 6);
}

#[test]
fn forced_interleaving_makes_the_cas_loop_retry() {
    let host = Host::builder()
        .workers(2)
        .filter(probe("p"))
        .build()
        .unwrap();
    // Seed the key so that both readers get a CAS value.
    host.send(&Request::get("/").header("x-probe-count", "k"));
    let req = Request::get("/").header("x-probe-count", "k");
    let (a, b, trace) = host.send_interleaved(&req, 0, &req, 1);
    let ops: Vec<&str> = trace.iter().map(|(_, op)| *op).collect();
    // Both read, then both write: the second write is a CAS mismatch and is retried.
    assert_eq!(
        &ops[..4],
        [
            "get_shared_data",
            "get_shared_data",
            "set_shared_data",
            "set_shared_data"
        ]
    );
    assert_eq!(ops.len(), 6, "{trace:?}");
    let values = [a, b].map(|o| {
        o.upstream_request
            .unwrap()
            .header("x-probe-count-value")
            .unwrap()
            .to_string()
    });
    let mut values = values.to_vec();
    values.sort();
    assert_eq!(values, ["2", "3"]);
    assert_eq!(counter(&host, "k"), 3);
}

#[test]
fn cas_counter_is_exact_under_real_threads() {
    let host = Host::builder()
        .workers(2)
        .filter(probe("p"))
        .build()
        .unwrap();
    // Seed the key first: the first write of a missing key has no CAS value to check (as in
    // Envoy), so two threads that both find it missing would race; from then on every update is
    // compare-and-set and the count must be exact.
    host.send(&Request::get("/").header("x-probe-count", "n"));
    let reqs: Vec<Request> = (0..200)
        .map(|_| Request::get("/").header("x-probe-count", "n"))
        .collect();
    let outs = host.send_parallel(&reqs, 2);
    assert_eq!(outs.len(), 200);
    assert!(outs.iter().all(|o| o.status() == 200));
    assert_eq!(counter(&host, "n"), 201);
}

#[test]
fn injected_unexpected_status_crashes_the_sdk_like_in_envoy() {
    let host = one_probe();
    // The Rust SDK panics on a status it does not expect from get_shared_data.
    host.inject_status("proxy_get_shared_data", Status::INTERNAL_FAILURE, Some(1));
    let out = host.send(&Request::get("/").header("x-probe-count", "z"));
    assert_eq!(out.status(), 503);
    assert!(
        out.logs
            .iter()
            .any(|l| l.message.contains("unexpected status: 10")),
        "{:?}",
        out.logs
    );
    assert!(host.vm_failed("p", Some(0)));
}

#[test]
fn injected_cas_mismatch_is_retried() {
    let host = one_probe();
    host.inject_status("proxy_set_shared_data", Status::CAS_MISMATCH, Some(2));
    let out = host.send(&Request::get("/").header("x-probe-count", "z"));
    assert_eq!(
        out.upstream_request.unwrap().header("x-probe-count-value"),
        Some("1")
    );
    assert_eq!(counter(&host, "z"), 1);
}

#[test]
fn requests_are_dispatched_round_robin() {
    let host = Host::builder()
        .workers(3)
        .filter(probe("p"))
        .build()
        .unwrap();
    let workers: Vec<usize> = (0..6)
        .map(|_| host.send(&Request::get("/")).worker)
        .collect();
    assert_eq!(workers, [0, 1, 2, 0, 1, 2]);
    assert_eq!(host.send(&Request::get("/").worker(2)).worker, 2);
}

#[test]
fn check_reports_imports_exports_and_configuration() {
    let ok = meshward_harness::check(&probe("p"));
    assert!(ok.is_ok(), "{:?}", ok.error);
    assert_eq!(ok.module.abi, Some(meshward_harness::AbiVersion::V0_2_1));
    let rejected = meshward_harness::check(&probe("p").config("reject"));
    assert!(matches!(
        rejected.error,
        Some(meshward_harness::HostError::ConfigRejected { .. })
    ));
    assert!(rejected.logs.iter().any(|l| l.message.contains("rejected")));
    let bytes = wat::parse_str(
        r#"(module (import "__wbindgen_placeholder__" "__wbindgen_describe" (func (param i32)))
                   (memory (export "memory") 1))"#,
    )
    .unwrap();
    let bad = meshward_harness::check(&meshward_harness::FilterSpec::from_bytes(bytes));
    assert_eq!(
        bad.module.unsupported_imports,
        [(
            "__wbindgen_placeholder__".to_string(),
            "__wbindgen_describe".to_string()
        )]
    );
    assert!(bad
        .module
        .missing_exports
        .contains(&"proxy_abi_version_0_2_1".to_string()));
    assert!(!bad.is_ok());
}
