//! Conformance of the harness's runtime surface (properties, foreign functions, callouts, queues,
//! VM start-up) with Envoy 1.40: the scenario files under tests/scenarios/conformance/runtime/,
//! each run through the harness AND a real Envoy with the Rust SDK test modules `sdk-properties`,
//! `sdk-runtime` and `verify`. A case fails if either run misses its expectation or the two differ
//! in anything it checks. Envoy missing ⇒ failure, never a skip.

use std::path::PathBuf;

use meshward_harness::{CalloutResponse, Cluster, FilterSpec, Host, Request};
use meshward_rig::default_wasm_dir;
use meshward_tests::{assert_every_file_has_its_test, parity_file, repo};

fn scenario(name: &str) {
    parity_file("conformance/runtime", name);
}

#[test]
fn property_paths_agree_in_harness_and_envoy() {
    scenario("properties-paths");
}

#[test]
fn callout_responses_are_read_only_in_harness_and_envoy() {
    scenario("callout-maps");
}

/// Every scenario file of the folder is run by one of the tests above.
#[test]
fn every_runtime_scenario_file_has_its_test() {
    assert_every_file_has_its_test(
        "conformance/runtime",
        include_str!("conformance_runtime.rs"),
    );
}

#[test]
fn xds_and_top_level_properties_agree_in_harness_and_envoy() {
    scenario("properties-xds");
}

#[test]
fn request_phase_properties_agree_in_harness_and_envoy() {
    scenario("properties-request");
}

#[test]
fn response_phase_properties_agree_in_harness_and_envoy() {
    scenario("properties-response");
}

#[test]
fn tls_connection_properties_agree_in_harness_and_envoy() {
    scenario("properties-tls");
}

#[test]
fn filter_state_properties_agree_in_harness_and_envoy() {
    scenario("filter-state");
}

#[test]
fn local_reply_properties_agree_in_harness_and_envoy() {
    scenario("properties-local-reply");
}

#[test]
fn foreign_functions_agree_in_harness_and_envoy() {
    scenario("foreign");
}

#[test]
fn queues_callouts_and_stream_control_agree_in_harness_and_envoy() {
    scenario("runtime");
}

/// VM sharing, canaries and failure policies (the `vm-*` files): what Envoy 1.40 does.
#[test]
fn plugins_with_one_vm_id_share_a_vm_in_harness_and_envoy() {
    scenario("vm-sharing");
}

#[test]
fn plugins_with_different_vm_ids_do_not_share_in_harness_and_envoy() {
    scenario("vm-sharing-separate-ids");
}

#[test]
fn a_different_vm_configuration_is_another_vm_in_harness_and_envoy() {
    scenario("vm-sharing-vm-config");
}

#[test]
fn a_different_plugin_configuration_shares_the_vm_in_harness_and_envoy() {
    scenario("vm-sharing-plugin-config");
}

#[test]
fn each_worker_and_the_main_thread_have_a_vm_in_harness_and_envoy() {
    scenario("vm-sharing-workers");
}

#[test]
fn traps_fail_closed_or_open_per_policy_in_harness_and_envoy() {
    scenario("vm-trap-fail-closed");
}

#[test]
fn fail_reload_replaces_the_failed_vm_in_harness_and_envoy() {
    scenario("vm-trap-fail-reload");
}

#[test]
fn fail_reload_of_one_plugin_leaves_the_other_in_the_failed_vm_in_harness_and_envoy() {
    scenario("vm-trap-fail-reload-alone");
}

fn module(name: &str) -> PathBuf {
    let p = default_wasm_dir(&repo()).join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        p.display()
    );
    p
}

/// What the harness refuses rather than answer differently from Envoy: the call traps with an
/// error naming the behaviour (Envoy answers these; a scenario could not agree on them).
fn refused(module_name: &str, headers: &[(&str, &str)]) -> String {
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(module(module_name))
                .unwrap()
                .name("m"),
        )
        .build()
        .unwrap();
    let mut request = Request::get("/");
    for (n, v) in headers {
        request = request.header(n, v);
    }
    let out = host.send(&request);
    format!("{out:?}")
}

/// gRPC goes to a real server (conformance_grpc.rs). A unary call to a cluster the harness models
/// as an HTTP answer gets what Envoy's gRPC client makes of that answer (calls.yaml); a stream to
/// one is refused by name.
#[test]
fn the_harness_refuses_a_grpc_stream_to_a_modelled_http_cluster_loudly() {
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(module("meshward_test_sdk_runtime"))
                .unwrap()
                .name("m"),
        )
        .cluster("grpc", Cluster::respond(CalloutResponse::new(200, "hi")))
        .build()
        .unwrap();
    let out = format!(
        "{:?}",
        host.send(&Request::get("/").header("x-rt-grpc", "stream"))
    );
    assert!(
        out.contains(
            "harness: a gRPC stream to the cluster `grpc` is not modelled: it is not a gRPC server"
        ),
        "{out}"
    );
    assert!(out.contains("status: 503"), "{out}");
}

#[test]
fn the_harness_refuses_xds_node_loudly() {
    let out = refused("meshward_test_sdk_properties", &[("x-prop-a", "xds.node")]);
    assert!(
        out.contains("harness: property xds.node (Envoy's serialized Node proto) is not modelled"),
        "{out}"
    );
}

