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
        report.envoy_version.contains("1.40"),
        "{}",
        report.envoy_version
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
