//! The `meshward` binary with spiffe-authz-tcp, the network filter: `test --native` runs the native
//! differential of a TCP scenario file (meshward against the network RBAC istiod would render)
//! and refuses HTTP chain files; `wasmplugin --filter spiffe-authz-tcp` writes a clean `type: NETWORK`
//! resource on stdout and its notes on HTTP-only fields on stderr, and refuses a policy the
//! filter would refuse, naming the field. `--native` needs Envoy 1.40 ($MESHWARD_ENVOY or the
//! project's .venv): missing, the test fails.

mod common;
use common::meshward;

#[test]
fn test_native_runs_the_differential_of_a_tcp_file() {
    let (code, out, err) = meshward(&[
        "test",
        "--native",
        "--verbose",
        "tests/scenarios/spiffe-authz-tcp/order.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tests/scenarios/spiffe-authz-tcp/order.yaml (native differential)"),
        "{out}"
    );
    assert!(
        out.contains("  ok    DENY before ALLOW (both refused)")
            && out.contains("  ok    ALLOW when no DENY matches (both allowed)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("4 passed, 0 failed"), "{out}");
}

#[test]
fn test_native_refuses_an_http_chain_file_before_running_anything() {
    let (code, out, err) = meshward(&[
        "test",
        "--native",
        "tests/scenarios/spiffe-authz-tcp/order.yaml",
        "tests/scenarios/spiffe-authz/identity.yaml",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(
            "tests/scenarios/spiffe-authz/identity.yaml: --native takes mesh scenario files"
        ) && err.contains("a chain of HTTP filters has no native counterpart to render"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing ran: {out}");
}

#[test]
fn test_help_says_what_native_does() {
    let (code, out, _) = meshward(&["test", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--native") && out.contains("network RBAC istiod would render"),
        "{out}"
    );
}

#[test]
fn wasmplugin_prints_the_tcp_notes_on_stderr_and_the_resource_on_stdout() {
    let (code, out, err) = meshward(&[
        "wasmplugin",
        "--filter",
        "spiffe-authz-tcp",
        "--policy",
        "policies/spiffe-authz/issue-example.json",
        "--image",
        "oci://r.example/meshward/spiffe-authz-tcp:0.1.0",
        "--port",
        "5432",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  type: NETWORK\n") && out.contains("  pluginName: spiffe-authz-tcp\n"),
        "{out}"
    );
    assert!(!out.contains("note"), "notes go to stderr: {out}");
    assert!(
        err.contains("note: spiffe-authz-tcp: policy `deny-admin` rules[0] (DENY) reads HTTP-only")
            && err.contains("widens the rule"),
        "{err}"
    );
    assert!(
        err.contains("policy `frontend-reads-products` rules[0] (ALLOW) reads HTTP-only")
            && err.contains("never matches a connection"),
        "{err}"
    );
    assert!(!err.contains("no --port"), "{err}");

    // Without --port: told where else Istio puts a NETWORK plugin.
    let (code, _, err) = meshward(&[
        "wasmplugin",
        "--filter",
        "spiffe-authz-tcp",
        "--policy",
        "policies/spiffe-authz/tcp-postgres.json",
        "--image",
        "oci://r.example/meshward/spiffe-authz-tcp:0.1.0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no --port") && !err.contains("HTTP-only"),
        "{err}"
    );
}

#[test]
fn wasmplugin_refuses_a_policy_spiffe_authz_tcp_refuses_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("typo.json");
    std::fs::write(
        &policy,
        r#"{"policies":[{"name":"db","rules":[{"from":[{"source":{"namespace":["orders"]}}]}]}]}"#,
    )
    .unwrap();
    let (code, out, err) = meshward(&[
        "wasmplugin",
        "--filter",
        "spiffe-authz-tcp",
        "--policy",
        policy.to_str().unwrap(),
        "--image",
        "oci://r.example/meshward/spiffe-authz-tcp:0.1.0",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("spiffe-authz-tcp refuses it")
            && err.contains("field `policies[0].rules[0].from[0].source.namespace`"),
        "{err}"
    );
}
