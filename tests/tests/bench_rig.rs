//! Smoke test of `meshward bench envoy` (the real-Envoy benchmark rig): one short round over every
//! configuration, written to a temporary file, never BENCHMARKS.md. Envoy missing ⇒ the run errors
//! ("run scripts/setup.sh") ⇒ the test fails; nothing is skipped.

use std::time::Duration;

use meshward_bench::envoy::{self as bench, BenchOptions, BEGIN_MARKER, END_MARKER};
use meshward_rig::WorkDir;

const CONFIGURATIONS: &[(&str, &str)] = &[
    ("router only", "router"),
    ("no-op wasm", "noop"),
    ("no-op wasm, request-headers callback only", "noop-trimmed"),
    ("header-limits (strict.json)", "header-limits"),
    ("HCM limits (same limits)", "hcm-limits"),
    ("spiffe-authz (mesh-10.json)", "spiffe-authz"),
    ("RBAC (mesh-10 as Istio translates it)", "rbac"),
    ("jwt-authn warm (one RS256 token)", "jwt-authn"),
    ("jwt_authn warm (one RS256 token)", "native-jwt-authn"),
    ("jwt-authn cold RS256 (300 tokens)", "jwt-authn"),
    ("jwt_authn cold RS256 (300 tokens)", "native-jwt-authn"),
    ("jwt-authn cold ES256 (300 tokens)", "jwt-authn"),
    ("jwt_authn cold ES256 (300 tokens)", "native-jwt-authn"),
    ("rate-limit (bucket never empties)", "rate-limit"),
    ("local_ratelimit (bucket never empties)", "local-ratelimit"),
    (
        "meshward chain (header-limits → jwt-authn → spiffe-authz → rate-limit)",
        "meshward-chain",
    ),
    (
        "meshward bundle (the four checks in meshward.wasm)",
        "meshward-bundle",
    ),
    ("meshward bundle cold RS256 (300 tokens)", "meshward-bundle"),
    (
        "native chain (HCM limits → jwt_authn → RBAC → local_ratelimit)",
        "native-chain",
    ),
    ("native chain cold RS256 (300 tokens)", "native-chain"),
];

/// (listener, status) pairs the sanity checks must have seen: each filter rejected a request that
/// violates its policy, natively and in meshward alike.
const REJECTIONS: &[(&str, u16)] = &[
    ("header-limits", 431),
    ("hcm-limits", 431),
    ("spiffe-authz", 403),
    ("rbac", 403),
    ("jwt-authn", 401),
    ("native-jwt-authn", 401),
    ("meshward-chain", 401),
    ("meshward-chain", 403),
    ("meshward-chain", 431),
    ("meshward-bundle", 401),
    ("meshward-bundle", 403),
    ("meshward-bundle", 431),
    ("native-chain", 401),
    ("native-chain", 403),
    ("native-chain", 431),
];

