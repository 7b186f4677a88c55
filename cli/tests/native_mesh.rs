//! The `meshward` binary's native differential for Istio resources: `render --native` prints
//! what istiod would give a mesh scenario's workload, and `test --native` runs it in Envoy beside
//! meshward's filters and reports each case with both answers. `--native` needs Envoy 1.40
//! ($MESHWARD_ENVOY or the project's .venv): missing, the test fails.

mod common;
use common::meshward;

#[test]
fn render_native_prints_istiods_listeners_for_each_port_of_the_scenario() {
    let (code, out, err) =
        meshward(&["render", "--native", "tests/scenarios/mesh-native/api.yaml"]);
    assert_eq!(code, 0, "{err}");
    let listeners: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).expect("YAML");
    let listeners = listeners.as_sequence().expect("a list of listeners");
    assert_eq!(listeners.len(), 2, "ports 8080 and 8443: {out}");
    let chains = |l: &serde_yaml_ng::Value| -> Vec<String> {
        l["filter_chains"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| {
                c["filter_chain_match"]["transport_protocol"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        chains(&listeners[0]),
        ["tls", "raw_buffer"],
        "8080 is PERMISSIVE"
    );
    assert_eq!(chains(&listeners[1]), ["tls"], "8443 is STRICT");
    let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["normalize_path"], serde_yaml_ng::Value::Bool(true));
    assert_eq!(hcm["merge_slashes"], serde_yaml_ng::Value::Bool(false));
    let names: Vec<&str> = hcm["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.router"
        ],
        "jwt_authn, then AUDIT, DENY, ALLOW"
    );
    for name in [
        "ns[store]-policy[api]-rule[5]",
        "ns[store]-policy[deny-admin]-rule[0]",
        "ns[store]-policy[audit-everything]-rule[0]",
        "ns[store]-policy[shadow-deny-all]-rule[0]",
        "issuer: https://idp.example.com",
        "payload_in_metadata: payload",
    ] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
}

#[test]
fn test_native_reports_both_answers_and_the_stricter_cases_of_a_mesh_file() {
    let (code, out, err) = meshward(&["test", "--native", "-v", "examples/mesh/frontend.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("examples/mesh/frontend.yaml (native differential)"),
        "{out}"
    );
    assert!(
        out.contains(
            "  ok    //debug is matched as /debug (meshward 403 (did not reach the upstream), \
             native Istio 200 (reached the upstream): meshward stricter on purpose: "
        ),
        "{out}"
    );
    assert_eq!(
        out.matches("meshward stricter on purpose").count(),
        4,
        "{out}"
    );
    assert!(out.contains("(both 200 (reached the upstream))"), "{out}");
    assert!(out.trim_end().ends_with(" passed, 0 failed"), "{out}");
}

#[test]
fn render_refuses_without_native_and_a_chain_file() {
    let (code, _, err) = meshward(&["render", "tests/scenarios/mesh-native/api.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--native"), "{err}");
    let (code, _, err) = meshward(&[
        "render",
        "--native",
        "tests/scenarios/spiffe-authz/identity.yaml",
    ]);
    assert_eq!(code, 2, "{err}");
}
