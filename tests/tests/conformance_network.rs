//! The Rust-SDK network module (tests/modules/sdk-network, built by scripts/build-wasm.sh) as a
//! wasm network filter in front of `tcp_proxy` and an echo upstream, run in the harness and in
//! real Envoy 1.40 with the TCP scenario files under tests/scenarios/conformance/network/: same
//! cases, same outcomes (what the client and the upstream received, who closed, metrics).

use meshward_tests::parity_suite;

#[test]
fn network_filters_agree_in_harness_and_envoy() {
    let passed = parity_suite("conformance/network");
    assert!(passed >= 15, "only {passed} network parity cases");
}

/// What the harness does not reproduce it refuses by name, never answering differently.
#[test]
fn the_harness_refuses_a_paused_new_connection() {
    use meshward_harness::{ConnectionSpec, FilterSpec, Host, HostError};
    let module = meshward_tests::wasm("meshward_test_sdk_network");
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(&module)
                .unwrap()
                .name("net")
                .config(b"pause_new".to_vec()),
        )
        .build()
        .unwrap();
    match host.connect(&ConnectionSpec::default()) {
        Err(HostError::NotModelled(what)) => assert!(what.contains("proxy_on_new_connection")),
        Err(e) => panic!("expected a NotModelled error, got {e}"),
        Ok(_) => panic!("expected the harness to refuse a paused new connection"),
    }
}