#[test]
fn bench_envoy_measures_every_configuration_after_checking_its_filters() {
    let options = BenchOptions {
        connections: 2,
        rounds: 1,
        round: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        jwt_pool: 300,
        command: "bench_rig smoke test".into(),
        ..BenchOptions::default()
    };
    let report = bench::run(&options).unwrap();

    let names: Vec<(&str, &str)> = report
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.listener.as_str()))
        .collect();
    assert_eq!(names, CONFIGURATIONS);
    for row in &report.rows {
        assert_eq!(row.rounds.len(), 1, "{}", row.name);
        assert!(row.median.requests > 0, "{}: no request measured", row.name);
        assert!(row.median.requests_per_second > 0.0, "{}", row.name);
        assert!(row.median.p50 > Duration::ZERO, "{}", row.name);
        assert!(row.median.p99 >= row.median.p50, "{}", row.name);
    }
    for row in &report.rows {
        // Every wasm configuration has its host calls counted in the harness, filter by filter.
        let wasm = row.side == "meshward" || row.listener.starts_with("noop");
        assert_eq!(!row.hostcalls.is_empty(), wasm, "{}", row.name);
        if row.side == "meshward" {
            assert!(
                row.hostcalls.iter().all(|(_, n)| *n > 0),
                "{}: {:?}",
                row.name,
                row.hostcalls
            );
        }
        // And its wasm instructions metered, for the same filters.
        let filters = |v: &[(String, u64)]| v.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
        assert_eq!(filters(&row.fuel), filters(&row.hostcalls), "{}", row.name);
        assert!(
            row.fuel.iter().all(|(_, n)| *n > 0),
            "{}: {:?}",
            row.name,
            row.fuel
        );
    }
    let chain = report
        .row("meshward chain (header-limits → jwt-authn → spiffe-authz → rate-limit)")
        .unwrap();
    let names: Vec<&str> = chain.hostcalls.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        ["header-limits", "jwt-authn", "spiffe-authz", "rate-limit"]
    );
    // The cold rows pay a signature check through Envoy's verify_signature: one call more than warm.
    let calls = |name: &str| report.row(name).unwrap().hostcalls[0].1;
    assert_eq!(
        calls("jwt-authn cold RS256 (300 tokens)"),
        calls("jwt-authn warm (one RS256 token)") + 1
    );
    let memory: Vec<&str> = report.memory.iter().map(|m| m.listener.as_str()).collect();
    assert_eq!(
        memory,
        [
            "router",
            "meshward-chain",
            "meshward-bundle",
            "native-chain"
        ]
    );
    // The bundle: one module, fewer host calls than the four filters for the same request.
    let bundle = report
        .row("meshward bundle (the four checks in meshward.wasm)")
        .unwrap();
    assert_eq!(bundle.hostcalls.len(), 1);
    assert!(
        bundle.hostcalls[0].1 < chain.hostcalls.iter().map(|(_, n)| n).sum::<u64>(),
        "{:?} vs {:?}",
        bundle.hostcalls,
        chain.hostcalls
    );
    // The same work in one module costs fewer instructions than in four (one header-map decode
    // instead of four, one SDK dispatch), and far more than the no-op.
    let work = |v: &[(String, u64)]| v.iter().map(|(_, n)| n).sum::<u64>();
    assert!(
        work(&bundle.fuel) < work(&chain.fuel),
        "{:?} vs {:?}",
        bundle.fuel,
        chain.fuel
    );
    let noop = report.row("no-op wasm").unwrap();
    assert!(
        work(&bundle.fuel) > 10 * work(&noop.fuel),
        "{:?} vs {:?}",
        bundle.fuel,
        noop.fuel
    );
    assert!(report.memory.iter().all(|m| m.rss_kib > 0));
    assert!(report
        .modules
        .iter()
        .any(|(f, size)| f == "jwt_authn.wasm" && *size > 0));
    let cpu: Duration = report.rows.iter().map(|r| r.median.cpu_per_request).sum();
    assert!(cpu > Duration::ZERO, "Envoy's CPU time was not measured");
    assert!(report.upstream_direct.requests > 0);
    assert!(report.envoy_rss_kib > 0);
    assert!(
        report.run.envoy_version.contains("1.40"),
        "{}",
        report.run.envoy_version
    );

    // Every listener passed its checks, and the rejecting ones rejected.
    for (_, listener) in CONFIGURATIONS {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.listener == *listener && c.status == 200),
            "no passing sanity check on {listener}"
        );
    }
    for (listener, status) in REJECTIONS {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.listener == *listener && c.status == *status),
            "no {status} sanity check on {listener}: {:?}",
            report.checks
        );
    }
    for listener in ["rate-limit", "local-ratelimit"] {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.listener == listener && c.what.contains("x-ratelimit-limit")),
            "{listener}"
        );
    }

    // The Markdown section lands in a file between markers; a rerun replaces it.
    let dir = WorkDir::new("bench-rig-").unwrap();
    let path = dir
        .write("BENCHMARKS.md", "# Benchmarks\n\nkept\n")
        .unwrap();
    let section = bench::render(&report);
    bench::update_file(&path, &section).unwrap();
    bench::update_file(&path, &section).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nkept\n"), "{text}");
    assert_eq!(text.matches(BEGIN_MARKER).count(), 1, "{text}");
    assert_eq!(text.matches(END_MARKER).count(), 1, "{text}");
    for (name, _) in CONFIGURATIONS {
        assert!(
            text.contains(&format!("| {name} |")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("bench_rig smoke test"), "{text}");
}

/// Smoke test of `meshward bench abi`: every kind of host call measured in a real Envoy beside
/// the floors, each row making exactly its calls (the run checks that in the harness and fails
/// otherwise), a price per call and per VM entry, and its own Markdown section.
#[test]
fn bench_abi_prices_every_kind_of_host_call() {
    use meshward_bench::envoy::abi;
    use meshward_test_hostcall_cost::Kind;

    let options = BenchOptions {
        connections: 2,
        rounds: 1,
        round: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        command: "bench_rig abi smoke test".into(),
        ..BenchOptions::default()
    };
    let report = abi::run(&options, 5).unwrap();
    let mut expected = vec![
        "router only".to_string(),
        "no-op wasm".to_string(),
        "no-op wasm, request-headers callback only".to_string(),
    ];
    expected.extend(Kind::ALL.into_iter().map(|k| abi::row_name(k, 5)));
    expected.extend(abi::ONCE.into_iter().map(|(k, _)| abi::row_name(k, 1)));
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, expected);
    for row in &report.rows {
        assert!(row.median.requests > 0, "{}: no request measured", row.name);
        assert!(
            row.median.cpu_per_request > Duration::ZERO,
            "{}: Envoy's CPU time was not measured",
            row.name
        );
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.listener == row.listener && c.status == 200),
            "{}: no passing sanity check",
            row.name
        );
    }
    let rows = Kind::ALL
        .into_iter()
        .map(|k| (k, 5))
        .chain(abi::ONCE.into_iter().map(|(k, _)| (k, 1)));
    for (kind, times) in rows {
        let row = report.row(&abi::row_name(kind, times)).unwrap();
        let made: u64 = row.hostcalls.iter().map(|(_, n)| n).sum();
        let expected = if kind.is_host_call() { times } else { 0 };
        assert_eq!(made, u64::from(expected), "{kind:?} × {times}");
        assert!(
            report.per_call_us(kind, times).is_some_and(f64::is_finite),
            "{kind:?} × {times}"
        );
    }
    assert!(report.vm_entry_us().is_some_and(f64::is_finite));

    let dir = WorkDir::new("bench-abi-").unwrap();
    let path = dir
        .write("BENCHMARKS.md", "# Benchmarks\n\nkept\n")
        .unwrap();
    let section = abi::render(&report);
    abi::update_file(&path, &section).unwrap();
    abi::update_file(&path, &section).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nkept\n"), "{text}");
    assert_eq!(text.matches(abi::BEGIN_MARKER).count(), 1, "{text}");
    assert_eq!(text.matches(abi::END_MARKER).count(), 1, "{text}");
    assert!(text.contains(abi::HEADING), "{text}");
    for name in expected {
        assert!(text.contains(&format!("| {name} |")), "{name}:\n{text}");
    }
    assert!(text.contains("One VM entry"), "{text}");
}

