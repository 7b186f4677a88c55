//! Host calls per request per filter (`Outcome::filter_hostcalls`, printed by `meshward bench`,
//! issue 14's host-call diet): the counter agrees with the hostcall trace, call for call, for a
//! chain of meshward filters, and a request the listener or the codec refuses costs no call. The
//! same for the wasm instructions each filter executes (`Outcome::filter_fuel`, `meshward bench
//! --fuel`): this test binary meters them in every test (metering is per process and must come
//! before the first module is compiled; it changes no outcome).

use meshward_harness::{FilterSpec, Host, ListenerSettings, Request, Tls};
use meshward_tests::wasm;

fn chain() -> Host {
    // Whichever test comes first in this process turns it on; later calls change nothing.
    meshward_harness::meter_guest_instructions();
    Host::builder()
        .listener(ListenerSettings::default())
        .filter(
            FilterSpec::from_file(wasm("header-limits"))
                .expect("header-limits.wasm")
                .config(br#"{"maxRequestHeadersKb": 32}"#.to_vec()),
        )
        .filter(
            FilterSpec::from_file(wasm("spiffe-authz"))
                .expect("spiffe-authz.wasm")
                .config(
                    br#"{"policies": [{"name": "p", "rules": [{"to": [{"operation": {"paths": ["/api/*"]}}]}]}]}"#
                        .to_vec(),
                ),
        )
        .build()
        .expect("host")
}

#[test]
fn hostcall_counts_agree_with_the_trace() {
    let host = chain();
    let requests = [
        Request::get("/api/x").tls(Tls::peer("spiffe://cluster.local/ns/a/sa/b")),
        Request::get("/admin").tls(Tls::peer("spiffe://cluster.local/ns/a/sa/b")),
        Request::get("/api/x?y=1").header("x-a", "1"),
    ];
    for req in &requests {
        host.trace(true);
        let out = host.send(req);
        host.trace(false);
        let trace = host.hostcall_trace();
        assert_eq!(out.filter_hostcalls.len(), 2);
        for (filter, calls) in &out.filter_hostcalls {
            let traced = trace
                .iter()
                .filter(|r| r.in_stream && &r.filter == filter)
                .count() as u64;
            assert_eq!(*calls, traced, "{filter} on {}", req.path);
            assert!(*calls > 0, "{filter} made no host call on {}", req.path);
        }
    }
}

#[test]
fn guest_instructions_are_counted_per_filter_and_repeat_exactly() {
    let host = chain();
    let req = Request::get("/api/x").tls(Tls::peer("spiffe://cluster.local/ns/a/sa/b"));
    // Warm every worker's VMs (the first request of each may initialise lazily).
    for worker in 0..4 {
        host.send(&req.clone().worker(worker));
    }
    let first = host.send(&req.clone().worker(0)).filter_fuel;
    let again = host.send(&req.clone().worker(0)).filter_fuel;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|(_, n)| *n > 1000), "{first:?}");
    assert_eq!(first, again, "the same request, the same work");
    // header-limits looks at every byte: a long header is more work for it.
    let long = req.clone().worker(0).header("x-long", &"a".repeat(4096));
    let more = host.send(&long).filter_fuel;
    assert!(
        more[0].1 > first[0].1 + 4096 / 8,
        "{more:?} against {first:?}"
    );
}

#[test]
fn a_refused_request_costs_no_host_call() {
    let host = chain();
    // Envoy's codec refuses a request-target that is not origin-form before any filter runs.
    let out = host.send(&Request::get("no-slash"));
    assert_ne!(out.status(), 200);
    assert!(
        out.filter_hostcalls.iter().all(|(_, c)| *c == 0),
        "{:?}",
        out.filter_hostcalls
    );
    assert!(
        out.filter_fuel.iter().all(|(_, n)| *n == 0),
        "{:?}",
        out.filter_fuel
    );
}
