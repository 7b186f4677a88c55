//! The shipped modules export only the event callbacks their filters handle: Envoy skips a
//! callback a module does not export (proxy-wasm-cpp-host), so every one exported for nothing is a
//! VM entry per request. scripts/build-wasm.sh trims the SDK's exports to what each filter lists
//! with `meshward_host::callbacks!`; this pins the result, and fails if the build stops trimming
//! or a filter's list drifts.

use meshward_tests::wasm;
use meshward_trim_callbacks::{event_exports, handled};

fn module(name: &str) -> Vec<u8> {
    let path = wasm(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-wasm.sh)", path.display()))
}

fn sorted_event_exports(bytes: &[u8]) -> Vec<String> {
    let mut exported = event_exports(bytes).unwrap();
    exported.sort();
    exported
}

#[test]
fn each_shipped_module_exports_exactly_the_callbacks_its_filter_handles() {
    let expected: &[(&str, &[&str])] = &[
        ("header_limits", &["proxy_on_request_headers"]),
        ("spiffe_authz", &["proxy_on_request_headers"]),
        ("spiffe_authz_tcp", &["proxy_on_downstream_data"]),
        (
            "jwt_authn",
            &[
                "proxy_on_http_call_response",
                "proxy_on_queue_ready",
                "proxy_on_request_headers",
                "proxy_on_tick",
            ],
        ),
        (
            "rate_limit",
            &["proxy_on_request_headers", "proxy_on_response_headers"],
        ),
        (
            "meshward",
            &[
                "proxy_on_http_call_response",
                "proxy_on_queue_ready",
                "proxy_on_request_headers",
                "proxy_on_response_headers",
                "proxy_on_tick",
            ],
        ),
    ];
    for (module, callbacks) in expected {
        let bytes = self::module(module);
        let exported = sorted_event_exports(&bytes);
        assert_eq!(exported, *callbacks, "{module}.wasm exports");
        let listed: Vec<String> = handled(&bytes).unwrap().into_iter().collect();
        assert_eq!(
            listed, exported,
            "{module}.wasm: its meshward.callbacks list"
        );
    }
}

#[test]
fn test_modules_keep_every_sdk_callback() {
    // The conformance modules pin what Envoy does with each callback: they stay as the SDK builds
    // them.
    let exported = sorted_event_exports(&module("meshward_test_noop"));
    for callback in [
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_log",
        "proxy_on_done",
    ] {
        assert!(
            exported.iter().any(|e| e == callback),
            "{callback}: {exported:?}"
        );
    }
}
