//! The scenario files under tests/scenarios/, each run through the harness AND a real Envoy 1.40
//! with the same module and config. A case fails if either run misses its expectation or if the
//! two runs differ in anything the case checks. Envoy missing ⇒ failure, never a skip.

use std::path::PathBuf;

use meshward_rig::default_wasm_dir;
use meshward_scenario::suite::{run_file, Targets};
use meshward_tests::repo;

/// Run every `*.yaml` in `tests/scenarios/<dir>` in both targets and fail with the full report.
fn suite(dir: &str) {
    let root = repo();
    let scenario_dir = root.join("tests/scenarios").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&scenario_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", scenario_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no scenario files in {}",
        scenario_dir.display()
    );
    let wasm_dir = default_wasm_dir(&root);
    let (mut passed, mut failed, mut text) = (0, 0, String::new());
    for file in &files {
        let report = run_file(file, &wasm_dir, Targets::HarnessAndEnvoy, true);
        passed += report.passed;
        failed += report.failed;
        text.push_str(&report.text);
    }
    println!("{text}\n{dir}: {passed} passed, {failed} failed");
    assert_eq!(failed, 0, "{dir}: {failed} case(s) failed:\n{text}");
    assert!(passed > 0, "{dir}: no case ran");
}

#[test]
fn header_limits_scenarios_agree_in_harness_and_envoy() {
    suite("header-limits");
}

#[test]
fn spiffe_authz_scenarios_agree_in_harness_and_envoy() {
    suite("spiffe-authz");
}

#[test]
fn jwt_authn_scenarios_agree_in_harness_and_envoy() {
    suite("jwt-authn");
}

#[test]
fn rate_limit_scenarios_agree_in_harness_and_envoy() {
    suite("rate-limit");
}

/// What Envoy's HTTP/1 codec does before any filter (behind the no-op module).
#[test]
fn codec_scenarios_agree_in_harness_and_envoy() {
    suite("codec");
}

/// Istio PeerAuthentication's modes (`listener.mtls`): which callers a listener takes, and that a
/// refused one gets no HTTP response and reaches no filter.
#[test]
fn transport_scenarios_agree_in_harness_and_envoy() {
    suite("transport");
}

/// The HTTP stream's phase rules as a Rust SDK module sees them (tests/modules/sdk-http): which
/// maps and bodies a filter holds in each phase, bodies in chunks, local replies (gRPC, details,
/// the filters behind), inline headers, on_log (issue #16, docs/harness-fidelity.md
/// "HTTP stream").
#[test]
fn conformance_http_scenarios_agree_in_harness_and_envoy() {
    suite("conformance/http");
}