/// The cost module refuses to be measured on a call that fails: a property the connection does
/// not have answers 500, so the benchmark (which expects 200) stops instead of timing an error.
#[test]
fn the_cost_module_answers_500_when_its_call_fails() {
    use meshward_harness::{FilterSpec, Host, Request, Tls};

    let module = meshward_rig::default_wasm_dir(&meshward_rig::repo_root())
        .join("meshward_test_hostcall_cost.wasm");
    let host = |call: &str| {
        Host::builder()
            .filter(
                FilterSpec::from_file(&module)
                    .unwrap()
                    .name("hostcall-cost")
                    .config_json(&format!(r#"{{"call": "{call}", "times": 3}}"#)),
            )
            .build()
            .unwrap()
    };
    let mtls = Request::new("GET", "/").tls(Tls::peer("spiffe://cluster.local/ns/a/sa/b"));
    let plaintext = Request::new("GET", "/");
    assert_eq!(host("property").send(&mtls).status(), 200);
    let refused = host("property").send(&plaintext);
    assert_eq!(refused.status(), 500);
    assert_eq!(
        refused.response.header("x-hostcall-cost-error"),
        Some("property")
    );
    assert!(Host::builder()
        .filter(
            FilterSpec::from_file(&module)
                .unwrap()
                .name("hostcall-cost")
                .config_json(r#"{"call": "nope", "times": 3}"#),
        )
        .build()
        .is_err());
}