#[test]
fn the_harness_refuses_unmodelled_foreign_functions_loudly() {
    for (function, args, what) in [
        ("expr_create", "31", "expr_create (CEL expressions)"),
        ("declare_property", "", "declare_property"),
        // SetEnvoyFilterStateArguments { path: "envoy.string", value: "hi" }
        (
            "set_envoy_filter_state",
            "0a0c656e766f792e737472696e6712026869",
            "set_envoy_filter_state of the registered object `envoy.string`",
        ),
        // SignArguments { private_key_pem: "k" }
        ("sign", "22016b", "sign with a private key"),
    ] {
        let out = refused(
            "meshward_test_verify",
            &[("x-verify-function", function), ("x-verify-args", args)],
        );
        assert!(
            out.contains(&format!("harness: foreign function {what}"))
                && out.contains("is not modelled"),
            "{function}: {out}"
        );
    }
}

/// `vm_config.environment_variables` reach the module's WASI `environ_get` (the Rust SDK user's
/// `std::env::var`), in both worlds; a variable not configured is unset.
#[test]
fn vm_environment_variables_reach_environ_get_in_both() {
    use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
    let wasm = module("meshward_test_sdk_runtime");
    let names = ["MESHWARD_A", "MESHWARD_B", "MESHWARD_UNSET"];
    // Harness.
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(&wasm)
                .unwrap()
                .name("rt")
                .env("MESHWARD_A", "one")
                .env("MESHWARD_B", "two=2"),
        )
        .build()
        .unwrap();
    let harness: Vec<Option<String>> = names
        .iter()
        .map(|n| {
            let out = host.send(&Request::get("/").header("x-rt-env", n));
            let head = out.upstream_request.as_ref().expect("reached upstream");
            head.header("x-rt-env-value").map(str::to_string)
        })
        .collect();
    // Envoy.
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr()).filter(
        WasmFilter::new("rt", &wasm, "")
            .env("MESHWARD_A", "one")
            .env("MESHWARD_B", "two=2"),
    );
    let envoy = Envoy::start(&config).unwrap();
    let in_envoy: Vec<Option<String>> = names
        .iter()
        .map(|n| {
            let r = envoy
                .client()
                .send(&envoy::Request::get("/").header("x-rt-env", *n))
                .unwrap();
            r.echo()
                .unwrap()
                .header("x-rt-env-value")
                .map(str::to_string)
        })
        .collect();
    let expected = ["one", "two=2", "<unset>"].map(|v| Some(v.to_string()));
    assert_eq!(in_envoy, expected, "Envoy");
    assert_eq!(harness, in_envoy, "harness vs Envoy");
}

/// Start-up code (`_initialize`, `main`) may call only what cpp-host allows there: a log line
/// loads in both worlds; the clock (`proxy_get_current_time_nanoseconds`) traps
/// `restricted_callback`, so the plugin fails to load in both.
#[test]
fn start_up_code_may_log_but_not_read_the_clock_in_both() {
    use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
    let wasm = module("meshward_test_sdk_runtime");
    let harness = |what: &str| {
        Host::builder()
            .filter(
                FilterSpec::from_file(&wasm)
                    .unwrap()
                    .name("rt")
                    .env("MESHWARD_RT_START", what),
            )
            .build()
    };
    let upstream = EchoUpstream::start().unwrap();
    let in_envoy = |what: &str| {
        let config = EnvoyConfig::new(upstream.addr())
            .filter(WasmFilter::new("rt", &wasm, "").env("MESHWARD_RT_START", what));
        Envoy::start(&config)
    };
    // Allowed: both load and answer.
    let host = harness("log").expect("harness: main may log");
    let out = host.send(&Request::get("/").header("x-rt-main", "1"));
    let calls = out
        .upstream_request
        .as_ref()
        .unwrap()
        .header("x-rt-main-calls");
    assert_eq!(calls, Some("1"), "harness");
    let started = in_envoy("log").expect("Envoy: main may log");
    let r = started
        .client()
        .send(&envoy::Request::get("/").header("x-rt-main", "1"))
        .unwrap();
    assert_eq!(
        r.echo().unwrap().header("x-rt-main-calls"),
        Some("1"),
        "Envoy"
    );
    drop(started);
    // Restricted: neither loads.
    let err = harness("time")
        .err()
        .expect("harness: the clock is restricted at start-up");
    assert!(
        format!("{err}").contains("restricted_callback"),
        "harness error: {err}"
    );
    let err = in_envoy("time")
        .err()
        .expect("Envoy started a plugin whose main read the clock");
    assert!(
        format!("{err:#}").contains("restricted_callback"),
        "Envoy: {err:#}"
    );
}

/// A local reply once the response headers went to the client: Envoy resets the stream (the client
/// has the headers); the harness has no mid-body reset to show, so it refuses by name. In the
/// response-headers callback the reply replaces the response, in both worlds (local-replies.yaml).
#[test]
fn the_harness_refuses_a_local_reply_after_the_response_headers_went_out() {
    let out = refused("meshward_test_sdk_http", &[("x-sdk", "respb:local=418")]);
    assert!(
        out.contains("harness: send_local_response after the response headers went to the client is not modelled"),
        "{out}"
    );
}
