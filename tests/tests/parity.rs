//! The scenario files under tests/scenarios/, each run through the harness AND a real Envoy 1.40
//! with the same module and config. A case fails if either run misses its expectation or if the
//! two runs differ in anything the case checks. Envoy missing ⇒ failure, never a skip.

use meshward_tests::parity_suite as suite;

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
